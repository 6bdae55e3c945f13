//! The initramfs format: a "newc" cpio archive (what the kernel unpacks at boot).

/// An archive being written in memory.
pub struct Archive {
    bytes: Vec<u8>,
    inode: u32,
}

const DIR: u32 = 0o040_000;
const FILE: u32 = 0o100_000;
const CHAR: u32 = 0o020_000;

impl Archive {
    pub fn new() -> Self {
        Self {
            bytes: Vec::new(),
            inode: 1,
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, DIR | 0o755, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, FILE | mode, (0, 0), data);
    }

    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, CHAR | 0o600, (major, minor), &[]);
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.bytes
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let size = u32::try_from(data.len()).expect("an initramfs file under 4 GiB");
        let name_size = u32::try_from(name.len() + 1).expect("a short name");
        let fields = [
            self.inode, mode, 0, 0, 1, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        self.inode += 1;
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

impl Default for Archive {
    fn default() -> Self {
        Self::new()
    }
}
