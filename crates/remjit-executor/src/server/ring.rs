//! The executor's end of the call mailbox ([`remjit_wire::ring`]): a thread of its own that
//! serves the hot calls posted in shared memory, with the same services, checks and signal
//! masks as calls over the socket. It runs JIT'd code (constructors, `main`) itself, so it has
//! a main-sized stack and the crash handler's alternate stack.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use remjit_wire::ring::{self, Mailbox, Side, CAPACITY, REPLY, REQUEST, SIZE};
use remjit_wire::sps::{Bytes, Expected, Sps, SpsError};

use super::services::{Kind, Services};
use crate::signals::ProgramMask;

/// How long the mailbox thread spins for the next call after answering one: the controller's
/// next call (the next link's finalize, the call after a finalize) usually comes within that.
const SPIN: Duration = Duration::from_micros(200);
/// How long no call must come before the thread uses its idle time (a call right after a
/// finalize comes sooner).
const QUIET: Duration = Duration::from_micros(5);
/// Between looks at whether the session is over, while asleep.
const TICK: Duration = Duration::from_millis(500);

/// The addresses of these give the mailbox's own tags: a static has one address (a function
/// may have several copies, one per code unit that uses it).
static OPEN_TAG: u8 = 0;
static BATCH_TAG: u8 = 0;

/// The tag the mailbox is opened with (a bootstrap symbol).
pub fn open_tag() -> u64 {
    &OPEN_TAG as *const u8 as u64
}

/// The tag of [`remjit_wire::ring::BATCH`] (served by the mailbox thread itself).
pub fn batch_tag() -> u64 {
    &BATCH_TAG as *const u8 as u64
}

/// An open mailbox: its thread ends (and unmaps the page) once told to stop.
pub struct Handle {
    stop: Arc<AtomicBool>,
    mailbox: Arc<Mailbox>,
}

impl Handle {
    /// Ends the mailbox thread (at once when idle, after the call it runs otherwise).
    pub fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.mailbox.wake();
    }
}

/// Opens the session's mailbox: the reply (`Expected<u64>`, the mapping size) and the memfd it
/// must carry. Only over a unix socket (`socket`), once per session.
pub fn open(
    services: &Arc<Services>,
    args: &[u8],
    socket: bool,
    open: &mut Option<Handle>,
) -> (Vec<u8>, Option<RawFd>) {
    let r = if u64::from_bytes(args).ok() != Some(SIZE as u64) {
        Err(format!(
            "the call mailbox takes its size, {SIZE}, as argument"
        ))
    } else if !socket {
        Err("the call mailbox needs a unix socket to pass its memory".to_string())
    } else if open.is_some() {
        Err("the call mailbox is open already".to_string())
    } else {
        start(services.clone())
    };
    match r {
        Ok((handle, fd)) => {
            *open = Some(handle);
            (Expected(Ok(SIZE as u64)).to_bytes(), Some(fd))
        }
        Err(e) => (Expected::<u64>(Err(e)).to_bytes(), None),
    }
}

fn start(services: Arc<Services>) -> Result<(Handle, RawFd), String> {
    let (fd, page) =
        ring::create().map_err(|e| format!("call mailbox: cannot create its memory: {e}"))?;
    let fd = crate::fds::out_of_the_way(fd);
    // SAFETY: a fresh SIZE-byte shared mapping, unmapped only by the thread below when it ends.
    let mailbox = Arc::new(unsafe { Mailbox::new(page, Side::Executor) });
    let stop = Arc::new(AtomicBool::new(false));
    let raw = fd.as_raw_fd();
    let (mb, st) = (mailbox.clone(), stop.clone());
    let page = page as usize;
    std::thread::Builder::new()
        .name("remjit-mailbox".into())
        .stack_size(super::CALL_STACK)
        .spawn(move || {
            serve(&mb, &services, &st);
            drop(fd);
            // SAFETY: our mapping; the session is over and nothing else uses it (the handle
            // only wakes the futex word, before it is told to stop).
            unsafe { ring::unmap(page as *mut u8) };
        })
        .map_err(|e| format!("call mailbox: cannot start its thread: {e}"))?;
    Ok((Handle { stop, mailbox }, raw))
}

/// Answers calls until the session ends.
fn serve(mb: &Mailbox, services: &Services, stop: &AtomicBool) {
    // JIT'd code runs here: the crash handler needs a stack of its own.
    let _alt = crate::crash::AltStack::new();
    let alive = || match stop.load(Ordering::SeqCst) {
        true => Err("the session is over".to_string()),
        false => Ok(()),
    };
    let owner = std::process::id();
    // The program's signal mask, entered for the first call that runs JIT'd code and kept
    // while calls keep coming (two system calls less per call); asleep, the thread blocks
    // asynchronous signals as the executor's other threads do.
    let mut mask = None;
    loop {
        if !mb.spin_for(REQUEST, SPIN) {
            mask = None;
            if mb.wait_for(REQUEST, Duration::ZERO, TICK, alive).is_err() {
                return;
            }
        }
        let out = match mb.take() {
            Ok((tag, args)) => call(services, tag, &args, &mut mask),
            Err(len) => SpsError(Some(format!(
                "protocol violation: a call mailbox request of {len} bytes (at most {CAPACITY})"
            )))
            .to_bytes(),
        };
        leave_if_forked(owner, &out);
        if !mb.post(REPLY, 0, &out) {
            mb.post_too_long();
        }
        // Idle time (no call follows at once): give the controller pages ahead.
        if super::shm::ahead_pending() && !mb.spin_for(REQUEST, QUIET) {
            super::shm::allocate_ahead(services);
        }
    }
}

/// After a call that ran JIT'd code: in a process the code forked (`owner` is the executor's
/// pid), the child returned from the call (from `main`, say) and must not answer the
/// controller, nor serve it: it exits as a native child returning from `main` does, with
/// `main`'s status when `out` is one.
pub(crate) fn leave_if_forked(owner: u32, out: &[u8]) {
    if std::process::id() == owner {
        return;
    }
    let status = match i64::from_bytes(out) {
        Ok(s) if out.len() == 8 => s as i32,
        _ => 0,
    };
    // SAFETY: exit(3) as the forked program's own return from main would call it.
    unsafe { libc::exit(status) };
}

/// Runs the call at `tag`: a batch of calls, or one service the mailbox serves.
fn call(services: &Services, tag: u64, args: &[u8], mask: &mut Option<ProgramMask>) -> Vec<u8> {
    if tag != batch_tag() {
        return call_one(services, tag, args, mask);
    }
    let calls = match Vec::<(u64, Bytes)>::from_bytes(args) {
        Ok(c) => c,
        Err(e) => return SpsError(Some(format!("call mailbox batch: {e}"))).to_bytes(),
    };
    let owner = std::process::id();
    let results: Vec<Bytes> = calls
        .iter()
        .map(|(tag, args)| {
            let out = call_one(services, *tag, &args.0, mask);
            // A process JIT'd code forked leaves here, as after a call alone.
            leave_if_forked(owner, &out);
            Bytes(out)
        })
        .collect();
    results.to_bytes()
}

/// Runs the service at `tag`, when the mailbox serves it, as the socket loop would (calls that
/// run JIT'd code with the program's signal mask).
fn call_one(services: &Services, tag: u64, args: &[u8], mask: &mut Option<ProgramMask>) -> Vec<u8> {
    let refuse = |msg: String| SpsError(Some(msg)).to_bytes();
    match services.lookup(tag) {
        Some((handler, kind, name)) if ring::SERVICES.contains(&name) => {
            if kind != Kind::Quick && mask.is_none() {
                *mask = Some(ProgramMask::enter());
            }
            handler(services, args)
        }
        Some((_, _, name)) => refuse(format!(
            "{name} is not served through the call mailbox; call it over the socket"
        )),
        None => refuse(format!("no service at {tag:#x} in this executor")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remjit_wire::names;
    use remjit_wire::ring::EMPTY;
    use remjit_wire::sps::Sps;

    /// A mailbox served by this process's executor services, and the controller's view of it.
    fn open_here() -> (Arc<Services>, Handle, Mailbox) {
        let services = Arc::new(Services::new());
        let mut handle = None;
        let (out, fd) = open(&services, &(SIZE as u64).to_bytes(), true, &mut handle);
        assert_eq!(
            Expected::<u64>::from_bytes(&out).unwrap().0,
            Ok(SIZE as u64)
        );
        // SAFETY: the mailbox's memfd stays open while its thread runs (past this test).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.unwrap()) };
        let page = ring::map(fd).unwrap();
        // SAFETY: a mailbox mapping never unmapped.
        let mb = unsafe { Mailbox::new(page, Side::Controller) };
        (services, handle.unwrap(), mb)
    }

    fn tag(services: &Services, name: &str) -> u64 {
        services.symbols.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// Posts a request (or only a length word) and returns the result bytes.
    fn ask(mb: &Mailbox, tag: u64, args: &[u8]) -> Vec<u8> {
        assert!(mb.post(REQUEST, tag, args));
        let ok = || Ok(());
        mb.wait_for(REPLY, SPIN, TICK, ok).unwrap();
        let out = mb.take().unwrap().1;
        mb.set_state(EMPTY);
        out
    }

    fn error_text(bytes: &[u8]) -> String {
        SpsError::from_bytes(bytes).unwrap().0.unwrap()
    }

    /// A batch runs its calls in order with the checks of calls sent alone; one refused call
    /// does not stop the others, a batch inside a batch is refused, and a malformed batch is
    /// refused whole.
    #[test]
    fn a_batch_answers_each_call_as_alone() {
        let (services, handle, mb) = open_here();
        let set_args = tag(&services, names::REMJIT_SET_ARGS);
        let reserve = tag(&services, names::MEMORY_MANAGER_RESERVE);
        let args = vec!["prog".to_string(), "one".to_string()].to_bytes();
        let inner = vec![(set_args, Bytes(args.clone()))].to_bytes();
        let calls = vec![
            (set_args, Bytes(args.clone())),
            (reserve, Bytes(Vec::new())),
            (batch_tag(), Bytes(inner)),
            (set_args, Bytes(vec![9])),
            (set_args, Bytes(args.clone())),
        ];
        let out = ask(&mb, batch_tag(), &calls.to_bytes());
        let results = Vec::<Bytes>::from_bytes(&out).unwrap();
        let alone: Vec<Vec<u8>> = vec![
            ask(&mb, set_args, &args),
            ask(&mb, reserve, &[]),
            SpsError(Some(format!(
                "no service at {:#x} in this executor",
                batch_tag()
            )))
            .to_bytes(),
            ask(&mb, set_args, &[9]),
            ask(&mb, set_args, &args),
        ];
        assert_eq!(
            results.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
            alone
        );
        assert_eq!(results[0].0, SpsError(None).to_bytes(), "the good ones ran");
        assert!(error_text(&results[3].0).starts_with("set_program_args: malformed"));
        assert_eq!(
            error_text(&ask(&mb, batch_tag(), &[1, 2, 3])),
            "call mailbox batch: bad SPS data: needs 8 bytes, 3 left"
        );
        drop(handle);
    }

    #[test]
    fn mailbox_calls_are_checked_like_socket_calls() {
        let (services, handle, mb) = open_here();
        assert_eq!(
            error_text(&ask(&mb, 0x1234, &[])),
            "no service at 0x1234 in this executor"
        );
        let reserve = tag(&services, names::MEMORY_MANAGER_RESERVE);
        assert_eq!(
            error_text(&ask(&mb, reserve, &[])),
            format!(
                "{} is not served through the call mailbox; call it over the socket",
                names::MEMORY_MANAGER_RESERVE
            )
        );
        // Calls into memory this executor never handed out are refused, as over the socket.
        let run_main = tag(&services, names::REMJIT_RUN_MAIN);
        let main_addr = open_tag();
        assert_eq!(
            ask(&mb, run_main, &main_addr.to_bytes()),
            (-1i64).to_bytes()
        );
        assert_eq!(ask(&mb, run_main, &[1, 2]), (-1i64).to_bytes());
        let set_args = tag(&services, names::REMJIT_SET_ARGS);
        assert!(error_text(&ask(&mb, set_args, &[9])).starts_with("set_program_args: malformed"));
        // A length word beyond the page (written before the state says REQUEST: the
        // mailbox thread must not take the request half made).
        assert!(mb.post(EMPTY, set_args, &[]));
        mb.post_too_long();
        mb.set_state(REQUEST);
        let ok = || Ok(());
        mb.wait_for(REPLY, SPIN, TICK, ok).unwrap();
        assert_eq!(
            error_text(&mb.take().unwrap().1),
            format!(
                "protocol violation: a call mailbox request of {} bytes (at most {CAPACITY})",
                u64::MAX
            )
        );
        mb.set_state(EMPTY);
        // Still serving.
        assert_eq!(
            SpsError::from_bytes(&ask(&mb, set_args, &vec!["x".to_string()].to_bytes())).unwrap(),
            SpsError(None)
        );
        handle.close();
    }

    #[test]
    fn a_second_mailbox_or_one_without_a_unix_socket_is_refused() {
        let services = Arc::new(Services::new());
        let size = (SIZE as u64).to_bytes();
        let mut none = None;
        let (out, fd) = open(&services, &size, false, &mut none);
        assert!(fd.is_none() && none.is_none());
        assert_eq!(
            Expected::<u64>::from_bytes(&out).unwrap().0,
            Err("the call mailbox needs a unix socket to pass its memory".into())
        );
        let (out, _) = open(&services, &1u64.to_bytes(), true, &mut none);
        assert_eq!(
            Expected::<u64>::from_bytes(&out).unwrap().0,
            Err(format!(
                "the call mailbox takes its size, {SIZE}, as argument"
            ))
        );
        let _ = open(&services, &size, true, &mut none);
        assert!(none.is_some());
        let (out, fd) = open(&services, &size, true, &mut none);
        assert!(fd.is_none());
        assert_eq!(
            Expected::<u64>::from_bytes(&out).unwrap().0,
            Err("the call mailbox is open already".into())
        );
        none.unwrap().close();
    }
}
