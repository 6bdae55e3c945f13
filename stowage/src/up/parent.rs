//! The child's half of `--exit-with-stdin`: a component started by `stowage up`
//! stops when `up` is gone, so no orphan keeps a port, a socket or a mount.

use std::io::Read;
use std::time::Duration;

use nix::sys::signal::{Signal, raise};

/// How long the component has after SIGTERM before this thread ends the process.
const GRACE: Duration = Duration::from_secs(10);

/// Watches stdin on a thread of its own; at end of file (the parent's end of the
/// pipe closed) raises SIGTERM, so the component's own shutdown runs, and exits
/// if that has not ended the process within [`GRACE`].
pub fn exit_with_stdin() {
    let spawned = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(|| {
            drain(std::io::stdin().lock());
            eprintln!("stowage: the parent `stowage up` is gone; stopping");
            let _ = raise(Signal::SIGTERM);
            std::thread::sleep(GRACE);
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        eprintln!("stowage: cannot watch the parent: {e}; exiting");
        std::process::exit(1);
    }
}

/// Reads until end of file or an error; either means the writer is gone.
fn drain(mut input: impl Read) {
    let mut buf = [0u8; 64];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
