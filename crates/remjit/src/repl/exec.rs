//! Which executor runs the code, started again after a crash: the choice the command line
//! makes (`--in-process`, `--oop-executor[=PATH]`, `--oop-executor-connect=HOST:PORT`), kept
//! so that a REPL can start a fresh executor of the same kind.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use remjit_executor::crash::{write_function, Sink};

use crate::error::{Error, Result};
use crate::executor::{Executor, InProcessExecutor};
use crate::remote::{Ending, MemoryMode, RemoteExecutor, Token};
use crate::Session;

/// The TCP socket of the executor that [`send_interrupt`] reaches (-1: none), and whether an
/// interrupt went there. One per process: the REPL's.
static INTERRUPT_SOCKET: AtomicI32 = AtomicI32::new(-1);
static INTERRUPT_SENT: AtomicBool = AtomicBool::new(false);

/// Makes `running` the executor that Ctrl-C ([`send_interrupt`]) reaches, when it is one over
/// TCP that takes urgent data as Ctrl-C; `None` forgets the current one (call it before that
/// executor goes, its socket with it).
pub fn route_interrupts(running: Option<&Running>) {
    let fd = running
        .and_then(Running::remote)
        .and_then(|r| r.interrupt_socket());
    INTERRUPT_SOCKET.store(fd.unwrap_or(-1), Ordering::SeqCst);
    INTERRUPT_SENT.store(false, Ordering::SeqCst);
}

/// For a SIGINT handler (async-signal-safe): Ctrl-C to an executor over TCP, which no signal
/// reaches, as one byte of TCP urgent data; the executor sends itself SIGINT, taken by the
/// thread running JIT'd code (when none runs, in the next cell's, as a local Ctrl-C would).
/// False when there is no such executor, or an interrupt went already and that executor still
/// lives (the caller may then end the REPL).
pub fn send_interrupt() -> bool {
    let fd = INTERRUPT_SOCKET.load(Ordering::SeqCst);
    if fd < 0 || INTERRUPT_SENT.swap(true, Ordering::SeqCst) {
        return false;
    }
    // SAFETY: send(2) of one byte from a static on a socket that stays open while it is
    // routed (see `route_interrupts`); async-signal-safe.
    let sent = unsafe {
        libc::send(
            fd,
            c"!".as_ptr().cast(),
            1,
            libc::MSG_OOB | libc::MSG_NOSIGNAL,
        )
    };
    sent == 1
}

/// Whether an interrupt went to the executor since the last call (forgets it).
pub fn take_interrupt() -> bool {
    INTERRUPT_SENT.swap(false, Ordering::SeqCst)
}

/// How to start an executor.
#[derive(Debug, Clone)]
pub enum ExecutorSpec {
    /// remjit's own process.
    InProcess,
    /// Spawn the executor binary at `path`.
    Spawn {
        /// The binary.
        path: PathBuf,
        /// Shared memory or copies.
        memory: MemoryMode,
        /// Time it gets to send its Setup.
        timeout: Duration,
    },
    /// Connect to an executor listening on `addr`.
    Connect {
        /// HOST:PORT.
        addr: String,
        /// Shared memory (LLVM's named flavour) or copies.
        memory: MemoryMode,
        /// The token shared with the executor.
        token: Option<Token>,
        /// Time it gets to answer.
        timeout: Duration,
    },
}

/// A started executor.
#[derive(Clone)]
pub enum Running {
    /// remjit's own process.
    InProcess(Arc<InProcessExecutor>),
    /// Another process.
    Remote(Arc<RemoteExecutor>),
}

impl Running {
    /// The executor, for a [`Session`].
    pub fn executor(&self) -> Arc<dyn Executor> {
        match self {
            Running::InProcess(e) => e.clone(),
            Running::Remote(e) => e.clone(),
        }
    }

    /// The executor process, when it is one.
    pub fn remote(&self) -> Option<&Arc<RemoteExecutor>> {
        match self {
            Running::Remote(e) => Some(e),
            Running::InProcess(_) => None,
        }
    }
}

/// How long the executor gets to answer at start: `secs` when given, else
/// `$REMJIT_EXECUTOR_TIMEOUT`, else [`crate::remote::DEFAULT_SETUP_TIMEOUT`].
pub fn setup_timeout(secs: Option<f64>) -> Result<Duration> {
    let secs = match (secs, std::env::var("REMJIT_EXECUTOR_TIMEOUT")) {
        (Some(s), _) => s,
        (None, Ok(v)) => v.trim().parse().map_err(|_| {
            Error::Usage(format!("REMJIT_EXECUTOR_TIMEOUT=`{v}`: expected seconds"))
        })?,
        (None, Err(_)) => return Ok(crate::remote::DEFAULT_SETUP_TIMEOUT),
    };
    if !(secs > 0.0 && secs <= 1e6) {
        return Err(Error::Usage(format!(
            "executor timeout {secs}: expected a number of seconds above 0 and at most 1000000"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl ExecutorSpec {
    /// Starts one.
    pub fn start(&self) -> Result<Running> {
        Ok(match self {
            ExecutorSpec::InProcess => Running::InProcess(Arc::new(InProcessExecutor::new())),
            ExecutorSpec::Spawn {
                path,
                memory,
                timeout,
            } => Running::Remote(Arc::new(RemoteExecutor::spawn_with(
                path, *memory, *timeout,
            )?)),
            ExecutorSpec::Connect {
                addr,
                memory,
                token,
                timeout,
            } => Running::Remote(Arc::new(RemoteExecutor::connect(
                addr,
                *memory,
                token.as_ref(),
                *timeout,
            )?)),
        })
    }
}

/// Says how a failed executor ended, naming the JIT'd function (and source line) where it
/// crashed; `None` while it lives.
pub fn describe_ending(session: &Session, exec: &RemoteExecutor) -> Option<(Ending, String)> {
    let ending = exec.ending();
    if ending == Ending::Unknown {
        // Not a process of ours (TCP): all we know is that it is gone.
        return exec.connection_lost().then(|| {
            let what =
                "the executor closed the connection (its crash report, if any, is where it ran)";
            (ending, what.to_string())
        });
    }
    let lines = session.source_lines();
    let jit = |pc: u64, out: &mut dyn Sink| write_jit_frame(session, &lines, pc, out);
    let text = exec.describe_death(&jit)?;
    Some((ending, text))
}

/// Names a JIT'd code address in a crash report: function+offset, module, and source line when
/// the object had DWARF; false when `pc` is in no JIT'd function.
pub fn write_jit_frame(
    session: &Session,
    lines: &crate::debug::SourceLines,
    pc: u64,
    out: &mut dyn Sink,
) -> bool {
    match session.symbolize(pc) {
        Some((module, f, off)) => {
            write_function(out, f.as_bytes(), off, module.as_bytes());
            if let Some(line) = lines.line(pc) {
                out.push(format!(" at {line}").as_bytes());
            }
            true
        }
        None => false,
    }
}
