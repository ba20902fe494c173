//! Running JIT'd code in another process: the executor (ours, or LLVM's
//! `llvm-jitlink-executor`) spoken to over SimpleRemoteEPC.

pub mod connection;
pub mod fdpass;
pub mod mappers;
pub mod process;
pub mod ring;
pub mod transport;

use process::ExecutorProcess;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use remjit_executor::crash::{describe, parse_report, CrashReport, Symbolize};
use remjit_executor::runtime::access;
use remjit_executor::runtime::perf::{PerfFunction, PerfOutputs};
use remjit_wire::names;
use remjit_wire::sps::{Bytes, Expected, Sps, SpsError};
use remjit_wire::types::{symbol_flags, ExecutorSymbolDef, LookupElement};

use crate::error::{Error, Result};
pub use remjit_wire::auth::Token;

/// How long an executor gets to send its Setup message, unless told otherwise.
pub const DEFAULT_SETUP_TIMEOUT: Duration = Duration::from_secs(10);
use crate::executor::{unsupported, wire_args, Arg, Executor, ExternalSymbol, Ret, RetKind};
use crate::memory::MemoryMapper;
use connection::Connection;
use fdpass::{FdReader, ReceivedFds};
use mappers::{CopyMapper, SharedFlavour, SharedMapper};
use transport::Stream;

/// How JIT memory reaches the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryMode {
    /// Shared memory (memfd over a unix socket, else LLVM's named flavour).
    Shared,
    /// Content copied in the finalize message.
    Copy,
}

/// How the executor ended, when it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Still running (or not ours to wait for).
    Unknown,
    /// Exited with a status (JIT'd code called `exit`).
    Exited(i32),
    /// Killed by a signal, with the crash report if it wrote one.
    Signaled(i32, Option<Box<CrashReport>>),
}

/// An executor process.
pub struct RemoteExecutor {
    conn: Arc<Connection>,
    mapper: Arc<dyn MemoryMapper>,
    dylib_instance: u64,
    process_handle: u64,
    child: Mutex<Option<ExecutorProcess>>,
    report: Mutex<Option<std::fs::File>>,
    /// Our end of a unix socket to a spawned executor, shut down once it is gone.
    closer: Option<std::os::unix::net::UnixStream>,
    args: Mutex<Vec<String>>,
    ours: bool,
    ended: std::sync::OnceLock<Ending>,
    /// Symbols the executor has found: they stay where they are (libraries are never
    /// unloaded, and a library loaded later never shadows one loaded before it), so each is
    /// asked for once per session. Names not found are asked again (a library may come).
    found: Mutex<HashMap<Vec<u8>, ExternalSymbol>>,
    /// Lookup requests sent (a statistic).
    lookups_sent: std::sync::atomic::AtomicU64,
    /// The TCP connection, when the executor takes urgent data on it as Ctrl-C.
    urgent: Option<std::net::TcpStream>,
    /// The executor is this process forked (see [`transport::Spawned::forked_at`]).
    forked_at: Option<u64>,
}

impl RemoteExecutor {
    /// Spawns `path` (our executor or LLVM's) over a unix socketpair.
    pub fn spawn(path: &Path, memory: MemoryMode) -> Result<RemoteExecutor> {
        Self::spawn_with(path, memory, DEFAULT_SETUP_TIMEOUT)
    }

    /// Spawns `path`, which must send its Setup within `setup_timeout`.
    pub fn spawn_with(
        path: &Path,
        memory: MemoryMode,
        setup_timeout: Duration,
    ) -> Result<RemoteExecutor> {
        Self::spawn_begin(path, memory, setup_timeout)?.finish()
    }

    /// Starts `path` as [`RemoteExecutor::spawn_with`] does, but returns as soon as the
    /// process exists: the caller does its own work while the executor starts, then
    /// [`Starting::finish`] waits for its Setup. Dropped unfinished, the process is killed.
    pub fn spawn_begin(
        path: &Path,
        memory: MemoryMode,
        setup_timeout: Duration,
    ) -> Result<Starting> {
        Ok(Starting {
            spawned: Some(transport::spawn(path, false)?),
            memory,
            setup_timeout,
        })
    }

    /// Connects to an executor listening on `addr`, proving we know `token` when given (see
    /// [`remjit_wire::auth`]); the executor must then send its Setup within `setup_timeout`.
    pub fn connect(
        addr: &str,
        memory: MemoryMode,
        token: Option<&Token>,
        setup_timeout: Duration,
    ) -> Result<RemoteExecutor> {
        let stream = transport::connect(addr, token, setup_timeout)?;
        Self::start(stream, None, None, None, memory, setup_timeout)
    }

    fn start(
        stream: Stream,
        child: Option<ExecutorProcess>,
        report: Option<std::fs::File>,
        forked_at: Option<u64>,
        memory: MemoryMode,
        setup_timeout: Duration,
    ) -> Result<RemoteExecutor> {
        let pid = child.as_ref().map(|c| c.id());
        let tcp = match &stream {
            Stream::Tcp(t) => t.try_clone().ok(),
            _ => None,
        };
        let fds = Arc::new(ReceivedFds::default());
        let is_unix = stream.unix().is_some();
        let unix = stream.unix().and_then(|s| s.try_clone().ok());
        let closer = stream.unix().and_then(|s| s.try_clone().ok());
        let (reader, writer): (
            Box<dyn std::io::Read + Send>,
            Box<dyn std::io::Write + Send>,
        ) = match (stream, unix) {
            (Stream::Unix(s), Some(r)) => (Box::new(FdReader::new(r, fds.clone())), Box::new(s)),
            (other, _) => other.split()?,
        };
        let conn = match Connection::start(reader, writer, pid, setup_timeout) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                if let Some(mut c) = child {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(e);
            }
        };
        let ours = conn.has(names::REMJIT_RUN_MAIN);
        let mapper: Arc<dyn MemoryMapper> = match memory {
            MemoryMode::Shared if ours && is_unix && conn.has(names::REMJIT_MEMFD_RESERVE) => {
                if conn.has(remjit_wire::ring::OPEN) {
                    conn.offer_mailbox(fds.clone());
                }
                Arc::new(SharedMapper::new(
                    conn.clone(),
                    fds.clone(),
                    SharedFlavour::Memfd,
                )?)
            }
            MemoryMode::Shared => Arc::new(SharedMapper::new(
                conn.clone(),
                fds.clone(),
                SharedFlavour::Named,
            )?),
            MemoryMode::Copy => Arc::new(CopyMapper::new(conn.clone())?),
        };
        let dylib_instance = conn.symbol(names::DYLIB_MANAGER_INSTANCE)?;
        let process_handle = match conn.setup.bootstrap_map.get(names::REMJIT_PROCESS_HANDLE) {
            Some(bytes) => u64::from_bytes(bytes).map_err(|e| {
                Error::Executor(format!("protocol violation: bad process handle: {e}"))
            })?,
            None => {
                let open: Expected<u64> = conn.call_named(
                    names::DYLIB_MANAGER_OPEN,
                    &(dylib_instance, String::new(), 0u64),
                )?;
                open.0.map_err(Error::Executor)?
            }
        };
        let urgent = tcp.filter(|_| conn.has(names::REMJIT_URGENT_INTERRUPT));
        Ok(RemoteExecutor {
            conn,
            mapper,
            dylib_instance,
            process_handle,
            child: Mutex::new(child),
            report: Mutex::new(report),
            closer,
            args: Mutex::new(Vec::new()),
            ours,
            ended: std::sync::OnceLock::new(),
            found: Mutex::default(),
            lookups_sent: std::sync::atomic::AtomicU64::new(0),
            urgent,
            forked_at,
        })
    }

    /// The TCP socket on which one byte of urgent data (`MSG_OOB`) interrupts the running
    /// JIT'd code as Ctrl-C would, when the executor says it does (ours over TCP). Valid while
    /// this executor lives.
    pub fn interrupt_socket(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.urgent.as_ref().map(|s| s.as_raw_fd())
    }

    /// The connection: for calls of executor services this type has no method for (see
    /// [`Connection::call_named`] and [`Connection::post_named`]).
    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    /// The executor's process id, when remjit started it.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().ok()?.as_ref().map(|c| c.id())
    }

    /// Whether the peer is remjit's own executor (with its runtime services).
    pub fn is_ours(&self) -> bool {
        self.ours
    }

    /// After a failed call: how the executor ended (waits up to two seconds for it).
    pub fn ending(&self) -> Ending {
        if let Some(e) = self.ended.get() {
            return e.clone();
        }
        let e = self.wait_ending();
        if e != Ending::Unknown {
            let _ = self.ended.set(e.clone());
        }
        e
    }

    fn wait_ending(&self) -> Ending {
        let Ok(mut guard) = self.child.lock() else {
            return Ending::Unknown;
        };
        let Some(child) = guard.as_mut() else {
            return Ending::Unknown;
        };
        // A live connection means a live executor: a failure of our own (a bad input, an
        // undefined symbol) is reported at once, not after waiting for an exit that won't come.
        let patience = if self.conn.peer_gone() { 2000 } else { 0 };
        let deadline = Instant::now() + Duration::from_millis(patience);
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => break None,
            }
        };
        let Some(status) = status else {
            return Ending::Unknown;
        };
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let mut text = String::new();
            if let Ok(mut r) = self.report.lock() {
                if let Some(f) = r.as_mut() {
                    text = read_report(f);
                }
            }
            Ending::Signaled(sig, parse_report(&text).map(Box::new))
        } else {
            Ending::Exited(status.code().unwrap_or(1))
        }
    }

    /// Describes a dead executor: how it ended, and where the JIT'd code crashed (`jit`
    /// names JIT'd code addresses).
    pub fn describe_death(&self, jit: Symbolize) -> Option<String> {
        match self.ending() {
            Ending::Unknown => None,
            Ending::Exited(code) => Some(format!("the executor exited with status {code}")),
            Ending::Signaled(sig, report) => {
                let mut s = String::new();
                describe(sig, report.as_deref(), &mut s, jit);
                Some(s)
            }
        }
    }

    /// Ends the session: Hangup, then the executor exits (killed if it does not within two
    /// seconds). An executor reached over TCP is left to end its own session.
    pub fn shutdown(&self) {
        self.conn.hangup();
        let Ok(mut g) = self.child.lock() else { return };
        let Some(mut c) = g.take() else { return };
        if !transport::wait_until(&mut c, Instant::now() + Duration::from_secs(2)) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The executor is gone, but a process it forked may hold its end of the stream: end
        // ours, so that the reader ends.
        if let Some(s) = &self.closer {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.conn.join_reader();
    }

    fn sps_error(r: SpsError) -> Result<()> {
        r.into_result().map_err(Error::Executor)
    }
}

/// Largest crash report read (a report is a few lines).
const MAX_REPORT: u64 = 64 << 10;

/// What the dead executor wrote on its crash-report pipe: only what is there already (a
/// process it forked may hold the pipe open), at most [`MAX_REPORT`] bytes.
fn read_report(f: &mut std::fs::File) -> String {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(2) on our own open descriptor.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
    let mut bytes = Vec::new();
    // A read that would block ends it, keeping what was read.
    let _ = f.take(MAX_REPORT).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An executor process started by [`RemoteExecutor::spawn_begin`], not yet talked to.
pub struct Starting {
    spawned: Option<transport::Spawned>,
    memory: MemoryMode,
    setup_timeout: Duration,
}

impl Starting {
    /// Waits for the executor's Setup (within the timeout) and opens the session.
    pub fn finish(mut self) -> Result<RemoteExecutor> {
        let s = self
            .spawned
            .take()
            .ok_or_else(|| Error::Executor("the executor was already taken".into()))?;
        RemoteExecutor::start(
            s.stream,
            Some(s.child),
            s.report,
            s.forked_at,
            self.memory,
            self.setup_timeout,
        )
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        // Never talked to: nothing of the program ran there; end it and reap it.
        if let Some(mut s) = self.spawned.take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

impl Drop for RemoteExecutor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl RemoteExecutor {
    /// Whether the connection to the executor is gone (it died, or over TCP ended the session).
    pub fn connection_lost(&self) -> bool {
        self.conn.peer_gone()
    }

    /// How many symbol-lookup requests went to the executor: names it has found are not asked
    /// for again.
    pub fn lookups_sent(&self) -> u64 {
        self.lookups_sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many calls went through the call mailbox in shared memory instead of the socket.
    pub fn mailbox_calls(&self) -> u64 {
        self.conn.mailbox_calls()
    }

    /// `name` as the executor (this process, forked) would find it in its process handle:
    /// its services first, then the global scope.
    fn lookup_as_forked(&self, name: &[u8]) -> Option<ExternalSymbol> {
        let service = std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.conn.setup.bootstrap_symbols.get(n));
        match service {
            Some(&addr) => Some(ExternalSymbol {
                addr,
                is_data: false,
            }),
            None => crate::executor::lookup_here(name),
        }
    }

    /// One dylib-manager lookup of `names_` in the executor's process handle.
    fn lookup_remote(&self, names_: &[&[u8]]) -> Result<Vec<Option<ExternalSymbol>>> {
        self.lookups_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let set: Vec<LookupElement> = names_
            .iter()
            .map(|n| LookupElement {
                name: String::from_utf8_lossy(n).into_owned(),
                required: false,
            })
            .collect();
        let r: Expected<Vec<ExecutorSymbolDef>> = self.conn.call_named(
            names::DYLIB_MANAGER_LOOKUP,
            &(self.dylib_instance, self.process_handle, set),
        )?;
        let defs = r.0.map_err(Error::Executor)?;
        if defs.len() != names_.len() {
            return Err(Error::Executor(format!(
                "protocol violation: {} results for {} names",
                defs.len(),
                names_.len()
            )));
        }
        Ok(defs
            .into_iter()
            .map(|d| {
                (d.addr != 0).then_some(ExternalSymbol {
                    addr: d.addr,
                    // Only our executor says which symbols are code; assume code otherwise.
                    is_data: self.ours && d.flags & symbol_flags::CALLABLE == 0,
                })
            })
            .collect())
    }
}

impl Executor for RemoteExecutor {
    fn mapper(&self) -> Arc<dyn MemoryMapper> {
        self.mapper.clone()
    }

    fn runtime_symbols(&self) -> Result<Vec<(String, u64)>> {
        match self
            .conn
            .setup
            .bootstrap_map
            .get(names::REMJIT_RUNTIME_OVERRIDES)
        {
            Some(bytes) => Vec::<(String, u64)>::from_bytes(bytes)
                .map_err(|e| Error::Executor(format!("bad runtime symbol list: {e}"))),
            None => Ok(Vec::new()),
        }
    }

    fn tlsdesc_resolver(&self) -> Result<u64> {
        self.conn.symbol(names::REMJIT_TLSDESC_RESOLVER)
    }

    fn load_library(&self, path: &Path) -> Result<()> {
        let r: Expected<u64> = self.conn.call_named(
            names::DYLIB_MANAGER_OPEN,
            &(self.dylib_instance, path.display().to_string(), 0u64),
        )?;
        r.0.map(|_| ()).map_err(Error::Dylib)
    }

    fn lookup(&self, names_: &[&[u8]]) -> Result<Vec<Option<ExternalSymbol>>> {
        let mut out: Vec<Option<ExternalSymbol>> = {
            let found = self
                .found
                .lock()
                .map_err(|_| Error::Executor("symbol cache poisoned".into()))?;
            names_.iter().map(|n| found.get(*n).copied()).collect()
        };
        let missing: Vec<usize> = (0..names_.len()).filter(|&i| out[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(out);
        }
        let mut asked = missing.clone();
        if self
            .forked_at
            .is_some_and(|n| n == crate::executor::objects_loaded())
        {
            // The executor's global scope starts with ours (it is us, forked), and what it
            // loads later cannot shadow that: what we find is what it would answer.
            asked.retain(|&i| {
                out[i] = self.lookup_as_forked(names_[i]);
                out[i].is_none()
            });
        }
        if !asked.is_empty() {
            let names: Vec<&[u8]> = asked.iter().map(|&i| names_[i]).collect();
            for (i, answer) in asked.into_iter().zip(self.lookup_remote(&names)?) {
                out[i] = answer;
            }
        }
        let mut found = self
            .found
            .lock()
            .map_err(|_| Error::Executor("symbol cache poisoned".into()))?;
        for i in missing {
            if let Some(sym) = out[i] {
                found.insert(names_[i].to_vec(), sym);
            }
        }
        Ok(out)
    }

    fn set_program_args(&self, args: &[String]) -> Result<()> {
        if let Ok(mut a) = self.args.lock() {
            *a = args.to_vec();
        }
        if self.ours {
            // Checked before the next call (nothing runs before one).
            let check = ring::sps_error_check("setting the program's arguments");
            self.conn
                .post_named(names::REMJIT_SET_ARGS, &args.to_vec(), check)?;
        }
        Ok(())
    }

    fn run_main(&self, entry: u64) -> Result<i32> {
        if self.ours {
            let r: i64 = self.conn.call_named(names::REMJIT_RUN_MAIN, &entry)?;
            Ok(r as i32)
        } else {
            let args = self.args.lock().map(|a| a.clone()).unwrap_or_default();
            let r: i64 = self.conn.call_named(names::RUN_AS_MAIN, &(entry, args))?;
            Ok(r as i32)
        }
    }

    fn call_void(&self, addr: u64) -> Result<()> {
        let _: i32 = self.conn.call_named(names::RUN_AS_VOID, &addr)?;
        Ok(())
    }

    fn read_memory(&self, addr: u64, len: u64) -> Result<Vec<u8>> {
        if !self.conn.has(names::REMJIT_READ_MEMORY) {
            return Err(unsupported("read memory"));
        }
        let r: Expected<Bytes> = self
            .conn
            .call_named(names::REMJIT_READ_MEMORY, &(addr, len))?;
        let bytes = r.0.map_err(Error::Executor)?.0;
        if bytes.len() as u64 != len {
            return Err(Error::Executor(format!(
                "protocol violation: {} bytes read for {len}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    fn write_memory(&self, addr: u64, bytes: &[u8]) -> Result<()> {
        let r: SpsError = if self.conn.has(names::REMJIT_WRITE_MEMORY) {
            self.conn
                .call_named(names::REMJIT_WRITE_MEMORY, &(addr, Bytes(bytes.to_vec())))?
        } else if self.conn.has(names::MEM_WRITE_BUFFERS) {
            // LLVM's executor: its buffer write, which checks nothing (the cap is ours) and
            // returns nothing (LLVM 19's signature is `void(...)`).
            access::check_size("write", bytes.len() as u64).map_err(Error::Executor)?;
            let writes = vec![(addr, Bytes(bytes.to_vec()))];
            let tag = self.conn.symbol(names::MEM_WRITE_BUFFERS)?;
            let out = self.conn.call(tag, &writes.to_bytes())?;
            if out.is_empty() {
                return Ok(());
            }
            SpsError::from_bytes(&out).map_err(|e| Error::Executor(e.to_string()))?
        } else {
            return Err(unsupported("write memory"));
        };
        Self::sps_error(r)
    }

    fn call(&self, addr: u64, args: &[Arg], ret: RetKind) -> Result<Ret> {
        if !self.conn.has(names::REMJIT_CALL) {
            return Err(unsupported("call functions with arguments"));
        }
        let r: Expected<(u64, u64)> = self
            .conn
            .call_named(names::REMJIT_CALL, &(addr, wire_args(args)))?;
        let (rax, xmm0) = r.0.map_err(Error::Executor)?;
        Ok(Ret::from_registers(ret, rax, xmm0))
    }

    fn register_debug_object(&self, object: Vec<u8>) -> Result<Option<u64>> {
        if !self.conn.has(names::REMJIT_GDB_REGISTER) {
            return Ok(None);
        }
        let r: Expected<u64> = self
            .conn
            .call_named(names::REMJIT_GDB_REGISTER, &Bytes(object))?;
        r.0.map(Some).map_err(Error::Executor)
    }

    fn deregister_debug_object(&self, handle: u64) -> Result<()> {
        let r: SpsError = self
            .conn
            .call_named(names::REMJIT_GDB_DEREGISTER, &handle)?;
        Self::sps_error(r)
    }

    fn record_perf(&self, functions: &[PerfFunction], out: PerfOutputs) -> Result<()> {
        let fns: Vec<_> = functions
            .iter()
            .map(|f| (f.addr, f.size, f.name.clone(), f.lines.clone()))
            .collect();
        let r: SpsError = self
            .conn
            .call_named(names::REMJIT_PERF_RECORD, &(out.map, out.jitdump, fns))?;
        Self::sps_error(r)
    }

    fn wait_for_debugger(&self) -> Result<()> {
        let tag = self.conn.symbol(names::REMJIT_WAIT_FOR_DEBUGGER)?;
        let out = self.conn.call(tag, &[])?;
        Self::sps_error(SpsError::from_bytes(&out).map_err(|e| Error::Executor(e.to_string()))?)
    }

    fn run_exit(&self, finalizers: &[u64]) -> Result<()> {
        if self.ours {
            let r: SpsError = self
                .conn
                .call_named(names::REMJIT_RUN_EXIT, &finalizers.to_vec())?;
            Self::sps_error(r)?;
        }
        Ok(())
    }
}
