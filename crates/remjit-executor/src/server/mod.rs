//! The SimpleRemoteEPC server: sends Setup, then answers CallWrapper frames. Calls that run
//! JIT'd code get a thread of their own, so a long-running `main` does not block other calls.
//! A malformed frame or call is answered with an error (or ends the session cleanly); it never
//! crashes the executor.

pub mod debug;
pub mod listen;
pub mod memory;
pub mod ring;
pub mod services;
pub mod shm;

use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use remjit_wire::frame::{encode_header, read_frame, write_frame, Opcode};
use remjit_wire::names;
use remjit_wire::sps::{Bytes, Sps, SpsError};
use remjit_wire::types::SetupMessage;

use crate::signals::ProgramMask;
use services::{Kind, Services};

/// Largest frame accepted from a controller. The biggest are copy-over-the-wire finalizes:
/// LLVM's copying memory manager sends whole segments in one frame (the largest in our test
/// corpus are a few MiB); remjit's own splits bigger content over several calls. A frame is
/// read as its bytes arrive, so a lying header costs nothing.
pub const MAX_FRAME: u64 = 64 << 20;

/// Stack for threads that run JIT'd code (as generous as a main thread's).
const CALL_STACK: usize = 64 << 20;

/// Where replies go.
pub struct Replies {
    writer: Mutex<Box<dyn Write + Send>>,
    /// The unix socket, when there is one: replies that carry a descriptor use sendmsg on it.
    socket: Option<RawFd>,
    /// The socket (unix or TCP) to shut down when a send fails.
    shutdown: Option<RawFd>,
    /// Why a reply could not be sent: the session is over (the controller waits for a reply
    /// that will never come, so the stream is shut down to tell it).
    failed: Mutex<Option<String>>,
}

impl Replies {
    fn send(&self, opcode: Opcode, seq: u64, tag: u64, payload: &[u8], fd: Option<RawFd>) {
        let Ok(mut w) = self.writer.lock() else {
            return;
        };
        let sent = match (fd, self.socket) {
            (Some(fd), Some(sock)) => w.flush().and_then(|_| {
                let mut msg = encode_header(opcode, seq, tag, payload.len()).to_vec();
                msg.extend_from_slice(payload);
                send_with_fd(sock, &msg, fd)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("passing the memfd: {e}")))
            }),
            (Some(_), None) => Err(std::io::Error::other(
                "cannot pass a descriptor over this transport",
            )),
            _ => write_frame(&mut **w, opcode, seq, tag, payload)
                .map_err(std::io::Error::other)
                .and_then(|_| w.flush()),
        };
        if let Err(e) = sent {
            if let Ok(mut f) = self.failed.lock() {
                f.get_or_insert(format!("cannot send a reply: {e}"));
            }
            if let Some(sock) = self.shutdown {
                // SAFETY: shutdown of the session's socket; both sides' reads then end.
                unsafe { libc::shutdown(sock, libc::SHUT_RDWR) };
            }
        }
    }

    /// Ends the session for `why`: tells the controller (Hangup with the reason), returns it.
    fn hang_up(&self, why: String) -> String {
        self.send(
            Opcode::Hangup,
            0,
            0,
            &SpsError(Some(why.clone())).to_bytes(),
            None,
        );
        why
    }

    fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }
}

/// Sends `bytes` with `fd` attached (SCM_RIGHTS), completing the write if it was partial.
fn send_with_fd(sock: RawFd, bytes: &[u8], fd: RawFd) -> std::io::Result<()> {
    use std::mem::size_of;
    // SAFETY: a plain sendmsg with one SCM_RIGHTS control message built in a local buffer.
    unsafe {
        let space = libc::CMSG_SPACE(size_of::<i32>() as u32) as usize;
        let mut cbuf = vec![0u8; space];
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut i32, fd);
        let n = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut sent = n as usize;
        while sent < bytes.len() {
            let m = libc::send(
                sock,
                bytes[sent..].as_ptr().cast(),
                bytes.len() - sent,
                libc::MSG_NOSIGNAL,
            );
            if m < 0 {
                return Err(std::io::Error::last_os_error());
            }
            sent += m as usize;
        }
    }
    Ok(())
}

/// Writes to the controller's socket with MSG_NOSIGNAL: a vanished controller is EPIPE, never
/// a SIGPIPE (which JIT'd code must keep at its default).
struct SocketWriter {
    fd: RawFd,
    /// The stream that owns `fd`.
    _owner: Box<dyn Write + Send>,
}

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: send(2) from a valid buffer on a socket `_owner` keeps open.
        let n = unsafe { libc::send(self.fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A call that runs JIT'd code: its work gives the reply's payload.
struct Job {
    work: Box<dyn FnOnce() -> Vec<u8> + Send>,
    seq: u64,
}

/// Threads for calls that run JIT'd code: an idle one takes the call, else a new one starts
/// (so a long-running `main` never blocks the next call), and finished ones wait for more.
struct Pool {
    idle: Arc<Mutex<Vec<std::sync::mpsc::Sender<Job>>>>,
    replies: Arc<Replies>,
}

impl Pool {
    fn new(replies: Arc<Replies>) -> Pool {
        Pool {
            idle: Arc::default(),
            replies,
        }
    }

    fn run(&self, job: Job) -> std::io::Result<()> {
        let worker = self.idle.lock().ok().and_then(|mut v| v.pop());
        let job = match worker {
            Some(tx) => match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(std::sync::mpsc::SendError(job)) => job,
            },
            None => job,
        };
        self.start_worker(Some(job))
    }

    /// Starts a worker that runs `job`, or waits idle for one: the first call that runs
    /// JIT'd code then finds a thread ready (starting one with its stacks takes tens of
    /// microseconds, and a wake-up on another core).
    fn start_worker(&self, job: Option<Job>) -> std::io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let idle = self.idle.clone();
        let replies = self.replies.clone();
        let owner = std::process::id();
        if job.is_none() {
            if let Ok(mut v) = idle.lock() {
                v.push(tx.clone());
            }
        }
        std::thread::Builder::new()
            .name("remjit-call".into())
            .stack_size(CALL_STACK)
            .spawn(move || {
                // JIT'd code runs here (constructors, exit handlers): the crash handler needs
                // more stack than the runtime's own signal stack.
                let _alt = crate::crash::AltStack::new();
                let mut job = job.or_else(|| rx.recv().ok());
                while let Some(j) = job.take() {
                    let out = (j.work)();
                    ring::leave_if_forked(owner, &out);
                    // Idle again before the reply goes out: the controller's next call, sent
                    // as soon as it reads the reply, finds this thread instead of starting one.
                    if let Ok(mut v) = idle.lock() {
                        v.push(tx.clone());
                    }
                    replies.send(Opcode::Result, j.seq, 0, &out, None);
                    job = rx.recv().ok();
                }
            })?;
        Ok(())
    }
}

/// The Setup message this executor sends.
pub fn setup_message(services: &Services) -> SetupMessage {
    let overrides: Vec<(String, u64)> = crate::runtime::symbol_overrides()
        .into_iter()
        .map(|(n, a)| (n.to_string(), a))
        .collect();
    let mut bootstrap_map = vec![(
        names::REMJIT_RUNTIME_OVERRIDES.to_string(),
        Bytes(overrides.to_bytes()),
    )];
    if let Ok(h) = services.process_handle() {
        bootstrap_map.push((
            names::REMJIT_PROCESS_HANDLE.to_string(),
            Bytes(h.to_bytes()),
        ));
    }
    SetupMessage {
        target_triple: "x86_64-unknown-linux-gnu".into(),
        page_size: rustix::param::page_size() as u64,
        bootstrap_map,
        bootstrap_symbols: services
            .symbols
            .iter()
            .cloned()
            .chain([
                (remjit_wire::ring::OPEN.to_string(), ring::open_tag()),
                (remjit_wire::ring::BATCH.to_string(), ring::batch_tag()),
            ])
            .collect(),
    }
}

/// Serves one controller until Hangup or end of stream. `socket` is the raw unix socket when
/// the transport is one (for passing descriptors).
pub fn serve(
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    socket: Option<RawFd>,
) -> Result<(), String> {
    serve_on(reader, writer, socket, socket)
}

/// [`serve`], with `shutdown`: a socket that cannot carry descriptors (TCP), shut down when
/// a reply cannot be sent.
pub fn serve_on(
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    socket: Option<RawFd>,
    shutdown: Option<RawFd>,
) -> Result<(), String> {
    // Asynchronous signals go to the threads running JIT'd code (see crate::signals).
    crate::signals::block_async_signals();
    // Frames arrive as a header then a payload: buffer them, one read for many.
    let mut reader = std::io::BufReader::with_capacity(1 << 16, reader);
    let services = Arc::new(Services::new());
    let writer: Box<dyn Write + Send> = match socket {
        Some(fd) => Box::new(SocketWriter { fd, _owner: writer }),
        None => writer,
    };
    let replies = Arc::new(Replies {
        writer: Mutex::new(writer),
        socket,
        shutdown,
        failed: Mutex::new(None),
    });
    let pool = Pool::new(replies.clone());
    let mut mailbox = None;
    let mut setup = setup_message(&services);
    // Over TCP (a socket to shut down that carries no descriptors), Ctrl-C comes as urgent data.
    let tcp = shutdown.filter(|_| socket.is_none());
    if tcp.is_some() && crate::signals::interrupt_on_urgent_data() {
        let name = names::REMJIT_URGENT_INTERRUPT.to_string();
        setup.bootstrap_symbols.push((name, 0));
    }
    let setup = setup.to_bytes();
    replies.send(Opcode::Setup, 0, 0, &setup, None);
    // While the controller reads the Setup and links: a worker for the first call that runs
    // JIT'd code (best effort: a call starts one itself otherwise).
    let _ = pool.start_worker(None);
    let result = loop {
        if let Some(why) = replies.failure() {
            break Err(why);
        }
        let frame = match read_frame(&mut reader, MAX_FRAME) {
            Ok(Some(f)) => f,
            Ok(None) => break replies.failure().map_or(Ok(()), Err),
            Err(e) if replies.failure().is_some() => {
                break Err(replies.failure().unwrap_or_else(|| e.to_string()))
            }
            Err(e) => {
                // A corrupt stream cannot be resynchronised: say why and end the session.
                break Err(replies.hang_up(format!("protocol violation: {e}")));
            }
        };
        match frame.opcode {
            Opcode::Hangup => break Ok(()),
            Opcode::Setup | Opcode::Result => {
                // We never call the controller, so no Result is expected; neither is Setup.
                break Err(replies.hang_up(format!(
                    "protocol violation: unexpected {:?} frame (seq {}) from the controller",
                    frame.opcode, frame.seq
                )));
            }
            Opcode::CallWrapper if frame.tag == ring::open_tag() => {
                let (out, fd) =
                    ring::open(&services, &frame.payload, socket.is_some(), &mut mailbox);
                replies.send(Opcode::Result, frame.seq, 0, &out, fd);
            }
            Opcode::CallWrapper => {
                let Some((handler, kind, _name)) = services.lookup(frame.tag) else {
                    let msg = format!("no service at {:#x} in this executor", frame.tag);
                    replies.send(
                        Opcode::Result,
                        frame.seq,
                        0,
                        &SpsError(Some(msg)).to_bytes(),
                        None,
                    );
                    continue;
                };
                match kind {
                    Kind::Quick => {
                        let out = handler(&services, &frame.payload);
                        let fd = shm::ATTACH_FD.with(|a| a.take());
                        replies.send(Opcode::Result, frame.seq, 0, &out, fd);
                    }
                    Kind::Runs | Kind::Main => {
                        let s = services.clone();
                        let job = Job {
                            work: Box::new(move || {
                                let mask = (kind == Kind::Runs).then(ProgramMask::enter);
                                let out = handler(&s, &frame.payload);
                                drop(mask);
                                out
                            }),
                            seq: frame.seq,
                        };
                        if let Err(e) = pool.run(job) {
                            let msg = format!("cannot start a thread for the call: {e}");
                            replies.send(
                                Opcode::Result,
                                frame.seq,
                                0,
                                &SpsError(Some(msg)).to_bytes(),
                                None,
                            );
                        }
                    }
                }
            }
        }
    };
    if let Some(m) = mailbox {
        m.close();
    }
    shm::unlink_all_names();
    crate::signals::unblock_async_signals();
    result
}

/// The executor of a local controller, on descriptors it handed over: `inp` and `out` (one
/// socket twice, or two pipe ends) and `report_fd`, the crash-report pipe (2 for stderr).
/// Installs the crash handlers, gives JIT'd code a native program's signal dispositions and
/// descriptor numbers (ours move to the top of the first table), then serves until the
/// controller hangs up. Used by `remjit-executor filedescs=IN,OUT` and by a controller's
/// forked child alike.
pub fn serve_inherited(inp: RawFd, out: RawFd, report_fd: RawFd) -> Result<(), String> {
    use std::os::fd::FromRawFd;
    use std::os::unix::net::UnixStream;
    for fd in [inp, out, report_fd] {
        keep_from_programs(fd);
    }
    prepare_process(crate::fds::move_raw_out_of_the_way(report_fd));
    // Kept at high numbers: the program's own descriptors start at 3, as natively.
    let moved_in = crate::fds::move_raw_out_of_the_way(inp);
    let out = if out == inp {
        moved_in
    } else {
        crate::fds::move_raw_out_of_the_way(out)
    };
    let inp = moved_in;
    if inp == out && is_socket(inp) {
        // SAFETY: the descriptor was handed to us by the parent and is ours now.
        let s = unsafe { UnixStream::from_raw_fd(inp) };
        let clone = s
            .try_clone()
            .map(|r| UnixStream::from(crate::fds::out_of_the_way(r.into())))
            .map_err(|e| format!("cannot use descriptor {inp}: {e}"))?;
        serve(Box::new(clone), Box::new(s), Some(inp))
    } else {
        // SAFETY: as above, two descriptors.
        let (r, w) = unsafe {
            (
                std::fs::File::from_raw_fd(inp),
                std::fs::File::from_raw_fd(out),
            )
        };
        serve(Box::new(r), Box::new(w), None)
    }
}

/// What an executor process does before it serves: crash handlers that report on `report_fd`
/// (2: stderr), and a native program's signal dispositions for JIT'd code (SIGPIPE's default;
/// a vanished controller shows up as a write error, not a signal, see [`serve`]).
pub fn prepare_process(report_fd: RawFd) {
    if let Err(e) = crate::crash::install(report_fd) {
        eprintln!("remjit-executor: cannot install crash handlers: {e}");
    }
    crate::signals::restore_program_dispositions();
}

/// Marks a descriptor the controller handed us close-on-exec: programs the JIT'd code starts
/// must not hold the session's stream or the crash-report pipe open (the controller would
/// then never see them close when the executor dies).
fn keep_from_programs(fd: RawFd) {
    if fd > 2 {
        // SAFETY: fcntl(2) on a descriptor number; one that is not open gives EBADF only.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

fn is_socket(fd: RawFd) -> bool {
    // SAFETY: fstat into a local struct.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    }
}
