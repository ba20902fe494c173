//! The executor binary on its own: command line, Setup, and survival of bad messages.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use remjit_wire::frame::{encode_header, read_frame, write_frame, Opcode};
use remjit_wire::names;
use remjit_wire::sps::{Expected, Sps, SpsError};
use remjit_wire::types::SetupMessage;

fn executor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_remjit-executor"))
}

#[test]
fn bad_command_line_is_a_usage_error() {
    let out = executor().arg("nonsense").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

fn start() -> (std::process::Child, UnixStream, SetupMessage) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fd = theirs.as_raw_fd();
    let mut cmd = executor();
    // Its complaints are checked by the tests, not printed among their results.
    cmd.arg(format!("filedescs={fd},{fd}"))
        .stderr(std::process::Stdio::piped());
    // SAFETY: clears close-on-exec on the inherited socket between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(theirs);
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut r = ours.try_clone().unwrap();
    let setup = read_frame(&mut r, 1 << 20).unwrap().unwrap();
    assert_eq!(setup.opcode, Opcode::Setup);
    let info = SetupMessage::from_bytes(&setup.payload).unwrap();
    (child, ours, info)
}

fn sym(info: &SetupMessage, name: &str) -> u64 {
    info.bootstrap_symbols
        .iter()
        .find(|s| s.0 == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

#[test]
fn setup_publishes_llvm_and_remjit_services() {
    let (mut child, mut s, info) = start();
    assert_eq!(info.page_size, 4096);
    for n in [
        names::DISPATCH_CTX,
        names::DISPATCH_FN,
        names::DYLIB_MANAGER_LOOKUP,
        names::MEMORY_MANAGER_FINALIZE,
        names::SHM_RESERVE,
        names::RUN_AS_MAIN,
        names::REGISTER_EH_FRAME_ALT,
        names::REMJIT_RUN_MAIN,
    ] {
        sym(&info, n);
    }
    write_frame(&mut s, Opcode::Hangup, 0, 0, &SpsError::OK.to_bytes()).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "Hangup ends the executor cleanly"
    );
}

#[test]
fn survives_bad_calls_and_refuses_foreign_memory() {
    let (mut child, mut s, info) = start();
    let mut r = s.try_clone().unwrap();
    // A call to an address that is no service.
    write_frame(&mut s, Opcode::CallWrapper, 1, 0xdead_beef, b"").unwrap();
    let f = read_frame(&mut r, 1 << 20).unwrap().unwrap();
    assert_eq!((f.opcode, f.seq), (Opcode::Result, 1));
    assert!(SpsError::from_bytes(&f.payload)
        .unwrap()
        .0
        .unwrap()
        .contains("no service"));
    // Garbage arguments to a real service.
    let reserve = sym(&info, names::MEMORY_MANAGER_RESERVE);
    write_frame(&mut s, Opcode::CallWrapper, 2, reserve, &[1, 2, 3]).unwrap();
    let f = read_frame(&mut r, 1 << 20).unwrap().unwrap();
    let e = Expected::<u64>::from_bytes(&f.payload).unwrap();
    assert!(e.0.unwrap_err().contains("malformed"));
    // A memory write outside JIT memory is refused, not performed.
    let write = sym(&info, names::MEM_WRITE_UINT64S);
    let args = vec![(0x1000u64, 7u64)].to_bytes();
    write_frame(&mut s, Opcode::CallWrapper, 3, write, &args).unwrap();
    let f = read_frame(&mut r, 1 << 20).unwrap().unwrap();
    assert!(SpsError::from_bytes(&f.payload)
        .unwrap()
        .0
        .unwrap()
        .contains("not in memory"));
    // Running code outside JIT memory is refused too.
    let run = sym(&info, names::RUN_AS_MAIN);
    let args = (libc::exit as *const () as u64, Vec::<String>::new()).to_bytes();
    write_frame(&mut s, Opcode::CallWrapper, 4, run, &args).unwrap();
    let f = read_frame(&mut r, 1 << 20).unwrap().unwrap();
    assert_eq!(i64::from_bytes(&f.payload).unwrap(), -1);
    // Still alive; then a corrupt header ends the session cleanly, with a Hangup.
    assert!(child.try_wait().unwrap().is_none());
    let mut bad = encode_header(Opcode::Result, 0, 0, 0);
    bad[0] = 3;
    s.write_all(&bad).unwrap();
    let f = read_frame(&mut r, 1 << 20).unwrap().unwrap();
    assert_eq!(f.opcode, Opcode::Hangup);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        stderr,
        "remjit-executor: protocol violation: bad frame: message size 3 is below the 32-byte \
         header\n"
    );
}

#[test]
fn exits_when_the_controller_goes_away() {
    let (mut child, s, _) = start();
    drop(s);
    let status = child.wait().unwrap();
    assert!(status.success());
}
