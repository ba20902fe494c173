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
    // Well above the executor's own bounds (an entry point waits up to 10 s for pending
    // content): a reply that comes at its bound must not race this time-out.
    ours.set_read_timeout(Some(Duration::from_secs(60)))
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
    // The refused run names the range; the corrupt header ends the session.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("remjit-executor: run_as_main: 0x")
            && lines[0].ends_with(" is not in memory this executor handed out"),
        "{stderr}"
    );
    assert_eq!(
        lines[1],
        "remjit-executor: protocol violation: bad frame: message size 3 is below the 32-byte \
         header"
    );
}

#[test]
fn exits_when_the_controller_goes_away() {
    let (mut child, s, _) = start();
    drop(s);
    let status = child.wait().unwrap();
    assert!(status.success());
}

/// Calls the service `name` over `s` as call `seq`; returns the result payload.
fn call(s: &mut UnixStream, info: &SetupMessage, seq: u64, name: &str, args: &[u8]) -> Vec<u8> {
    write_frame(s, Opcode::CallWrapper, seq, sym(info, name), args).unwrap();
    let f = read_frame(s, 1 << 20).unwrap().unwrap();
    assert_eq!((f.opcode, f.seq), (Opcode::Result, seq));
    f.payload
}

fn sps_error(payload: &[u8]) -> Option<String> {
    SpsError::from_bytes(payload).unwrap().0
}

#[test]
fn bad_entry_points_and_dylib_handles_get_error_replies() {
    use remjit_wire::types::{FinalizeRequest, SegFinalizeRequest};
    let (mut child, mut s, info) = start();
    let instance = sym(&info, names::MEMORY_MANAGER_INSTANCE);
    let reserve = |s: &mut UnixStream, seq| {
        let r = call(
            s,
            &info,
            seq,
            names::MEMORY_MANAGER_RESERVE,
            &(instance, 4096u64).to_bytes(),
        );
        Expected::<u64>::from_bytes(&r).unwrap().0.unwrap()
    };
    // Finalized read-only (a `ret` instruction in it, should it be run).
    let ro = reserve(&mut s, 1);
    let req = FinalizeRequest {
        segments: vec![SegFinalizeRequest {
            prot: 1,
            addr: ro,
            size: 4096,
            content: remjit_wire::sps::Bytes(vec![0xc3]),
        }],
        actions: vec![],
    };
    let r = call(
        &mut s,
        &info,
        2,
        names::MEMORY_MANAGER_FINALIZE,
        &(instance, req).to_bytes(),
    );
    assert_eq!(sps_error(&r), None);
    let r = call(&mut s, &info, 3, names::RUN_AS_INT, &(ro, 5i32).to_bytes());
    assert_eq!(i32::from_bytes(&r).unwrap(), -1);
    let r = call(&mut s, &info, 4, names::RUN_AS_VOID, &ro.to_bytes());
    assert_eq!(i32::from_bytes(&r).unwrap(), -1);
    let args = (ro, vec!["x".to_string()]).to_bytes();
    let r = call(&mut s, &info, 5, names::RUN_AS_MAIN, &args);
    assert_eq!(i64::from_bytes(&r).unwrap(), -1);
    let r = call(&mut s, &info, 6, names::REMJIT_RUN_MAIN, &ro.to_bytes());
    assert_eq!(i64::from_bytes(&r).unwrap(), -1);
    // Writing finalized read-only memory is refused too.
    let r = call(
        &mut s,
        &info,
        7,
        names::MEM_WRITE_UINT64S,
        &vec![(ro, 1u64)].to_bytes(),
    );
    assert!(sps_error(&r).unwrap().contains("is not writable"));
    // Reserved and never finalized (after waiting a bounded time for its content).
    let never = reserve(&mut s, 8);
    let r = call(
        &mut s,
        &info,
        9,
        names::RUN_AS_INT,
        &(never, 5i32).to_bytes(),
    );
    assert_eq!(i32::from_bytes(&r).unwrap(), -1);
    // A dylib lookup with a handle the executor never gave out.
    let dylibs = sym(&info, names::DYLIB_MANAGER_INSTANCE);
    let set = vec![remjit_wire::types::LookupElement {
        name: "puts".into(),
        required: true,
    }];
    let r = call(
        &mut s,
        &info,
        10,
        names::DYLIB_MANAGER_LOOKUP,
        &(dylibs, 0x3b9u64, set.clone()).to_bytes(),
    );
    let e = Expected::<Vec<remjit_wire::types::ExecutorSymbolDef>>::from_bytes(&r).unwrap();
    assert!(e.0.unwrap_err().contains("is no handle"));
    // A handle it did give out works.
    let r = call(
        &mut s,
        &info,
        11,
        names::DYLIB_MANAGER_OPEN,
        &(dylibs, String::new(), 0u64).to_bytes(),
    );
    let h = Expected::<u64>::from_bytes(&r).unwrap().0.unwrap();
    let r = call(
        &mut s,
        &info,
        12,
        names::DYLIB_MANAGER_LOOKUP,
        &(dylibs, h, set).to_bytes(),
    );
    let e = Expected::<Vec<remjit_wire::types::ExecutorSymbolDef>>::from_bytes(&r).unwrap();
    assert_ne!(e.0.unwrap()[0].addr, 0);
    // Alive through all of it.
    assert!(child.try_wait().unwrap().is_none());
    write_frame(&mut s, Opcode::Hangup, 0, 0, &SpsError::OK.to_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn oversized_frame_header_ends_the_session_without_reading_it() {
    let (mut child, mut s, _) = start();
    let mut r = s.try_clone().unwrap();
    // 1 GiB announced, then bytes start flowing: refused at the header.
    let h = encode_header(Opcode::CallWrapper, 1, 0x1000, 1 << 30);
    s.write_all(&h).unwrap();
    let _ = s.write_all(&vec![0u8; 1 << 20]);
    let f = read_frame(&mut r, 1 << 20).unwrap().unwrap();
    assert_eq!(f.opcode, Opcode::Hangup);
    let msg = sps_error(&f.payload).unwrap();
    assert!(msg.contains("exceeds the limit"), "{msg}");
    assert_eq!(child.wait().unwrap().code(), Some(1));
}

#[test]
fn a_reply_that_cannot_be_sent_ends_the_session() {
    use std::io::BufRead;
    // Over TCP a descriptor cannot travel: the memfd reply fails to send (as sendmsg failing
    // with ENOBUFS would). The executor must end the session, not leave the caller waiting.
    let mut exec = executor()
        .args(["listen=127.0.0.1:0", "--insecure-no-auth"])
        .env_remove("REMJIT_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(exec.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap()
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let setup = read_frame(&mut s, 1 << 20).unwrap().unwrap();
    let info = SetupMessage::from_bytes(&setup.payload).unwrap();
    let reserve = sym(&info, names::REMJIT_MEMFD_RESERVE);
    write_frame(&mut s, Opcode::CallWrapper, 1, reserve, &4096u64.to_bytes()).unwrap();
    // The stream ends (no reply ever comes), and the executor says why.
    assert!(matches!(read_frame(&mut s, 1 << 20), Ok(None) | Err(_)));
    assert_eq!(exec.wait().unwrap().code(), Some(1));
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("cannot send a reply"), "{rest}");
}

/// An argument that is not UTF-8 is a usage error (status 2), not a panic.
#[test]
fn arguments_not_in_utf8_are_a_usage_error() {
    use std::os::unix::ffi::OsStrExt;
    let out = executor()
        .arg(std::ffi::OsStr::from_bytes(b"listen=\xff"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("usage: remjit-executor filedescs=IN,OUT | listen=[HOST:]PORT"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
