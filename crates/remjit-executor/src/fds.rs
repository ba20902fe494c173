//! The descriptors of the process that runs JIT'd code: its own (the controller's socket, the
//! crash-report pipe, memfds of JIT memory and of the call mailbox) are kept at high numbers,
//! as a shell keeps its own, so that the program gets the descriptors a native program would:
//! its first `open` returns 3.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A process's descriptor table starts with room for 64 descriptors. Growing it while
/// several threads share it waits for an RCU grace period (milliseconds: it took 5 ms of a
/// 1,000-module `--link-each` run when the pack file moved to 960), so our own descriptors
/// stay inside it, at its top: from 48 on.
const TABLE_START: u64 = 64;

/// How many of the first table's numbers are kept for our own descriptors.
const OURS: u64 = 16;

/// The lowest number our own descriptors take: 48, or less under a lower limit; `None` when
/// the limit leaves no room.
fn floor() -> Option<libc::c_int> {
    // SAFETY: a zeroed rlimit is valid; getrlimit fills it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit into a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    let high = lim.rlim_cur.min(TABLE_START).checked_sub(OURS)?;
    libc::c_int::try_from(high).ok().filter(|&h| h > 2)
}

/// A close-on-exec duplicate of `fd` at the lowest free number from [`floor`] on, or `None`.
fn duplicate_high(fd: RawFd) -> Option<RawFd> {
    let high = floor()?;
    // SAFETY: fcntl(2) duplicating a descriptor number; a bad one gives EBADF only.
    let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, high) };
    (moved >= 0).then_some(moved)
}

/// `fd` moved to a high number (close-on-exec); `fd` itself when no high number is free.
pub fn out_of_the_way(fd: OwnedFd) -> OwnedFd {
    match duplicate_high(fd.as_raw_fd()) {
        // SAFETY: the duplicate is ours alone; `fd` closes as it drops.
        Some(moved) => unsafe { OwnedFd::from_raw_fd(moved) },
        None => fd,
    }
}

/// Descriptor number `fd`, which this process owns (inherited from its parent), moved to a
/// high number (close-on-exec) and the old number closed: the new number, or `fd` itself,
/// still owned, when it cannot move.
pub fn move_raw_out_of_the_way(fd: RawFd) -> RawFd {
    if fd <= 2 {
        return fd;
    }
    match duplicate_high(fd) {
        Some(moved) => {
            // SAFETY: `fd` is ours (the caller says so) and has a duplicate now.
            unsafe { libc::close(fd) };
            moved
        }
        None => fd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_moves_high_and_closes_on_exec() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let moved = out_of_the_way(OwnedFd::from(file));
        assert!(
            moved.as_raw_fd() >= floor().unwrap(),
            "{}",
            moved.as_raw_fd()
        );
        // SAFETY: fcntl on our own descriptor.
        let flags = unsafe { libc::fcntl(moved.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}
