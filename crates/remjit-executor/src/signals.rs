//! The signal state JIT'd code starts with: the dispositions and mask a native program gets.
//!
//! The Rust runtime ignores SIGPIPE in every Rust binary; JIT'd code gets the default back (a
//! program writing into a closed pipe dies, as `yes | head` needs). In the executor, every
//! thread of its own blocks the asynchronous signals, so that process-directed signals (alarm,
//! Ctrl-C, `kill`) reach the thread running JIT'd code; that thread, and the threads it creates,
//! run with the mask the executor started with (empty when remjit spawned it).

use std::sync::OnceLock;

/// Signals the kernel sends to the thread that caused them: never blocked, or a fault in
/// executor code could not report.
const SYNCHRONOUS: [i32; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
];

struct SigSet(libc::sigset_t);
// SAFETY: a plain bit set, only read after initialisation.
unsafe impl Send for SigSet {}
// SAFETY: as above.
unsafe impl Sync for SigSet {}

/// The mask the process started with, recorded by [`block_async_signals`].
static PROGRAM_MASK: OnceLock<SigSet> = OnceLock::new();

/// Gives back the dispositions the host changed: SIGPIPE to its default. Call before any
/// JIT'd code runs.
pub fn restore_program_dispositions() {
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Over TCP: urgent data on the session's socket (one byte the controller sends with
/// `MSG_OOB`) interrupts the running JIT'd code as Ctrl-C would: the thread reading the
/// controller's requests takes it ([`take_urgent_data`]) and sends SIGINT to the process,
/// taken by the thread running JIT'd code (the others block asynchronous signals; sent while
/// none runs, it stays pending). No SIGURG handler and no socket owner: JIT'd code that uses
/// urgent data on sockets of its own sees SIGURG at its default (ignored), as natively.
/// SIGINT ignored (inherited from a shell that started the listener in the background) gets
/// its default back: here it means the controller's Ctrl-C. Returns whether it is set.
pub fn interrupt_on_urgent_data() -> bool {
    // SAFETY: reading and setting SIGINT's disposition (no handler of ours).
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGINT, std::ptr::null(), &mut old);
        if old.sa_sigaction == libc::SIG_IGN {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
        }
    }
    true
}

/// For the only reader of a session's TCP socket, before each read: waits (up to `timeout_ms`,
/// -1 for no bound) until the socket has data or hangs up, meanwhile taking each byte of
/// urgent data as Ctrl-C (SIGINT to the process). Taken here, before a read passes its mark
/// (which would drop it), so none is lost. `Ok(false)`: the time is up.
pub fn take_urgent_data(socket: std::os::fd::RawFd, timeout_ms: i32) -> std::io::Result<bool> {
    loop {
        let mut p = libc::pollfd {
            fd: socket,
            events: libc::POLLIN | libc::POLLPRI | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: poll on one descriptor of the caller's.
        match unsafe { libc::poll(&mut p, 1, timeout_ms) } {
            0 => return Ok(false),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
                continue;
            }
            _ => {}
        }
        if p.revents & libc::POLLPRI == 0 {
            return Ok(true);
        }
        let mut byte = 0u8;
        // SAFETY: receives at most one byte into `byte`, without waiting.
        let n = unsafe {
            libc::recv(
                socket,
                (&raw mut byte).cast(),
                1,
                libc::MSG_OOB | libc::MSG_DONTWAIT,
            )
        };
        if n == 1 {
            // SAFETY: a signal to this process.
            unsafe { libc::kill(libc::getpid(), libc::SIGINT) };
        } else if p.revents & !libc::POLLPRI == 0 {
            // The urgent mark came ahead of its byte: look again shortly.
            std::thread::sleep(std::time::Duration::from_millis(1));
        } else {
            return Ok(true);
        }
    }
}

/// Before a session starts any thread: records the mask JIT'd code will run with, then blocks
/// the asynchronous signals on this thread (and so in every thread started from now on) until
/// [`unblock_async_signals`]. Signals that arrive while no JIT'd code runs wait for it (or for
/// the end of the session).
pub fn block_async_signals() {
    // SAFETY: sigset manipulation on locals, then pthread_sigmask on this thread.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut block);
        for s in SYNCHRONOUS {
            libc::sigdelset(&mut block, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        let _ = PROGRAM_MASK.set(SigSet(old));
    }
}

/// At the end of a session: this thread's mask back to the program's, so that a signal sent
/// meanwhile is delivered. A SIGPIPE our own writes raised (the controller is gone) is dropped.
pub fn unblock_async_signals() {
    let Some(mask) = PROGRAM_MASK.get() else {
        return;
    };
    // SAFETY: sigset manipulation on locals; sigtimedwait with a zero timeout does not block;
    // pthread_sigmask on the calling thread with a valid set.
    unsafe {
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending);
        if libc::sigismember(&pending, libc::SIGPIPE) == 1 {
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            let now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            libc::sigtimedwait(&pipe, std::ptr::null_mut(), &now);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &mask.0, std::ptr::null_mut());
    }
}

/// While alive, the current thread runs with the program's mask; the thread's mask is
/// restored when it drops.
pub struct ProgramMask {
    saved: libc::sigset_t,
    active: bool,
}

impl ProgramMask {
    /// Switches the current thread to the program's mask (no-op when no mask was recorded:
    /// in process, the host's mask is the program's; and when the thread has it already).
    pub fn enter() -> ProgramMask {
        // SAFETY: a zeroed sigset_t is a valid (empty) set.
        let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
        let inactive = |saved| ProgramMask {
            saved,
            active: false,
        };
        let Some(mask) = PROGRAM_MASK.get() else {
            return inactive(saved);
        };
        if IN_PROGRAM_MASK.with(|m| m.replace(true)) {
            return inactive(saved);
        }
        // SAFETY: pthread_sigmask on the calling thread with valid sets.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &mask.0, &mut saved) };
        ProgramMask {
            saved,
            active: true,
        }
    }
}

thread_local! {
    /// Whether a [`ProgramMask`] of this thread is active.
    static IN_PROGRAM_MASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Drop for ProgramMask {
    fn drop(&mut self) {
        if self.active {
            // SAFETY: restores the mask saved by `enter` on the same thread.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.saved, std::ptr::null_mut()) };
            IN_PROGRAM_MASK.with(|m| m.set(false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(sig: i32) -> bool {
        // SAFETY: reads this thread's mask into a local set.
        unsafe {
            let mut now: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut now);
            libc::sigismember(&now, sig) == 1
        }
    }

    #[test]
    fn executor_threads_block_and_jit_code_does_not() {
        // A thread of its own: the test harness's threads keep their masks.
        std::thread::spawn(|| {
            assert!(!blocked(libc::SIGINT));
            block_async_signals();
            assert!(blocked(libc::SIGINT) && blocked(libc::SIGALRM) && blocked(libc::SIGPIPE));
            assert!(
                !blocked(libc::SIGSEGV),
                "faults must reach the crash handler"
            );
            // Threads started now inherit the block; JIT'd code gets the program's mask.
            std::thread::spawn(|| assert!(blocked(libc::SIGTERM)))
                .join()
                .unwrap();
            {
                let _program = ProgramMask::enter();
                assert!(!blocked(libc::SIGINT));
                std::thread::spawn(|| assert!(!blocked(libc::SIGINT)))
                    .join()
                    .unwrap();
                // Entered again (a call inside a call): leaving the inner one keeps the
                // program's mask until the outer one goes.
                drop(ProgramMask::enter());
                assert!(!blocked(libc::SIGINT));
            }
            assert!(blocked(libc::SIGINT));
            unblock_async_signals();
            assert!(!blocked(libc::SIGINT));
        })
        .join()
        .unwrap();
    }
}
