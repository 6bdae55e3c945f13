//! Host programs (the e2fsprogs tools, `xfs_quota`) run with their exit status checked
//! and their stderr kept apart from it: nothing downstream parses a tool's text to decide
//! what happened.

use std::ffi::OsStr;
use std::fmt;
use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

/// A host program and the Debian package that installs it (named when it is missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// The executable, looked up on `PATH`.
    pub name: &'static str,
    /// The package to install when the executable is missing.
    pub package: &'static str,
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// `mkfs.ext4`.
pub const MKFS_EXT4: Program = e2fsprogs("mkfs.ext4");
/// `e2fsck`.
pub const E2FSCK: Program = e2fsprogs("e2fsck");
/// `resize2fs`.
pub const RESIZE2FS: Program = e2fsprogs("resize2fs");

const fn e2fsprogs(name: &'static str) -> Program {
    Program {
        name,
        package: "e2fsprogs",
    }
}

/// A run of a program that ended badly: the program, its exit status (`None` when a
/// signal ended it) and what it wrote on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFailure {
    /// The program that failed.
    pub program: &'static str,
    /// Its exit code; `None` if a signal killed it.
    pub status: Option<i32>,
    /// Its stderr, trimmed, for the message only.
    pub stderr: String,
}

impl std::error::Error for ToolFailure {}

impl fmt::Display for ToolFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(code) => write!(f, "{} exited {code}: {}", self.program, self.stderr),
            None => write!(f, "{} was killed: {}", self.program, self.stderr),
        }
    }
}

/// Why running a program did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program is not on `PATH`.
    #[error("{} is not installed (Debian package {})", .0.name, .0.package)]
    NotInstalled(Program),
    /// The program could not be started for another reason.
    #[error("run {program}: {source}")]
    Spawn {
        /// The program that did not start.
        program: &'static str,
        /// Why `exec` failed.
        source: std::io::Error,
    },
    /// The program ran and reported failure.
    #[error(transparent)]
    Failed(#[from] ToolFailure),
}

/// Runs `program` with `args`, waits for it, and succeeds only on exit status 0.
pub fn run<I, S>(program: Program, args: I) -> Result<(), ToolError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(program.name)
        .args(args)
        .output()
        .map_err(|source| match source.kind() {
            ErrorKind::NotFound => ToolError::NotInstalled(program),
            _ => ToolError::Spawn {
                program: program.name,
                source,
            },
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(ToolFailure {
        program: program.name,
        status: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
    .into())
}

/// The e2fsprogs steps the controller (images) and the node plugin (loop devices) take
/// on an ext4 filesystem in a file or on a device.
pub mod e2fs {
    use super::*;

    /// Makes an empty ext4 filesystem filling `path`, `size` bytes: no reserved blocks
    /// (a volume is one tenant's), no discard, inode tables and journal zeroed lazily by
    /// the kernel, and group descriptor blocks reserved for online growth to
    /// [`GROWTH_RESERVED`] times the size rather than mke2fs's 1,024 times: mke2fs zeroes
    /// the reserved blocks, 4 MiB of writes for any image of 4 GiB or more, where the
    /// whole filesystem is otherwise a few hundred KiB. Growth past it is still online:
    /// the kernel turns the filesystem to `meta_bg` when the reserved blocks run out.
    pub fn mkfs(path: &Path, size: u64) -> Result<(), ToolError> {
        let options = format!(
            "nodiscard,lazy_itable_init=1,lazy_journal_init=1,resize={}",
            growth_blocks(size)
        );
        run(
            MKFS_EXT4,
            [
                OsStr::new("-F"),
                OsStr::new("-q"),
                OsStr::new("-m"),
                OsStr::new("0"),
                OsStr::new("-E"),
                OsStr::new(&options),
                path.as_os_str(),
            ],
        )
    }

    /// How many times its size an image's filesystem can grow online into reserved
    /// group descriptor blocks, where mke2fs picks 4 KiB blocks (512 MiB and more); a
    /// smaller one, with 1 KiB blocks, a quarter of that.
    pub const GROWTH_RESERVED: u64 = 64;

    /// mke2fs's `resize=`, in filesystem blocks (counted in 4 KiB blocks), at most the
    /// 2^32 blocks of its limit.
    pub(crate) fn growth_blocks(size: u64) -> u64 {
        (size / 4096)
            .saturating_mul(GROWTH_RESERVED)
            .clamp(1, u64::from(u32::MAX))
    }

    /// Grows the ext4 filesystem on `path` to the size of its file or device. Mounted,
    /// the kernel grows it online (which needs CAP_SYS_RESOURCE); at the same size it
    /// does nothing.
    pub fn resize(path: &Path) -> Result<(), ToolError> {
        run(RESIZE2FS, [path])
    }

    /// Grows an unmounted ext4 filesystem: resize2fs refuses one not checked since it
    /// was last mounted, so a forced check (`-f -p`: fix only what is safe) comes first.
    pub fn grow_offline(path: &Path) -> Result<(), ToolError> {
        run(
            E2FSCK,
            [OsStr::new("-f"), OsStr::new("-p"), path.as_os_str()],
        )?;
        resize(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_judged_by_its_exit_status() {
        let missing = Program {
            name: "stowage-no-such-program",
            package: "none",
        };
        let sh = Program {
            name: "sh",
            package: "dash",
        };
        type Row = (&'static str, Program, &'static [&'static str], &'static str);
        let rows: &[Row] = &[
            ("exit 0 is success", sh, &["-c", "echo noise >&2"], "ok"),
            (
                "a non-zero exit is a failure with status and stderr",
                sh,
                &["-c", "echo Permission denied >&2; exit 3"],
                "sh exited 3: Permission denied",
            ),
            (
                "a signal is a failure without status",
                sh,
                &["-c", "kill -9 $$"],
                "sh was killed: ",
            ),
            (
                "a missing program names its package",
                missing,
                &[],
                "stowage-no-such-program is not installed (Debian package none)",
            ),
        ];
        for (name, program, args, want) in rows {
            let got = match run(*program, args.iter()) {
                Ok(()) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn a_failure_keeps_its_parts_apart() {
        let sh = Program {
            name: "sh",
            package: "dash",
        };
        match run(sh, ["-c", "echo bad >&2; exit 8"]) {
            Err(ToolError::Failed(failure)) => assert_eq!(
                failure,
                ToolFailure {
                    program: "sh",
                    status: Some(8),
                    stderr: "bad".into()
                }
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn growth_is_reserved_for_the_size_times_the_factor_within_mke2fs_limits() {
        for (size, want) in [
            (32 << 20, 32 * 256 * e2fs::GROWTH_RESERVED),
            (8 << 30, 8 * 1024 * 256 * e2fs::GROWTH_RESERVED),
            (0, 1),
            (1 << 50, u64::from(u32::MAX)),
        ] {
            assert_eq!(e2fs::growth_blocks(size), want, "{size} bytes");
        }
    }

    #[test]
    fn a_large_image_is_made_with_a_few_hundred_kib_of_writes() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("v.img");
        let size = 8 << 30;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size))
            .expect("a sparse image");
        e2fs::mkfs(&image, size).expect("mkfs");
        let written = std::fs::metadata(&image).expect("stat").blocks() * 512;
        // mke2fs's own reservation (1,024x) zeroes 4 MiB of descriptor blocks here.
        assert!(written < 1 << 20, "mkfs wrote {written} bytes");
        let out = std::process::Command::new("dumpe2fs")
            .arg("-h")
            .arg(&image)
            .output()
            .expect("dumpe2fs");
        let header = String::from_utf8_lossy(&out.stdout);
        assert!(
            header
                .lines()
                .any(|l| l.starts_with("Filesystem features:") && l.contains("resize_inode")),
            "online growth keeps its reserved blocks: {header}"
        );
    }
}
