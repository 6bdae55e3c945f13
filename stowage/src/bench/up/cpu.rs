//! Where the CPU went during a run: the CPU time of each process of `stowage up`
//! (its components are its children) and of this benchmark's own client, from
//! `/proc/PID/stat`. On a machine with few cores, the sum says whether the run was
//! waiting for the CPU, and the split says whose work it was.

use std::collections::BTreeMap;
use std::time::Duration;

/// Ticks per second of the utime and stime fields: USER_HZ, fixed at 100 in the
/// kernel's ABI on every architecture Linux exports it for.
const USER_HZ: f64 = 100.0;

/// CPU seconds by component name.
pub type Usage = BTreeMap<String, f64>;

/// The CPU time so far of `root` (`up`), of each of its children, and of this process.
pub fn of_tree(root: u32) -> Usage {
    let mut usage = Usage::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return usage;
    };
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let Some((parent, seconds)) = stat(pid) else {
            continue;
        };
        let name = if pid == root {
            "up (supervisor)".to_string()
        } else if parent == root {
            component_name(pid)
        } else if pid == std::process::id() {
            "benchmark client".to_string()
        } else {
            continue;
        };
        *usage.entry(name).or_default() += seconds;
    }
    usage
}

/// Prints each component's share of the run, largest first.
pub fn report(before: &Usage, after: &Usage, wall: Duration) {
    let mut used: Vec<(&String, f64)> = after
        .iter()
        .map(|(name, seconds)| (name, seconds - before.get(name).copied().unwrap_or(0.0)))
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = used.iter().map(|(_, s)| s).sum();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let wall = wall.as_secs_f64();
    println!(
        "  CPU during the run: {total:.1} s of {:.1} s available ({cores} cores × {wall:.1} s)",
        wall * cores as f64
    );
    for (name, seconds) in used {
        println!(
            "    {name:<18} {seconds:>7.1} s  ({:>3.0} % of a core)",
            100.0 * seconds / wall
        );
    }
}

/// The parent and the user plus system CPU seconds of `pid`.
fn stat(pid: u32) -> Option<(u32, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields are counted after its ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let parent = fields.get(1)?.parse().ok()?;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((parent, (utime + stime) / USER_HZ))
}

/// A child of `up` by its subcommand; the node's provisioner is the one given `--node`.
fn component_name(pid: u32) -> String {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return format!("pid {pid}");
    };
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let subcommand = args
        .iter()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .cloned()
        .unwrap_or_else(|| format!("pid {pid}"));
    if subcommand == "provisioner" && args.iter().any(|a| a == "--node") {
        "node-provisioner".into()
    } else {
        subcommand
    }
}
