//! `remjit-executor`: runs JIT'd code for a remjit or LLVM ORC controller.
//!
//!     remjit-executor filedescs=IN,OUT      inherited descriptors (two pipe ends, or one socket twice)
//!     remjit-executor listen=[HOST:]PORT [token-file=PATH | --insecure-no-auth] [keep-listening]
//!                                           one authenticated TCP session (HOST defaults to
//!                                           127.0.0.1; the token comes from the file or from
//!                                           REMJIT_TOKEN); with keep-listening, a forked
//!                                           process per connection, the listener going on

use std::fs::File;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

use remjit_executor::{crash, server, signals};

fn usage() -> ! {
    eprintln!(
        "usage: remjit-executor filedescs=IN,OUT | listen=[HOST:]PORT [token-file=PATH | \
         --insecure-no-auth] [keep-listening]"
    );
    std::process::exit(2);
}

fn is_socket(fd: RawFd) -> bool {
    // SAFETY: fstat into a local struct.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    }
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

/// Started by remjit without a pre-exec hook (posix_spawn, see its remote::transport::spawn),
/// the executor asks itself to be killed when its controller `REMJIT_PARENT_PID` ends, and ends
/// at once if that has already happened.
fn die_with_parent() {
    let Some(parent) = std::env::var("REMJIT_PARENT_PID")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    std::env::remove_var("REMJIT_PARENT_PID");
    // SAFETY: prctl and getppid touch no memory of ours.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent {
            libc::_exit(1);
        }
    }
}

pub fn main() {
    // Reports of crashes of JIT'd code go where the controller asked (stderr otherwise).
    let report_fd = std::env::var("REMJIT_REPORT_FD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    std::env::remove_var("REMJIT_REPORT_FD");
    die_with_parent();
    keep_from_programs(report_fd);
    let report_fd = remjit_executor::fds::move_raw_out_of_the_way(report_fd);
    if let Err(e) = crash::install(report_fd) {
        eprintln!("remjit-executor: cannot install crash handlers: {e}");
    }
    // JIT'd code gets the dispositions a native program starts with (SIGPIPE's default); a
    // vanished controller shows up as a write error, not a signal (see server::serve).
    signals::restore_program_dispositions();

    // Arguments that are not UTF-8 are a usage error, not a panic.
    let Ok(args) = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect::<Result<Vec<String>, _>>()
    else {
        usage()
    };
    if args.is_empty() || (args.len() > 1 && !args[0].starts_with("listen=")) {
        usage();
    }
    let result = if let Some(fds) = args[0].strip_prefix("filedescs=") {
        let Some((a, b)) = fds.split_once(',') else {
            usage()
        };
        let (Ok(inp), Ok(out)) = (a.parse::<RawFd>(), b.parse::<RawFd>()) else {
            usage()
        };
        if inp < 0 || out < 0 {
            usage();
        }
        keep_from_programs(inp);
        keep_from_programs(out);
        // Kept at high numbers: the program's own descriptors start at 3, as natively.
        let moved_in = remjit_executor::fds::move_raw_out_of_the_way(inp);
        let out = if out == inp {
            moved_in
        } else {
            remjit_executor::fds::move_raw_out_of_the_way(out)
        };
        let inp = moved_in;
        if inp == out && is_socket(inp) {
            // SAFETY: the descriptor was handed to us by the parent and is ours now.
            let s = unsafe { UnixStream::from_raw_fd(inp) };
            let clone = s
                .try_clone()
                .map(|r| UnixStream::from(remjit_executor::fds::out_of_the_way(r.into())));
            match clone {
                Ok(r) => server::serve(Box::new(r), Box::new(s), Some(inp)),
                Err(e) => Err(format!("cannot use descriptor {inp}: {e}")),
            }
        } else {
            // SAFETY: as above, two descriptors.
            let (r, w) = unsafe { (File::from_raw_fd(inp), File::from_raw_fd(out)) };
            server::serve(Box::new(r), Box::new(w), None)
        }
    } else if let Some(addr) = args[0].strip_prefix("listen=") {
        server::listen::run(addr, &args[1..])
    } else {
        usage()
    };
    // SAFETY: flush every stdio stream JIT'd code wrote to.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("remjit-executor: {e}");
            std::process::exit(1);
        }
    }
}
