//! `/proc/self/mountinfo`, parsed. The node plugin reads it once at start (to learn
//! what an earlier run of it mounted) and when an unmount finds mounts below its
//! path; no per-call path reads it, as its size follows the node's mount count.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The filesystem's device (`st_dev` of its files), as `major:minor`.
    pub device: (u32, u32),
    /// The path inside the source filesystem that is mounted (bind mounts show a subtree).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`ro`, `rw`, `nosuid`...).
    pub options: Vec<String>,
    /// The filesystem type (`ext4`, `nfs`, `tmpfs`...).
    pub fs_type: String,
    /// The mount source (a device, `host:/share`, or the filesystem's name).
    pub source: String,
    /// Superblock options (`size=...` for tmpfs).
    pub super_options: Vec<String>,
}

impl MountEntry {
    /// Whether the mount is read-only.
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// The mount table, in the kernel's order.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    entries: Vec<MountEntry>,
}

impl MountTable {
    /// Reads this process's mount table whole.
    pub fn read() -> std::io::Result<Self> {
        // /proc reports no size: without room up front the read grows from 32 bytes.
        let mut text = String::with_capacity(32 * 1024);
        std::fs::File::open("/proc/self/mountinfo")?.read_to_string(&mut text)?;
        Ok(Self::parse(&text))
    }

    /// Hands each mount to `visit` as it is read, holding one line at a time: a node's
    /// table can be megabytes, and a process that stays up should not keep a heap that
    /// size after reading it once. Lines that are not UTF-8 are read lossily.
    pub fn scan(visit: impl FnMut(MountEntry)) -> std::io::Result<()> {
        let file = std::fs::File::open("/proc/self/mountinfo")?;
        Self::scan_from(std::io::BufReader::with_capacity(16 * 1024, file), visit)
    }

    /// [`scan`](Self::scan) of any reader.
    pub fn scan_from(
        mut reader: impl BufRead,
        mut visit: impl FnMut(MountEntry),
    ) -> std::io::Result<()> {
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            if let Some(entry) = parse_line(String::from_utf8_lossy(&line).trim_end_matches('\n')) {
                visit(entry);
            }
        }
    }

    /// Parses mountinfo text; lines that are not mountinfo are skipped.
    pub fn parse(text: &str) -> Self {
        Self {
            entries: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// Every mount, in the kernel's order (parents before the mounts on top of them).
    pub fn entries(&self) -> &[MountEntry] {
        &self.entries
    }

    /// The topmost mount at exactly `path`, if any.
    pub fn at(&self, path: &Path) -> Option<&MountEntry> {
        self.entries.iter().rev().find(|e| e.mount_point == path)
    }

    /// Mounts at or below `path`, deepest first (the order to unmount them in).
    pub fn under(&self, path: &Path) -> Vec<&MountEntry> {
        let mut found: Vec<&MountEntry> = self
            .entries
            .iter()
            .filter(|e| e.mount_point.starts_with(path))
            .collect();
        found.sort_by_key(|e| std::cmp::Reverse(e.mount_point.components().count()));
        found
    }
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // id parent major:minor root mount-point options [optional fields...] - fstype source super-options
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let tail: Vec<&str> = after.split(' ').collect();
    if fields.len() < 6 || tail.len() < 3 {
        return None;
    }
    let (major, minor) = fields[2].split_once(':')?;
    Some(MountEntry {
        device: (major.parse().ok()?, minor.parse().ok()?),
        root: PathBuf::from(unescape(fields[3])),
        mount_point: PathBuf::from(unescape(fields[4])),
        options: fields[5].split(',').map(str::to_string).collect(),
        fs_type: tail[0].to_string(),
        source: unescape(tail[1]),
        super_options: tail[2].split(',').map(str::to_string).collect(),
    })
}

/// The kernel escapes space, tab, newline and backslash as `\ooo`; a backslash not
/// followed by an octal byte value (`\000` to `\377`) is taken as it is.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                let value = d.iter().fold(0u16, |v, c| v * 8 + u16::from(c - b'0'));
                u8::try_from(value).ok()
            });
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
31 22 0:27 / /tmp/with\\040space rw,nosuid - tmpfs tmpfs rw,size=65536k
32 22 8:1 /srv/data /var/lib/kubelet/pods/p/volumes/v/mount ro,relatime shared:1 master:2 - ext4 /dev/vda1 rw
33 32 0:28 / /var/lib/kubelet/pods/p/volumes/v/mount/inner rw - tmpfs tmpfs rw
";

    #[test]
    fn parses_fields_escapes_and_optional_tags() {
        let table = MountTable::parse(SAMPLE);
        let spaced = table.at(Path::new("/tmp/with space")).expect("unescaped");
        assert_eq!(spaced.fs_type, "tmpfs");
        assert!(spaced.super_options.contains(&"size=65536k".to_string()));
        let bind = table
            .at(Path::new("/var/lib/kubelet/pods/p/volumes/v/mount"))
            .expect("bind");
        assert_eq!(bind.root, Path::new("/srv/data"));
        assert_eq!(bind.device, (8, 1));
        assert!(bind.read_only());
        assert!(table.at(Path::new("/nowhere")).is_none());
    }

    #[test]
    fn scanning_line_by_line_reads_what_parsing_reads() {
        let mut text = SAMPLE.as_bytes().to_vec();
        text.extend_from_slice(b"40 22 0:50 / /bad\xff rw - tmpfs tmpfs rw\n");
        let mut scanned = Vec::new();
        MountTable::scan_from(&text[..], |entry| scanned.push(entry)).expect("scan");
        let parsed = MountTable::parse(SAMPLE);
        assert_eq!(&scanned[..4], parsed.entries());
        assert_eq!(
            scanned[4].mount_point,
            Path::new("/bad\u{fffd}"),
            "a line that is not UTF-8 is read lossily, not dropped"
        );
    }

    #[test]
    fn nested_mounts_come_deepest_first() {
        let table = MountTable::parse(SAMPLE);
        let under: Vec<&Path> = table
            .under(Path::new("/var/lib/kubelet/pods/p"))
            .iter()
            .map(|e| e.mount_point.as_path())
            .collect();
        assert_eq!(
            under,
            vec![
                Path::new("/var/lib/kubelet/pods/p/volumes/v/mount/inner"),
                Path::new("/var/lib/kubelet/pods/p/volumes/v/mount")
            ]
        );
    }

    #[test]
    fn an_escape_beyond_a_byte_is_taken_as_it_is() {
        // `\777` overflowed a byte (a panic in debug builds); a fuzzer found it.
        let table = MountTable::parse("36 25 0:32 / /a\\777\\101 rw - tmpfs tmpfs rw\n");
        assert!(table.at(Path::new("/a\\777A")).is_some());
    }

    #[test]
    fn garbage_lines_are_skipped() {
        for text in [
            "not a mount line\n\n",
            "22 1 8-1 / / rw - ext4 /dev/vda1 rw\n",
            "22 1 8:x / / rw - ext4 /dev/vda1 rw\n",
        ] {
            assert!(
                MountTable::parse(text).at(Path::new("/")).is_none(),
                "{text}"
            );
        }
    }
}
