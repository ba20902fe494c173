//! The call mailbox: a page of shared memory through which remjit calls its own executor's hot
//! services (finalize, call, release) without a socket round trip.
//!
//! It exists only with remjit's executor over a unix socket with shared JIT memory: the
//! executor creates a memfd for it on [`OPEN`] and passes it with the reply. Everything else,
//! and every call whose arguments do not fit, still goes over the SimpleRemoteEPC socket.
//!
//! One call at a time. The controller writes the service's tag, the argument length and the
//! SPS arguments, then sets the state word to [`REQUEST`]; the executor's mailbox thread runs
//! the service, writes the result the same way and sets [`REPLY`]; the controller copies it
//! out and sets [`EMPTY`]. Each side waits by spinning briefly (the other side is usually busy
//! on the other core for a few microseconds) and then in `FUTEX_WAIT` with a timeout, so that
//! every wait stays bounded and the waiter can look whether its peer is still there; a side
//! about to sleep says so, and only then does the other side pay for `FUTEX_WAKE`.
//!
//! Both sides treat the page as hostile: lengths are checked against the capacity and the
//! bytes are copied out before they are decoded.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `Expected<u64>(u64 size)`: the executor creates a mailbox of [`SIZE`] bytes (the size
/// asked for must be that), starts its thread, and passes the memfd with the reply.
pub const OPEN: &str = "__remjit_call_mailbox_open_wrapper";

/// `seq<Bytes>(seq<(u64 tag, Bytes args)>)`: runs the calls in order, each as if it had come
/// alone through the mailbox (only [`SERVICES`]; a batch in a batch is refused), and answers
/// with their results in order. The controller sends calls it posted while the executor was
/// still busy this way, in one exchange.
pub const BATCH: &str = "__remjit_call_mailbox_batch";

/// Services the mailbox serves: the hot ones, whose results are small. Anything else is
/// refused there (and sent over the socket by the controller).
pub const SERVICES: &[&str] = &[
    crate::names::SHM_INITIALIZE,
    crate::names::SHM_DEINITIALIZE,
    crate::names::SHM_RELEASE,
    crate::names::REMJIT_RUN_MAIN,
    crate::names::REMJIT_SET_ARGS,
    crate::names::REMJIT_RUN_EXIT,
    crate::names::RUN_AS_VOID,
    crate::names::RUN_AS_INT,
    crate::names::REMJIT_CALL,
    crate::names::REMJIT_WRITE_MEMORY,
];

/// Size of the shared mapping.
pub const SIZE: usize = 256 << 10;
/// Where the argument and result bytes start.
const DATA: usize = 64;
/// Most argument or result bytes a call can carry.
pub const CAPACITY: usize = SIZE - DATA;

/// Nothing posted: the controller may write a request.
pub const EMPTY: u32 = 0;
/// A request is there for the executor.
pub const REQUEST: u32 = 1;
/// A result is there for the controller.
pub const REPLY: u32 = 2;

/// The length word of a result that did not fit (the call ran; its result is lost).
pub const TOO_LONG: u64 = u64::MAX;

/// Seals the mailbox's memfd carries: its size is fixed for good, so that neither side can make
/// the other's accesses fault by shrinking it.
const SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// Creates the mailbox's memory (the executor): a sealed memfd of [`SIZE`] bytes, and its
/// mapping here.
pub fn create() -> std::io::Result<(OwnedFd, *mut u8)> {
    let os = std::io::Error::last_os_error;
    // SAFETY: memfd_create with a constant name.
    let fd = unsafe {
        libc::memfd_create(
            c"remjit-calls".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(os());
    }
    // SAFETY: a descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sizing and sealing our own memfd.
    unsafe {
        if libc::ftruncate(fd.as_raw_fd(), SIZE as libc::off_t) != 0
            || libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) != 0
        {
            return Err(os());
        }
    }
    let page = map(fd.as_fd())?;
    Ok((fd, page))
}

/// Maps the mailbox's memory read-write (both sides), after checking that it is [`SIZE`]
/// bytes and sealed so (a peer's memfd is hostile as the rest of its input).
pub fn map(fd: BorrowedFd<'_>) -> std::io::Result<*mut u8> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    // SAFETY: fstat and F_GET_SEALS into locals, then a fresh shared mapping of the file.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if st.st_size != SIZE as libc::off_t {
            return Err(bad("the call mailbox's memory is not of the agreed size"));
        }
        let seals = libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS);
        if seals < 0 || seals & SEALS != SEALS {
            return Err(bad(
                "the call mailbox's memory is not sealed against resizing",
            ));
        }
        let p = libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(p.cast())
    }
}

/// Unmaps what [`create`] or [`map`] mapped.
///
/// # Safety
/// `page` must be such a mapping, no longer used.
pub unsafe fn unmap(page: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe { libc::munmap(page.cast(), SIZE) };
}

/// The header at the start of the page.
#[repr(C)]
struct Header {
    /// The futex word: [`EMPTY`], [`REQUEST`] or [`REPLY`].
    state: AtomicU32,
    /// The executor is (about to be) asleep on `state`.
    executor_sleeps: AtomicU32,
    /// The controller is (about to be) asleep on `state`.
    controller_sleeps: AtomicU32,
    _pad: u32,
    /// The service's tag (requests).
    tag: AtomicU64,
    /// Argument or result bytes that follow.
    len: AtomicU64,
}

/// Which side of the mailbox this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// remjit.
    Controller,
    /// remjit-executor.
    Executor,
}

/// Why a wait ended without what it waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupted {
    /// The liveness check said to give up, with its reason.
    Gone(String),
}

/// A mapping of the mailbox page (not owned: the creator unmaps it).
pub struct Mailbox {
    base: *mut u8,
    side: Side,
}

// SAFETY: the page is shared memory accessed through atomics (header) and copies (data); one
// call at a time is the callers' discipline (a controller-side lock, one executor thread).
unsafe impl Send for Mailbox {}
// SAFETY: as above.
unsafe impl Sync for Mailbox {}

impl Mailbox {
    /// The mailbox at `base`.
    ///
    /// # Safety
    /// `base` must be a page-aligned shared mapping of at least [`SIZE`] bytes, readable and
    /// writable, that outlives the `Mailbox`.
    pub unsafe fn new(base: *mut u8, side: Side) -> Mailbox {
        Mailbox { base, side }
    }

    fn header(&self) -> &Header {
        // SAFETY: `new`'s contract: the page is mapped and aligned; Header is atomics only.
        unsafe { &*(self.base as *const Header) }
    }

    /// The current state word (whatever the peer wrote).
    pub fn state(&self) -> u32 {
        self.header().state.load(Ordering::SeqCst)
    }

    /// Posts a message: `tag`, then `bytes`, then the state (the peer is woken if it sleeps).
    /// `false` when the bytes do not fit: nothing was posted.
    pub fn post(&self, state: u32, tag: u64, bytes: &[u8]) -> bool {
        if bytes.len() > CAPACITY {
            return false;
        }
        let h = self.header();
        // SAFETY: DATA..DATA + len lies in the mapping; the peer does not read it before the
        // state below says so.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(DATA), bytes.len());
        }
        h.tag.store(tag, Ordering::Relaxed);
        h.len.store(bytes.len() as u64, Ordering::Relaxed);
        self.set_state(state);
        true
    }

    /// Posts a result that did not fit: the state says [`REPLY`], the length [`TOO_LONG`].
    pub fn post_too_long(&self) {
        self.header().len.store(TOO_LONG, Ordering::Relaxed);
        self.set_state(REPLY);
    }

    /// Sets the state word and wakes the peer if it said it sleeps.
    pub fn set_state(&self, state: u32) {
        let h = self.header();
        h.state.store(state, Ordering::SeqCst);
        let peer = match self.side {
            Side::Controller => &h.executor_sleeps,
            Side::Executor => &h.controller_sleeps,
        };
        if peer.load(Ordering::SeqCst) != 0 {
            self.wake();
        }
    }

    /// Wakes whoever sleeps on the state word (also to make a waiter look at its liveness
    /// check at once).
    pub fn wake(&self) {
        // SAFETY: FUTEX_WAKE on the state word of our mapping.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                &self.header().state as *const AtomicU32,
                libc::FUTEX_WAKE,
                i32::MAX,
            )
        };
    }

    /// The message posted: (tag, bytes copied out), or `Err(len)` when its length word is
    /// beyond the capacity (a hostile or broken peer, or [`TOO_LONG`]).
    pub fn take(&self) -> Result<(u64, Vec<u8>), u64> {
        let h = self.header();
        let tag = h.tag.load(Ordering::Relaxed);
        let len = h.len.load(Ordering::Relaxed);
        if len > CAPACITY as u64 {
            return Err(len);
        }
        let mut out = vec![0u8; len as usize];
        // SAFETY: DATA..DATA + len lies in the mapping (checked above).
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(DATA), out.as_mut_ptr(), out.len()) };
        Ok((tag, out))
    }

    /// Waits until the state is `want`: spins up to `spin`, then sleeps in ticks of `tick`,
    /// asking `alive` after each (it returns why to give up, if it should).
    pub fn wait_for(
        &self,
        want: u32,
        spin: Duration,
        tick: Duration,
        mut alive: impl FnMut() -> Result<(), String>,
    ) -> Result<(), Interrupted> {
        if self.spin_for(want, spin) {
            return Ok(());
        }
        self.sleep_for(want, tick, &mut alive)
    }

    /// Spins up to `spin` until the state is `want`; whether it came.
    pub fn spin_for(&self, want: u32, spin: Duration) -> bool {
        let h = self.header();
        spin_until(spin, || {
            (h.state.load(Ordering::Acquire) == want).then_some(())
        })
        .is_some()
    }

    fn sleep_for(
        &self,
        want: u32,
        tick: Duration,
        alive: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), Interrupted> {
        let h = self.header();
        let mine = match self.side {
            Side::Controller => &h.controller_sleeps,
            Side::Executor => &h.executor_sleeps,
        };
        let ts = libc::timespec {
            tv_sec: tick.as_secs() as libc::time_t,
            tv_nsec: tick.subsec_nanos() as libc::c_long,
        };
        let result = loop {
            mine.store(1, Ordering::SeqCst);
            let seen = h.state.load(Ordering::SeqCst);
            if seen == want {
                break Ok(());
            }
            // SAFETY: FUTEX_WAIT on the state word of our mapping, while it still holds `seen`,
            // for at most `tick`.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    &h.state as *const AtomicU32,
                    libc::FUTEX_WAIT,
                    seen,
                    &ts as *const libc::timespec,
                )
            };
            if h.state.load(Ordering::SeqCst) == want {
                break Ok(());
            }
            if let Err(why) = alive() {
                break Err(Interrupted::Gone(why));
            }
        };
        mine.store(0, Ordering::SeqCst);
        result
    }
}

/// Looks with `poll` until it gives a value, for at most `limit`: what it gave, or `None` when
/// the time ran out. Between looks it spins, and every 64 looks it yields its core: the peer
/// may be waiting for this very core (two cores, several busy processes); measured, yielding
/// between looks is much faster then, and costs little otherwise.
pub fn spin_until<T>(limit: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    let mut n = 0u32;
    loop {
        if let Some(v) = poll() {
            return Some(v);
        }
        n = n.wrapping_add(1);
        if n.is_multiple_of(64) {
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::yield_now();
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sides over one anonymous mapping, one on another thread.
    fn page() -> *mut u8 {
        // SAFETY: a fresh anonymous shared mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p.cast()
    }

    #[test]
    fn request_and_reply_cross_with_and_without_sleeping() {
        let p = page() as usize;
        // SAFETY: the mapping lives for the whole test (never unmapped).
        let ctl = unsafe { Mailbox::new(p as *mut u8, Side::Controller) };
        let server = std::thread::spawn(move || {
            // SAFETY: as above.
            let ex = unsafe { Mailbox::new(p as *mut u8, Side::Executor) };
            for _ in 0..2 {
                let ok = || Ok(());
                ex.wait_for(REQUEST, Duration::ZERO, Duration::from_millis(5), ok)
                    .unwrap();
                let (tag, mut bytes) = ex.take().unwrap();
                bytes.reverse();
                assert!(ex.post(REPLY, tag + 1, &bytes));
            }
        });
        for (i, msg) in [&b"abc"[..], &b""[..]].iter().enumerate() {
            // The second request comes after the server went to sleep.
            std::thread::sleep(Duration::from_millis(20 * i as u64));
            assert!(ctl.post(REQUEST, 7, msg));
            ctl.wait_for(
                REPLY,
                Duration::from_micros(50),
                Duration::from_millis(5),
                || Ok(()),
            )
            .unwrap();
            let (tag, back) = ctl.take().unwrap();
            assert_eq!(tag, 8);
            assert_eq!(back, msg.iter().rev().copied().collect::<Vec<u8>>());
            ctl.set_state(EMPTY);
        }
        server.join().unwrap();
    }

    #[test]
    fn lengths_beyond_the_capacity_are_refused() {
        // SAFETY: a mapping never unmapped.
        let mb = unsafe { Mailbox::new(page(), Side::Executor) };
        assert!(!mb.post(REPLY, 1, &vec![0u8; CAPACITY + 1]));
        mb.header().len.store(CAPACITY as u64 + 1, Ordering::SeqCst);
        assert_eq!(mb.take(), Err(CAPACITY as u64 + 1));
        mb.post_too_long();
        assert_eq!(mb.take(), Err(TOO_LONG));
        assert!(mb.post(REPLY, 1, &vec![9u8; CAPACITY]));
        assert_eq!(mb.take().unwrap().1.len(), CAPACITY);
    }

    #[test]
    fn only_a_sealed_page_of_the_agreed_size_is_mapped() {
        let (fd, page) = create().unwrap();
        let other = map(fd.as_fd()).unwrap();
        // SAFETY: both mappings are ours and unused from here.
        unsafe {
            *page = 7;
            assert_eq!(*other, 7);
            unmap(page);
            unmap(other);
        }
        // SAFETY: a fresh memfd of our own, sized but not sealed.
        let plain = unsafe {
            let fd = libc::memfd_create(c"t".as_ptr(), libc::MFD_CLOEXEC);
            assert!(fd >= 0 && libc::ftruncate(fd, SIZE as libc::off_t) == 0);
            OwnedFd::from_raw_fd(fd)
        };
        let e = map(plain.as_fd()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the call mailbox's memory is not sealed against resizing"
        );
        // SAFETY: shrinking our own unsealed memfd.
        unsafe { libc::ftruncate(plain.as_raw_fd(), 4096) };
        let e = map(plain.as_fd()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the call mailbox's memory is not of the agreed size"
        );
    }

    #[test]
    fn a_wait_ends_when_the_liveness_check_says_so() {
        // SAFETY: a mapping never unmapped.
        let mb = unsafe { Mailbox::new(page(), Side::Controller) };
        let mut asked = 0;
        let r = mb.wait_for(REPLY, Duration::ZERO, Duration::from_millis(2), || {
            asked += 1;
            if asked == 3 {
                Err("peer gone".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err(Interrupted::Gone("peer gone".into())));
        assert_eq!(asked, 3);
    }
}
