//! glibc's malloc arenas (`mallopt(3)`).
//!
//! glibc gives a thread that meets a busy arena an arena of its own, up to eight per
//! core, and keeps every arena for the life of the process. A process whose threads
//! come and go (a blocking pool) ends up with one per thread, each holding what it
//! last used: memory that nothing will ask for again.

use std::io;
use std::num::NonZeroU8;

/// Lets the process's threads share at most `arenas` malloc arenas. Arenas that
/// already exist stay, so this belongs before the first thread starts.
#[cfg(target_env = "gnu")]
pub fn limit_arenas(arenas: NonZeroU8) -> io::Result<()> {
    // SAFETY: mallopt takes two integers and touches no memory of ours; M_ARENA_MAX only
    // bounds the arenas created after it.
    let done = unsafe { libc::mallopt(libc::M_ARENA_MAX, libc::c_int::from(arenas.get())) };
    if done != 1 {
        return Err(io::Error::other("mallopt(M_ARENA_MAX) refused"));
    }
    Ok(())
}

/// Other C libraries' allocators have no arenas to limit.
#[cfg(not(target_env = "gnu"))]
pub fn limit_arenas(_arenas: NonZeroU8) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}
