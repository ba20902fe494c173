//! Out-of-process behaviour: crash reports, exit statuses, no leaks (shared memory objects,
//! executor processes, mappings), and interoperability with LLVM 19 in both directions.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use remjit_wire::sps::Sps;

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

/// The pid in a shared memory object's name: `remjit-PID-...` (our executor), `jitlink_PID_N`
/// (LLVM's).
fn shm_owner(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("remjit-")
        .or_else(|| name.strip_prefix("jitlink_"))?;
    rest.split(['-', '_']).next()?.parse().ok()
}

/// The shared memory objects made since `before` that outlived the process that made them.
/// Other tests of this binary run meanwhile and have their own objects for a while: only an
/// object whose maker has ended (makers unlink theirs before they end) was left behind.
fn leaked_shm(before: &[String]) -> Vec<String> {
    let orphans: Vec<String> = shm_entries()
        .into_iter()
        .filter(|n| !before.contains(n) && shm_owner(n).is_some_and(|p| !alive(p)))
        .collect();
    let now = shm_entries();
    orphans.into_iter().filter(|n| now.contains(n)).collect()
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
        // Bounded by jit's time limit: a report that never came fails there.
        let out = jit(mode, std::slice::from_ref(&o), &[], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "before\n");
        assert!(err.contains("SIGSEGV"), "{err}");
        assert!(err.contains("address 0x10"), "{err}");
        assert!(err.contains("`poke_bad_pointer`+0x"), "{err}");
        assert!(err.contains("crash.o"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(
        leaked_shm(&before),
        Vec::<String>::new(),
        "no shared memory left behind"
    );
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

/// Ends a background process of a test (its pid is in the file), also when the test fails.
struct Daemon(PathBuf);
impl Drop for Daemon {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(p) = std::fs::read_to_string(&self.0)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
            {
                let _ = Command::new("kill").arg(p.to_string()).status();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `text` (C, given a pid file as its argument), which leaves a process behind that
/// writes its pid there and holds some of the executor's descriptors, then aborts: remjit must
/// report the abort rather than wait for that process.
fn abort_leaving_a_holder(name: &str, text: &str) {
    let dir = work_dir(&format!("remote-{name}"));
    let pidfile = dir.join(format!("{name}.pid"));
    let _ = std::fs::remove_file(&pidfile);
    let o = source(&dir, name, text, &["-O2"]);
    let _holder = Daemon(pidfile.clone());
    let mut cmd = Command::new(remjit());
    cmd.arg(&o).arg("--args").arg(&pidfile);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("SIGABRT"), "{err}");
}

#[test]
fn a_program_the_jit_code_starts_does_not_hold_the_session_open() {
    // A background program outlives the executor, which then dies: had it inherited the
    // session's socket or the crash-report pipe, remjit would wait for it.
    abort_leaving_a_holder(
        "daemon",
        "#include <stdio.h>\n#include <stdlib.h>\nint main(int argc, char **argv) {\n\
         char cmd[4096];\n\
         snprintf(cmd, sizeof cmd, \"sh -c 'echo $$ > %s; exec sleep 300' </dev/null >/dev/null \
         2>&1 &\", argv[1]);\n\
         if (argc < 2 || system(cmd) != 0) return 3;\n abort();\n}\n",
    );
}

#[test]
fn a_process_the_jit_code_forks_does_not_hold_the_session_open() {
    // The forked child keeps every descriptor the executor has (no exec): the session's
    // socket and the crash-report pipe stay open after the executor dies.
    abort_leaving_a_holder(
        "forked",
        "#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n\
         int main(int argc, char **argv) {\n\
         if (argc < 2) return 3;\n\
         if (fork() == 0) {\n\
           FILE *f = fopen(argv[1], \"w\"); fprintf(f, \"%d\\n\", (int)getpid()); fclose(f);\n\
           close(0); close(1); close(2); sleep(300); _exit(0);\n\
         }\n\
         abort();\n}\n",
    );
}

/// remjit running a program that sleeps 30 s, in work directory `name`, and its executor's pid
/// once the executor has been there for 200 ms.
fn sleepy_under_remjit(name: &str) -> (std::process::Child, u32) {
    let dir = work_dir(name);
    let o = source(
        &dir,
        "sleepy",
        "#include <unistd.h>\nint main(void) { sleep(30); return 0; }\n",
        &["-O2"],
    );
    let child = Command::new(remjit()).arg(&o).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let exec = loop {
        if let Some(&e) = children(child.id()).first() {
            break e;
        }
        assert!(Instant::now() < deadline, "no executor started");
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_millis(200));
    (child, exec)
}

/// The remjit binaries load their code near the top of the low 2 GiB, so that the heap (up
/// to 1 GiB above the executable's end, by the kernel's brk randomization) never splits the
/// space below: a gigabyte slab must fit there (LLVM's controllers ask for exactly 1 GiB; at
/// the linker's default of 2 MiB it did not, 1 run in ~40).
#[test]
fn the_heap_never_splits_the_low_space() {
    let (mut child, exec) = sleepy_under_remjit("remote-layout");
    for pid in [child.id(), exec] {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let start = |l: &str| u64::from_str_radix(l.split('-').next().unwrap(), 16).unwrap();
        let code = maps
            .lines()
            .find(|l| l.contains(" r-xp ") && l.ends_with("/remjit"))
            .map(start)
            .unwrap_or_else(|| panic!("no code of remjit in {pid}'s map:\n{maps}"));
        assert!(
            (0x7000_0000..1 << 31).contains(&code),
            "{pid}'s code at {code:#x}:\n{maps}"
        );
        if let Some(heap) = maps.lines().find(|l| l.ends_with("[heap]")).map(start) {
            assert!(heap > code, "{pid}'s heap at {heap:#x}:\n{maps}");
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn no_executor_survives_a_killed_controller() {
    let before = shm_entries();
    let (mut child, exec) = sleepy_under_remjit("remote-kill");
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
    assert_eq!(
        leaked_shm(&before),
        Vec::<String>::new(),
        "no shared memory left behind"
    );
}

#[test]
fn a_stopped_executor_dies_with_its_controller() {
    // Stopped, the executor cannot notice the end of its stream: only the parent-death signal
    // it asked for ends it when remjit is killed (set in the forked child when remjit, alone in
    // its process as here, forks itself as the executor; else between fork and exec).
    let (mut child, exec) = sleepy_under_remjit("remote-kill-stopped");
    // SAFETY: kill(2) of the executor this test's remjit started.
    unsafe { libc::kill(exec as i32, libc::SIGSTOP) };
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(exec) {
        if Instant::now() > deadline {
            // SAFETY: as above; it must not linger.
            unsafe { libc::kill(exec as i32, libc::SIGKILL) };
            panic!("stopped executor {exec} outlived its controller");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_program_gets_the_environment_remjit_got() {
    // An exec'd executor gets REMJIT_REPORT_FD and removes it; a forked one gets nothing of
    // ours: either way the program sees, in order, the variables a native run sees.
    let dir = work_dir("remote-env");
    let o = source(
        &dir,
        "env",
        "#include <stdio.h>\nextern char **environ;\nint main(void) {\n\
         for (char **e = environ; *e; e++) puts(*e);\n  return 0;\n}\n",
        &["-O2"],
    );
    let expect = native(&dir, "env", std::slice::from_ref(&o), &[], &[]);
    assert!(expect.0.len() > 10, "the native run prints the environment");
    for mode in [&[][..], &["--no-shared-memory"], &["--in-process"]] {
        let out = jit(mode, std::slice::from_ref(&o), &[], &[]);
        assert_same(&format!("{mode:?}"), &out, &expect);
    }
    // The exec'd executor (not this program itself) too.
    let exec = format!("--oop-executor={}", executor_path().display());
    let out = jit(&[&exec], std::slice::from_ref(&o), &[], &[]);
    assert_same("remjit-executor", &out, &expect);
}

/// A command running `llvm-jitlink-19`, whose crash handler (and its executor's, which inherits
/// the environment) does not symbolize: that leaves `symbolizer-*` files in /tmp.
fn llvm_jitlink() -> Command {
    let ok = Command::new("llvm-jitlink-19")
        .arg("--version")
        .output()
        .is_ok();
    assert!(ok, "llvm-jitlink-19 is needed (apt-get install llvm-19)");
    let mut cmd = Command::new("llvm-jitlink-19");
    cmd.env("LLVM_DISABLE_SYMBOLIZATION", "1");
    cmd
}

fn llvm_runs(dir: &Path, inputs: &[PathBuf], extra: &[&str]) -> std::process::Output {
    let mut cmd = llvm_jitlink();
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
        leaked_shm(&before),
        Vec::<String>::new(),
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
        // LLVM's executor inherits this: its crash handler does not symbolize (which leaves
        // `symbolizer-*` files in /tmp when it crashes as it shuts down).
        let mut cmd = Command::new(remjit());
        cmd.args(&m)
            .arg(&hello)
            .args(["--args", "x"])
            .env("LLVM_DISABLE_SYMBOLIZATION", "1");
        let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello from the JIT, argc=2 [x]\n",
            "{mode:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0));
    }
}

/// A token (64 hex digits) made from `seed`: tests need distinct ones, not secret ones.
fn test_token(seed: u8) -> String {
    (0..32u8).map(|i| format!("{:02x}", i ^ seed)).collect()
}

/// `remjit-executor listen=127.0.0.1:0 ARGS` with `REMJIT_TOKEN` set to `token` (or unset):
/// the child (stdout piped), its address, and its stderr lines as they come.
fn listen(
    args: &[&str],
    token: Option<&str>,
) -> (
    std::process::Child,
    String,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::BufRead;
    let mut cmd = Command::new(executor_path());
    cmd.arg("listen=127.0.0.1:0")
        .args(args)
        .env_remove("REMJIT_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(t) = token {
        cmd.env("REMJIT_TOKEN", t);
    }
    let mut exec = cmd.spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(exec.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    // "remjit-executor: listening on HOST:PORT (...)"
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (exec, addr, rx)
}

/// The next stderr line of a listening executor that contains `what`.
fn expect_line(rx: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(what) => return l,
            Ok(_) => {}
            Err(e) => panic!("executor never said {what:?}: {e}"),
        }
    }
}

/// remjit over TCP to `addr`, with `REMJIT_TOKEN` = `token` (or unset) and `extra` options.
fn remjit_tcp(
    addr: &str,
    token: Option<&str>,
    extra: &[&str],
    input: &Path,
) -> std::process::Output {
    let mut cmd = Command::new(remjit());
    cmd.arg(format!("--oop-executor-connect={addr}"))
        .args(extra)
        .arg(input)
        .args(["--args", "tcp"])
        .env_remove("REMJIT_TOKEN");
    if let Some(t) = token {
        cmd.env("REMJIT_TOKEN", t);
    }
    run_with_timeout(&mut cmd, Duration::from_secs(120))
}

/// remjit failed with exit status 1 and an error message containing `what`.
fn assert_fails_with(out: &std::process::Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("remjit: error: "), "{err}");
    assert!(err.contains(what), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The program's output is the executor's (its stdout); one session per executor: it ends
/// with the session.
fn assert_served_hello(exec: std::process::Child, out: &std::process::Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = exec.wait_with_output().unwrap();
    assert!(done.status.success());
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        "hello from the JIT, argc=2 [tcp]\n"
    );
}

#[test]
fn executor_over_tcp_with_a_token() {
    let dir = work_dir("remote-tcp");
    let hello = compile(&dir, &program("hello.c"), "hello.o", &["-O2"]);
    // The token in the environment of both.
    let t = test_token(1);
    let (exec, addr, _log) = listen(&[], Some(&t));
    assert_served_hello(exec, &remjit_tcp(&addr, Some(&t), &[], &hello));
    // The token in files of mode 0600 (copy mode: the default over TCP; and shared memory).
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join("token");
    std::fs::write(&file, format!("{}\n", test_token(2))).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let exec_arg = format!("token-file={}", file.display());
    let remjit_arg = format!("--oop-executor-token-file={}", file.display());
    for extra in [&[][..], &["--use-shared-memory"][..]] {
        let (exec, addr, _log) = listen(&[&exec_arg], None);
        let mut opts = vec![remjit_arg.as_str()];
        opts.extend_from_slice(extra);
        assert_served_hello(exec, &remjit_tcp(&addr, None, &opts, &hello));
    }
    // A token file others may read is refused by both.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = remjit_tcp("127.0.0.1:1", None, &[&remjit_arg], &hello);
    assert_fails_with(&out, "is readable by others (mode 0644)");
    let out = Command::new(executor_path())
        .args(["listen=127.0.0.1:0", &exec_arg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("readable by others"));
    std::fs::remove_file(&file).unwrap();
}

/// Over TCP the controller's Ctrl-C is urgent data on the session's socket; a program's own
/// urgent data is its own business: SIGURG keeps its default (ignored), the program is not
/// interrupted, and it reads the byte as natively.
#[test]
fn a_programs_own_urgent_data_does_not_interrupt_it_over_tcp() {
    let dir = work_dir("remote-urgent");
    let obj = compile(&dir, &program("urgent.c"), "urgent.o", &["-O2"]);
    let expect = native(&dir, "urgent", std::slice::from_ref(&obj), &[], &[]);
    assert_eq!(
        String::from_utf8_lossy(&expect.0),
        "SIGURG default\nurgent byte 'u' received\n"
    );
    let t = test_token(3);
    let (exec, addr, _log) = listen(&[], Some(&t));
    let out = remjit_tcp(&addr, Some(&t), &[], &obj);
    let done = exec.wait_with_output().unwrap();
    assert_eq!(
        (String::from_utf8_lossy(&done.stdout), out.status.code()),
        (String::from_utf8_lossy(&expect.0), Some(expect.1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `keep-listening` forks a process per connection, before it authenticates: connections
/// beyond the cap are dropped (no forking without bound), and the places come back as the
/// sessions end.
#[test]
fn keep_listening_serves_a_bounded_number_of_sessions_at_once() {
    let dir = work_dir("remote-keep-cap");
    let hello = compile(&dir, &program("hello.c"), "hello.o", &["-O2"]);
    let t = test_token(4);
    let (exec, addr, log) = listen(&["keep-listening"], Some(&t));
    // Killed and reaped however the test ends (a keep-listening executor does not end).
    struct Listener(std::process::Child);
    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = (self.0.kill(), self.0.wait());
        }
    }
    let exec = Listener(exec);
    let idle: Vec<std::net::TcpStream> = (0..32)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let extra = std::net::TcpStream::connect(&addr).unwrap();
    let line = expect_line(&log, "keep-listening serves at most");
    assert!(
        line.ends_with(
            "dropped: 32 sessions run already (keep-listening serves at most 32 at once)"
        ),
        "{line}"
    );
    drop((idle, extra));
    // Every session process ended and was reaped: a controller is served again.
    let children = format!("/proc/{0}/task/{0}/children", exec.0.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&children)
        .unwrap()
        .trim()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "sessions never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = remjit_tcp(&addr, Some(&t), &[], &hello);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn plain_listen_refuses_to_start_and_llvm_jitlink_runs_nothing() {
    let dir = work_dir("remote-noauth");
    let hello = compile(&dir, &program("hello.c"), "hello.o", &["-O2"]);
    // No token, no --insecure-no-auth: the executor does not start.
    let out = Command::new(executor_path())
        .arg("listen=127.0.0.1:0")
        .env_remove("REMJIT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen without a token"), "{err}");
    // With a token, LLVM's controller (which cannot authenticate) runs nothing, and the
    // executor goes on waiting for one that can.
    let t = test_token(3);
    let (exec, addr, log) = listen(&[], Some(&t));
    let mut cmd = llvm_jitlink();
    cmd.arg(format!("--oop-executor-connect={addr}"))
        .arg(&hello);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert_ne!(out.status.code(), Some(0));
    expect_line(&log, "dropped");
    // remjit without a token is told what is missing.
    let out = remjit_tcp(&addr, None, &[], &hello);
    assert_fails_with(&out, "the executor asks for a token");
    assert_served_hello(exec, &remjit_tcp(&addr, Some(&t), &[], &hello));
}

#[test]
fn wrong_token_is_refused_on_both_sides() {
    let dir = work_dir("remote-wrong-token");
    let hello = compile(&dir, &program("hello.c"), "hello.o", &["-O2"]);
    let t = test_token(4);
    let (exec, addr, log) = listen(&[], Some(&t));
    let out = remjit_tcp(&addr, Some(&test_token(5)), &[], &hello);
    assert_fails_with(&out, "the executor refused the token");
    assert!(out.stdout.is_empty());
    expect_line(&log, "(wrong token)");
    // The executor keeps listening for the right controller.
    assert_served_hello(exec, &remjit_tcp(&addr, Some(&t), &[], &hello));
}

#[test]
fn idle_connection_does_not_keep_the_controller_out() {
    let dir = work_dir("remote-idle");
    let hello = compile(&dir, &program("hello.c"), "hello.o", &["-O2"]);
    let t = test_token(6);
    let (exec, addr, log) = listen(&[], Some(&t));
    // Connected first and never says a word.
    let idle = std::net::TcpStream::connect(&addr).unwrap();
    assert_served_hello(exec, &remjit_tcp(&addr, Some(&t), &[], &hello));
    expect_line(&log, "no answer to the token challenge");
    drop(idle);
}

#[test]
fn llvm_jitlink_runs_on_an_insecure_tcp_executor() {
    use std::io::BufRead;
    let dir = work_dir("remote-insecure");
    // Flushed at once: the session does not end (below), so stdio's exit flush never comes.
    let hello = source(
        &dir,
        "flushed",
        "#include <stdio.h>\nint main(int argc, char **argv) { printf(\"hello from the JIT, \
         argc=%d\\n\", argc); fflush(stdout); return 0; }\n",
        &["-O2"],
    );
    let (mut exec, addr, _log) = listen(&["--insecure-no-auth"], None);
    let stdout = exec.stdout.take().unwrap();
    let mut llvm = llvm_jitlink()
        .arg(format!("--oop-executor-connect={addr}"))
        .arg(&hello)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "hello from the JIT, argc=0\n");
    // llvm-jitlink-19 does not end a TCP session by itself (it closes its socket while its
    // reader thread still reads it; the same with llvm-jitlink-executor-19): end it here,
    // and the executor ends with the connection.
    llvm.kill().unwrap();
    llvm.wait().unwrap();
    let status = exec.wait().unwrap();
    assert!(status.code().is_some(), "the executor exits: {status:?}");
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

#[test]
fn silent_executor_is_reported_within_the_bound() {
    use std::os::unix::fs::PermissionsExt;
    let dir = work_dir("remote-silent");
    let hello = compile(&dir, &program("hello.c"), "hello.o", &["-O2"]);
    // A spawned "executor" that never speaks.
    let script = dir.join("mute-executor");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let oop = format!("--oop-executor={}", script.display());
    let out = jit(
        &[&oop, "--oop-executor-timeout=1"],
        std::slice::from_ref(&hello),
        &[],
        &[],
    );
    assert_fails_with(&out, "did not answer within 1 s");
    // One that listens over TCP and never speaks.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let keep = std::thread::spawn(move || l.accept().map(|c| c.0));
    let out = remjit_tcp(&addr, None, &["--oop-executor-timeout=1"], &hello);
    assert_fails_with(&out, "no answer within 1 s");
    drop(keep.join());
}

/// A fake executor over TCP: sends `setup`, then answers the first call with `reply_seq(seq)`.
fn fake_executor(setup: Vec<u8>, reply_seq: fn(u64) -> u64) -> String {
    use remjit_wire::frame::{read_frame, write_frame, Opcode};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write_frame(&mut s, Opcode::Setup, 0, 0, &setup).unwrap();
        if let Ok(Some(f)) = read_frame(&mut s, 1 << 20) {
            let reply = remjit_wire::sps::Expected::<u64>(Ok(1)).to_bytes();
            let _ = write_frame(&mut s, Opcode::Result, reply_seq(f.seq), 0, &reply);
        }
        // Stay until the controller is done with us.
        let _ = read_frame(&mut s, 1 << 20);
    });
    addr
}

fn fake_setup(page_size: u64) -> Vec<u8> {
    use remjit_wire::names;
    remjit_wire::types::SetupMessage {
        target_triple: "x86_64-unknown-linux-gnu".into(),
        page_size,
        bootstrap_map: vec![],
        bootstrap_symbols: [
            names::DYLIB_MANAGER_INSTANCE,
            names::DYLIB_MANAGER_OPEN,
            names::DYLIB_MANAGER_LOOKUP,
            names::MEMORY_MANAGER_INSTANCE,
            names::MEMORY_MANAGER_RESERVE,
            names::MEMORY_MANAGER_FINALIZE,
            names::MEMORY_MANAGER_DEALLOCATE,
            names::RUN_AS_MAIN,
        ]
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), 0x1000 * (i as u64 + 1)))
        .collect(),
    }
    .to_bytes()
}

#[test]
fn protocol_violations_end_the_session() {
    let dir = work_dir("remote-violation");
    let hello = compile(&dir, &program("hello.c"), "hello.o", &["-O2"]);
    // A Result for a call nobody made.
    let addr = fake_executor(fake_setup(4096), |seq| seq + 1000);
    let out = remjit_tcp(&addr, None, &[], &hello);
    assert_fails_with(&out, "protocol violation: the executor answered call");
    // A Setup with an absurd page size.
    let addr = fake_executor(fake_setup(3 << 40), |seq| seq);
    let out = remjit_tcp(&addr, None, &[], &hello);
    assert_fails_with(
        &out,
        "protocol violation: the executor's Setup announces a page size of 3298534883328 bytes",
    );
}

#[test]
fn stopped_executor_is_reported_once_and_waited_for() {
    use std::io::BufRead;
    let dir = work_dir("remote-stopped");
    let o = source(
        &dir,
        "slow",
        "#include <stdio.h>\n#include <unistd.h>\n\
         int main(void) { printf(\"started\\n\"); fflush(stdout); sleep(2); printf(\"done\\n\"); return 0; }\n",
        &["-O2"],
    );
    let mut child = Command::new(remjit())
        .arg(&o)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    let exec = *children(child.id()).first().expect("the executor");
    // SAFETY: signals to the executor we started.
    unsafe { libc::kill(exec as i32, libc::SIGSTOP) };
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(|l| l.ok())
        {
            let _ = tx.send(l);
        }
    });
    let said = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(
        said,
        format!("remjit: executor pid {exec} is stopped; waiting")
    );
    // SAFETY: as above.
    unsafe { libc::kill(exec as i32, libc::SIGCONT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "done\n");
    assert!(child.wait().unwrap().success());
    assert!(rx.try_recv().is_err(), "said once");
}

#[test]
fn copy_mode_sends_big_content_in_pieces() {
    // 80 MiB of initialized data: more than the executor takes in one frame.
    let dir = work_dir("remote-big-copy");
    let o = source(
        &dir,
        "big",
        "#include <stdio.h>\n#define N (80 << 20)\n\
         char big[N] = { 1, [N / 2] = 5, [N - 1] = 2 };\n\
         int main(void) { printf(\"%d\\n\", big[0] + big[N / 2] + big[N - 1]); return 0; }\n",
        &["-O2"],
    );
    for mode in [&["--no-shared-memory"][..], &[][..]] {
        let out = jit(mode, std::slice::from_ref(&o), &[], &[]);
        assert_eq!(
            (
                String::from_utf8_lossy(&out.stdout).as_ref(),
                out.status.code()
            ),
            ("8\n", Some(0)),
            "{mode:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_file(&o).unwrap();
}

/// Host symbols the executor has found are asked for once per session: a later link that uses
/// them sends no lookup, and its code still reaches them; a new name is asked for.
#[test]
fn found_host_symbols_are_asked_for_once() {
    use remjit::remote::{MemoryMode, RemoteExecutor};
    use remjit::{Session, SessionOptions};
    use std::sync::Arc;
    let dir = work_dir("lookup-cache");
    let sources = [
        // Globals, not literals: gcc folds strlen("...") into a constant.
        (
            "a",
            "#include <string.h>\nchar a_s[] = \"four\";\n\
             int a_len(void) { return (int)strlen(a_s); }\n",
        ),
        (
            "b",
            "#include <string.h>\nchar b_s[] = \"seven!!\";\n\
             int b_len(void) { return (int)strlen(b_s); }\n",
        ),
        (
            "c",
            "#include <string.h>\nchar c_s[] = \"x\";\n\
             int c_cmp(void) { return strcmp(c_s, \"x\") == 0 ? 5 : 6; }\n",
        ),
    ];
    let objects: Vec<PathBuf> = sources
        .iter()
        .map(|(name, text)| {
            let src = dir.join(format!("{name}.c"));
            std::fs::write(&src, text).unwrap();
            compile(&dir, &src, &format!("{name}.o"), &["-O0", "-fPIC"])
        })
        .collect();
    let exec = Arc::new(
        RemoteExecutor::spawn(
            &remjit().with_file_name("remjit-executor"),
            MemoryMode::Shared,
        )
        .unwrap(),
    );
    let mut s = Session::with_executor(exec.clone(), SessionOptions::default()).unwrap();
    let base = exec.lookups_sent();
    let mut results = Vec::new();
    let mut sent = Vec::new();
    for (obj, (name, _)) in objects.iter().zip(sources) {
        s.add_file(obj).unwrap();
        s.link().unwrap();
        let entry = match name {
            "a" => "a_len",
            "b" => "b_len",
            _ => "c_cmp",
        };
        results.push(s.run_main(entry, &[]).unwrap());
        sent.push(exec.lookups_sent() - base);
    }
    assert_eq!(results, vec![4, 7, 5]);
    // a asks for strlen; b finds it known; c asks for strcmp.
    assert_eq!(sent, vec![1, 1, 2]);
}

/// The executor runs `main` on a reused thread as if each call had a fresh main thread: the
/// `thread_local` destructors of a call run before the call returns, and the next call sees
/// the initial values again (shared memory and copying).
#[test]
fn each_main_call_gets_fresh_thread_locals_and_runs_their_destructors() {
    use remjit::remote::{MemoryMode, RemoteExecutor};
    use remjit::{Session, SessionOptions};
    use std::sync::Arc;
    let dir = work_dir("remote-fresh-tls");
    let src = dir.join("tls.cc");
    std::fs::write(
        &src,
        "static int dtors;\n\
         struct T { int n = 0; ~T() { dtors++; } };\n\
         thread_local T t;\n\
         extern \"C\" int bump() { return ++t.n * 100 + dtors; }\n",
    )
    .unwrap();
    let o = compile(&dir, &src, "tls.o", &["-O2", "-fPIC"]);
    for mode in [MemoryMode::Shared, MemoryMode::Copy] {
        let exec = Arc::new(RemoteExecutor::spawn(&executor_path(), mode).unwrap());
        let mut s = Session::with_executor(exec, SessionOptions::default()).unwrap();
        s.add_file(&o).unwrap();
        s.link().unwrap();
        let got: Vec<i32> = (0..3).map(|_| s.run_main("bump", &[]).unwrap()).collect();
        // A reused thread that kept its thread-locals would give 100, 200, 300; one that did
        // not run their destructors 100, 100, 100.
        assert_eq!(got, vec![100, 101, 102], "{mode:?}");
    }
}

/// With shared memory, finalize and calls go through the call mailbox once the session has
/// made more than four of them; an executor that dies while the controller waits there is
/// reported as over the socket, without a hang. Copying keeps the socket.
#[test]
fn executor_death_during_a_mailbox_call_is_reported() {
    use remjit::remote::{MemoryMode, RemoteExecutor};
    use remjit::{Session, SessionOptions};
    use std::sync::Arc;
    let dir = work_dir("remote-mailbox-death");
    let o = source(
        &dir,
        "die",
        "#include <signal.h>\n#include <unistd.h>\n\
         int fine(void) { return 42; }\n\
         int die(void) { kill(getpid(), SIGKILL); pause(); return 0; }\n",
        &["-O2"],
    );
    for (mode, through_mailbox) in [(MemoryMode::Shared, true), (MemoryMode::Copy, false)] {
        let exec = Arc::new(RemoteExecutor::spawn(&executor_path(), mode).unwrap());
        let mut s = Session::with_executor(exec.clone(), SessionOptions::default()).unwrap();
        s.add_file(&o).unwrap();
        s.link().unwrap();
        for _ in 0..3 {
            assert_eq!(s.run_main("fine", &[]).unwrap(), 42);
        }
        // Eight calls a mailbox serves: initialize (the session's call-stub block, then the
        // module), then set args and call three times. The first four go over the socket
        // (a mailbox pays only for sessions that make more), the mailbox opens at the fifth.
        let expect = if through_mailbox { 4 } else { 0 };
        assert_eq!(exec.mailbox_calls(), expect, "{mode:?}");
        // A hang fails the test instead of blocking it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = s.run_main("die", &[]).map_err(|e| e.to_string());
            let _ = tx.send(r);
            drop(s);
        });
        let err = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the call ends")
            .expect_err("the executor died");
        assert_eq!(
            err, "executor: the executor closed the connection",
            "{mode:?}"
        );
        assert!(matches!(
            exec.ending(),
            remjit::remote::Ending::Signaled(libc::SIGKILL, _)
        ));
    }
    std::fs::remove_file(&o).unwrap();
}

/// Runs C `text` natively, checks that it printed `stdout` and ended with `status`, then
/// through remjit out of process (shared memory and copying) for the same.
fn out_of_process_as_natively(name: &str, text: &str, stdout: &str, status: i32) {
    let dir = work_dir(&format!("remote-{name}"));
    let o = source(&dir, name, text, &["-O2"]);
    let expect = native(&dir, name, std::slice::from_ref(&o), &[], &[]);
    assert_eq!(expect, (stdout.as_bytes().to_vec(), status));
    for mode in [&[][..], &["--no-shared-memory"][..]] {
        let out = jit(mode, std::slice::from_ref(&o), &[], &[]);
        assert_same(&format!("{name} {mode:?}"), &out, &expect);
    }
}

/// A child that JIT'd code forks and that returns from `main` exits with `main`'s status, as
/// natively; it never answers (or serves) the controller in the executor's place.
#[test]
fn a_forked_child_returning_from_main_exits_as_natively() {
    out_of_process_as_natively(
        "forkret",
        "#include <stdio.h>\n#include <sys/wait.h>\n#include <unistd.h>\n\
         int main(void) {\n\
         \x20 pid_t p = fork();\n\
         \x20 if (p == 0) return 3;\n\
         \x20 int st = 0;\n\
         \x20 waitpid(p, &st, 0);\n\
         \x20 printf(\"child %d\\n\", WIFEXITED(st) ? WEXITSTATUS(st) : -1);\n\
         \x20 return 10;\n}\n",
        "child 3\n",
        10,
    );
}

/// `main` leaving by `pthread_exit` ends the program with status 0 as natively, instead of
/// leaving remjit waiting for a return that cannot come (the executor's thread that ran it is
/// gone).
#[test]
fn main_leaving_by_pthread_exit_ends_the_program() {
    out_of_process_as_natively(
        "pexit",
        "#include <pthread.h>\n#include <stdio.h>\n#include <stdlib.h>\n\
         static void bye(void) { printf(\"bye\\n\"); }\n\
         int main(void) { atexit(bye); printf(\"before\\n\"); pthread_exit(0); return 5; }\n",
        "before\nbye\n",
        0,
    );
}

/// A small module's memory, freed, is cleared in place (not given back) with shared memory:
/// the next module there finds zeroes where its zero-filled data lies, as in fresh memory.
#[test]
fn a_freed_small_module_leaves_zeroes_for_the_next() {
    use remjit::remote::{MemoryMode, RemoteExecutor};
    use remjit::{Session, SessionOptions};
    use std::sync::Arc;
    let dir = work_dir("remote-cleared");
    // The same layout twice: initialised data the first time, zero-filled the second.
    let full = source(
        &dir,
        "full",
        "int data[2048] = { [0 ... 2047] = 7 };\n\
         int probe(void) { int s = 0; for (int i = 0; i < 2048; i++) s += data[i]; return s; }\n",
        &["-O2", "-fPIC"],
    );
    let empty = source(
        &dir,
        "empty",
        "int data[2048];\n\
         int probe(void) { int s = 0; for (int i = 0; i < 2048; i++) s += data[i]; return s; }\n",
        &["-O2", "-fPIC"],
    );
    let exec = Arc::new(RemoteExecutor::spawn(&executor_path(), MemoryMode::Shared).unwrap());
    let mut s = Session::with_executor(exec, SessionOptions::default()).unwrap();
    s.add_file(&full).unwrap();
    let m = s.link().unwrap();
    let at = s.lookup("probe").unwrap();
    assert_eq!(s.run_main("probe", &[]).unwrap(), 7 * 2048);
    s.remove_module(m).unwrap();
    s.add_file(&empty).unwrap();
    s.link().unwrap();
    assert_eq!(
        s.lookup("probe").unwrap(),
        at,
        "the freed range is used again"
    );
    assert_eq!(s.run_main("probe", &[]).unwrap(), 0);
}

/// A posted call's failure is the error of the next call, over the socket and through the
/// call mailbox; calls posted while the mailbox is busy wait in remjit and go out together (one
/// batch), in order, each checked as if alone.
#[test]
fn a_posted_calls_failure_is_the_next_calls_error() {
    use remjit::remote::ring::sps_error_check;
    use remjit::remote::{MemoryMode, RemoteExecutor};
    use remjit::{Session, SessionOptions};
    use remjit_wire::names;
    use remjit_wire::sps::SpsError;
    use std::sync::Arc;
    let dir = work_dir("remote-posted");
    let o = source(
        &dir,
        "nap",
        "#include <unistd.h>\nvoid nap(void) { usleep(100000); }\n",
        &["-O2"],
    );
    let exec = Arc::new(RemoteExecutor::spawn(&executor_path(), MemoryMode::Shared).unwrap());
    let conn = exec.connection().clone();
    let args = vec!["prog".to_string()];
    let set_args = |a: &Vec<String>| conn.call_named::<_, SpsError>(names::REMJIT_SET_ARGS, a);
    let malformed = "executor: setting the program's arguments: set_program_args: malformed \
                     arguments: bad SPS data: needs 8 bytes, 1 left";
    // Over the socket: the mailbox opens at the fifth call it would serve.
    let post_bad = || {
        conn.post_named(
            names::REMJIT_SET_ARGS,
            &7u8,
            sps_error_check("setting the program's arguments"),
        )
    };
    post_bad().unwrap();
    assert_eq!(set_args(&args).unwrap_err().to_string(), malformed);
    assert_eq!(exec.mailbox_calls(), 0);
    for _ in 0..4 {
        set_args(&args).unwrap().into_result().unwrap();
    }
    assert_eq!(
        exec.mailbox_calls(),
        1,
        "the fifth went through the mailbox"
    );
    // Through the mailbox, alone.
    post_bad().unwrap();
    assert_eq!(set_args(&args).unwrap_err().to_string(), malformed);
    // While a posted call naps in the mailbox, three more wait and go out as one batch.
    let mut s = Session::with_executor(exec.clone(), SessionOptions::default()).unwrap();
    s.add_file(&o).unwrap();
    s.link().unwrap();
    let nap = s.lookup("nap").unwrap();
    let calls = exec.mailbox_calls();
    let ok = |_: &[u8]| Ok(());
    conn.post_named_in_mailbox(names::RUN_AS_VOID, &nap, Box::new(ok))
        .unwrap();
    let good = sps_error_check("setting the program's arguments");
    conn.post_named(names::REMJIT_SET_ARGS, &args, good)
        .unwrap();
    post_bad().unwrap();
    post_bad().unwrap();
    assert_eq!(set_args(&args).unwrap_err().to_string(), malformed);
    // Two exchanges: the nap, then the batch of three; the call that found the failure did
    // not go out.
    assert_eq!(exec.mailbox_calls(), calls + 2);
    set_args(&args).unwrap().into_result().unwrap();
}

/// With `pipelined_initialize`, a module's initialize that fails while the next module's waits
/// behind it in remjit: the failure is the next call's error, and the module behind it is
/// still initialized (its constructor ran), as when the calls go out together or over the
/// socket.
#[test]
fn a_failed_posted_initialize_does_not_drop_the_next_modules() {
    use remjit::remote::{MemoryMode, RemoteExecutor};
    use remjit::{Session, SessionOptions};
    use std::sync::Arc;
    let dir = work_dir("remote-posted-drop");
    let obj = |name: &str, text: &str| source(&dir, name, text, &["-O2", "-fPIC"]);
    let base = obj("base", "int fine(void) { return 42; }\n");
    let slow = obj(
        "slow",
        "#include <unistd.h>\n__attribute__((constructor)) static void c(void) { usleep(200000); }\n",
    );
    // The executor refuses thread-locals aligned to more than 64 KiB.
    let bad = obj(
        "bad",
        "__thread char big[16] __attribute__((aligned(131072)));\nchar *p(void) { return big; }\n",
    );
    let good = obj(
        "good",
        "int ready;\n__attribute__((constructor)) static void c(void) { ready = 7; }\n\
         int get(void) { return ready; }\n",
    );
    let exec = Arc::new(RemoteExecutor::spawn(&executor_path(), MemoryMode::Shared).unwrap());
    let options = SessionOptions {
        pipelined_initialize: true,
        ..SessionOptions::default()
    };
    let mut s = Session::with_executor(exec.clone(), options).unwrap();
    s.add_file(&base).unwrap();
    s.link().unwrap();
    // Enough calls for the call mailbox to open.
    for _ in 0..3 {
        assert_eq!(s.run_main("fine", &[]).unwrap(), 42);
    }
    assert!(exec.mailbox_calls() > 0);
    for o in [&slow, &bad] {
        s.add_file(o).unwrap();
        s.link().unwrap();
    }
    // The slow constructor is done: the next link sends the bad initialize, and its own
    // waits behind it.
    std::thread::sleep(Duration::from_millis(600));
    s.add_file(&good).unwrap();
    s.link().unwrap();
    let err = s.run_main("get", &[]).unwrap_err().to_string();
    assert!(
        err.starts_with("executor: initializing JIT'd memory at 0x")
            && err.ends_with(": implausible TLS image"),
        "{err}"
    );
    assert_eq!(s.run_main("get", &[]).unwrap(), 7, "good's constructor ran");
}
