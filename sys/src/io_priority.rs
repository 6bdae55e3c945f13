//! A thread's I/O scheduling class (`ioprio_set(2)`, `ioprio_get(2)`,
//! `include/uapi/linux/ioprio.h`).
//!
//! The class is the calling thread's own: `IOPRIO_WHO_PROCESS` with id 0 names the
//! calling thread, not its whole process, and a child it starts inherits it. Schedulers
//! that honour classes (mq-deadline, bfq) serve an idle-class request only when no
//! other class has one waiting, so bulk work in the idle class does not sit in front of
//! a small fsync in the disk queue.

use std::io;

/// The I/O scheduling classes of `ioprio.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// No class set: the kernel derives best effort from the CPU nice value.
    None,
    /// Served first.
    RealTime,
    /// The default.
    BestEffort,
    /// Served only when no other class has requests waiting.
    Idle,
}

const IOPRIO_WHO_PROCESS: libc::c_long = 1;
const IOPRIO_CLASS_SHIFT: u32 = 13;
const CALLING_THREAD: libc::c_long = 0;

impl IoClass {
    fn from_number(class: libc::c_long) -> io::Result<Self> {
        match class {
            0 => Ok(Self::None),
            1 => Ok(Self::RealTime),
            2 => Ok(Self::BestEffort),
            3 => Ok(Self::Idle),
            other => Err(io::Error::other(format!("unknown I/O class {other}"))),
        }
    }

    fn number(self) -> libc::c_long {
        match self {
            Self::None => 0,
            Self::RealTime => 1,
            Self::BestEffort => 2,
            Self::Idle => 3,
        }
    }
}

/// Puts the calling thread, and what it starts from now on, in `class` (at level 0,
/// which only the real-time and best-effort classes use).
pub fn set_thread_class(class: IoClass) -> io::Result<()> {
    let priority = class.number() << IOPRIO_CLASS_SHIFT;
    // SAFETY: ioprio_set takes three integers and touches no memory of ours.
    let result = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            CALLING_THREAD,
            priority,
        )
    };
    if result == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's I/O class.
pub fn thread_class() -> io::Result<IoClass> {
    // SAFETY: ioprio_get takes two integers and touches no memory of ours.
    let result = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, CALLING_THREAD) };
    if result == -1 {
        return Err(io::Error::last_os_error());
    }
    IoClass::from_number(result >> IOPRIO_CLASS_SHIFT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_in_the_idle_class_leaves_the_others_in_theirs() -> io::Result<()> {
        let before = thread_class()?;
        assert_ne!(before, IoClass::Idle);
        let in_thread = std::thread::spawn(|| {
            set_thread_class(IoClass::Idle)?;
            thread_class()
        })
        .join()
        .map_err(|_| io::Error::other("thread panicked"))??;
        assert_eq!(in_thread, IoClass::Idle);
        assert_eq!(thread_class()?, before);
        Ok(())
    }

    #[test]
    fn a_program_started_by_an_idle_thread_is_idle_too() -> io::Result<()> {
        let output = std::thread::spawn(|| {
            set_thread_class(IoClass::Idle)?;
            std::process::Command::new("ionice").output()
        })
        .join()
        .map_err(|_| io::Error::other("thread panicked"))??;
        assert!(output.status.success(), "ionice: {output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "idle");
        Ok(())
    }

    #[test]
    fn every_class_reads_back_as_set() -> io::Result<()> {
        for class in [IoClass::BestEffort, IoClass::Idle, IoClass::None] {
            let read = std::thread::spawn(move || {
                set_thread_class(class)?;
                thread_class()
            })
            .join()
            .map_err(|_| io::Error::other("thread panicked"))??;
            assert_eq!(read, class);
        }
        Ok(())
    }
}
