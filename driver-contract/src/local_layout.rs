//! Where a local volume's data lives under a node's local root, and the names of its
//! layouts in the volume context: the controller makes the data, the node plugin finds
//! it from the volume ID and context alone.

use std::path::{Path, PathBuf};

/// The directory under the local root that holds volume data.
pub const VOLUMES_DIR: &str = "volumes";

/// The volume-context key naming a local volume's layout.
pub const LAYOUT_KEY: &str = "layout";

/// How a local volume's data is kept, as its volume context names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalLayout {
    /// A directory under the local root.
    Directory,
    /// A directory in its own XFS project, whose hard limit is the capacity.
    Quota,
    /// A sparse file holding an ext4 filesystem.
    Image,
    /// A sparse file used as a raw block device.
    Block,
}

impl LocalLayout {
    /// The name written under [`LAYOUT_KEY`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Directory => "directory",
            Self::Quota => "quota",
            Self::Image => "image",
            Self::Block => "block",
        }
    }

    /// The layout a context names; a volume made before layouts were named is a directory.
    pub fn from_name(name: Option<&str>) -> Option<Self> {
        match name {
            None | Some("directory") => Some(Self::Directory),
            Some("quota") => Some(Self::Quota),
            Some("image") => Some(Self::Image),
            Some("block") => Some(Self::Block),
            Some(_) => None,
        }
    }

    /// Whether the data is one file (an image) rather than a directory tree.
    pub fn is_file(self) -> bool {
        matches!(self, Self::Image | Self::Block)
    }
}

/// Where data of `key` lives in `dir`: `<key>.img` for a file, `<key>` for a tree.
pub fn data_path(dir: &Path, key: &str, is_file: bool) -> PathBuf {
    if is_file {
        dir.join(format!("{key}.img"))
    } else {
        dir.join(key)
    }
}

/// Where a local volume's data lives on a node with this root.
pub fn volume_data_path(root: &Path, key: &str, layout: LocalLayout) -> PathBuf {
    data_path(&root.join(VOLUMES_DIR), key, layout.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_files_get_an_extension() {
        for layout in [
            LocalLayout::Directory,
            LocalLayout::Quota,
            LocalLayout::Image,
            LocalLayout::Block,
        ] {
            assert_eq!(LocalLayout::from_name(Some(layout.name())), Some(layout));
        }
        assert_eq!(LocalLayout::from_name(None), Some(LocalLayout::Directory));
        assert_eq!(LocalLayout::from_name(Some("tape")), None);
        let root = Path::new("/r");
        assert_eq!(
            volume_data_path(root, "k", LocalLayout::Image),
            Path::new("/r/volumes/k.img")
        );
        assert_eq!(
            volume_data_path(root, "k", LocalLayout::Quota),
            Path::new("/r/volumes/k")
        );
    }
}
