//! One SimpleRemoteEPC connection, controller side: a reader thread matches Result frames to
//! waiting callers by sequence number, so calls from several threads run concurrently; a dead
//! peer fails every pending and later call instead of hanging.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remjit_wire::frame::{read_frame, write_frame, Frame, Opcode};
use remjit_wire::sps::{Sps, SpsError};
use remjit_wire::types::SetupMessage;

use super::fdpass::ReceivedFds;
use super::ring::{CallMailbox, Check};
use crate::error::{Error, Result};

/// Largest frame accepted from an executor (its results and Setup are small).
const MAX_FRAME: u64 = 64 << 20;

/// How often a waiting call looks whether a local executor is stopped.
const LIVENESS_PERIOD: Duration = Duration::from_secs(1);

type Reply = std::result::Result<Vec<u8>, String>;

/// How long a call looks for its reply before sleeping (see `Connection::wait_reply`).
const REPLY_SPIN: Duration = Duration::from_micros(80);

struct Shared {
    writer: Mutex<Box<dyn Write + Send>>,
    pending: Mutex<HashMap<u64, mpsc::Sender<Reply>>>,
    dead: AtomicBool,
    /// The executor closed the stream or hung up (rather than breaking the protocol).
    peer_gone: AtomicBool,
    why_dead: Mutex<Option<String>>,
    /// The call mailbox in shared memory, when open (hot calls skip the socket).
    mailbox: std::sync::OnceLock<CallMailbox>,
}

impl Shared {
    fn fail_all(&self, why: String) {
        self.dead.store(true, Ordering::SeqCst);
        if let Ok(mut w) = self.why_dead.lock() {
            w.get_or_insert(why.clone());
        }
        if let Some(m) = self.mailbox.get() {
            m.wake();
        }
        if let Ok(mut p) = self.pending.lock() {
            for (_, tx) in p.drain() {
                let _ = tx.send(Err(why.clone()));
            }
        }
    }
}

/// The executor's Setup message.
#[derive(Debug, Clone, Default)]
pub struct SetupInfo {
    /// Target triple.
    pub triple: String,
    /// Page size.
    pub page_size: u64,
    /// Bootstrap values.
    pub bootstrap_map: HashMap<String, Vec<u8>>,
    /// Bootstrap symbols.
    pub bootstrap_symbols: HashMap<String, u64>,
}

/// A live connection.
pub struct Connection {
    shared: Arc<Shared>,
    next_seq: AtomicU64,
    /// What the executor announced.
    pub setup: SetupInfo,
    reader: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The executor's process id, when it is a local child (to see whether it is stopped).
    pid: Option<u32>,
    /// Whether we said that the executor is stopped (said once per stop).
    said_stopped: AtomicBool,
    /// The executor's offer of a call mailbox, not taken yet (see [`Connection::offer_mailbox`]).
    offer: Mutex<Option<MailboxOffer>>,
    /// Calls posted on the socket whose replies are not checked yet, oldest first.
    posted: Mutex<Vec<(mpsc::Receiver<Reply>, Check)>>,
    /// Whether `posted` may hold any.
    any_posted: AtomicBool,
}

/// Calls a mailbox would serve that go over the socket before it opens: opening one costs a
/// round trip, a thread and a memfd on the executor's side (0.2 ms), and its waits spin; a
/// program that is linked once and run makes fewer calls than that pays for.
const SOCKET_CALLS_BEFORE_MAILBOX: u32 = 4;

/// A call mailbox the executor offers, opened at the first call past
/// [`SOCKET_CALLS_BEFORE_MAILBOX`] that it would serve.
struct MailboxOffer {
    fds: Arc<ReceivedFds>,
    /// Tags of the services a mailbox serves.
    tags: std::collections::HashSet<u64>,
    /// Such calls made so far.
    calls: u32,
}

impl Connection {
    /// Takes over a stream: the reader thread starts and must deliver the executor's Setup
    /// within `setup_timeout`. `pid`: the executor's, when it is our child.
    pub fn start(
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
        pid: Option<u32>,
        setup_timeout: Duration,
    ) -> Result<Connection> {
        let shared = Arc::new(Shared {
            writer: Mutex::new(writer),
            pending: Mutex::new(HashMap::new()),
            dead: AtomicBool::new(false),
            peer_gone: AtomicBool::new(false),
            why_dead: Mutex::new(None),
            mailbox: std::sync::OnceLock::new(),
        });
        let (setup_tx, setup_rx) = mpsc::channel();
        let sh = shared.clone();
        let handle = std::thread::Builder::new()
            .name("remjit-epc-reader".into())
            .spawn(move || reader_loop(reader, sh, setup_tx))
            .map_err(|e| Error::Executor(format!("cannot start reader thread: {e}")))?;
        let setup = match setup_rx.recv_timeout(setup_timeout) {
            Ok(r) => r?,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let stopped = pid.is_some_and(is_stopped);
                return Err(Error::Executor(format!(
                    "the executor{} did not answer within {} s{} (no Setup message); is it a \
                     remjit or LLVM executor? (--oop-executor-timeout=SECS waits longer)",
                    pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                    setup_timeout.as_secs_f64(),
                    if stopped { ": it is stopped" } else { "" }
                )));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Executor("the executor connection failed".into()))
            }
        };
        Ok(Connection {
            shared,
            next_seq: AtomicU64::new(1),
            setup,
            reader: Mutex::new(Some(handle)),
            pid,
            said_stopped: AtomicBool::new(false),
            offer: Mutex::new(None),
            posted: Mutex::new(Vec::new()),
            any_posted: AtomicBool::new(false),
        })
    }

    /// Whether the executor closed the connection or hung up (it is probably ending), as
    /// opposed to still being there.
    pub fn peer_gone(&self) -> bool {
        self.shared.peer_gone.load(Ordering::SeqCst)
    }

    /// Waits for a call's reply. A local executor that is stopped (SIGSTOP, a debugger) is
    /// waited for, as one still running is, but we say so once per stop.
    fn wait_reply(&self, rx: &mpsc::Receiver<Reply>) -> std::result::Result<Reply, ()> {
        // Most replies come within tens of microseconds: looking for them meanwhile keeps this
        // core awake, where sleeping at once costs a wake-up each (tens of microseconds on a
        // virtual machine whose idle cores halt).
        let early = remjit_wire::ring::spin_until(REPLY_SPIN, || match rx.try_recv() {
            Ok(r) => Some(Ok(r)),
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(())),
            Err(mpsc::TryRecvError::Empty) => None,
        });
        if let Some(r) = early {
            return r;
        }
        loop {
            match rx.recv_timeout(LIVENESS_PERIOD) {
                Ok(r) => return Ok(r),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(()),
                Err(mpsc::RecvTimeoutError::Timeout) => self.look_at_peer().map_err(|_| ())?,
            }
        }
    }

    /// Whether a local executor is still there: a dead one fails every call; a stopped one
    /// is waited for, but we say so once per stop.
    fn look_at_peer(&self) -> std::result::Result<(), String> {
        let gone = || self.why_dead().unwrap_or_else(|| "executor is gone".into());
        let Some(pid) = self.pid else {
            return if self.is_dead() { Err(gone()) } else { Ok(()) };
        };
        if is_dead(pid) {
            // Its stream may stay open (a process it forked holds it): no reply will come.
            self.shared.peer_gone.store(true, Ordering::SeqCst);
            self.shared.fail_all("the executor ended".into());
            return Err(gone());
        }
        let stopped = is_stopped(pid);
        if stopped && !self.said_stopped.swap(true, Ordering::SeqCst) {
            eprintln!("remjit: executor pid {pid} is stopped; waiting");
        } else if !stopped {
            self.said_stopped.store(false, Ordering::SeqCst);
        }
        if self.is_dead() {
            return Err(gone());
        }
        Ok(())
    }

    /// Notes that the executor can open a call mailbox (our executor over a unix socket; its
    /// memory would arrive in `fds`): it is opened once the session has made more than
    /// [`SOCKET_CALLS_BEFORE_MAILBOX`] calls that it serves.
    pub fn offer_mailbox(&self, fds: Arc<ReceivedFds>) {
        let tags = remjit_wire::ring::SERVICES
            .iter()
            .filter_map(|n| self.symbol(n).ok())
            .collect();
        if let Ok(mut o) = self.offer.lock() {
            *o = Some(MailboxOffer {
                fds,
                tags,
                calls: 0,
            });
        }
    }

    /// The call mailbox, opened now if a call to `tag` is the one that makes it pay.
    fn mailbox_for(&self, tag: u64) -> Option<&CallMailbox> {
        if let Some(m) = self.shared.mailbox.get() {
            return Some(m);
        }
        let offer = {
            let mut guard = self.offer.lock().ok()?;
            let o = guard.as_mut()?;
            if !o.tags.contains(&tag) {
                return None;
            }
            o.calls += 1;
            if o.calls <= SOCKET_CALLS_BEFORE_MAILBOX {
                return None;
            }
            guard.take()?
        };
        // A mailbox that cannot be opened leaves the calls on the socket, which reports a
        // gone executor itself.
        let m = CallMailbox::open(self, &offer.fds, offer.tags).ok()?;
        let _ = self.shared.mailbox.set(m);
        self.shared.mailbox.get()
    }

    /// How many calls went through the call mailbox (none when it is not open).
    pub fn mailbox_calls(&self) -> u64 {
        self.shared.mailbox.get().map_or(0, CallMailbox::calls)
    }

    /// A call through the mailbox, when it takes this one.
    fn call_mailbox(&self, tag: u64, args: &[u8]) -> Option<Result<Vec<u8>>> {
        let m = self.mailbox_for(tag)?;
        m.call(tag, args, |deep| self.alive(deep))
    }

    /// While waiting in the mailbox: whether to go on (the executor is there), looking at
    /// the process itself when `deep`.
    fn alive(&self, deep: bool) -> std::result::Result<(), String> {
        if deep {
            self.look_at_peer()
        } else if self.is_dead() {
            Err(self.why_dead().unwrap_or_else(|| "executor is gone".into()))
        } else {
            Ok(())
        }
    }

    /// Calls the service named `name` (a bootstrap symbol) without waiting for its result,
    /// through the call mailbox when it takes it, else on the socket: `check` looks at the
    /// result before the next call to the executor goes out (or at [`Connection::settle`]),
    /// and its error is that call's. On the socket, only for services the executor answers
    /// as it reads them (not ones that run JIT'd code, which go to threads of their own and
    /// could be overtaken): for those, [`Connection::post_named_in_mailbox`].
    pub fn post_named<A: Sps>(&self, name: &str, args: &A, check: Check) -> Result<()> {
        self.post(name, args, check, true)
    }

    /// [`Connection::post_named`] through the call mailbox only (whose one thread runs calls
    /// in the order posted); without the mailbox, an ordinary call, checked at once.
    pub fn post_named_in_mailbox<A: Sps>(&self, name: &str, args: &A, check: Check) -> Result<()> {
        self.post(name, args, check, false)
    }

    fn post<A: Sps>(&self, name: &str, args: &A, check: Check, socket: bool) -> Result<()> {
        let tag = self.symbol(name)?;
        let args = args.to_bytes();
        // Posted calls stay in order across the mailbox and the socket: what went the other
        // way is done first.
        let check = match self.mailbox_for(tag) {
            Some(m) if !self.is_dead() => {
                self.settle_socket()?;
                match m.post(tag, &args, check, |d| self.alive(d)) {
                    Ok(posted) => return posted,
                    Err(refused) => refused,
                }
            }
            _ => check,
        };
        if self.is_dead() || !socket {
            let out = self.call(tag, &args)?;
            return check(&out).map_err(Error::Executor);
        }
        self.settle_mailbox()?;
        let rx = self.send(tag, &args)?;
        self.posted
            .lock()
            .map_err(|_| Error::Executor("connection state poisoned".into()))?
            .push((rx, check));
        self.any_posted.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether the peer is gone.
    pub fn is_dead(&self) -> bool {
        self.shared.dead.load(Ordering::SeqCst)
    }

    /// Why the peer is gone, if it is.
    pub fn why_dead(&self) -> Option<String> {
        self.shared.why_dead.lock().ok().and_then(|w| w.clone())
    }

    /// Calls the service named `name` (a bootstrap symbol) with SPS arguments, decoding the
    /// SPS result.
    pub fn call_named<A: Sps, R: Sps>(&self, name: &str, args: &A) -> Result<R> {
        let tag = self.symbol(name)?;
        let out = self.call(tag, &args.to_bytes())?;
        R::from_bytes(&out).map_err(|e| Error::Executor(format!("{name}: undecodable result: {e}")))
    }

    /// A bootstrap symbol of the executor.
    pub fn symbol(&self, name: &str) -> Result<u64> {
        self.setup
            .bootstrap_symbols
            .get(name)
            .copied()
            .ok_or_else(|| Error::Executor(format!("the executor does not provide {name}")))
    }

    /// Whether the executor provides a bootstrap symbol.
    pub fn has(&self, name: &str) -> bool {
        self.setup.bootstrap_symbols.contains_key(name)
    }

    /// Calls the wrapper function at `tag` with SPS-encoded `args`; returns its result bytes.
    pub fn call(&self, tag: u64, args: &[u8]) -> Result<Vec<u8>> {
        if self.is_dead() {
            return Err(Error::Executor(
                self.why_dead().unwrap_or_else(|| "executor is gone".into()),
            ));
        }
        self.settle()?;
        if let Some(r) = self.call_mailbox(tag, args) {
            return r;
        }
        let rx = self.send(tag, args)?;
        self.receive(&rx)
    }

    /// Waits for the calls posted so far ([`Connection::post_named`]) and checks their
    /// results: the first failure is the error.
    pub fn settle(&self) -> Result<()> {
        self.settle_mailbox()?;
        self.settle_socket()
    }

    fn settle_mailbox(&self) -> Result<()> {
        match self.shared.mailbox.get() {
            Some(m) => m.settle(|d| self.alive(d)),
            None => Ok(()),
        }
    }

    fn settle_socket(&self) -> Result<()> {
        if !self.any_posted.load(Ordering::Acquire) {
            return Ok(());
        }
        let posted = match self.posted.lock() {
            Ok(mut p) => {
                self.any_posted.store(false, Ordering::Release);
                std::mem::take(&mut *p)
            }
            Err(_) => return Err(Error::Executor("connection state poisoned".into())),
        };
        // Every reply is taken; the first failure is the error.
        posted
            .into_iter()
            .map(|(rx, check)| {
                self.receive(&rx)
                    .and_then(|bytes| check(&bytes).map_err(Error::Executor))
            })
            .fold(Ok(()), Result::and)
    }

    /// Sends a CallWrapper frame; its reply arrives on the receiver.
    fn send(&self, tag: u64, args: &[u8]) -> Result<mpsc::Receiver<Reply>> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.shared
            .pending
            .lock()
            .map_err(|_| Error::Executor("connection state poisoned".into()))?
            .insert(seq, tx);
        let sent = {
            let mut w = self
                .shared
                .writer
                .lock()
                .map_err(|_| Error::Executor("connection state poisoned".into()))?;
            write_frame(&mut **w, Opcode::CallWrapper, seq, tag, args)
                .and_then(|_| w.flush().map_err(Into::into))
        };
        if let Err(e) = sent {
            if let Ok(mut p) = self.shared.pending.lock() {
                p.remove(&seq);
            }
            self.shared
                .fail_all(format!("executor connection lost: {e}"));
            return Err(Error::Executor(
                self.why_dead().unwrap_or_else(|| "executor is gone".into()),
            ));
        }
        Ok(rx)
    }

    /// Waits for the reply of a call sent.
    fn receive(&self, rx: &mpsc::Receiver<Reply>) -> Result<Vec<u8>> {
        match self.wait_reply(rx) {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(Error::Executor(e)),
            Err(()) => Err(Error::Executor(
                self.why_dead().unwrap_or_else(|| "executor is gone".into()),
            )),
        }
    }

    /// Sends Hangup (the peer then ends the session), also after a protocol violation of the
    /// peer's (it may still be listening).
    pub fn hangup(&self) {
        // Nothing is left half done; a failure there no longer matters.
        let _ = self.settle();
        if !self.peer_gone() {
            if let Ok(mut w) = self.shared.writer.lock() {
                // SPS Error "success": a single false byte.
                let _ = write_frame(&mut **w, Opcode::Hangup, 0, 0, &[0]);
                let _ = w.flush();
            }
        }
    }

    /// Waits for the reader thread, which ends when the peer closes the stream. Only call it
    /// when the peer is known to be gone (exited or killed), or it may wait for ever.
    pub fn join_reader(&self) {
        if let Ok(mut r) = self.reader.lock() {
            if let Some(h) = r.take() {
                let _ = h.join();
            }
        }
    }
}

/// The state letter of process `pid` in /proc/PID/stat; `None` when there is no such process.
fn proc_state(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses and may contain anything.
    let i = stat.rfind(')')?;
    stat[i + 1..].split_whitespace().next().map(str::to_string)
}

/// Whether process `pid` is stopped (state T or t in /proc/PID/stat).
pub fn is_stopped(pid: u32) -> bool {
    proc_state(pid).is_some_and(|s| s == "T" || s == "t")
}

/// Whether process `pid` (our child) has ended: a zombie, or gone (when /proc is there to
/// tell).
fn is_dead(pid: u32) -> bool {
    match proc_state(pid) {
        Some(s) => s == "Z" || s == "X",
        None => std::path::Path::new("/proc/self/stat").exists(),
    }
}

/// Reads the Setup frame (first) and hands it over through `setup_tx`.
fn read_setup(reader: &mut dyn Read) -> Result<SetupInfo> {
    let first = read_frame(reader, MAX_FRAME)
        .map_err(|e| Error::Executor(format!("reading the executor's Setup: {e}")))?
        .ok_or_else(|| Error::Executor("the executor closed the connection before Setup".into()))?;
    if first.opcode != Opcode::Setup {
        return Err(Error::Executor(format!(
            "protocol violation: expected Setup, got {:?}",
            first.opcode
        )));
    }
    decode_setup(&first.payload)
}

fn reader_loop(
    mut reader: Box<dyn Read + Send>,
    shared: Arc<Shared>,
    setup_tx: mpsc::Sender<Result<SetupInfo>>,
) {
    let setup = read_setup(&mut *reader);
    let failed = setup.is_err();
    let _ = setup_tx.send(setup);
    if failed {
        shared.fail_all("no valid Setup from the executor".into());
        return;
    }
    let gone = |why: String| {
        shared.peer_gone.store(true, Ordering::SeqCst);
        shared.fail_all(why);
    };
    loop {
        let frame: Frame = match read_frame(&mut *reader, MAX_FRAME) {
            Ok(Some(f)) => f,
            Ok(None) => return gone("the executor closed the connection".into()),
            Err(remjit_wire::WireError::Io(e)) => {
                return gone(format!("executor connection failed: {e}"))
            }
            Err(e) => {
                shared.fail_all(format!("protocol violation: {e}"));
                return;
            }
        };
        match frame.opcode {
            Opcode::Result => {
                let tx = shared
                    .pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.remove(&frame.seq));
                match tx {
                    Some(tx) => {
                        let _ = tx.send(Ok(frame.payload));
                    }
                    None => {
                        shared.fail_all(format!(
                            "protocol violation: the executor answered call {}, which is not \
                             waiting for an answer",
                            frame.seq
                        ));
                        return;
                    }
                }
            }
            Opcode::Hangup => {
                let why = match SpsError::from_bytes(&frame.payload) {
                    Ok(SpsError(Some(msg))) => format!("the executor hung up: {msg}"),
                    _ => "the executor hung up".into(),
                };
                return gone(why);
            }
            Opcode::CallWrapper => {
                // The controller exports no wrapper functions: answer with an error.
                let reply = SpsError(Some(format!(
                    "remjit controller has no function at {:#x}",
                    frame.tag
                )))
                .to_bytes();
                if let Ok(mut w) = shared.writer.lock() {
                    let _ = write_frame(&mut **w, Opcode::Result, frame.seq, 0, &reply);
                    let _ = w.flush();
                }
            }
            Opcode::Setup => {
                shared.fail_all("protocol violation: a second Setup".into());
                return;
            }
        }
    }
}

fn decode_setup(payload: &[u8]) -> Result<SetupInfo> {
    let s = SetupMessage::from_bytes(payload)
        .map_err(|e| Error::Executor(format!("bad Setup message: {e}")))?;
    if !s.page_size.is_power_of_two() || !(4096..=1 << 30).contains(&s.page_size) {
        return Err(Error::Executor(format!(
            "protocol violation: the executor's Setup announces a page size of {} bytes",
            s.page_size
        )));
    }
    Ok(SetupInfo {
        triple: s.target_triple,
        page_size: s.page_size,
        bootstrap_map: s.bootstrap_map.into_iter().map(|(k, v)| (k, v.0)).collect(),
        bootstrap_symbols: s.bootstrap_symbols.into_iter().collect(),
    })
}
