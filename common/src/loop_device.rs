//! Which loop device, if any, a file backs: read from sysfs, so it survives a restart
//! of whichever plugin attached it.

use std::fs;
use std::path::{Path, PathBuf};

/// The loop device `file` backs, if one is attached.
pub fn backing(file: &Path) -> Option<PathBuf> {
    backing_in(Path::new("/sys/block"), file)
}

/// [`backing`] with the block devices listed in `sys_block`. A file that does not exist
/// backs nothing (the kernel names a deleted backing file with " (deleted)" appended),
/// so it is answered without reading every device: a directory volume's unstage asks
/// for the `.blk` file it never had.
fn backing_in(sys_block: &Path, file: &Path) -> Option<PathBuf> {
    fs::symlink_metadata(file).ok()?;
    fs::read_dir(sys_block)
        .ok()?
        .filter_map(|d| d.ok())
        .find_map(|d| {
            let backing = fs::read_to_string(d.path().join("loop/backing_file")).ok()?;
            (Path::new(backing.trim_end()) == file)
                .then(|| PathBuf::from("/dev").join(d.file_name()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_found_by_its_backing_file_only_while_the_file_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys_block = dir.path().join("block");
        let file = dir.path().join("v.blk");
        for (device, backs) in [("loop3", file.clone()), ("vda", dir.path().join("other"))] {
            fs::create_dir_all(sys_block.join(device).join("loop")).expect("mkdir");
            let line = format!("{}\n", backs.display());
            fs::write(sys_block.join(device).join("loop/backing_file"), line).expect("write");
        }
        assert_eq!(backing_in(&sys_block, &file), None, "no file, no device");
        fs::write(&file, b"").expect("create");
        assert_eq!(
            backing_in(&sys_block, &file),
            Some(PathBuf::from("/dev/loop3"))
        );
        assert_eq!(backing_in(&sys_block, &dir.path().join("v2.blk")), None);
    }
}
