//! `remjit-executor listen=[HOST:]PORT`: one authenticated session over TCP.
//!
//! Connections are accepted one at a time. Each must complete the token handshake
//! ([`remjit_wire::auth`]) and send its first frame within [`DEADLINE`]; one that fails, lies
//! or idles is dropped (and logged) and the next is accepted, so nobody can hold the executor
//! for a legitimate controller. The first session that starts is the only one: when it ends,
//! the executor exits. With `keep-listening`, each connection is served by a process of its
//! own (forked from the listener) and the listener goes on: a controller whose session died
//! (a crash of its JIT'd code) connects again, as the REPL does to recover.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::signals;
use remjit_wire::auth::{executor_handshake, Token, TOKEN_ENV};

/// `keep-listening`: the most sessions (forked processes, authenticated or not yet) served at
/// once; a connection beyond them is dropped, so connections cannot fork without bound.
pub const MAX_SESSIONS: usize = 32;

/// Time a new connection gets to authenticate, and then to send its first frame.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// How to listen.
struct Options {
    token: Option<Token>,
    /// A process per session; the listener goes on (`keep-listening`).
    keep: bool,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut file = None;
    let mut insecure = false;
    let mut keep = false;
    for a in args {
        if let Some(p) = a.strip_prefix("token-file=") {
            file = Some(PathBuf::from(p));
        } else if a == "keep-listening" {
            keep = true;
        } else if a == "--insecure-no-auth" || a == "insecure-no-auth" {
            insecure = true;
        } else {
            return Err(format!("unknown option `{a}` for listen="));
        }
    }
    let token = Token::load(file.as_deref())?;
    // Not for the programs this executor runs, nor their children. No other thread reads the
    // environment yet: no code has been run.
    std::env::remove_var(TOKEN_ENV);
    match (&token, insecure) {
        (None, false) => Err(format!(
            "refusing to listen without a token: anyone who can connect could run code as this \
             user. Set {TOKEN_ENV} (at least 64 hex digits, e.g. `openssl rand -hex 32`) or pass \
             token-file=PATH (mode 0600), and give remjit the same token; or, for LLVM's \
             controllers, which cannot authenticate, pass --insecure-no-auth"
        )),
        (Some(_), true) => Err(
            "--insecure-no-auth contradicts the token given (token-file= or REMJIT_TOKEN)".into(),
        ),
        _ => Ok(Options { token, keep }),
    }
}

/// The listening socket, closed once a session has started (later controllers are then
/// refused rather than left waiting).
type Listener = Arc<Mutex<Option<TcpListener>>>;

/// A TCP stream read under a deadline: every read gets the time left, so a peer trickling
/// bytes cannot stretch it. `disarm_on_data`: the deadline ends with the first bytes read,
/// which also close `listener`.
struct Deadlined {
    s: TcpStream,
    until: Option<Instant>,
    disarm_on_data: bool,
    got_data: Arc<AtomicBool>,
    listener: Option<Listener>,
    /// A session's reader: urgent data is Ctrl-C ([`signals::take_urgent_data`]).
    urgent: bool,
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(until) = self.until {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            self.s.set_read_timeout(Some(left))?;
        }
        if self.urgent {
            let ms = self.until.map_or(-1, |u| {
                let left = u.saturating_duration_since(Instant::now()).as_millis();
                i32::try_from(left).unwrap_or(i32::MAX).max(1)
            });
            if !signals::take_urgent_data(self.s.as_raw_fd(), ms)? {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
        }
        let n = self.s.read(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => std::io::ErrorKind::TimedOut.into(),
            _ => e,
        })?;
        if n > 0 {
            self.got_data.store(true, Ordering::SeqCst);
            if self.disarm_on_data && self.until.take().is_some() {
                self.s.set_read_timeout(None)?;
                if let Some(l) = self.listener.take() {
                    drop(l.lock().ok().and_then(|mut l| l.take()));
                }
            }
        }
        Ok(n)
    }
}

impl Write for Deadlined {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.s.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.s.flush()
    }
}

/// Authenticates a new connection (when there is a token), under the deadline.
fn authenticate(s: &TcpStream, token: &Token) -> Result<(), String> {
    let mut d = Deadlined {
        s: s.try_clone().map_err(|e| e.to_string())?,
        until: Some(Instant::now() + DEADLINE),
        disarm_on_data: false,
        got_data: Arc::default(),
        listener: None,
        urgent: false,
    };
    s.set_write_timeout(Some(DEADLINE))
        .map_err(|e| e.to_string())?;
    executor_handshake(&mut d, token).map_err(|e| match e {
        remjit_wire::auth::AuthError::Io(e) => match e.kind() {
            std::io::ErrorKind::TimedOut => {
                format!("no answer to the token challenge within {DEADLINE:?}")
            }
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                "closed the connection without authenticating".into()
            }
            _ => e.to_string(),
        },
        e => e.to_string(),
    })?;
    s.set_read_timeout(None).map_err(|e| e.to_string())?;
    s.set_write_timeout(None).map_err(|e| e.to_string())
}

/// What became of one connection.
/// Whether an `accept` failure concerns one connection or a passing shortage (accept(2) lists
/// them), not the listening socket: the executor keeps listening after these.
fn accept_error_is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::Interrupted
    ) || matches!(
        e.raw_os_error(),
        Some(
            libc::EPROTO
                | libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ENETDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ETIMEDOUT
        )
    )
}

enum Outcome {
    /// A session ran; the executor is done.
    Served(Result<(), String>),
    /// Dropped before any session started; accept the next.
    Dropped(String),
}

fn handle(s: TcpStream, opts: &Options, listener: &Listener) -> Outcome {
    let _ = s.set_nodelay(true);
    // A session waits for the controller's next request without a deadline: a vanished
    // controller host must still end it.
    if let Err(e) = remjit_wire::tcp::keep_alive(&s) {
        return Outcome::Dropped(format!("cannot enable keepalive: {e}"));
    }
    if let Some(t) = &opts.token {
        if let Err(e) = authenticate(&s, t) {
            return Outcome::Dropped(e);
        }
    }
    let got_data = Arc::new(AtomicBool::new(false));
    let (r, w) = match (s.try_clone(), s.try_clone()) {
        (Ok(r), Ok(w)) => (r, w),
        (Err(e), _) | (_, Err(e)) => return Outcome::Dropped(e.to_string()),
    };
    let reader = Deadlined {
        s: r,
        until: Some(Instant::now() + DEADLINE),
        disarm_on_data: true,
        got_data: got_data.clone(),
        listener: Some(listener.clone()),
        urgent: true,
    };
    let result = super::serve_on(Box::new(reader), Box::new(w), None, Some(s.as_raw_fd()));
    if result.is_err() && !got_data.load(Ordering::SeqCst) {
        return Outcome::Dropped(format!("sent no request within {DEADLINE:?}"));
    }
    Outcome::Served(result)
}

/// Listens on `addr` with `options` (`token-file=PATH`, `--insecure-no-auth`) and serves the
/// first controller that authenticates.
pub fn run(addr: &str, options: &[String]) -> Result<(), String> {
    let opts = parse_options(options)?;
    let addr = if addr.contains(':') {
        addr.to_string()
    } else {
        format!("127.0.0.1:{addr}")
    };
    let l = TcpListener::bind(&addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let shown = l.local_addr().map(|a| a.to_string()).unwrap_or(addr);
    let how = if opts.token.is_some() {
        "token required"
    } else {
        "NO AUTHENTICATION"
    };
    eprintln!("remjit-executor: listening on {shown} ({how})");
    let listener: Listener = Arc::new(Mutex::new(Some(l)));
    // keep-listening: the session processes running.
    let mut sessions = 0;
    loop {
        let accepted = match listener.lock().ok().as_ref().and_then(|l| l.as_ref()) {
            Some(l) if opts.keep => accept_reaping(l, &mut sessions),
            Some(l) => l.accept(),
            None => return Err("the listening socket is gone".into()),
        };
        let (s, peer): (TcpStream, SocketAddr) = match accepted {
            Ok(a) => a,
            Err(e) if accept_error_is_transient(&e) => {
                // One peer's aborted connection, or a momentary shortage: keep listening.
                eprintln!("remjit-executor: accept: {e}; still listening");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => return Err(format!("accept: {e}")),
        };
        if opts.keep && sessions >= MAX_SESSIONS {
            eprintln!(
                "remjit-executor: connection from {peer} dropped: {MAX_SESSIONS} sessions run \
                 already (keep-listening serves at most {MAX_SESSIONS} at once)"
            );
            continue;
        }
        if opts.keep {
            sessions += usize::from(serve_forked(s, peer, &opts, &listener));
            continue;
        }
        match handle(s, &opts, &listener) {
            Outcome::Served(r) => return r,
            Outcome::Dropped(why) => {
                eprintln!("remjit-executor: connection from {peer} dropped: {why}")
            }
        }
    }
}

/// Accepts the next connection, meanwhile reaping the session processes that ended (once a
/// second at least; `sessions` counts those running).
fn accept_reaping(
    l: &TcpListener,
    sessions: &mut usize,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    loop {
        let mut p = libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one descriptor of ours.
        let ready = unsafe { libc::poll(&mut p, 1, 1000) };
        // Reaped before a connection is taken: `sessions` is up to date.
        // SAFETY: waitpid without blocking, on our own children.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {
            *sessions = sessions.saturating_sub(1);
        }
        match ready {
            1.. => return l.accept(),
            0 => continue,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// `keep-listening`: serves the connection in a forked process of its own (the listener has
/// no thread but this one, so the child starts clean) and returns at once in the listener,
/// saying whether a process serves it.
fn serve_forked(s: TcpStream, peer: SocketAddr, opts: &Options, listener: &Listener) -> bool {
    // SAFETY: fork in a single-threaded process; the child only runs its session and exits.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!(
                "remjit-executor: connection from {peer} dropped: cannot fork its session: {}",
                std::io::Error::last_os_error()
            );
            false
        }
        0 => {
            // The child serves this connection only: not the listening socket.
            drop(listener.lock().ok().and_then(|mut l| l.take()));
            let code = match handle(s, opts, &Arc::new(Mutex::new(None))) {
                Outcome::Served(Ok(())) => 0,
                Outcome::Served(Err(e)) => {
                    eprintln!("remjit-executor: {e}");
                    1
                }
                Outcome::Dropped(why) => {
                    eprintln!("remjit-executor: connection from {peer} dropped: {why}");
                    1
                }
            };
            // SAFETY: flush every stdio stream JIT'd code wrote to.
            unsafe { libc::fflush(std::ptr::null_mut()) };
            std::process::exit(code);
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::accept_error_is_transient;
    use std::io::{Error, ErrorKind};

    #[test]
    fn one_connection_failing_keeps_the_executor_listening() {
        assert!(accept_error_is_transient(&Error::from(
            ErrorKind::ConnectionAborted
        )));
        assert!(accept_error_is_transient(&Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(accept_error_is_transient(&Error::from_raw_os_error(
            libc::EPROTO
        )));
        // A broken listening socket is not retried.
        assert!(!accept_error_is_transient(&Error::from_raw_os_error(
            libc::EBADF
        )));
        assert!(!accept_error_is_transient(&Error::from_raw_os_error(
            libc::EINVAL
        )));
    }
}
