//! Static hostPath volumes: Kubernetes' hostPath types, confined to allow-listed prefixes.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// What Kubernetes' `hostPath.type` promises about the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    Unset,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl HostPathType {
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

/// A host path that passed the allow-list and type checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPath {
    /// Fully resolved: no symlink left in it.
    pub path: PathBuf,
    /// Mounted over a file rather than a directory.
    pub is_file: bool,
}

/// Checks `raw` against the allow-list (after resolving symlinks) and the type,
/// creating it for the `OrCreate` types.
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
    let allowed = |p: &Path| allow.iter().any(|prefix| p.starts_with(prefix));
    if !allowed(lexical) {
        return Err(denied(raw));
    }
    let exists = fs::symlink_metadata(lexical).is_ok();
    if !exists {
        create_if_asked(lexical, kind, &allowed)?;
    }
    let path = fs::canonicalize(lexical).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::NotFound(format!("host path {raw} does not exist")),
        _ => Error::io(format!("resolve {raw}"), e),
    })?;
    if !allowed(&path) {
        return Err(Error::PermissionDenied(format!(
            "host path {raw} resolves to {} outside the allowed prefixes",
            path.display()
        )));
    }
    let file_type = fs::metadata(&path)
        .map_err(|e| Error::io(format!("stat {raw}"), e))?
        .file_type();
    let (ok, expected) = match kind {
        HostPathType::Unset => (true, ""),
        HostPathType::Directory | HostPathType::DirectoryOrCreate => {
            (file_type.is_dir(), "a directory")
        }
        HostPathType::File | HostPathType::FileOrCreate => (file_type.is_file(), "a regular file"),
        HostPathType::Socket => (file_type.is_socket(), "a socket"),
        HostPathType::CharDevice => (file_type.is_char_device(), "a character device"),
        HostPathType::BlockDevice => (file_type.is_block_device(), "a block device"),
    };
    if !ok {
        return Err(Error::FailedPrecondition(format!(
            "host path {raw} is not {expected}"
        )));
    }
    Ok(HostPath {
        path,
        is_file: !file_type.is_dir(),
    })
}

fn denied(raw: &str) -> Error {
    Error::PermissionDenied(format!(
        "host path {raw} is not under an allowed prefix (--host-path-allow)"
    ))
}

fn create_if_asked(path: &Path, kind: HostPathType, allowed: &dyn Fn(&Path) -> bool) -> Result<()> {
    let create_dir = kind == HostPathType::DirectoryOrCreate;
    if !create_dir && kind != HostPathType::FileOrCreate {
        return Ok(());
    }
    // The nearest existing ancestor must itself resolve inside the allow-list, so a
    // symlinked parent cannot steer the creation elsewhere.
    let mut ancestor = path.parent();
    while let Some(dir) = ancestor.filter(|d| fs::symlink_metadata(d).is_err()) {
        ancestor = dir.parent();
    }
    let base = ancestor.ok_or_else(|| denied(&path.display().to_string()))?;
    let real =
        fs::canonicalize(base).map_err(|e| Error::io(format!("resolve {}", base.display()), e))?;
    if !allowed(&real) {
        return Err(Error::PermissionDenied(format!(
            "{} resolves outside the allowed prefixes",
            base.display()
        )));
    }
    let result = if create_dir {
        fs::create_dir_all(path)
    } else {
        let parent = path.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent).and_then(|()| {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(path)
                .map(drop)
        })
    };
    result.map_err(|e| Error::io(format!("create {}", path.display()), e))
}

#[cfg(test)]
mod tests {
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
        assert!(made.path.is_dir() && !made.is_file);
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
            Err(Error::FailedPrecondition(_))
        ));
        assert!(matches!(
            resolve(sub.to_str().expect("utf8"), HostPathType::Socket, &allow),
            Err(Error::FailedPrecondition(_))
        ));
        let missing = root.join("missing");
        assert!(matches!(
            resolve(
                missing.to_str().expect("utf8"),
                HostPathType::Directory,
                &allow
            ),
            Err(Error::NotFound(_))
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
                    Err(Error::PermissionDenied(_) | Error::InvalidArgument { .. })
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
