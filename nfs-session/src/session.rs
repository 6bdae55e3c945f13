//! A session with one NFSv3 export through the userspace client: path walks,
//! directory trees and small files, with no kernel mount and no privilege.

use std::time::Duration;

use nfs3_client::Nfs3ConnectionBuilder;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_types::nfs3::{
    self, Nfs3Option, Nfs3Result, diropargs3, filename3, ftype3, nfs_fh3, nfsstat3, sattr3,
};
use nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_types::xdr_codec::Opaque;
use tokio::net::TcpStream;

use crate::{Export, NfsError};

type Connection = nfs3_client::Nfs3Connection<TokioIo<TcpStream>>;

/// How long connecting (portmapper, MOUNT, NFS) may take before the server counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one NFS call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes per READ/WRITE call.
const IO_CHUNK: u32 = 512 * 1024;

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// The entry's name in its directory.
    pub name: String,
    /// Its file handle.
    pub handle: nfs_fh3,
    /// File, directory, symlink ...
    pub kind: ftype3,
    /// Its permission bits.
    pub mode: u32,
}

/// Free and total space of an export, from FSSTAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceStats {
    /// The export's filesystem size.
    pub total_bytes: u64,
    /// What an unprivileged writer may still use.
    pub available_bytes: u64,
}

/// A mounted (in the MOUNT protocol sense) connection to an export.
pub struct Session {
    conn: Connection,
    root: nfs_fh3,
}

macro_rules! call {
    ($self:ident . $op:ident ( $args:expr ), $what:expr) => {{
        match tokio::time::timeout(CALL_TIMEOUT, $self.conn.$op($args)).await {
            Err(_) => Err(NfsError::Unreachable(format!("{} timed out", $what))),
            Ok(Err(e)) => Err(NfsError::Unreachable(format!("{}: {e}", $what))),
            Ok(Ok(Nfs3Result::Err((status, _)))) => Err(NfsError::status($what, status)),
            Ok(Ok(Nfs3Result::Ok(ok))) => Ok(ok),
        }
    }};
}

impl Session {
    /// Connects to the export's portmapper, mounts the share and opens the NFS channel.
    pub async fn connect(export: &Export) -> Result<Self, NfsError> {
        let builder = Nfs3ConnectionBuilder::new(TokioConnector, &export.host, &export.share)
            .connect_from_privileged_port(false)
            .portmapper_port(export.port)
            .credential(credential());
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, builder.mount()).await {
            Err(_) => {
                return Err(NfsError::Unreachable(format!(
                    "{export}: connect timed out"
                )));
            }
            Ok(Err(e)) => return Err(NfsError::Unreachable(format!("{export}: {e}"))),
            Ok(Ok(conn)) => conn,
        };
        let root = conn.root_nfs_fh3();
        Ok(Self { conn, root })
    }

    /// Releases the MOUNT registration; failures only leave a stale entry in the server's table.
    pub async fn close(self) {
        if let Err(e) = self.conn.unmount().await {
            tracing::debug!(error = %e, "NFS unmount failed");
        }
    }

    /// The handle of the export's root directory.
    pub fn root(&self) -> nfs_fh3 {
        self.root.clone()
    }

    /// The export's size and free space (FSSTAT).
    pub async fn fsstat(&mut self) -> Result<SpaceStats, NfsError> {
        let args = nfs3::FSSTAT3args {
            fsroot: self.root(),
        };
        let ok = call!(self.fsstat(&args), "FSSTAT")?;
        Ok(SpaceStats {
            total_bytes: ok.tbytes,
            available_bytes: ok.abytes,
        })
    }

    /// Looks up one name in a directory; `Ok(None)` when it does not exist.
    pub async fn lookup(&mut self, dir: &nfs_fh3, name: &str) -> Result<Option<nfs_fh3>, NfsError> {
        let args = nfs3::LOOKUP3args {
            what: dirop(dir, name),
        };
        match call!(self.lookup(&args), "LOOKUP") {
            Ok(ok) => Ok(Some(ok.object)),
            Err(NfsError::Status {
                status: nfsstat3::NFS3ERR_NOENT,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Walks a relative path of already-validated components from the export root.
    pub async fn resolve(&mut self, path: &[String]) -> Result<Option<nfs_fh3>, NfsError> {
        let mut handle = self.root();
        for name in path {
            match self.lookup(&handle, name).await? {
                Some(next) => handle = next,
                None => return Ok(None),
            }
        }
        Ok(Some(handle))
    }

    /// Creates a directory (or finds the one there) and sets its mode explicitly,
    /// so the server's umask does not narrow it.
    pub async fn mkdir(
        &mut self,
        dir: &nfs_fh3,
        name: &str,
        mode: u32,
    ) -> Result<nfs_fh3, NfsError> {
        let args = nfs3::MKDIR3args {
            where_: dirop(dir, name),
            attributes: sattr3 {
                mode: Nfs3Option::Some(mode),
                ..Default::default()
            },
        };
        let handle = match call!(self.mkdir(&args), "MKDIR") {
            Ok(ok) => match ok.obj {
                Nfs3Option::Some(fh) => fh,
                Nfs3Option::None => self.must_lookup(dir, name).await?,
            },
            Err(NfsError::Status {
                status: nfsstat3::NFS3ERR_EXIST,
                ..
            }) => {
                return self.must_lookup(dir, name).await;
            }
            Err(e) => return Err(e),
        };
        self.chmod(&handle, mode).await?;
        Ok(handle)
    }

    /// `mkdir -p` below the export root; returns the last directory.
    pub async fn mkdir_all(&mut self, path: &[String], mode: u32) -> Result<nfs_fh3, NfsError> {
        let mut handle = self.root();
        for name in path {
            handle = match self.lookup(&handle, name).await? {
                Some(fh) => fh,
                None => self.mkdir(&handle, name, mode).await?,
            };
        }
        Ok(handle)
    }

    /// Sets the permission bits of `handle` (SETATTR).
    pub async fn chmod(&mut self, handle: &nfs_fh3, mode: u32) -> Result<(), NfsError> {
        let args = nfs3::SETATTR3args {
            object: handle.clone(),
            new_attributes: sattr3 {
                mode: Nfs3Option::Some(mode),
                ..Default::default()
            },
            guard: Nfs3Option::None,
        };
        call!(self.setattr(&args), "SETATTR").map(|_| ())
    }

    async fn must_lookup(&mut self, dir: &nfs_fh3, name: &str) -> Result<nfs_fh3, NfsError> {
        self.lookup(dir, name)
            .await?
            .ok_or_else(|| NfsError::status("LOOKUP", nfsstat3::NFS3ERR_NOENT))
    }

    /// Lists a directory, without `.` and `..`.
    pub async fn read_dir(&mut self, dir: &nfs_fh3) -> Result<Vec<DirEntry>, NfsError> {
        let mut entries = Vec::new();
        let mut cookie = 0;
        let mut cookieverf = nfs3::cookieverf3::default();
        loop {
            let args = nfs3::READDIRPLUS3args {
                dir: dir.clone(),
                cookie,
                cookieverf,
                dircount: 64 * 1024,
                maxcount: 256 * 1024,
            };
            let ok = call!(self.readdirplus(&args), "READDIRPLUS")?;
            cookieverf = ok.cookieverf;
            for entry in ok.reply.entries.0 {
                cookie = entry.cookie;
                let name = String::from_utf8_lossy(entry.name.as_ref()).into_owned();
                if name == "." || name == ".." {
                    continue;
                }
                let handle = match entry.name_handle {
                    Nfs3Option::Some(fh) => fh,
                    Nfs3Option::None => self.must_lookup(dir, &name).await?,
                };
                let (kind, mode) = match entry.name_attributes {
                    Nfs3Option::Some(attr) => (attr.type_, attr.mode),
                    Nfs3Option::None => self.kind_of(&handle).await?,
                };
                entries.push(DirEntry {
                    name,
                    handle,
                    kind,
                    mode,
                });
            }
            if ok.reply.eof {
                return Ok(entries);
            }
        }
    }

    async fn kind_of(&mut self, handle: &nfs_fh3) -> Result<(ftype3, u32), NfsError> {
        let args = nfs3::GETATTR3args {
            object: handle.clone(),
        };
        let ok = call!(self.getattr(&args), "GETATTR")?;
        Ok((ok.obj_attributes.type_, ok.obj_attributes.mode))
    }

    /// Removes a name; a directory is emptied first. Missing names are fine.
    pub async fn remove_all(&mut self, dir: &nfs_fh3, name: &str) -> Result<(), NfsError> {
        let Some(handle) = self.lookup(dir, name).await? else {
            return Ok(());
        };
        let (kind, _) = self.kind_of(&handle).await?;
        if kind == ftype3::NF3DIR {
            Box::pin(self.empty_dir(&handle)).await?;
            let args = nfs3::RMDIR3args {
                object: dirop(dir, name),
            };
            return ignore_noent(call!(self.rmdir(&args), "RMDIR").map(|_| ()));
        }
        let args = nfs3::REMOVE3args {
            object: dirop(dir, name),
        };
        ignore_noent(call!(self.remove(&args), "REMOVE").map(|_| ()))
    }

    /// Removes everything inside a directory, keeping the directory.
    pub async fn empty_dir(&mut self, dir: &nfs_fh3) -> Result<(), NfsError> {
        for entry in self.read_dir(dir).await? {
            self.remove_all(dir, &entry.name).await?;
        }
        Ok(())
    }

    /// Renames an entry, within or across directories (RENAME).
    pub async fn rename(
        &mut self,
        from_dir: &nfs_fh3,
        from: &str,
        to_dir: &nfs_fh3,
        to: &str,
    ) -> Result<(), NfsError> {
        let args = nfs3::RENAME3args {
            from: dirop(from_dir, from),
            to: dirop(to_dir, to),
        };
        call!(self.rename(&args), "RENAME").map(|_| ())
    }

    /// Copies the contents of `from` into the existing directory `to`, recursively.
    pub async fn copy_tree(&mut self, from: &nfs_fh3, to: &nfs_fh3) -> Result<(), NfsError> {
        for entry in self.read_dir(from).await? {
            match entry.kind {
                ftype3::NF3DIR => {
                    let sub = self.mkdir(to, &entry.name, entry.mode & 0o7777).await?;
                    Box::pin(self.copy_tree(&entry.handle, &sub)).await?;
                }
                ftype3::NF3REG => {
                    let file = self.create(to, &entry.name, entry.mode & 0o7777).await?;
                    self.copy_file(&entry.handle, &file).await?;
                }
                ftype3::NF3LNK => self.copy_symlink(&entry.handle, to, &entry.name).await?,
                // Devices, sockets and FIFOs are not data; a snapshot leaves them out.
                _ => tracing::debug!(name = %entry.name, "skipping special file in copy"),
            }
        }
        Ok(())
    }

    async fn copy_file(&mut self, from: &nfs_fh3, to: &nfs_fh3) -> Result<(), NfsError> {
        let mut offset = 0;
        loop {
            let data = self.read_chunk(from, offset).await?;
            if data.is_empty() {
                return Ok(());
            }
            self.write_chunk(to, offset, &data).await?;
            offset += data.len() as u64;
        }
    }

    async fn copy_symlink(
        &mut self,
        link: &nfs_fh3,
        dir: &nfs_fh3,
        name: &str,
    ) -> Result<(), NfsError> {
        let args = nfs3::READLINK3args {
            symlink: link.clone(),
        };
        let target = call!(self.readlink(&args), "READLINK")?.data.0.to_vec();
        let args = nfs3::SYMLINK3args {
            where_: dirop(dir, name),
            symlink: nfs3::symlinkdata3 {
                symlink_attributes: sattr3::default(),
                symlink_data: nfs3::nfspath3(Opaque::owned(target)),
            },
        };
        ignore_exist(call!(self.symlink(&args), "SYMLINK").map(|_| ()))
    }

    /// Creates (or truncates) a regular file.
    pub async fn create(
        &mut self,
        dir: &nfs_fh3,
        name: &str,
        mode: u32,
    ) -> Result<nfs_fh3, NfsError> {
        let args = nfs3::CREATE3args {
            where_: dirop(dir, name),
            how: nfs3::createhow3::UNCHECKED(sattr3 {
                mode: Nfs3Option::Some(mode),
                size: Nfs3Option::Some(0),
                ..Default::default()
            }),
        };
        match call!(self.create(&args), "CREATE")?.obj {
            Nfs3Option::Some(fh) => Ok(fh),
            Nfs3Option::None => self.must_lookup(dir, name).await,
        }
    }

    async fn read_chunk(&mut self, file: &nfs_fh3, offset: u64) -> Result<Vec<u8>, NfsError> {
        let args = nfs3::READ3args {
            file: file.clone(),
            offset,
            count: IO_CHUNK,
        };
        Ok(call!(self.read(&args), "READ")?.data.to_vec())
    }

    async fn write_chunk(
        &mut self,
        file: &nfs_fh3,
        offset: u64,
        data: &[u8],
    ) -> Result<(), NfsError> {
        let mut written = 0usize;
        while written < data.len() {
            let rest = &data[written..];
            let count = u32::try_from(rest.len()).unwrap_or(u32::MAX);
            let args = nfs3::WRITE3args {
                file: file.clone(),
                offset: offset + written as u64,
                count,
                stable: nfs3::stable_how::FILE_SYNC,
                data: Opaque::borrowed(rest),
            };
            let ok = call!(self.write(&args), "WRITE")?;
            if ok.count == 0 {
                return Err(NfsError::status("WRITE", nfsstat3::NFS3ERR_IO));
            }
            written += ok.count as usize;
        }
        Ok(())
    }

    /// Reads a whole small file; `Ok(None)` when it does not exist.
    pub async fn read_file(
        &mut self,
        dir: &nfs_fh3,
        name: &str,
    ) -> Result<Option<Vec<u8>>, NfsError> {
        let Some(file) = self.lookup(dir, name).await? else {
            return Ok(None);
        };
        let mut content = Vec::new();
        loop {
            let chunk = self.read_chunk(&file, content.len() as u64).await?;
            if chunk.is_empty() {
                return Ok(Some(content));
            }
            content.extend_from_slice(&chunk);
        }
    }

    /// Replaces a file atomically: a stably written temporary file renamed over it,
    /// so a reader sees the old or the new content, never a torn one.
    pub async fn write_file_atomic(
        &mut self,
        dir: &nfs_fh3,
        name: &str,
        data: &[u8],
    ) -> Result<(), NfsError> {
        let temp = format!(".{name}.tmp");
        let file = self.create(dir, &temp, 0o644).await?;
        self.write_chunk(&file, 0, data).await?;
        self.rename(dir, &temp, dir, name).await
    }

    /// Removes a file; a missing one is fine.
    pub async fn remove_file(&mut self, dir: &nfs_fh3, name: &str) -> Result<(), NfsError> {
        let args = nfs3::REMOVE3args {
            object: dirop(dir, name),
        };
        ignore_noent(call!(self.remove(&args), "REMOVE").map(|_| ()))
    }

    /// Sums the sizes of the regular files below a directory.
    pub async fn tree_size(&mut self, dir: &nfs_fh3) -> Result<u64, NfsError> {
        let mut total = 0;
        for entry in self.read_dir(dir).await? {
            if entry.kind == ftype3::NF3DIR {
                total += Box::pin(self.tree_size(&entry.handle)).await?;
            } else {
                let args = nfs3::GETATTR3args {
                    object: entry.handle.clone(),
                };
                total += call!(self.getattr(&args), "GETATTR")?.obj_attributes.size;
            }
        }
        Ok(total)
    }
}

/// AUTH_SYS as root: most servers refuse AUTH_NONE, and root (squashed or not) is
/// what a kernel client provisioning directories would present too.
fn credential() -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix {
        stamp: 0,
        machinename: Opaque::borrowed(b"stowage"),
        uid: 0,
        gid: 0,
        gids: vec![],
    })
}

fn dirop<'a>(dir: &nfs_fh3, name: &'a str) -> diropargs3<'a> {
    diropargs3 {
        dir: dir.clone(),
        name: filename3::from(name.as_bytes()),
    }
}

fn ignore_noent(result: Result<(), NfsError>) -> Result<(), NfsError> {
    match result {
        Err(NfsError::Status {
            status: nfsstat3::NFS3ERR_NOENT,
            ..
        }) => Ok(()),
        other => other,
    }
}

fn ignore_exist(result: Result<(), NfsError>) -> Result<(), NfsError> {
    match result {
        Err(NfsError::Status {
            status: nfsstat3::NFS3ERR_EXIST,
            ..
        }) => Ok(()),
        other => other,
    }
}
