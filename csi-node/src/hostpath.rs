//! Static hostPath volumes: Kubernetes' hostPath types, confined to allow-listed prefixes.

use std::path::{Component, Path, PathBuf};

use rustix::fs::FileType;

use crate::beneath::{Handle, Links};
use crate::error::{Error, Result};

/// What Kubernetes' `hostPath.type` promises about the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    /// `""`: no check.
    Unset,
    /// A directory, made (0755) if missing.
    DirectoryOrCreate,
    /// An existing directory.
    Directory,
    /// A regular file, made if missing.
    FileOrCreate,
    /// An existing regular file.
    File,
    /// An existing unix socket.
    Socket,
    /// An existing character device.
    CharDevice,
    /// An existing block device.
    BlockDevice,
}

impl HostPathType {
    /// Parses the volume context's `hostPathType`.
    pub fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "" => Self::Unset,
            "DirectoryOrCreate" => Self::DirectoryOrCreate,
            "Directory" => Self::Directory,
            "FileOrCreate" => Self::FileOrCreate,
            "File" => Self::File,
            "Socket" => Self::Socket,
            "CharDevice" => Self::CharDevice,
            "BlockDevice" => Self::BlockDevice,
            other => {
                return Err(Error::invalid(
                    "volume_context.hostPathType",
                    format!(
                        "{other:?} is not one of \"\", Directory, DirectoryOrCreate, File, FileOrCreate, Socket, CharDevice, BlockDevice"
                    ),
                ));
            }
        })
    }
}

/// A host path that passed the allow-list and type checks, held open: it is mounted
/// from this handle, so a swap after the check changes nothing.
#[derive(Debug)]
pub struct HostPath {
    /// The path, open.
    pub handle: Handle,
    /// Mounted over a file rather than a directory.
    pub is_file: bool,
}

/// Resolves `raw` beneath an allowed prefix (symlinks followed only while they stay
/// beneath it) and checks its type, creating it for the `OrCreate` types.
pub fn resolve(raw: &str, kind: HostPathType, allow: &[PathBuf]) -> Result<HostPath> {
    let lexical = Path::new(raw);
    if !lexical.is_absolute()
        || lexical
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        || raw.contains('\0')
    {
        return Err(Error::invalid(
            "volume_context.path",
            format!("{raw:?} must be an absolute path without '..'"),
        ));
    }
    let mut prefixes: Vec<&PathBuf> = allow.iter().filter(|p| lexical.starts_with(p)).collect();
    if prefixes.is_empty() {
        return Err(denied(raw));
    }
    // The longest prefix first; a shorter one may still hold a symlink that leaves the longer.
    prefixes.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut escaped = None;
    for prefix in prefixes {
        let relative = lexical.strip_prefix(prefix).unwrap_or(Path::new(""));
        let root = Handle::open_root(prefix)?;
        // An allowed prefix may itself be the file (a device node, a socket).
        if relative.as_os_str().is_empty() {
            return checked(raw, root, kind);
        }
        match open_or_create(&root, relative, kind) {
            Err(Error::PathEscapes { .. }) => escaped = Some(prefix),
            Err(Error::PathMissing { .. }) => {
                return Err(Error::HostPathMissing { path: raw.into() });
            }
            Err(e) => return Err(e),
            Ok(handle) => return checked(raw, handle, kind),
        }
    }
    Err(Error::HostPathEscapes {
        path: raw.into(),
        prefix: escaped.cloned().unwrap_or_default(),
    })
}

fn open_or_create(root: &Handle, relative: &Path, kind: HostPathType) -> Result<Handle> {
    match (root.resolve(relative, Links::Inside), kind) {
        (Err(Error::PathMissing { .. }), HostPathType::DirectoryOrCreate) => {
            root.create_dirs(relative, Links::Inside, 0o755)
        }
        (Err(Error::PathMissing { .. }), HostPathType::FileOrCreate) => {
            let (Some(parent), Some(name)) = (relative.parent(), relative.file_name()) else {
                return Err(Error::NotARegularFile {
                    path: root.path().join(relative),
                });
            };
            root.create_dirs(parent, Links::Inside, 0o755)?
                .make_file(name)
        }
        (result, _) => result,
    }
}

fn checked(raw: &str, handle: Handle, kind: HostPathType) -> Result<HostPath> {
    let file_type = handle.file_type()?;
    let (ok, expected) = match kind {
        HostPathType::Unset => (true, ""),
        HostPathType::Directory | HostPathType::DirectoryOrCreate => {
            (file_type == FileType::Directory, "a directory")
        }
        HostPathType::File | HostPathType::FileOrCreate => {
            (file_type == FileType::RegularFile, "a regular file")
        }
        HostPathType::Socket => (file_type == FileType::Socket, "a socket"),
        HostPathType::CharDevice => (file_type == FileType::CharacterDevice, "a character device"),
        HostPathType::BlockDevice => (file_type == FileType::BlockDevice, "a block device"),
    };
    if !ok {
        return Err(Error::HostPathWrongType {
            path: raw.into(),
            expected,
        });
    }
    Ok(HostPath {
        handle,
        is_file: file_type != FileType::Directory,
    })
}

fn denied(raw: &str) -> Error {
    Error::HostPathNotAllowed { path: raw.into() }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn unknown_type_is_invalid() {
        assert!(matches!(
            HostPathType::parse("Folder"),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn types_are_checked_and_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canonical");
        let allow = vec![root.clone()];
        let sub = root.join("made/dir");
        let made = resolve(
            sub.to_str().expect("utf8"),
            HostPathType::DirectoryOrCreate,
            &allow,
        )
        .expect("created");
        assert!(sub.is_dir() && !made.is_file);
        let file = root.join("made/file");
        let made = resolve(
            file.to_str().expect("utf8"),
            HostPathType::FileOrCreate,
            &allow,
        )
        .expect("created");
        assert!(made.is_file);
        assert!(matches!(
            resolve(
                file.to_str().expect("utf8"),
                HostPathType::Directory,
                &allow
            ),
            Err(Error::HostPathWrongType { .. })
        ));
        assert!(matches!(
            resolve(sub.to_str().expect("utf8"), HostPathType::Socket, &allow),
            Err(Error::HostPathWrongType { .. })
        ));
        let missing = root.join("missing");
        assert!(matches!(
            resolve(
                missing.to_str().expect("utf8"),
                HostPathType::Directory,
                &allow
            ),
            Err(Error::HostPathMissing { .. })
        ));
    }

    #[test]
    fn escapes_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canonical");
        let allowed = root.join("allowed");
        fs::create_dir(&allowed).expect("mkdir");
        std::os::unix::fs::symlink("/etc", allowed.join("link")).expect("symlink");
        let allow = vec![allowed.clone()];
        for (path, kind) in [
            ("/etc", HostPathType::Directory),
            (
                &*format!("{}/../x", allowed.display()),
                HostPathType::DirectoryOrCreate,
            ),
            (
                &*format!("{}/link", allowed.display()),
                HostPathType::Directory,
            ),
            (
                &*format!("{}/link/evil", allowed.display()),
                HostPathType::DirectoryOrCreate,
            ),
            ("relative/path", HostPathType::Unset),
        ] {
            let result = resolve(path, kind, &allow);
            assert!(
                matches!(
                    result,
                    Err(Error::HostPathNotAllowed { .. }
                        | Error::HostPathEscapes { .. }
                        | Error::InvalidArgument { .. })
                ),
                "{path}: {result:?}"
            );
        }
        assert!(!Path::new("/etc/evil").exists());
        assert!(
            resolve("/etc", HostPathType::Directory, &[]).is_err(),
            "nothing is allowed by default"
        );
    }
}
