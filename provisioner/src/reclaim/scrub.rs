//! Scrubbing a node-local directory for Recycle (everything inside goes, the
//! directory stays) and removing one for Delete. Confined to allow-listed
//! prefixes, never follows a symlink and never crosses into another filesystem.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::ReclaimError;

/// Deeper trees than this are refused rather than recursed into.
pub(super) const MAX_DEPTH: usize = 256;

/// Empties the directory `raw`, which must lie strictly below one of `allow`.
pub fn scrub(raw: &str, allow: &[PathBuf]) -> Result<(), ReclaimError> {
    let path = confine(raw, allow)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    // The path was resolved above; refusing symlinks here catches a swap since then.
    let root = openat2(AT_FDCWD, &path, how).map_err(|e| io(&path, e))?;
    let device = fstat(&root).map_err(|e| io(&path, e))?.st_dev;
    empty(&root, &path, device, 0)
}

/// Removes `raw` (a directory with everything inside, or a file; a symlink itself,
/// never its target), which must lie strictly below one of `allow`, as upstream's
/// `os.RemoveAll`: a path that is already gone is fine.
pub fn remove(raw: &str, allow: &[PathBuf]) -> Result<(), ReclaimError> {
    let lexical = Path::new(raw);
    let (Some(parent), Some(name)) = (lexical.parent(), lexical.file_name()) else {
        return Err(ReclaimError::NoEntry(raw.to_string()));
    };
    let parent_raw = parent.to_str().unwrap_or_default();
    if !lexical.is_absolute() || lexical.components().any(|c| c == Component::ParentDir) {
        return Err(ReclaimError::NotAbsolute(raw.to_string()));
    }
    let parent_path = match std::fs::canonicalize(parent) {
        Ok(path) => path,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ReclaimError::Io {
                path: parent_raw.to_string(),
                error: e.to_string(),
            });
        }
    };
    // The entry itself is not resolved: a symlink is removed, not followed.
    let path = parent_path.join(name);
    check_below(raw, &path, allow)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let dir = openat2(AT_FDCWD, &parent_path, how).map_err(|e| io(&parent_path, e))?;
    let stat = match fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(io(&path, e)),
    };
    if is_dir(&stat) {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let sub = openat(&dir, name, flags, Mode::empty()).map_err(|e| io(&path, e))?;
        empty(&sub, &path, stat.st_dev, 0)?;
        unlinkat(&dir, name, UnlinkatFlags::RemoveDir)
    } else {
        unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir)
    }
    .or_else(|e| if e == Errno::ENOENT { Ok(()) } else { Err(e) })
    .map_err(|e| io(&path, e))
}

/// Refuses a resolved `path` that is not strictly below an allowed prefix.
fn check_below(raw: &str, path: &Path, allow: &[PathBuf]) -> Result<(), ReclaimError> {
    let below = allow.iter().any(|prefix| {
        let prefix = std::fs::canonicalize(prefix).unwrap_or_else(|_| prefix.clone());
        path != prefix && path.starts_with(&prefix)
    });
    if below {
        Ok(())
    } else {
        Err(ReclaimError::NotAllowed {
            raw: raw.to_string(),
            resolved: path.to_path_buf(),
        })
    }
}

/// The resolved path of `raw` if it is a directory strictly below an allowed prefix.
fn confine(raw: &str, allow: &[PathBuf]) -> Result<PathBuf, ReclaimError> {
    let lexical = Path::new(raw);
    if !lexical.is_absolute()
        || raw.contains('\0')
        || lexical.components().any(|c| c == Component::ParentDir)
    {
        return Err(ReclaimError::NotAbsolute(raw.to_string()));
    }
    let path = std::fs::canonicalize(lexical).map_err(|e| ReclaimError::Io {
        path: raw.to_string(),
        error: e.to_string(),
    })?;
    check_below(raw, &path, allow)?;
    Ok(path)
}

fn empty(dir: &OwnedFd, path: &Path, device: u64, depth: usize) -> Result<(), ReclaimError> {
    if depth > MAX_DEPTH {
        return Err(ReclaimError::TooDeep(path.to_path_buf()));
    }
    for name in entries(dir, path)? {
        let child = path.join(&name);
        let stat = fstatat(
            dir,
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io(&child, e))?;
        if is_dir(&stat) {
            if stat.st_dev != device {
                return Err(ReclaimError::MountPoint(child));
            }
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let sub =
                openat(dir, name.as_os_str(), flags, Mode::empty()).map_err(|e| io(&child, e))?;
            empty(&sub, &child, device, depth + 1)?;
            unlinkat(dir, name.as_os_str(), UnlinkatFlags::RemoveDir)
        } else {
            unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
        }
        .or_else(|e| if e == Errno::ENOENT { Ok(()) } else { Err(e) })
        .map_err(|e| io(&child, e))?;
    }
    Ok(())
}

/// The names in a directory, read before any is removed.
fn entries(dir: &OwnedFd, path: &Path) -> Result<Vec<OsString>, ReclaimError> {
    let fd = dir
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| ReclaimError::Io {
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
    let mut listing = Dir::from_fd(fd).map_err(|e| io(path, e))?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(|e| io(path, e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(std::ffi::OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

fn is_dir(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn io(path: &Path, errno: Errno) -> ReclaimError {
    ReclaimError::Io {
        path: path.display().to_string(),
        error: errno.desc().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let allowed = dir.path().join("allowed");
        let volume = allowed.join("vol");
        fs::create_dir_all(volume.join("a/b/c")).expect("mkdir");
        fs::write(volume.join("a/b/c/file"), b"data").expect("write");
        fs::write(volume.join(".hidden"), b"data").expect("write");
        (dir, allowed, volume)
    }

    #[test]
    fn empties_the_directory_and_keeps_it() {
        let (_dir, allowed, volume) = fixture();
        scrub(volume.to_str().expect("utf8"), &[allowed]).expect("scrub");
        assert!(volume.is_dir());
        assert_eq!(fs::read_dir(&volume).expect("read").count(), 0);
    }

    #[test]
    fn symlinks_inside_are_removed_not_followed() {
        let (dir, allowed, volume) = fixture();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("precious"), b"keep").expect("write");
        symlink(&outside, volume.join("link")).expect("symlink");
        scrub(volume.to_str().expect("utf8"), &[allowed]).expect("scrub");
        assert_eq!(fs::read(outside.join("precious")).expect("kept"), b"keep");
        assert!(fs::symlink_metadata(volume.join("link")).is_err());
    }

    const NOT_ALLOWED: &str = "not below a prefix";
    const NOT_ABSOLUTE: &str = "not absolute";
    const NO_ENTRY: &str = "no entry";

    /// Which refusal a result is, for the tables.
    fn refusal(result: &Result<(), ReclaimError>) -> Option<&'static str> {
        match result {
            Err(ReclaimError::NotAllowed { .. }) => Some(NOT_ALLOWED),
            Err(ReclaimError::NotAbsolute(_)) => Some(NOT_ABSOLUTE),
            Err(ReclaimError::NoEntry(_)) => Some(NO_ENTRY),
            _ => None,
        }
    }

    #[test]
    fn refuses_paths_outside_or_at_the_prefix() {
        let (dir, allowed, volume) = fixture();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("precious"), b"keep").expect("write");
        symlink(&outside, allowed.join("escape")).expect("symlink");
        let allow = [allowed.clone()];
        let cases = [
            (outside.to_str().expect("utf8").to_string(), NOT_ALLOWED),
            (allowed.to_str().expect("utf8").to_string(), NOT_ALLOWED),
            (format!("{}/escape", allowed.display()), NOT_ALLOWED),
            (format!("{}/../outside", volume.display()), NOT_ABSOLUTE),
            ("relative/path".to_string(), NOT_ABSOLUTE),
        ];
        for (raw, expected) in cases {
            let result = scrub(&raw, &allow);
            assert_eq!(refusal(&result), Some(expected), "{raw}: {result:?}");
        }
        assert!(outside.join("precious").exists());
        assert!(volume.join("a/b/c/file").exists());
        let by_default = scrub(volume.to_str().expect("utf8"), &[]);
        assert_eq!(
            refusal(&by_default),
            Some(NOT_ALLOWED),
            "nothing is allowed by default: {by_default:?}"
        );
    }

    #[test]
    fn a_refusal_says_what_is_wrong_with_the_path() {
        let cases = [
            (
                ReclaimError::NotAbsolute("a/../b".into()),
                "\"a/../b\" must be an absolute path without '..'",
            ),
            (
                ReclaimError::NoEntry("/".into()),
                "\"/\" names no entry to remove",
            ),
            (
                ReclaimError::NotAllowed {
                    raw: "/srv/link".into(),
                    resolved: "/etc".into(),
                },
                "\"/srv/link\" (resolved /etc) is not strictly below a --host-path-allow prefix",
            ),
            (
                ReclaimError::TooDeep("/srv/v/deep".into()),
                "/srv/v/deep is more than 256 directories deep",
            ),
            (
                ReclaimError::MountPoint("/srv/v/mnt".into()),
                "/srv/v/mnt is a mount point; unmount it first",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let (_dir, allowed, _volume) = fixture();
        let missing = allowed.join("missing");
        assert!(matches!(
            scrub(missing.to_str().expect("utf8"), &[allowed]),
            Err(ReclaimError::Io { .. })
        ));
    }

    #[test]
    fn remove_takes_the_directory_and_its_tree() {
        let (_dir, allowed, volume) = fixture();
        remove(
            volume.to_str().expect("utf8"),
            std::slice::from_ref(&allowed),
        )
        .expect("remove");
        assert!(!volume.exists());
        assert!(allowed.is_dir(), "the prefix stays");
        remove(volume.to_str().expect("utf8"), &[allowed]).expect("removing it again is fine");
    }

    #[test]
    fn remove_takes_a_symlink_not_its_target_and_stays_below_the_prefix() {
        let (dir, allowed, volume) = fixture();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("precious"), b"keep").expect("write");
        symlink(&outside, allowed.join("link")).expect("symlink");
        symlink(&outside, volume.join("inner-link")).expect("symlink");
        let allow = [allowed.clone()];
        remove(allowed.join("link").to_str().expect("utf8"), &allow).expect("remove link");
        assert!(fs::symlink_metadata(allowed.join("link")).is_err());
        remove(volume.to_str().expect("utf8"), &allow).expect("remove volume");
        assert_eq!(fs::read(outside.join("precious")).expect("kept"), b"keep");
        let cases = [
            (outside.to_str().expect("utf8").to_string(), NOT_ALLOWED),
            (allowed.to_str().expect("utf8").to_string(), NOT_ALLOWED),
            (format!("{}/../outside", allowed.display()), NOT_ABSOLUTE),
            ("relative".to_string(), NOT_ABSOLUTE),
            ("/".to_string(), NO_ENTRY),
        ];
        for (raw, expected) in cases {
            let result = remove(&raw, &allow);
            assert_eq!(refusal(&result), Some(expected), "{raw}: {result:?}");
        }
        assert!(outside.join("precious").exists());
    }
}
