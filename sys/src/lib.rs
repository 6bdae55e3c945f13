//! Safe wrappers for the few Linux system calls that neither nix nor rustix wraps.
//!
//! This is the one crate of the workspace allowed `unsafe`: each wrapper is a single
//! system call whose arguments are plain integers, encoded as the kernel's uapi header
//! says, so the unsafety is the call itself and nothing is borrowed across it.
#![deny(missing_docs)]

pub mod allocator;
pub mod io_priority;
