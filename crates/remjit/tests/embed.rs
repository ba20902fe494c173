//! The embedder API through a session, in process and over each transport of our executor
//! (socketpair with shared memory, socketpair copying, TCP): calls with integer, pointer and
//! floating-point arguments checked against the same functions run natively, reading and
//! writing variables, a redefinition that earlier callers see and its removal, and refusals
//! with their exact texts, after which the executor still works.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{compile, remjit};
use remjit::remote::{MemoryMode, RemoteExecutor, Token};
use remjit::{Arg, ModuleId, Ret, RetKind, Session, SessionOptions};

fn executor_path() -> PathBuf {
    remjit().with_file_name("remjit-executor")
}

/// A session and, for TCP, the listening executor to wait for.
struct Mode {
    name: &'static str,
    session: Session,
    listener: Option<Child>,
}

impl Mode {
    /// Ends the session; a listening executor exits with it (killed if it does not).
    fn finish(self) {
        drop(self.session);
        let Some(mut child) = self.listener else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the TCP executor did not exit after its session");
    }
}

/// `remjit-executor listen=127.0.0.1:0` with a token; a session connected to it (copying
/// memory: shared memory needs a unix socket).
fn tcp_session() -> Mode {
    let token: String = (0..32u8).map(|i| format!("{:02x}", i ^ 0x5a)).collect();
    let mut child = Command::new(executor_path())
        .arg("listen=127.0.0.1:0")
        .env("REMJIT_TOKEN", &token)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in stderr.lines().map_while(|l| l.ok()) {});
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let token = Token::parse(&token).unwrap();
    let exec = RemoteExecutor::connect(
        &addr,
        MemoryMode::Copy,
        Some(&token),
        Duration::from_secs(10),
    )
    .unwrap();
    Mode {
        name: "tcp",
        session: Session::with_executor(Arc::new(exec), SessionOptions::default()).unwrap(),
        listener: Some(child),
    }
}

/// In process, over a socketpair with shared memory and copying, and over TCP.
fn modes() -> Vec<Mode> {
    let spawned = |name, memory| {
        let exec = RemoteExecutor::spawn(&executor_path(), memory).expect("executor starts");
        Mode {
            name,
            session: Session::with_executor(Arc::new(exec), SessionOptions::default()).unwrap(),
            listener: None,
        }
    };
    vec![
        Mode {
            name: "in-process",
            session: Session::in_process(SessionOptions::default()).unwrap(),
            listener: None,
        },
        spawned("shared-memory", MemoryMode::Shared),
        spawned("copy", MemoryMode::Copy),
        tcp_session(),
    ]
}

/// Writes `files` (name, text) into a fresh directory for test `name`.
fn sources(name: &str, files: &[(&str, &str)]) -> PathBuf {
    common::sources(&format!("embed-{name}"), files)
}

fn link_one(s: &mut Session, obj: &Path) -> ModuleId {
    s.add_file(obj).unwrap();
    s.link().unwrap()
}

const CALLS_C: &str = r#"#include <stdlib.h>
#include <string.h>
long seven = 7;
long counter = 5;
long mix(long a, int b, double x, const long *p, float f, double y) {
  return a * 3 + b - (long)(x * 100) + *p * 7 + (long)(f * 8) + (long)(y * 1000);
}
/* 7 integers and 9 doubles: the 7th integer and the 9th double go on the stack. */
double many(long a1, double d1, long a2, double d2, long a3, double d3, long a4, double d4,
            long a5, double d5, long a6, double d6, long a7, double d7, double d8,
            double d9) {
  return a1 + 2 * d1 + 3 * a2 + 4 * d2 + 5 * a3 + 6 * d3 + 7 * a4 + 8 * d4 + 9 * a5
       + 10 * d5 + 11 * a6 + 12 * d6 + 13 * a7 + 14 * d7 + 15 * d8 + 16 * d9 / 3;
}
int neg(int x) { return -x; }
float third(float x) { return x / 3; }
const char *greet(void) { return "hello"; }
char *make(void) { char *p = malloc(8); strcpy(p, "heap!"); return p; }
void bump(long *p, long by) { *p += by; }
"#;

/// The same calls natively, one result a line (doubles and floats as their bits).
const MAIN_C: &str = r#"#include <stdio.h>
#include <string.h>
extern long seven, counter;
long mix(long, int, double, const long *, float, double);
double many(long, double, long, double, long, double, long, double, long, double, long,
            double, long, double, double, double);
int neg(int);
float third(float);
const char *greet(void);
char *make(void);
void bump(long *, long);
int main(void) {
  unsigned long d; unsigned int f;
  printf("%ld\n", mix(-5, 7, 1.25, &seven, 0.5f, -2.5));
  double m = many(1, 0.5, 2, 1.5, 3, 2.5, 4, 3.5, 5, 4.5, 6, 5.5, 7, 6.5, 7.5, 8.5);
  memcpy(&d, &m, 8); printf("%016lx\n", d);
  printf("%d\n", neg(42));
  float t = third(1.0f); memcpy(&f, &t, 4); printf("%08x\n", f);
  printf("%s\n", greet());
  printf("%s\n", make());
  bump(&counter, 37); printf("%ld\n", counter);
  return 0;
}
"#;

/// A NUL-terminated string at `addr` of the executing process (at most 64 bytes).
fn c_string(s: &Session, addr: u64) -> String {
    let bytes = s.read_memory(addr, 64).unwrap();
    let end = bytes.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(bytes[..end].to_vec()).unwrap()
}

/// The native program's lines, from the session's calls.
fn jit_lines(s: &Session) -> String {
    let seven = s.lookup("seven").unwrap();
    let mix = [
        Arg::I64(-5),
        Arg::I64(7),
        Arg::F64(1.25),
        Arg::Ptr(seven),
        Arg::F32(0.5),
        Arg::F64(-2.5),
    ];
    let mut out = String::new();
    let r = s.call("mix", &mix, RetKind::I64).unwrap();
    out += &format!("{}\n", r.as_i64().unwrap());
    let mut many = Vec::new();
    for i in 1..=7 {
        many.push(Arg::I64(i));
        many.push(Arg::F64(i as f64 - 0.5));
    }
    many.extend([Arg::F64(7.5), Arg::F64(8.5)]);
    let r = s.call("many", &many, RetKind::F64).unwrap();
    out += &format!("{:016x}\n", r.as_f64().unwrap().to_bits());
    let r = s.call("neg", &[Arg::I64(42)], RetKind::I32).unwrap();
    out += &format!("{}\n", r.as_i64().unwrap());
    let r = s.call("third", &[Arg::F32(1.0)], RetKind::F32).unwrap();
    out += &format!("{:08x}\n", (r.as_f64().unwrap() as f32).to_bits());
    let p = s
        .call("greet", &[], RetKind::Ptr)
        .unwrap()
        .as_ptr()
        .unwrap();
    out += &format!("{}\n", c_string(s, p));
    // On the executor's heap: readable although no JIT memory.
    let p = s.call("make", &[], RetKind::Ptr).unwrap().as_ptr().unwrap();
    out += &format!("{}\n", c_string(s, p));
    let counter = s.lookup("counter").unwrap();
    let r = s.call("bump", &[Arg::Ptr(counter), Arg::I64(37)], RetKind::Void);
    assert_eq!(r.unwrap(), Ret::Void);
    let bytes: [u8; 8] = s.read("counter", 0, 8).unwrap().try_into().unwrap();
    out += &format!("{}\n", i64::from_le_bytes(bytes));
    out
}

#[test]
fn calls_with_integer_pointer_and_double_arguments_match_native() {
    let dir = sources("calls", &[("calls.c", CALLS_C), ("main.c", MAIN_C)]);
    let calls = compile(&dir, &dir.join("calls.c"), "calls.o", &["-O1"]);
    let main = compile(&dir, &dir.join("main.c"), "main.o", &["-O1"]);
    let (stdout, status) = common::native(&dir, "calls", &[calls.clone(), main], &[], &[]);
    assert_eq!(status, 0);
    let expected = String::from_utf8(stdout).unwrap();
    assert_eq!(expected.lines().nth(2), Some("-42"), "the premise");
    for mut mode in modes() {
        link_one(&mut mode.session, &calls);
        assert_eq!(jit_lines(&mode.session), expected, "{}", mode.name);
        mode.finish();
    }
}

const GLOBALS_C: &str = "long counter = 5;\ndouble ratio = 0.5;\nconst int fixed = 7;\n\
                         long get_counter(void) { return counter; }\n";

/// Variables read and written by name; every refusal worded exactly, the executor alive
/// after each.
#[test]
fn variables_are_read_and_written_and_bad_requests_are_refused() {
    let dir = sources("globals", &[("g.c", GLOBALS_C)]);
    let obj = compile(&dir, &dir.join("g.c"), "g.o", &["-O1"]);
    for mut mode in modes() {
        let s = &mut mode.session;
        let name = mode.name;
        link_one(s, &obj);
        assert_eq!(
            s.read("ratio", 0, 8).unwrap(),
            0.5f64.to_le_bytes(),
            "{name}"
        );
        s.write("counter", 0, &123i64.to_le_bytes()).unwrap();
        let alive = |s: &Session| s.call("get_counter", &[], RetKind::I64).unwrap();
        assert_eq!(alive(s), Ret::I64(123), "{name}");
        let fixed = s.lookup("fixed").unwrap();
        let refusals: Vec<(remjit::Error, String)> = vec![
            (
                s.write("fixed", 0, &[1, 0, 0, 0]).unwrap_err(),
                format!(
                    "executor: writing `fixed`: {fixed:#x}..{:#x} is not writable (finalized \
                     read-only or executable, or never made accessible)",
                    fixed + 4
                ),
            ),
            (
                s.read("counter", 4, 8).unwrap_err(),
                "cannot read `counter` bytes 4..12: the symbol is 8 bytes".into(),
            ),
            (
                s.read_memory(8, 16).unwrap_err(),
                "executor: 0x8..0x18 is not mapped readable in the executor".into(),
            ),
            (
                s.write_memory(8, &[0; 8]).unwrap_err(),
                "executor: 0x8..0x10 is not in memory this executor handed out".into(),
            ),
            (
                s.read_memory(fixed, (16 << 20) + 1).unwrap_err(),
                "executor: read of 16777217 bytes refused: at most 16777216 bytes per request"
                    .into(),
            ),
            (
                s.call("get_counter", &[Arg::I64(0); 17], RetKind::I64)
                    .unwrap_err(),
                "executor: calling `get_counter`: 17 arguments refused: at most 16".into(),
            ),
            (
                s.call("counter", &[], RetKind::I64).unwrap_err(),
                "cannot call `counter`: it is data, not a function".into(),
            ),
            (
                s.call("nothing", &[], RetKind::Void).unwrap_err(),
                "symbol not found: nothing (cannot call it: no linked module defines it)".into(),
            ),
            (
                s.executor()
                    .call(fixed, &[], RetKind::Void)
                    .unwrap_err(),
                format!("executor: {fixed:#x} is not in finalized executable memory; refusing to call it"),
            ),
        ];
        for (err, want) in refusals {
            assert_eq!(err.to_string(), want, "{name}");
            assert_eq!(alive(s), Ret::I64(123), "{name}: alive after {want}");
        }
        // A write larger than the cap is refused before anything moves.
        let big = vec![0u8; (16 << 20) + 1];
        let err = s.write_memory(fixed, &big).unwrap_err().to_string();
        assert_eq!(
            err, "executor: write of 16777217 bytes refused: at most 16777216 bytes per request",
            "{name}"
        );
        assert_eq!(alive(s), Ret::I64(123), "{name}");
        mode.finish();
    }
}

/// f1.o and f2.o define `int f(int)` differently; g.o calls it and takes its address, as
/// does h.o.
fn definitions(name: &str) -> [PathBuf; 4] {
    let dir = sources(
        name,
        &[
            ("f1.c", "int f(int x) { return x + 1; }\n"),
            ("f2.c", "int f(int x) { return x + 2; }\n"),
            (
                "g.c",
                "int f(int);\nint g(int x) { return f(x) * 10; }\n\
                 int (*g_ptr(void))(int) { return f; }\n",
            ),
            (
                "h.c",
                "int f(int);\nint (*h_ptr(void))(int) { return &f; }\n",
            ),
        ],
    );
    ["f1", "f2", "g", "h"]
        .map(|n| compile(&dir, &dir.join(format!("{n}.c")), &format!("{n}.o"), &[]))
}

fn int_call(s: &Session, name: &str, x: i64) -> i64 {
    s.call(name, &[Arg::I64(x)], RetKind::I32)
        .unwrap()
        .as_i64()
        .unwrap()
}

fn pointer(s: &Session, name: &str) -> u64 {
    s.call(name, &[], RetKind::Ptr).unwrap().as_ptr().unwrap()
}

#[test]
fn a_redefinition_reaches_earlier_callers_and_its_removal_restores_them() {
    let [f1, f2, g, h] = definitions("redefine");
    for mut mode in modes() {
        let s = &mut mode.session;
        let name = mode.name;
        let m1 = link_one(s, &f1);
        let mg = link_one(s, &g);
        assert_eq!(int_call(s, "g", 1), 20, "{name}");
        let m2 = link_one(s, &f2);
        // g was linked before f2 and calls the new body.
        assert_eq!(int_call(s, "g", 1), 30, "{name}");
        let mh = link_one(s, &h);
        // &f is the same in every later module: the session's stub for `f`.
        let stub = s.lookup_symbol("f").unwrap().stub.expect("f has a stub");
        assert_eq!(
            (pointer(s, "g_ptr"), pointer(s, "h_ptr")),
            (stub, stub),
            "{name}"
        );
        assert_ne!(stub, s.lookup("f").unwrap(), "{name}");
        let through_stub = s.executor().call(stub, &[Arg::I64(5)], RetKind::I32);
        assert_eq!(through_stub.unwrap(), Ret::I64(7), "{name}");
        // Removing the redefinition points every caller back at the first body.
        s.remove_module(m2).unwrap();
        assert_eq!(int_call(s, "g", 1), 20, "{name}");
        let back = s.executor().call(stub, &[Arg::I64(5)], RetKind::I32);
        assert_eq!(back.unwrap(), Ret::I64(6), "{name}");
        // The last definer of a function others call stays until they go.
        let err = s.remove_module(m1).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot remove module {m1} ({}): used by module {mg} ({}), module {mh} ({}); \
                 remove those first",
                f1.display(),
                g.display(),
                h.display()
            ),
            "{name}"
        );
        assert_eq!(int_call(s, "g", 2), 30, "{name}");
        s.remove_module(mh).unwrap();
        s.remove_module(mg).unwrap();
        s.remove_module(m1).unwrap();
        // A name keeps its stub: defined again, callers linked now get the same address.
        link_one(s, &f2);
        link_one(s, &h);
        assert_eq!(pointer(s, "h_ptr"), stub, "{name}");
        assert_eq!(int_call(s, "f", 1), 3, "{name}");
        mode.finish();
    }
}

/// A call that crashes the executor ends it as any crash of JIT'd code does: the call fails,
/// and the executor's crash report names the function.
#[test]
fn a_crashing_call_ends_the_executor_with_a_crash_report() {
    use remjit::remote::Ending;
    use remjit_executor::crash::{write_function, Sink};
    let dir = sources(
        "crash",
        &[("poke.c", "void poke(int *p, int v) { *p = v; }\n")],
    );
    let obj = compile(&dir, &dir.join("poke.c"), "poke.o", &["-O1"]);
    for memory in [MemoryMode::Shared, MemoryMode::Copy] {
        let exec = Arc::new(RemoteExecutor::spawn(&executor_path(), memory).unwrap());
        let mut s = Session::with_executor(exec.clone(), SessionOptions::default()).unwrap();
        link_one(&mut s, &obj);
        let args = [Arg::Ptr(0x10), Arg::I64(1)];
        assert!(s.call("poke", &args, RetKind::Void).is_err(), "{memory:?}");
        assert!(
            matches!(exec.ending(), Ending::Signaled(libc::SIGSEGV, Some(_))),
            "{memory:?}"
        );
        let jit = |pc: u64, out: &mut dyn Sink| match s.symbolize(pc) {
            Some((module, f, off)) => {
                write_function(out, f.as_bytes(), off, module.as_bytes());
                true
            }
            None => false,
        };
        let report = exec.describe_death(&jit).unwrap();
        let head = "the JIT'd code crashed: SIGSEGV (signal 11) at address 0x10, in `poke`+0x";
        assert!(report.starts_with(head), "{memory:?}: {report}");
        assert!(report.contains(&obj.display().to_string()), "{report}");
    }
}

/// C++: an out-of-line member function redefined by a later module reaches the caller linked
/// before it; the inline member both modules share (a COMDAT group) keeps one address.
#[test]
fn a_redefined_cxx_member_function_reaches_earlier_callers() {
    const HEADER: &str =
        "struct P {\n  int k;\n  int get() const;\n  int twice() const { return 2 * k; }\n};\n";
    let dir = sources(
        "cxx",
        &[
            ("p.h", HEADER),
            ("get1.cc", "#include \"p.h\"\nint P::get() const { return k; }\n"),
            ("get2.cc", "#include \"p.h\"\nint P::get() const { return k * 100; }\n"),
            (
                "use.cc",
                "#include \"p.h\"\nextern \"C\" int use(int k) { P p{k}; return p.get() + p.twice(); }\n\
                 extern \"C\" void *twice_a() { return (void *)&P::twice; }\n",
            ),
            (
                "other.cc",
                "#include \"p.h\"\nextern \"C\" int other(int k) { P p{k}; return p.twice(); }\n\
                 extern \"C\" void *twice_b() { return (void *)&P::twice; }\n",
            ),
        ],
    );
    let flags = ["-O0", "-Wno-pmf-conversions"];
    let obj = |n: &str| {
        compile(
            &dir,
            &dir.join(format!("{n}.cc")),
            &format!("{n}.o"),
            &flags,
        )
    };
    let [get1, get2, user, other] = ["get1", "get2", "use", "other"].map(obj);
    for mut mode in modes() {
        let s = &mut mode.session;
        let name = mode.name;
        link_one(s, &get1);
        link_one(s, &user);
        assert_eq!(int_call(s, "use", 3), 3 + 6, "{name}");
        let redefinition = link_one(s, &get2);
        assert_eq!(int_call(s, "use", 3), 300 + 6, "{name}");
        link_one(s, &other);
        assert_eq!(int_call(s, "other", 3), 6, "{name}");
        assert_eq!(pointer(s, "twice_a"), pointer(s, "twice_b"), "{name}");
        let err = s.remove_module(redefinition);
        assert!(err.is_ok(), "{name}: {err:?}");
        assert_eq!(int_call(s, "use", 3), 3 + 6, "{name}");
        mode.finish();
    }
}
