//! `/proc/self/mountinfo` lines (`csi_node::mountinfo`).
//!
//! Checks: no panic; memory proportional to the input; at most one entry per line, no
//! field longer than its line; a mount point the kernel escapes (space, tab, newline,
//! backslash as `\ooo`) reads back as the path it was.
#![no_main]

use std::path::Path;

use csi_node::mountinfo::MountTable;
use libfuzzer_sys::fuzz_target;
use stowage_fuzz::{assert_bounded, peak_allocation};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (table, peak) = peak_allocation(|| MountTable::parse(text));
    assert_bounded(peak, text.len(), 64, 4096);
    let entries = table.entries();
    assert!(entries.len() <= text.lines().count());
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    for entry in entries {
        for field in [
            entry.root.as_os_str().len(),
            entry.mount_point.as_os_str().len(),
            entry.source.len(),
            entry.fs_type.len(),
        ] {
            assert!(field <= longest);
        }
    }

    // The whole input as a mount point (absolute, as the kernel's always are) that the
    // kernel escapes on a line of its own.
    let path = format!("/{}", text.replace('\0', ""));
    let line = format!(
        "36 25 0:32 / {} rw,relatime shared:1 - tmpfs tmpfs rw\n",
        escape(&path)
    );
    let table = MountTable::parse(&line);
    assert!(
        table.at(Path::new(&path)).is_some(),
        "{path:?} written as {line:?} is not found"
    );
});

/// As the kernel's `seq_path` writes mountinfo: `\ooo` for space, tab, newline and `\`.
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}
