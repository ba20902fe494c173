//! Out-of-process behaviour: crash reports, exit statuses, no leaks (shared memory objects,
//! executor processes, mappings), and interoperability with LLVM 19 in both directions.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn executor_path() -> PathBuf {
    remjit().with_file_name("remjit-executor")
}

fn shm_entries() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn source(dir: &Path, name: &str, text: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, text).unwrap();
    compile(dir, &src, &format!("{name}.o"), flags)
}

/// The executor processes that are children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn crash_names_signal_address_and_function() {
    let dir = work_dir("remote-crash");
    let o = source(
        &dir,
        "crash",
        "#include <stdio.h>\n__attribute__((noinline)) int poke_bad_pointer(int *p) { return *p + 1; }\n\
         int main(void) { printf(\"before\\n\"); fflush(stdout); return poke_bad_pointer((int *)16); }\n",
        &["-O2"],
    );
    let before = shm_entries();
    for mode in [&[][..], &["--no-shared-memory"][..]] {
        let start = Instant::now();
        let out = jit(mode, std::slice::from_ref(&o), &[], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "reported promptly"
        );
        assert_ne!(out.status.code(), Some(0));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "before\n");
        assert!(err.contains("SIGSEGV"), "{err}");
        assert!(err.contains("address 0x10"), "{err}");
        assert!(err.contains("`poke_bad_pointer`+0x"), "{err}");
        assert!(err.contains("crash.o"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(shm_entries(), before, "no shared memory left behind");
}

#[test]
fn exit_from_jit_code_is_the_status() {
    let dir = work_dir("remote-exit");
    let o = source(
        &dir,
        "ex",
        "#include <stdio.h>\n#include <stdlib.h>\nstatic void bye(void) { printf(\"bye\\n\"); }\n\
         int main(void) { atexit(bye); printf(\"exiting\\n\"); exit(7); }\n",
        &["-O2"],
    );
    for mode in [&["--in-process"][..], &[][..], &["--no-shared-memory"][..]] {
        let out = jit(mode, std::slice::from_ref(&o), &[], &[]);
        assert_eq!(
            out.status.code(),
            Some(7),
            "{mode:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "exiting\nbye\n",
            "{mode:?}"
        );
    }
}

#[test]
fn no_executor_survives_a_killed_controller() {
    let dir = work_dir("remote-kill");
    let o = source(
        &dir,
        "sleepy",
        "#include <unistd.h>\nint main(void) { sleep(30); return 0; }\n",
        &["-O2"],
    );
    let before = shm_entries();
    let mut child = Command::new(remjit()).arg(&o).spawn().unwrap();
    // Wait for the executor to appear.
    let deadline = Instant::now() + Duration::from_secs(10);
    let exec = loop {
        if let Some(&e) = children(child.id()).first() {
            break e;
        }
        assert!(Instant::now() < deadline, "no executor started");
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(exec) {
        assert!(
            Instant::now() < deadline,
            "executor {exec} outlived its controller"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(shm_entries(), before, "no shared memory left behind");
}

fn llvm_jitlink() -> &'static str {
    let ok = Command::new("llvm-jitlink-19")
        .arg("--version")
        .output()
        .is_ok();
    assert!(ok, "llvm-jitlink-19 is needed (apt-get install llvm-19)");
    "llvm-jitlink-19"
}

fn llvm_runs(dir: &Path, inputs: &[PathBuf], extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(llvm_jitlink());
    cmd.current_dir(dir)
        .arg(format!("--oop-executor={}", executor_path().display()))
        .args(extra)
        .args(inputs);
    run_with_timeout(&mut cmd, Duration::from_secs(120))
}

#[test]
fn llvm_jitlink_runs_on_our_executor() {
    let dir = work_dir("interop-llvm");
    let hello = compile(&dir, &program("hello.c"), "hello.o", &["-O2"]);
    let zlib = compile(&dir, &program("zlib_roundtrip.c"), "zlib.o", &["-O2"]);
    let sqlite = compile(&dir, &program("sqlite_memdb.c"), "sqlite.o", &["-O2"]);
    let libz = PathBuf::from(format!("{LIB}/libz.a"));
    let libsqlite = PathBuf::from(format!("{LIB}/libsqlite3.a"));
    let zlib_expect = native(&dir, "zlib", &[zlib.clone(), libz.clone()], &[], &[]).0;
    let sqlite_expect = native(
        &dir,
        "sqlite",
        &[sqlite.clone(), libsqlite.clone()],
        &["-lm"],
        &[],
    )
    .0;
    let chain_dir = work_dir("interop-chain");
    let chain = chain_objects(&chain_dir, 1000);
    let before = shm_entries();
    for extra in [&[][..], &["--use-shared-memory"][..]] {
        let out = llvm_runs(&dir, std::slice::from_ref(&hello), extra);
        assert!(
            out.status.success(),
            "hello {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // llvm-jitlink passes no argv: argc is 0.
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello from the JIT, argc=0\n"
        );
        let out = llvm_runs(&dir, &[zlib.clone(), libz.clone()], extra);
        assert!(
            out.status.success(),
            "zlib {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, zlib_expect);
        let out = llvm_runs(&dir, &[sqlite.clone(), libsqlite.clone()], extra);
        assert!(
            out.status.success(),
            "sqlite {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, sqlite_expect);
        let out = llvm_runs(&chain_dir, &chain, extra);
        assert!(
            out.status.success(),
            "chain {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "chain of 1000: 1000\n"
        );
    }
    assert_eq!(
        shm_entries(),
        before,
        "the executor unlinks every name it created"
    );
}

#[test]
fn remjit_runs_on_llvms_executor() {
    let dir = work_dir("interop-remjit");
    let hello = compile(&dir, &program("hello.c"), "hello.o", &["-O2"]);
    let exec = Command::new("sh")
        .args(["-c", "command -v llvm-jitlink-executor-19"])
        .output()
        .unwrap();
    let exec = String::from_utf8_lossy(&exec.stdout).trim().to_string();
    assert!(
        !exec.is_empty(),
        "llvm-jitlink-executor-19 is needed (apt-get install llvm-19)"
    );
    for mode in [&[][..], &["--no-shared-memory"][..]] {
        let flag = format!("--oop-executor={exec}");
        let mut m = vec![flag.as_str()];
        m.extend_from_slice(mode);
        let out = jit(&m, std::slice::from_ref(&hello), &[], &["x"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello from the JIT, argc=2 [x]\n",
            "{mode:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0));
    }
}

#[test]
fn executor_over_tcp() {
    use std::io::BufRead;
    let dir = work_dir("remote-tcp");
    let hello = compile(&dir, &program("hello.c"), "hello.o", &["-O2"]);
    // Port 0: the executor picks one and says which.
    let mut exec = Command::new(executor_path())
        .arg("listen=127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(exec.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("listening on HOST:PORT")
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{line}");
    let flag = format!("--oop-executor-connect={addr}");
    let out = jit(&[flag.as_str()], &[hello], &[], &["tcp"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The program's output is the executor's (its terminal); one connection per executor: it
    // ends with the session.
    let done = exec.wait_with_output().unwrap();
    assert!(done.status.success());
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        "hello from the JIT, argc=2 [tcp]\n"
    );
}

#[test]
fn unreachable_executor_is_a_clear_error() {
    let dir = work_dir("remote-unreachable");
    let hello = compile(&dir, &program("hello.c"), "hello.o", &["-O2"]);
    // Nothing listens on port 1.
    let out = jit(
        &["--oop-executor-connect=127.0.0.1:1"],
        std::slice::from_ref(&hello),
        &[],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("cannot connect to executor at 127.0.0.1:1"),
        "{err}"
    );
    let out = jit(
        &["--oop-executor=/nonexistent/executor"],
        &[hello],
        &[],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot start executor /nonexistent/executor"),
        "{err}"
    );
}
