//! The controller's end of the call mailbox ([`remjit_wire::ring`]): the hot calls to our own
//! executor (finalize, call, release) through shared memory instead of the socket.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use remjit_wire::ring::{self, Mailbox, Side, EMPTY, REPLY, REQUEST, SIZE, TOO_LONG};
use remjit_wire::sps::Expected;

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

/// The mailbox, mapped here.
pub struct CallMailbox {
    mailbox: Mailbox,
    page: *mut u8,
    /// One call at a time; a thread that finds it busy uses the socket.
    busy: Mutex<()>,
    /// Tags of the services the mailbox serves.
    tags: HashSet<u64>,
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
    /// Asks the executor for a mailbox (its memfd arrives in `fds`) and maps it.
    pub fn open(conn: &Connection, fds: &ReceivedFds) -> Result<CallMailbox> {
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
        let tags = ring::SERVICES
            .iter()
            .filter_map(|n| conn.symbol(n).ok())
            .collect();
        Ok(CallMailbox {
            // SAFETY: a SIZE-byte shared mapping that lives as long as `self`.
            mailbox: unsafe { Mailbox::new(page, Side::Controller) },
            page,
            busy: Mutex::new(()),
            tags,
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
        if !self.tags.contains(&tag) || args.len() > ring::CAPACITY {
            return None;
        }
        let _one = self.busy.try_lock().ok()?;
        if self.mailbox.state() != EMPTY {
            return Some(Err(Error::Executor(
                "protocol violation: the call mailbox is not empty before a call".into(),
            )));
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.mailbox.post(REQUEST, tag, args);
        let mut ticks = 0u32;
        let waited = self.mailbox.wait_for(REPLY, SPIN, TICK, || {
            ticks = ticks.wrapping_add(1);
            alive(ticks.is_multiple_of(TICKS_PER_LIVENESS_LOOK))
        });
        if let Err(ring::Interrupted::Gone(why)) = waited {
            return Some(Err(Error::Executor(why)));
        }
        let taken = self.mailbox.take();
        self.mailbox.set_state(EMPTY);
        Some(match taken {
            Ok((_, bytes)) => Ok(bytes),
            Err(TOO_LONG) => Err(Error::Executor(
                "the executor's result did not fit in the call mailbox".into(),
            )),
            Err(len) => Err(Error::Executor(format!(
                "protocol violation: a call mailbox result of {len} bytes"
            ))),
        })
    }
}
