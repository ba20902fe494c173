//! Starting or reaching an executor process: spawn over a unix socketpair (or two pipes for
//! peers that want them), or connect over TCP.

use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use remjit_wire::auth::{controller_handshake, AuthError, Token, MAGIC, TOKEN_ENV};

use super::process::ExecutorProcess;
use crate::error::{Error, Result};

/// The byte stream to an executor.
pub enum Stream {
    /// A unix socket (one fd both ways): file descriptors can be passed over it.
    Unix(UnixStream),
    /// TCP.
    Tcp(TcpStream),
    /// Two pipes: (read from the executor, write to it).
    Pipes(std::fs::File, std::fs::File),
}

impl Stream {
    /// A second handle for the reader thread: (reader, writer).
    pub fn split(
        self,
    ) -> Result<(
        Box<dyn std::io::Read + Send>,
        Box<dyn std::io::Write + Send>,
    )> {
        let io = |e: std::io::Error| Error::Executor(format!("transport: {e}"));
        Ok(match self {
            Stream::Unix(s) => (Box::new(s.try_clone().map_err(io)?), Box::new(s)),
            Stream::Tcp(s) => (Box::new(s.try_clone().map_err(io)?), Box::new(s)),
            Stream::Pipes(r, w) => (Box::new(r), Box::new(w)),
        })
    }

    /// The unix socket, when the transport is one.
    pub fn unix(&self) -> Option<&UnixStream> {
        match self {
            Stream::Unix(s) => Some(s),
            _ => None,
        }
    }
}

/// A spawned executor: the child process, the stream, and the pipe its crash report comes on.
pub struct Spawned {
    /// The process.
    pub child: ExecutorProcess,
    /// The stream to it.
    pub stream: Stream,
    /// Read end of the crash-report pipe (our executor writes a line there when it dies).
    pub report: Option<std::fs::File>,
    /// When the executor is this process forked: the count of loaded objects then
    /// ([`crate::executor::objects_loaded`]). While ours is the same, the executor's global
    /// scope starts with ours, at the same addresses.
    pub forked_at: Option<u64>,
}

/// The `remjit-executor` installed beside the running `remjit`, else `remjit` itself, which
/// acts as the executor when started under that name (`cargo install` installs only `remjit`).
pub fn default_executor_path() -> Result<PathBuf> {
    let me = std::env::current_exe()
        .map_err(|e| Error::Executor(format!("cannot find remjit's own path: {e}")))?;
    let dir = me
        .parent()
        .ok_or_else(|| Error::Executor("remjit has no directory".into()))?;
    // `cargo test` binaries live in target/*/deps, the executor one level up.
    for cand in [dir.join("remjit-executor"), dir.join("../remjit-executor")] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Ok(me)
}

/// Whether `path` is the running program (started as an executor, it needs that name).
fn is_self(path: &Path) -> bool {
    let me = std::env::current_exe().and_then(std::fs::canonicalize);
    matches!((me, std::fs::canonicalize(path)), (Ok(a), Ok(b)) if a == b)
}

fn clear_cloexec(fd: i32) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Spawns `path` as an executor with `filedescs=FD,FD` over a socketpair (or `pipes`: two
/// pipes). The child dies with us (`PR_SET_PDEATHSIG`), keeps our stdin/stdout/stderr, and
/// gets a crash-report pipe in `REMJIT_REPORT_FD`.
pub fn spawn(path: &Path, pipes: bool) -> Result<Spawned> {
    let io = |what: &str, e: std::io::Error| Error::Executor(format!("{what}: {e}"));
    let (report_r, report_w) = std::io::pipe().map_err(|e| io("pipe", e))?;
    let report_w: OwnedFd = report_w.into();
    let (stream, child_fds): (Stream, Vec<OwnedFd>) = if pipes {
        let (to_exec_r, to_exec_w) = std::io::pipe().map_err(|e| io("pipe", e))?;
        let (from_exec_r, from_exec_w) = std::io::pipe().map_err(|e| io("pipe", e))?;
        (
            Stream::Pipes(
                std::fs::File::from(OwnedFd::from(from_exec_r)),
                std::fs::File::from(OwnedFd::from(to_exec_w)),
            ),
            vec![to_exec_r.into(), from_exec_w.into()],
        )
    } else {
        let (ours, theirs) = UnixStream::pair().map_err(|e| io("socketpair", e))?;
        (Stream::Unix(ours), vec![theirs.into()])
    };
    let fd_in = child_fds[0].as_raw_fd();
    let fd_out = child_fds.last().map(|f| f.as_raw_fd()).unwrap_or(fd_in);
    let report_fd = report_w.as_raw_fd();
    let parent = std::process::id() as i32;
    let me = is_self(path);
    let (child, forked_at) = if me && single_threaded() {
        let loaded = crate::executor::objects_loaded();
        // This program, alone in its process: the child need not exec it again (0.8 ms of
        // loading and start-up); it serves from where it is (see `become_executor`).
        // SAFETY: fork(2) of a process with one thread: the child holds no lock another
        // thread held, and may allocate.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            become_executor([fd_in, fd_out, report_fd], parent);
        }
        if pid < 0 {
            return Err(io("fork", std::io::Error::last_os_error()));
        }
        (ExecutorProcess::forked(pid), Some(loaded))
    } else {
        let mut cmd = Command::new(path);
        if me {
            cmd.arg0("remjit-executor");
        }
        cmd.arg(format!("filedescs={fd_in},{fd_out}"))
            .env("REMJIT_REPORT_FD", report_fd.to_string())
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        die_with_us(&mut cmd, [fd_in, fd_out, report_fd], parent);
        let child = cmd.spawn().map_err(|e| {
            Error::Executor(format!("cannot start executor {}: {e}", path.display()))
        })?;
        (ExecutorProcess::from_child(child), None)
    };
    drop(child_fds);
    drop(report_w);
    Ok(Spawned {
        child,
        stream,
        report: Some(std::fs::File::from(OwnedFd::from(report_r))),
        forked_at,
    })
}

/// The forked child of a single-threaded remjit: becomes its executor, as if remjit had been
/// exec'd as `remjit-executor filedescs=IN,OUT`, and never returns. `keep`: the stream's
/// descriptors and the crash-report pipe; every other close-on-exec descriptor closes, as exec
/// would close it (our end of the stream among them). Dies with `parent`.
fn become_executor(keep: [i32; 3], parent: i32) -> ! {
    let [fd_in, fd_out, report_fd] = keep;
    let status = std::panic::catch_unwind(|| {
        // SAFETY: prctl(2) and getppid(2) touch no memory of ours.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent
            {
                libc::_exit(1);
            }
            // The name `ps` and `pgrep` show, as an exec'd executor's argv[0] says.
            libc::prctl(libc::PR_SET_NAME, c"remjit-executor".as_ptr());
        }
        close_on_exec_descriptors(&keep);
        let result = remjit_executor::server::serve_inherited(fd_in, fd_out, report_fd);
        // SAFETY: flush every stdio stream JIT'd code wrote to.
        unsafe { libc::fflush(std::ptr::null_mut()) };
        match result {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("remjit-executor: {e}");
                1
            }
        }
    });
    // Never back into the controller's frames this process copied.
    std::process::exit(status.unwrap_or(101))
}

/// Closes this process's close-on-exec descriptors but `keep`, as an exec would.
fn close_on_exec_descriptors(keep: &[i32]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let open: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open {
        // SAFETY: fcntl(2) and close(2) on descriptor numbers of our own; the directory's own
        // descriptor is closed already (EBADF).
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC != 0 && !keep.contains(&fd) {
                libc::close(fd);
            }
        }
    }
}

/// Whether this process has a single thread.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.take(2).count() == 1)
}

/// Sets `cmd` to pass `fds` on and to die with `parent`, between fork and exec.
fn die_with_us(cmd: &mut Command, fds: [i32; 3], parent: i32) {
    let [fd_in, fd_out, report_fd] = fds;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            clear_cloexec(fd_in)?;
            clear_cloexec(fd_out)?;
            clear_cloexec(report_fd)?;
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Connects to an executor listening on `HOST:PORT` and, with a `token`, proves we know it
/// (and checks that the executor does too). Every wait is bounded by `timeout`.
pub fn connect(addr: &str, token: Option<&Token>, timeout: Duration) -> Result<Stream> {
    let mut s = TcpStream::connect(addr)
        .map_err(|e| Error::Executor(format!("cannot connect to executor at {addr}: {e}")))?;
    let _ = s.set_nodelay(true);
    let fail = |what: String| Error::Executor(format!("{addr}: {what}"));
    // Calls wait for replies without a deadline (the program may run for long): a vanished
    // executor host must still end them.
    remjit_wire::tcp::keep_alive(&s).map_err(|e| fail(format!("cannot enable keepalive: {e}")))?;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => fail(format!(
            "no answer within {} s (--oop-executor-timeout=SECS waits longer)",
            timeout.as_secs_f64()
        )),
        _ => fail(e.to_string()),
    };
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    match token {
        Some(t) => controller_handshake(&mut s, t, None).map_err(|e| match e {
            AuthError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                fail("the executor closed the connection during authentication".into())
            }
            AuthError::Io(e) => io(e),
            AuthError::NotAuth => fail(
                "the executor does not ask for a token (started with --insecure-no-auth, or not \
                 remjit-executor); refusing to use it while a token is set (unset REMJIT_TOKEN \
                 to connect without one)"
                    .into(),
            ),
            e => fail(e.to_string()),
        })?,
        None => {
            // An executor that wants a token says so first: tell the user rather than
            // misreading its challenge as a frame.
            let mut first = [0u8; 8];
            let deadline = std::time::Instant::now() + timeout;
            let mut n = s.peek(&mut first).map_err(io)?;
            while n > 0 && n < 8 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
                n = s.peek(&mut first).map_err(io)?;
            }
            if n == 8 && first == MAGIC[..8] {
                return Err(fail(format!(
                    "the executor asks for a token: set {TOKEN_ENV} or pass \
                     --oop-executor-token-file=PATH (the executor's token)"
                )));
            }
        }
    }
    s.set_read_timeout(None).map_err(io)?;
    s.set_write_timeout(None).map_err(io)?;
    Ok(Stream::Tcp(s))
}

/// Wraps a raw fd (for tests and embedding).
///
/// # Safety
/// `fd` must be an open socket that the caller hands over.
pub unsafe fn unix_from_raw(fd: i32) -> Stream {
    Stream::Unix(UnixStream::from_raw_fd(fd))
}

/// Waits until `child` has ended, at most until `deadline`; whether it did (it is then
/// reaped). Woken the moment it ends (a pidfd), else looking at growing intervals.
pub fn wait_until(child: &mut ExecutorProcess, deadline: std::time::Instant) -> bool {
    use std::time::Instant;
    // SAFETY: pidfd_open(2) of our own child; the descriptor is owned below.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    // SAFETY: a descriptor we just received (when the call succeeded).
    let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) });
    let mut nap = Duration::from_micros(20);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) => {}
            Err(_) => return false,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match &pidfd {
            Some(fd) => {
                let mut p = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                // SAFETY: poll of one valid descriptor, bounded by the deadline.
                unsafe { libc::poll(&mut p, 1, ms) };
            }
            None => {
                std::thread::sleep(nap.min(left));
                nap = (nap * 2).min(Duration::from_millis(5));
            }
        }
    }
}
