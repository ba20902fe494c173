//! `remjit-executor`: runs JIT'd code for a remjit or LLVM ORC controller.
//!
//!     remjit-executor filedescs=IN,OUT      inherited descriptors (two pipe ends, or one socket twice)
//!     remjit-executor listen=[HOST:]PORT [token-file=PATH | --insecure-no-auth] [keep-listening]
//!                                           one authenticated TCP session (HOST defaults to
//!                                           127.0.0.1; the token comes from the file or from
//!                                           REMJIT_TOKEN); with keep-listening, a forked
//!                                           process per connection, the listener going on

use std::os::fd::RawFd;

use remjit_executor::server;

fn usage() -> ! {
    eprintln!(
        "usage: remjit-executor filedescs=IN,OUT | listen=[HOST:]PORT [token-file=PATH | \
         --insecure-no-auth] [keep-listening]"
    );
    std::process::exit(2);
}

pub fn main() {
    // Reports of crashes of JIT'd code go where the controller asked (stderr otherwise).
    let report_fd = std::env::var("REMJIT_REPORT_FD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    std::env::remove_var("REMJIT_REPORT_FD");

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
        server::serve_inherited(inp, out, report_fd)
    } else if let Some(addr) = args[0].strip_prefix("listen=") {
        server::prepare_process(2);
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
