//! Signals, pipes and exit statuses, in every mode, each compared with the natively linked
//! program: JIT'd code must not notice that it was JIT-linked.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::*;

const MODES: [&[&str]; 3] = [&["--in-process"], &[], &["--no-shared-memory"]];

/// No test waits longer than this on a program (a regression fails, it does not hang).
const LIMIT: Duration = Duration::from_secs(60);

/// The status as a shell reports it: the exit code, or 128 + the signal that killed it.
fn shell_status(st: ExitStatus) -> i32 {
    st.code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// The test program: its object, and its natively linked executable.
fn build(dir: &Path) -> (PathBuf, PathBuf) {
    let o = compile(dir, &program("signals.c"), "signals.o", &["-O2"]);
    let exe = dir.join("signals-native");
    let st = Command::new("gcc")
        .arg(&o)
        .arg("-pthread")
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(st.success());
    (o, exe)
}

/// The native program (`None`) or remjit in `mode`, running the program with `args`.
fn command(mode: Option<&[&str]>, o: &Path, exe: &Path, args: &[&str]) -> Command {
    let mut cmd = match mode {
        None => Command::new(exe),
        Some(m) => {
            let mut c = Command::new(remjit());
            c.args(m).arg(o).arg("--args");
            c
        }
    };
    cmd.args(args).stdin(Stdio::null());
    no_core_dumps(&mut cmd);
    cmd
}

/// Crashing programs leave no core files behind, whatever the machine's limit.
fn no_core_dumps(cmd: &mut Command) {
    // SAFETY: only setrlimit(2), async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &zero) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A running program, in a process group of its own, after its first `lines` lines of output.
struct Started {
    child: Child,
    out: Option<BufReader<ChildStdout>>,
    text: String,
    what: String,
}

fn start(mode: Option<&[&str]>, o: &Path, exe: &Path, args: &[&str], lines: usize) -> Started {
    let what = format!("{args:?} ({mode:?})");
    let mut child = command(mode, o, exe, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    for _ in 0..lines {
        out.read_line(&mut text).unwrap();
    }
    Started {
        child,
        out: Some(out),
        text,
        what,
    }
}

impl Started {
    /// Waits for the end (bounded), reading the rest of stdout: (shell status, stderr).
    fn finish(&mut self) -> (i32, String) {
        let st = common::wait_bounded(&mut self.child, LIMIT, &self.what);
        if let Some(mut out) = self.out.take() {
            out.read_to_string(&mut self.text).unwrap();
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        (shell_status(st), err)
    }
}

/// Runs to the end: (stdout, stderr, shell status).
fn outcome(mut cmd: Command) -> (String, String, i32) {
    let out = run_with_timeout(&mut cmd, LIMIT);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        shell_status(out.status),
    )
}

#[test]
fn sigpipe_ends_a_pipeline() {
    let dir = work_dir("signals-sigpipe");
    let (o, exe) = build(&dir);
    let run = |mode: Option<&[&str]>| {
        let mut p = start(mode, &o, &exe, &["yes"], 2);
        // `head` exits: the pipe's read end closes.
        p.out = None;
        let (st, err) = p.finish();
        (p.text, err, st)
    };
    let native = run(None);
    assert_eq!(native, ("y\ny\n".into(), String::new(), 141));
    for mode in MODES {
        assert_eq!(run(Some(mode)), native, "{mode:?}");
    }
}

#[test]
fn alarm_and_pause_as_natively() {
    let dir = work_dir("signals-alarm");
    let (o, exe) = build(&dir);
    let native = outcome(command(None, &o, &exe, &["alarm"]));
    assert_eq!(native, ("woken by signal 14\n".into(), String::new(), 5));
    for mode in MODES {
        let what = format!("alarm ({mode:?})");
        assert_eq!(
            outcome(command(Some(mode), &o, &exe, &["alarm"])),
            native,
            "{what}"
        );
    }
}

#[test]
fn signal_mask_and_dispositions_as_natively() {
    let dir = work_dir("signals-state");
    let (o, exe) = build(&dir);
    let native = outcome(command(None, &o, &exe, &["state"]));
    assert_eq!(native.2, 0);
    assert!(native.0.contains("main: DDD"), "{}", native.0);
    for mode in MODES {
        let what = format!("state ({mode:?})");
        assert_eq!(
            outcome(command(Some(mode), &o, &exe, &["state"])),
            native,
            "{what}: main's and its threads' mask and dispositions"
        );
    }
}

/// Starts the program in a process group of its own, waits for `ready`, sends SIGINT to the
/// whole group as a terminal's Ctrl-C does, and returns (stdout, shell status).
fn interrupt(mode: Option<&[&str]>, o: &Path, exe: &Path, how: &str) -> (String, i32) {
    let mut p = start(mode, o, exe, &[how], 1);
    assert_eq!(p.text, "ready\n", "{}", p.what);
    // SAFETY: kill(2) of the group the child leads.
    assert_eq!(
        unsafe { libc::kill(-(p.child.id() as i32), libc::SIGINT) },
        0
    );
    let (st, err) = p.finish();
    assert_eq!(err, "", "{}", p.what);
    (p.text, st)
}

#[test]
fn sigint_to_the_process_group_as_natively() {
    let dir = work_dir("signals-sigint");
    let (o, exe) = build(&dir);
    let handled = interrupt(None, &o, &exe, "sigint");
    assert_eq!(
        handled,
        ("ready\ncleaning up after signal 2\n".into(), 42),
        "natively"
    );
    let killed = interrupt(None, &o, &exe, "nohandler");
    assert_eq!(killed, ("ready\n".into(), 130), "natively");
    for mode in MODES {
        assert_eq!(
            interrupt(Some(mode), &o, &exe, "sigint"),
            handled,
            "{mode:?}"
        );
        assert_eq!(
            interrupt(Some(mode), &o, &exe, "nohandler"),
            killed,
            "{mode:?}"
        );
    }
}

/// Runs `args` natively and in every mode: the same stdout and status; returns each mode's
/// stderr.
fn crash_reports(dir_name: &str, args: &[&str], status: i32) -> Vec<String> {
    let dir = work_dir(dir_name);
    let (o, exe) = build(&dir);
    let native = outcome(command(None, &o, &exe, args));
    assert_eq!((native.0.as_str(), native.2), ("before\n", status));
    MODES
        .iter()
        .map(|mode| {
            let what = format!("{args:?} ({mode:?})");
            let (out, err, st) = outcome(command(Some(mode), &o, &exe, args));
            assert_eq!((out.as_str(), st), ("before\n", status), "{what}: {err}");
            assert!(!err.contains("panicked"), "{what}: {err}");
            err
        })
        .collect()
}

/// Checks a report: how it starts, what it says and what it must not say.
fn check_report(err: &str, starts: &str, says: &[&str], never: &[&str]) {
    assert!(err.starts_with(starts), "{err}");
    for s in says {
        assert!(err.contains(s), "`{s}` missing: {err}");
    }
    for s in never {
        assert!(!err.contains(s), "`{s}` present: {err}");
    }
}

#[test]
fn segv_gives_139_and_names_the_function() {
    for err in crash_reports("signals-segv", &["segv"], 139) {
        check_report(
            &err,
            "remjit: the JIT'd code crashed: SIGSEGV (signal 11) at address 0x10, in \
             `poke_bad_pointer`+0x",
            &["(module ", "signals.o"],
            &[],
        );
    }
}

#[test]
fn abort_gives_134_without_an_address() {
    for err in crash_reports("signals-abort", &["abort"], 134) {
        check_report(
            &err,
            "remjit: the JIT'd program died of SIGABRT (signal 6), raised by itself",
            &["libc.so.6", ", called from `main"],
            &["address"],
        );
    }
}

#[test]
fn sigusr1_death_is_named() {
    let errs = crash_reports("signals-usr1", &["usr1"], 138);
    // In process, remjit itself dies of it, as the native program does, without a word.
    assert_eq!(errs[0], "");
    for err in &errs[1..] {
        assert_eq!(
            err,
            "remjit: the JIT'd program was killed by SIGUSR1 (signal 10)\n"
        );
    }
}

#[test]
fn crash_in_a_library_names_it_and_the_jit_caller() {
    // strlen(NULL): argv[2] is the NULL that ends argv.
    for err in crash_reports("signals-strlen", &["strlen"], 139) {
        check_report(
            &err,
            "remjit: the JIT'd code crashed: SIGSEGV (signal 11) at address 0x0, in ",
            &["/libc.so.6", ", called from `call_strlen`+0x"],
            &[],
        );
    }
}

#[test]
fn call_through_null_names_the_caller() {
    for err in crash_reports("signals-null", &["null"], 139) {
        check_report(
            &err,
            "remjit: the JIT'd code crashed: SIGSEGV (signal 11) at address 0x0, in code at pc 0x0",
            &[", called from `call_through_null`+0x"],
            &[],
        );
    }
}

/// W^X: a store to a function's own code faults as natively, in process too, where small
/// links' code shares pages written through a second, writable view.
#[test]
fn writing_over_code_is_a_segv_in_every_mode() {
    for err in crash_reports("signals-codewrite", &["codewrite"], 139) {
        check_report(
            &err,
            "remjit: the JIT'd code crashed: SIGSEGV (signal 11) at address 0x",
            &[", in `patch_own_code`+0x", "signals.o"],
            &[],
        );
    }
}

#[test]
fn stack_overflow_reports_in_every_mode() {
    for err in crash_reports("signals-overflow", &["overflow"], 139) {
        check_report(
            &err,
            "remjit: the JIT'd code crashed: SIGSEGV (signal 11) at address",
            &[" (stack overflow), in `recurse_forever`+0x"],
            &["overflowed its stack"],
        );
    }
}

#[test]
fn sigkill_from_outside_is_not_a_crash() {
    let dir = work_dir("signals-sigkill");
    let (o, exe) = build(&dir);
    for mode in &MODES[1..] {
        let mut p = start(Some(mode), &o, &exe, &["sleep"], 1);
        assert_eq!(p.text, "sleeping\n", "{}", p.what);
        let id = p.child.id();
        let children = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap();
        let exec: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: kill(2) of the executor remjit started.
        assert_eq!(unsafe { libc::kill(exec, libc::SIGKILL) }, 0);
        let (st, err) = p.finish();
        assert_eq!(st, 137, "{}: {err}", p.what);
        check_report(
            &err,
            "remjit: the executor was killed by SIGKILL (signal 9) from outside",
            &[],
            &["crashed"],
        );
    }
}

#[test]
fn uncaught_exception_terminates_as_natively() {
    let dir = work_dir("signals-uncaught");
    let src = dir.join("uncaught.cc");
    std::fs::write(
        &src,
        "#include <cstdio>\n#include <stdexcept>\n\
         int main() { std::puts(\"before\"); std::fflush(stdout); throw std::runtime_error(\"boom\"); }\n",
    )
    .unwrap();
    let o = compile(&dir, &src, "uncaught.o", &["-O2", "-fPIC"]);
    let exe = dir.join("uncaught-native");
    let st = Command::new("g++")
        .arg(&o)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(st.success());
    let terminate = "terminate called after throwing an instance of 'std::runtime_error'\n  \
                     what():  boom\n";
    let mut native = Command::new(&exe);
    no_core_dumps(&mut native);
    let native = outcome(native);
    assert_eq!(native, ("before\n".into(), terminate.into(), 134));
    for mode in MODES {
        let mut cmd = Command::new(remjit());
        cmd.args(mode).arg(&o).args(["-l", "stdc++"]);
        no_core_dumps(&mut cmd);
        let (out, err, st) = outcome(cmd);
        assert_eq!((out.as_str(), st), ("before\n", 134), "{mode:?}: {err}");
        // std::terminate's own words, then remjit's report of the abort.
        check_report(&err, terminate, &["SIGABRT (signal 6)"], &[]);
    }
}

/// The line of `crash.c` holding `marker`.
fn crash_line(marker: &str) -> usize {
    let src = std::fs::read_to_string(program("crash.c")).unwrap();
    1 + src.lines().position(|l| l.contains(marker)).unwrap()
}

/// Every hex number (`0x...`) as `0x?`: addresses and offsets change with the build.
fn without_hex(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("0x") {
        out.push_str(&rest[..i + 2]);
        rest = rest[i + 2..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
        out.push('?');
    }
    out + rest
}

/// `crash.c` compiled with `flags` in `dir`, run by remjit in `mode` from `dir`: its stderr.
fn crash_c_report(dir: &Path, flags: &[&str], mode: &[&str]) -> String {
    let src = dir.join("crash.c");
    std::fs::copy(program("crash.c"), &src).unwrap();
    compile(dir, &src, "crash.o", flags);
    let mut cmd = Command::new(remjit());
    cmd.args(mode)
        .arg("crash.o")
        .current_dir(dir)
        .stdin(Stdio::null());
    no_core_dumps(&mut cmd);
    let (out, err, st) = outcome(cmd);
    assert_eq!((out.as_str(), st), ("before\n", 139), "{mode:?}: {err}");
    err
}

#[test]
fn crash_report_names_source_lines_with_debug_info() {
    let dir = tempfile::tempdir().unwrap();
    let (fault, call) = (crash_line("FAULT"), crash_line("CALL"));
    let head = "remjit: the JIT'd code crashed: SIGSEGV (signal 11) at address 0x?, in ";
    for mode in MODES {
        let err = crash_c_report(dir.path(), &["-g", "-O0"], mode);
        assert_eq!(
            without_hex(&err),
            format!(
                "{head}`poke`+0x? (module crash.o) at crash.c:{fault} (pc 0x?), called from \
                 `main`+0x? (module crash.o) at crash.c:{call}\n"
            ),
            "{mode:?}"
        );
    }
    // Without debug info, the report names functions only.
    for mode in MODES {
        let err = crash_c_report(dir.path(), &["-O0"], mode);
        assert_eq!(
            without_hex(&err),
            format!(
                "{head}`poke`+0x? (module crash.o) (pc 0x?), called from `main`+0x? \
                 (module crash.o)\n"
            ),
            "{mode:?}"
        );
    }
}

#[test]
fn a_crash_in_a_constructor_names_the_constructor() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ctor.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n\
         static int *volatile target;\n\
         void poke(int *p) { *p = 42; }\n\
         __attribute__((constructor)) static void setup(void) { poke(target); }\n\
         int main(void) { puts(\"main\"); return 0; }\n",
    )
    .unwrap();
    compile(dir.path(), &src, "ctor.o", &["-g", "-O0"]);
    let head = "remjit: the JIT'd code crashed: SIGSEGV (signal 11) at address 0x?, in ";
    for mode in MODES {
        let mut cmd = Command::new(remjit());
        cmd.args(mode)
            .arg("ctor.o")
            .current_dir(dir.path())
            .stdin(Stdio::null());
        no_core_dumps(&mut cmd);
        let (out, err, st) = outcome(cmd);
        assert_eq!((out.as_str(), st), ("", 139), "{mode:?}: {err}");
        assert_eq!(
            without_hex(&err),
            format!(
                "{head}`poke`+0x? (module ctor.o) at ctor.c:3 (pc 0x?), called from `setup`+0x? \
                 (module ctor.o) at ctor.c:4\n"
            ),
            "{mode:?}"
        );
    }
}
