//! The controller's end of the call mailbox ([`remjit_wire::ring`]): the hot calls to our own
//! executor (finalize, call, release) through shared memory instead of the socket.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use remjit_wire::ring::{self, Mailbox, Side, EMPTY, REPLY, REQUEST, SIZE, TOO_LONG};
use remjit_wire::sps::{Bytes, Expected, Sps};

use super::connection::Connection;
use super::fdpass::ReceivedFds;
use crate::error::{Error, Result};

/// How long a call spins for its result before sleeping: a finalize or a small call is done
/// within that.
const SPIN: Duration = Duration::from_micros(100);
/// Between looks at whether the executor is still there, while asleep (the connection's
/// reader also wakes us at once when the executor's stream ends).
const TICK: Duration = Duration::from_millis(100);
/// Ticks between looks at whether a local executor is stopped or dead (about a second, as on
/// the socket: a process it forked may hold its stream open).
const TICKS_PER_LIVENESS_LOOK: u32 = 10;

/// How the result of a posted call is checked when it is collected.
pub type Check = Box<dyn FnOnce(&[u8]) -> std::result::Result<(), String> + Send>;

/// The check of a call whose result is an SPS error (empty for success); `what` names the call
/// in the message.
pub fn sps_error_check(what: &'static str) -> Check {
    Box::new(move |bytes| {
        <remjit_wire::sps::SpsError as remjit_wire::sps::Sps>::from_bytes(bytes)
            .map_err(|e| format!("{what}: undecodable result: {e}"))?
            .into_result()
            .map_err(|e| format!("{what}: {e}"))
    })
}

/// Posted calls not yet done: the one in the mailbox, and the ones waiting for it.
#[derive(Default)]
struct Posted {
    /// The checks of the posted call in the mailbox (more than one: a batch), whose result
    /// is not collected yet.
    in_flight: Option<Vec<Check>>,
    /// Posted calls not sent yet, oldest first: (tag, arguments, check).
    queued: std::collections::VecDeque<(u64, Vec<u8>, Check)>,
}

/// Posted calls kept waiting at most (then a post waits for the oldest).
const MAX_QUEUED: usize = 64;

/// Checks the result `bytes` of the call in flight: one call's, or a batch's (one result per
/// call, in order); the first failure is the error.
fn check_results(mut checks: Vec<Check>, bytes: &[u8]) -> Result<()> {
    if checks.len() == 1 {
        let check = checks.pop().expect("one check");
        return check(bytes).map_err(Error::Executor);
    }
    let results = Vec::<Bytes>::from_bytes(bytes).map_err(|e| {
        // A batch the executor refused as a whole answers with an error.
        match remjit_wire::sps::SpsError::from_bytes(bytes).map(|r| r.into_result()) {
            Ok(Err(why)) => Error::Executor(format!("call mailbox batch: {why}")),
            _ => Error::Executor(format!("call mailbox batch: undecodable results: {e}")),
        }
    })?;
    if results.len() != checks.len() {
        return Err(Error::Executor(format!(
            "protocol violation: {} results for a batch of {} calls",
            results.len(),
            checks.len()
        )));
    }
    checks
        .into_iter()
        .zip(results)
        .map(|(check, r)| check(&r.0).map_err(Error::Executor))
        .fold(Ok(()), Result::and)
}

/// The mailbox, mapped here.
pub struct CallMailbox {
    mailbox: Mailbox,
    page: *mut u8,
    /// One call at a time; a thread that finds it busy uses the socket. Holds the posted calls
    /// not done yet (the next holder completes them first, in order).
    busy: Mutex<Posted>,
    /// Whether any posted call is not done yet.
    posted: AtomicBool,
    /// Tags of the services the mailbox serves.
    tags: HashSet<u64>,
    /// The tag of [`ring::BATCH`], when the executor has it.
    batch: Option<u64>,
    /// Calls that went through it (a statistic).
    calls: AtomicU64,
}

// SAFETY: `page` is our mapping, touched only through `mailbox` under `busy` (and `wake`).
unsafe impl Send for CallMailbox {}
// SAFETY: as above.
unsafe impl Sync for CallMailbox {}

impl Drop for CallMailbox {
    fn drop(&mut self) {
        // SAFETY: our own mapping of the page, no longer used.
        unsafe { ring::unmap(self.page) };
    }
}

impl CallMailbox {
    /// Asks the executor for a mailbox (its memfd arrives in `fds`) and maps it; it serves
    /// the services at `tags`.
    pub fn open(conn: &Connection, fds: &ReceivedFds, tags: HashSet<u64>) -> Result<CallMailbox> {
        let _one_at_a_time = fds.exclusive();
        let r: Expected<u64> = conn.call_named(ring::OPEN, &(SIZE as u64))?;
        let size = r.0.map_err(Error::Executor)?;
        let fd = fds.take().ok_or_else(|| {
            Error::Executor("the executor's call mailbox memory did not arrive".into())
        })?;
        if size != SIZE as u64 {
            return Err(Error::Executor(format!(
                "protocol violation: a call mailbox of {size} bytes (expected {SIZE})"
            )));
        }
        let page = ring::map(std::os::fd::AsFd::as_fd(&fd))
            .map_err(|e| Error::Executor(format!("mapping the call mailbox: {e}")))?;
        Ok(CallMailbox {
            // SAFETY: a SIZE-byte shared mapping that lives as long as `self`.
            mailbox: unsafe { Mailbox::new(page, Side::Controller) },
            page,
            busy: Mutex::new(Posted::default()),
            posted: AtomicBool::new(false),
            tags,
            batch: conn.symbol(ring::BATCH).ok(),
            calls: AtomicU64::new(0),
        })
    }

    /// How many calls went through the mailbox.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Wakes a call waiting for its result (to look at the connection).
    pub fn wake(&self) {
        self.mailbox.wake();
    }

    /// Calls the service at `tag` through the mailbox; `None` when the mailbox does not serve
    /// it, the arguments do not fit, or another thread's call is in it (use the socket).
    /// `alive` says why to stop waiting, if the executor is gone.
    pub fn call(
        &self,
        tag: u64,
        args: &[u8],
        mut alive: impl FnMut(bool) -> std::result::Result<(), String>,
    ) -> Option<Result<Vec<u8>>> {
        if !self.serves(tag, args) {
            return None;
        }
        let mut posted = self.busy.try_lock().ok()?;
        Some(
            self.complete(&mut posted, &mut alive)
                .and_then(|()| self.post_now(tag, args))
                .and_then(|()| self.wait_result(&mut alive)),
        )
    }

    /// Posts a call to the service at `tag` and returns without waiting for it: its result is
    /// checked with `check` before the mailbox's next call goes out, or at [`Self::settle`].
    /// While an earlier posted call is still running, this one waits here, in order (up to
    /// [`MAX_QUEUED`]), and goes out as soon as a later post or settle finds the mailbox free.
    /// `Err(check)` when [`Self::call`] would give `None` (make the call some other way).
    pub fn post(
        &self,
        tag: u64,
        args: &[u8],
        check: Check,
        mut alive: impl FnMut(bool) -> std::result::Result<(), String>,
    ) -> std::result::Result<Result<()>, Check> {
        if !self.serves(tag, args) {
            return Err(check);
        }
        let Ok(mut posted) = self.busy.try_lock() else {
            return Err(check);
        };
        Ok(self.enqueue(&mut posted, tag, args, check, &mut alive))
    }

    fn enqueue(
        &self,
        posted: &mut Posted,
        tag: u64,
        args: &[u8],
        check: Check,
        mut alive: impl FnMut(bool) -> std::result::Result<(), String>,
    ) -> Result<()> {
        self.advance(posted, false, &mut alive)?;
        while posted.queued.len() >= MAX_QUEUED {
            self.advance(posted, true, &mut alive)?;
        }
        if posted.in_flight.is_none() {
            self.post_now(tag, args)?;
            posted.in_flight = Some(vec![check]);
        } else {
            posted.queued.push_back((tag, args.to_vec(), check));
        }
        self.posted.store(true, Ordering::Release);
        Ok(())
    }

    /// Waits for every posted call and checks their results.
    pub fn settle(
        &self,
        mut alive: impl FnMut(bool) -> std::result::Result<(), String>,
    ) -> Result<()> {
        if !self.posted.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut posted = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        self.complete(&mut posted, &mut alive)
    }

    fn serves(&self, tag: u64, args: &[u8]) -> bool {
        self.tags.contains(&tag) && args.len() <= ring::CAPACITY
    }

    /// Completes the posted calls, in order; the first failure is the error.
    fn complete(
        &self,
        posted: &mut Posted,
        mut alive: impl FnMut(bool) -> std::result::Result<(), String>,
    ) -> Result<()> {
        let mut first = Ok(());
        while posted.in_flight.is_some() {
            first = first.and(self.advance(posted, true, &mut alive));
        }
        first
    }

    /// Collects the call in flight if its result is there (or, with `wait`, once it is) and
    /// sends the oldest queued one. A call that failed is the error of the call or post that
    /// found it; the calls behind it still go out (each posted call runs, as in a batch or
    /// on the socket), unless the mailbox itself failed: then they are dropped.
    fn advance(
        &self,
        posted: &mut Posted,
        wait: bool,
        alive: impl FnMut(bool) -> std::result::Result<(), String>,
    ) -> Result<()> {
        if posted.in_flight.is_none() || (!wait && self.mailbox.state() != REPLY) {
            return Ok(());
        }
        let checks = posted.in_flight.take().expect("checked above");
        let result = match self.wait_result(alive) {
            Ok(bytes) => {
                let checked = check_results(checks, &bytes);
                let sent = self.send_queued(posted);
                if sent.is_err() {
                    posted.queued.clear();
                }
                checked.and(sent)
            }
            Err(e) => {
                posted.queued.clear();
                Err(e)
            }
        };
        if posted.in_flight.is_none() {
            self.posted.store(false, Ordering::Release);
        }
        result
    }

    /// Sends the queued calls: the oldest alone, or as many as fit in one batch.
    fn send_queued(&self, posted: &mut Posted) -> Result<()> {
        let Some(batch) = self.batch.filter(|_| posted.queued.len() > 1) else {
            if let Some((tag, args, check)) = posted.queued.pop_front() {
                self.post_now(tag, &args)?;
                posted.in_flight = Some(vec![check]);
            }
            return Ok(());
        };
        // SPS: a count, then per call its tag, a length and the bytes.
        let mut size = 8;
        let mut calls = Vec::new();
        let mut checks = Vec::new();
        while let Some((_, args, _)) = posted.queued.front() {
            size += 16 + args.len();
            if size > ring::CAPACITY && !calls.is_empty() {
                break;
            }
            let (tag, args, check) = posted.queued.pop_front().expect("looked at above");
            calls.push((tag, Bytes(args)));
            checks.push(check);
        }
        if let [(tag, args)] = &calls[..] {
            // Too big to go out with the next: alone, answered as alone (a batch of one
            // would answer with a list that its check does not expect).
            self.post_now(*tag, &args.0)?;
        } else {
            self.post_now(batch, &calls.to_bytes())?;
        }
        posted.in_flight = Some(checks);
        Ok(())
    }

    fn post_now(&self, tag: u64, args: &[u8]) -> Result<()> {
        if self.mailbox.state() != EMPTY {
            return Err(Error::Executor(
                "protocol violation: the call mailbox is not empty before a call".into(),
            ));
        }
        if !self.mailbox.post(REQUEST, tag, args) {
            // Nothing went out: waiting for its result would never end.
            return Err(Error::Executor(format!(
                "a call of {} bytes does not fit in the call mailbox",
                args.len()
            )));
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits for the result of the call in the mailbox and empties it.
    fn wait_result(
        &self,
        mut alive: impl FnMut(bool) -> std::result::Result<(), String>,
    ) -> Result<Vec<u8>> {
        let mut ticks = 0u32;
        let waited = self.mailbox.wait_for(REPLY, SPIN, TICK, || {
            ticks = ticks.wrapping_add(1);
            alive(ticks.is_multiple_of(TICKS_PER_LIVENESS_LOOK))
        });
        if let Err(ring::Interrupted::Gone(why)) = waited {
            return Err(Error::Executor(why));
        }
        let taken = self.mailbox.take();
        self.mailbox.set_state(EMPTY);
        match taken {
            Ok((_, bytes)) => Ok(bytes),
            Err(TOO_LONG) => Err(Error::Executor(
                "the executor's result did not fit in the call mailbox".into(),
            )),
            Err(len) => Err(Error::Executor(format!(
                "protocol violation: a call mailbox result of {len} bytes"
            ))),
        }
    }
}
