//! Debuggers and profilers on JIT'd code: gdb (Debian's, in batch mode) through the GDB JIT
//! interface in process, attached to the executor, and with llvm-jitlink-19's registration;
//! the perf map and the jitdump file in every mode, read back and checked against the program's
//! own view of its addresses and the object's bytes.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{compile, program, remjit, run_with_timeout, wait_bounded, work_dir};
use object::{Object, ObjectSection, ObjectSymbol};

const LIMIT: Duration = Duration::from_secs(120);

/// Line of the source carrying `marker`.
fn line_of(marker: &str) -> usize {
    let text = std::fs::read_to_string(program("debugme.c")).unwrap();
    text.lines()
        .position(|l| l.contains(marker))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no {marker} in debugme.c"))
}

fn debug_object(test: &str) -> PathBuf {
    let dir = work_dir(test);
    compile(&dir, &program("debugme.c"), "debugme.o", &["-g", "-O0"])
}

/// Asserts gdb's output shows the stop at BREAK with two JIT'd callers and the local.
fn assert_stopped_in_jit(out: &str) {
    let (b, s, c) = (
        line_of("BREAK"),
        line_of("CALL_SQUARE"),
        line_of("CALL_COMPUTE"),
    );
    for want in [
        "square (x=0) at ".to_string(),
        format!("debugme.c:{b}"),
        "compute (n=4) at ".to_string(),
        format!("debugme.c:{s}"),
        "main () at ".to_string(),
        format!("debugme.c:{c}"),
        "result = 0".to_string(),
    ] {
        assert!(out.contains(&want), "gdb output lacks `{want}`:\n{out}");
    }
}

/// gdb in batch mode running `remjit --in-process OBJECTS` with `commands` (pending breakpoints
/// allowed: the JIT'd code is not there before `run`).
fn gdb_in_process(objects: &[PathBuf], commands: &[&str]) -> std::process::Output {
    let mut gdb = Command::new("gdb");
    gdb.args(["-batch", "-nx", "-ex", "set breakpoint pending on"]);
    for c in commands {
        gdb.args(["-ex", c]);
    }
    gdb.arg("--args")
        .arg(remjit())
        .arg("--in-process")
        .args(objects);
    run_with_timeout(gdb.stdin(Stdio::null()), LIMIT)
}

#[test]
fn gdb_in_process_breaks_by_file_and_line() {
    let obj = debug_object("gdb-in-process");
    let at = format!("break debugme.c:{}", line_of("BREAK"));
    let out = gdb_in_process(&[obj], &[&at, "run", "bt", "info locals", "kill"]);
    assert_stopped_in_jit(&String::from_utf8_lossy(&out.stdout));
}

/// twice.o and main.o (`-g`), in a work directory of that name.
fn twice_and_main(test: &str) -> [PathBuf; 2] {
    let dir = work_dir(test);
    let sources = [
        (
            "twice.c",
            "int twice(int x) {\n    int doubled = x * 2;\n    return doubled;\n}\n",
        ),
        (
            "main.c",
            "int twice(int);\nint main(void) {\n    int r = twice(21);\n    return r - 42;\n}\n",
        ),
    ];
    sources.map(|(name, text)| {
        let src = dir.join(name);
        std::fs::write(&src, text).unwrap();
        compile(&dir, &src, &name.replace(".c", ".o"), &["-g", "-O0"])
    })
}

/// The merged debug object of two inputs, read back: each input's code at its load address with
/// its symbol, no relocations left, and DWARF that maps each load address to its source line.
#[test]
fn merged_debug_object_places_each_input_at_its_load_addresses() {
    let inputs: Vec<remjit::debug::DebugInput> = twice_and_main("merge-read")
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let bytes = std::fs::read(path).unwrap();
            let file = object::File::parse(&*bytes).unwrap();
            let base = 0x5000_0000 + 0x1000 * i as u64;
            let mut section_addrs = vec![0; file.sections().count() + 1];
            for sec in file.sections() {
                section_addrs[sec.index().0] = match sec.name().unwrap() {
                    ".text" => base,
                    ".eh_frame" => base + 0x800,
                    _ => 0,
                };
            }
            remjit::debug::DebugInput {
                name: path.display().to_string(),
                bytes,
                section_addrs,
            }
        })
        .collect();
    let merged = remjit::debug::merged_debug_object(&inputs).unwrap();
    let file = object::File::parse(&*merged).unwrap();
    let names: Vec<&str> = file.sections().map(|s| s.name().unwrap()).collect();
    assert!(!names.iter().any(|n| n.starts_with(".rela")), "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == ".eh_frame").count(), 1);
    let at = |name: &str| {
        let sym = file.symbols().find(|s| s.name() == Ok(name)).unwrap();
        let sec = file.section_by_index(sym.section_index().unwrap()).unwrap();
        (
            sec.name().unwrap().to_string(),
            sec.address() + sym.address(),
        )
    };
    assert_eq!(at("twice"), (".text".to_string(), 0x5000_0000));
    assert_eq!(at("main"), (".text".to_string(), 0x5000_1000));
    let dwarf = gimli::Dwarf::load(|id| -> Result<_, gimli::Error> {
        let data = file.section_by_name(id.name()).map(|s| s.data().unwrap());
        Ok(gimli::EndianSlice::new(
            data.unwrap_or(&[]),
            gimli::LittleEndian,
        ))
    })
    .unwrap();
    let ctx = addr2line::Context::from_dwarf(dwarf).unwrap();
    let line = |addr: u64| {
        let loc = ctx.find_location(addr).unwrap().unwrap();
        let file = Path::new(loc.file.unwrap()).file_name().unwrap();
        (file.to_str().unwrap().to_string(), loc.line.unwrap())
    };
    assert_eq!(line(0x5000_0000), ("twice.c".to_string(), 1));
    assert_eq!(line(0x5000_1000), ("main.c".to_string(), 2));
}

/// A link of several `-g` objects is registered as one object (gdb's cost per registration
/// grows with the objects it holds), through which gdb still breaks by file:line in either
/// object, unwinds from one into the other and prints locals.
#[test]
fn gdb_debugs_a_link_of_several_objects_registered_once() {
    let objects = twice_and_main("gdb-merged");
    let commands = [
        "set debug jit 1",
        "break twice.c:3",
        "run",
        "set debug jit 0",
    ];
    let out = gdb_in_process(
        &objects,
        &[&commands[..], &["bt", "info locals", "kill"]].concat(),
    );
    let (text, log) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    for want in [
        "twice (x=21) at ",
        "twice.c:3",
        "main () at ",
        "main.c:3",
        "doubled = 42",
    ] {
        assert!(text.contains(want), "gdb output lacks `{want}`:\n{text}");
    }
    assert_eq!(
        log.matches("jit_register_code: symfile_addr").count(),
        1,
        "one registration for the link:\n{log}"
    );
}

/// Kills the child on drop (a failed test leaves no process behind).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pid remjit's `--wait-for-debugger` message names, read from its stderr.
fn waiting_pid(child: &mut Child) -> u32 {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("remjit names the process to attach to");
        if let Some(pid) = line.split("gdb -p ").nth(1) {
            return pid.trim().parse().expect("a pid");
        }
    }
}

/// remjit with `--wait-for-debugger` and `args` (stdout piped), and the pid it names.
fn waiting_remjit(args: &[&OsStr]) -> (Reaped, u32) {
    let mut child = Reaped(
        Command::new(remjit())
            .arg("--wait-for-debugger")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = waiting_pid(&mut child.0);
    (child, pid)
}

#[test]
fn gdb_attaches_to_the_waiting_executor() {
    let obj = debug_object("gdb-attach");
    let (mut child, pid) = waiting_remjit(&[obj.as_os_str()]);
    assert_ne!(pid, child.0.id(), "the executor, not remjit, runs the code");
    let out = run_with_timeout(
        Command::new("gdb")
            .args(["-batch", "-nx", "-p", &pid.to_string()])
            .args(["-ex", &format!("break debugme.c:{}", line_of("BREAK"))])
            .args(["-ex", "continue", "-ex", "bt", "-ex", "info locals"])
            .stdin(Stdio::null()),
        LIMIT,
    );
    assert_stopped_in_jit(&String::from_utf8_lossy(&out.stdout));
    // gdb detached: the program runs to its end.
    let deadline = Instant::now() + LIMIT;
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "remjit did not finish after detach"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(stdout.ends_with("\n14\n"), "program output: {stdout}");
}

/// gdb in batch mode with `options` running `llvm-jitlink-19 --debugger-support` on `obj` with
/// our executor.
fn gdb_llvm_jitlink(options: &[&str], obj: &Path) -> std::process::Output {
    let executor = remjit().with_file_name("remjit-executor");
    run_with_timeout(
        Command::new("gdb")
            .args(["-batch", "-nx"])
            .args(options)
            .arg("--args")
            .arg("llvm-jitlink-19")
            .arg("--debugger-support")
            // A crash of LLVM's tools leaves no `symbolizer-*` files in /tmp.
            .env("LLVM_DISABLE_SYMBOLIZATION", "1")
            .arg(format!("--oop-executor={}", executor.display()))
            .arg(obj)
            .stdin(Stdio::null()),
        LIMIT,
    )
}

#[test]
fn llvm_jitlink_registers_with_our_executor() {
    if Command::new("llvm-jitlink-19")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("llvm-jitlink-19 is required (Debian package llvm-19)");
    }
    let obj = debug_object("llvm-jitlink-gdb");
    let out = gdb_llvm_jitlink(
        &[
            "-ex",
            "set follow-fork-mode child",
            "-ex",
            "set breakpoint pending on",
            "-ex",
            "break square",
            "-ex",
            "run",
            "-ex",
            "bt",
            "-ex",
            "kill",
        ],
        &obj,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("hit Breakpoint 1, square (x=0) at "),
        "{text}"
    );
    assert!(text.contains("in compute (n=4) at "), "{text}");
}

/// LLVM registers its debug objects in place (in memory it allocated in our executor) and never
/// deregisters them; the executor does when that memory is freed (llvm-jitlink frees it when
/// its session ends). gdb, following the executor, stops at each change of the list and says
/// what it did and whether `square` is known.
#[test]
fn llvm_jitlink_objects_are_deregistered_with_their_memory() {
    let obj = debug_object("llvm-jitlink-dereg");
    let script = obj.with_file_name("events.gdb");
    std::fs::write(
        &script,
        "set language c\nset follow-fork-mode child\nset breakpoint pending on\n\
         break __jit_debug_register_code\ncommands\nsilent\n\
         output *(unsigned int *)((char *)&__jit_debug_descriptor + 4)\necho \\n\n\
         info functions ^square$\ncontinue\nend\nrun\n",
    )
    .unwrap();
    let out = gdb_llvm_jitlink(&["-x", script.to_str().unwrap()], &obj);
    let text = String::from_utf8_lossy(&out.stdout);
    // Each event: the action (1 register, 2 unregister), then gdb's list of functions.
    let events: Vec<(&str, bool)> = text
        .split("All functions matching regular expression \"^square$\":")
        .zip(text.split("All functions matching").skip(1))
        .map(|(before, after)| {
            let action = before.trim_end().lines().last().unwrap_or("");
            (action, after.contains("static int square(int);"))
        })
        .collect();
    assert_eq!(
        events,
        [("1", true), ("2", false)],
        "register, then unregister when llvm-jitlink frees the memory:\n{text}"
    );
}

/// The program's report: its pid and the addresses of square, compute and main.
fn reported(stdout: &[u8]) -> (u32, Vec<(String, u64)>) {
    let text = String::from_utf8_lossy(stdout);
    let words: Vec<&str> = text.lines().next().unwrap().split(' ').collect();
    let pid = words[1].parse().unwrap();
    let addrs = words[2..]
        .chunks(2)
        .map(|p| {
            let a = u64::from_str_radix(p[1].trim_start_matches("0x"), 16).unwrap();
            (p[0].to_string(), a)
        })
        .collect();
    (pid, addrs)
}

/// Runs debugme.o in `cwd` with `mode` and `flag`; returns what the program reported.
fn run_reporting(cwd: &Path, mode: &[&str], flag: &str, obj: &Path) -> (u32, Vec<(String, u64)>) {
    let out = run_with_timeout(
        Command::new(remjit())
            .current_dir(cwd)
            .args(mode)
            .arg(flag)
            .arg(obj),
        LIMIT,
    );
    assert!(out.status.success(), "{mode:?} {flag}: {out:?}");
    reported(&out.stdout)
}

/// Each function's (size, bytes) in the object (bytes as compiled, before relocation).
fn object_functions(obj: &Path) -> Vec<(String, u64, Vec<u8>)> {
    let data = std::fs::read(obj).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let mut out = Vec::new();
    for s in file.symbols() {
        if s.kind() != object::SymbolKind::Text {
            continue;
        }
        let sec = file.section_by_index(s.section_index().unwrap()).unwrap();
        let bytes = sec.data().unwrap();
        let at = s.address() as usize;
        out.push((
            s.name().unwrap().to_string(),
            s.size(),
            bytes[at..at + s.size() as usize].to_vec(),
        ));
    }
    out
}

const MODES: [&[&str]; 3] = [&["--in-process"], &[], &["--no-shared-memory"]];

#[test]
fn perf_map_lists_every_function_where_it_runs() {
    let obj = debug_object("perf-map");
    let functions = object_functions(&obj);
    for mode in MODES {
        let (pid, addrs) = run_reporting(obj.parent().unwrap(), mode, "--perf-map", &obj);
        let path = format!("/tmp/perf-{pid}.map");
        let map = std::fs::read_to_string(&path);
        let _ = std::fs::remove_file(&path);
        let map = map.unwrap_or_else(|e| panic!("{mode:?}: no {path}: {e}"));
        let mut lines: Vec<(u64, u64, String)> = map
            .lines()
            .map(|l| {
                let mut w = l.splitn(3, ' ');
                let start = u64::from_str_radix(w.next().unwrap(), 16).unwrap();
                let size = u64::from_str_radix(w.next().unwrap(), 16).unwrap();
                (start, size, w.next().unwrap().to_string())
            })
            .collect();
        lines.sort_by(|a, b| a.2.cmp(&b.2));
        let mut want: Vec<(u64, u64, String)> = addrs
            .iter()
            .map(|(name, addr)| {
                let size = functions.iter().find(|f| &f.0 == name).unwrap().1;
                (*addr, size, name.clone())
            })
            .collect();
        want.sort_by(|a, b| a.2.cmp(&b.2));
        assert_eq!(lines, want, "{mode:?}: {map}");
    }
}

/// Under `--noexec` nothing runs, so no function names are kept for crash reports; asked for a
/// profiler map, remjit still lists every function in it.
#[test]
fn noexec_with_a_perf_map_lists_every_function() {
    let obj = debug_object("perf-map-noexec");
    let mut want: Vec<String> = object_functions(&obj).into_iter().map(|f| f.0).collect();
    want.sort();
    let mut child = Command::new(remjit())
        .args(["--in-process", "--noexec", "--perf-map"])
        .arg(&obj)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let path = format!("/tmp/perf-{}.map", child.id());
    assert!(wait_bounded(&mut child, LIMIT, "remjit --noexec --perf-map").success());
    let map = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    let map = map.unwrap_or_else(|e| panic!("no {path}: {e}"));
    let mut got: Vec<String> = map
        .lines()
        .map(|l| l.splitn(3, ' ').nth(2).unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, want, "{map}");
}

/// One jitdump record: its type and body (after the 16-byte record header).
fn records(dump: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut off = 40;
    while off < dump.len() {
        let id = u32::from_le_bytes(dump[off..off + 4].try_into().unwrap());
        let size = u32::from_le_bytes(dump[off + 4..off + 8].try_into().unwrap()) as usize;
        assert!(size >= 16 && off + size <= dump.len(), "record at {off}");
        out.push((id, dump[off + 16..off + size].to_vec()));
        off += size;
    }
    out
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap();
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The `(address, line, file)` rows of a debug-info record body.
fn debug_rows(body: &[u8]) -> (u64, Vec<(u64, i32, String)>) {
    let n = u64_at(body, 8) as usize;
    let mut at = 16;
    let mut rows = Vec::new();
    for _ in 0..n {
        let line = i32::from_le_bytes(body[at + 8..at + 12].try_into().unwrap());
        let file = c_string(&body[at + 16..]);
        rows.push((u64_at(body, at), line, file.clone()));
        at += 16 + file.len() + 1;
    }
    (u64_at(body, 0), rows)
}

#[test]
fn jitdump_has_code_and_lines_in_every_mode() {
    let obj = debug_object("jitdump");
    let functions = object_functions(&obj);
    let square = functions.iter().find(|f| f.0 == "square").unwrap();
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let (pid, addrs) = run_reporting(dir.path(), mode, "--jitdump", &obj);
        let dump = std::fs::read(dir.path().join(format!("jit-{pid}.dump"))).unwrap();
        assert_eq!(&dump[0..4], &0x4A69_5444u32.to_le_bytes(), "magic");
        assert_eq!(&dump[4..8], &1u32.to_le_bytes(), "version");
        assert_eq!(&dump[12..16], &62u32.to_le_bytes(), "EM_X86_64");
        assert_eq!(&dump[20..24], &pid.to_le_bytes(), "pid");
        let recs = records(&dump);
        assert_eq!(
            recs.last().map(|r| r.0),
            Some(3),
            "{mode:?}: ends with CLOSE"
        );
        let addr_of = |n: &str| addrs.iter().find(|a| a.0 == n).unwrap().1;
        let loads: Vec<_> = recs.iter().filter(|r| r.0 == 0).collect();
        assert_eq!(loads.len(), 3, "{mode:?}: one load per function");
        for (i, (_, body)) in loads.iter().enumerate() {
            let name = c_string(&body[40..]);
            assert_eq!(
                u64_at(body, 16),
                addr_of(&name),
                "{mode:?}: {name}'s address"
            );
            assert_eq!(u64_at(body, 32), i as u64, "code index");
            let code = &body[40 + name.len() + 1..];
            assert_eq!(code.len() as u64, u64_at(body, 24), "code size");
            if name == "square" {
                assert_eq!(code, &square.2[..], "{mode:?}: square's code bytes");
            }
        }
        // Each load is preceded by the function's line table.
        let pos = recs
            .iter()
            .position(|r| r.0 == 0 && c_string(&r.1[40..]) == "compute")
            .unwrap();
        assert_eq!(
            recs[pos - 1].0,
            2,
            "{mode:?}: debug info before compute's load"
        );
        let (addr, rows) = debug_rows(&recs[pos - 1].1);
        assert_eq!(addr, addr_of("compute"));
        let line = line_of("CALL_SQUARE") as i32;
        assert!(
            rows.iter()
                .any(|r| r.1 == line && r.2.ends_with("debugme.c") && r.0 > addr),
            "{mode:?}: no row for debugme.c:{line} in {rows:?}"
        );
    }
}

/// Where gdb stops in `module_life_for_gdb`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn remjit_test_checkpoint() {
    // SAFETY: an empty asm statement: keeps the function and its calls.
    unsafe { std::arch::asm!("", options(nostack, preserves_flags)) };
}

#[test]
#[ignore = "run under gdb by gdb_forgets_a_removed_module"]
fn module_life_for_gdb() {
    let obj = PathBuf::from(std::env::var("REMJIT_DEBUG_OBJECT").unwrap());
    let options = remjit::SessionOptions {
        run_initializers: false,
        ..Default::default()
    };
    let mut s = remjit::Session::in_process(options).unwrap();
    s.add_file(&obj).unwrap();
    let m = s.link().unwrap();
    remjit_test_checkpoint();
    s.remove_module(m).unwrap();
    remjit_test_checkpoint();
}

#[test]
fn gdb_forgets_a_removed_module() {
    // -fPIC: the test binary has no copy of libc's `stdout` within 32-bit reach.
    let dir = work_dir("gdb-remove");
    let obj = compile(
        &dir,
        &program("debugme.c"),
        "debugme.o",
        &["-g", "-O0", "-fPIC"],
    );
    let out = run_with_timeout(
        Command::new("gdb")
            .args(["-batch", "-nx", "-ex", "break remjit_test_checkpoint"])
            .args(["-ex", "run", "-ex", "info functions ^compute$"])
            .args([
                "-ex",
                "continue",
                "-ex",
                "info functions ^compute$",
                "-ex",
                "kill",
            ])
            .arg("--args")
            .arg(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "module_life_for_gdb"])
            .env("REMJIT_DEBUG_OBJECT", &obj)
            .stdin(Stdio::null()),
        LIMIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lists: Vec<&str> = text.split("All functions matching").skip(1).collect();
    assert_eq!(lists.len(), 2, "{text}");
    assert!(
        lists[0].contains("int compute(int);"),
        "while linked: {text}"
    );
    assert!(
        !lists[1].contains("int compute(int);"),
        "after removal: {text}"
    );
}

#[test]
#[ignore = "run under gdb by gdb_sees_shared_comdat_code_once"]
fn modules_for_gdb() {
    let objects = std::env::var("REMJIT_DEBUG_OBJECTS").unwrap();
    let options = remjit::SessionOptions {
        run_initializers: false,
        ..Default::default()
    };
    let mut s = remjit::Session::in_process(options).unwrap();
    let mut modules = Vec::new();
    for obj in objects.split(':') {
        s.add_file(Path::new(obj)).unwrap();
        modules.push(s.link().unwrap());
    }
    remjit_test_checkpoint();
    // With REMJIT_REMOVE_MODULE=i, the i-th module is removed, and gdb stops again.
    if let Ok(i) = std::env::var("REMJIT_REMOVE_MODULE") {
        s.remove_module(modules[i.parse::<usize>().unwrap()])
            .unwrap();
        remjit_test_checkpoint();
    }
}

/// Two modules with the same inline function: the second shares the first one's COMDAT copy,
/// so its own copy is never loaded; gdb must see the function once, where it was loaded (not a
/// second time at address 0, where a breakpoint cannot be inserted).
#[test]
fn gdb_sees_shared_comdat_code_once() {
    let dir = work_dir("gdb-comdat");
    let objects: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|m| {
            let src = dir.join(format!("{m}.cc"));
            std::fs::write(
                &src,
                format!(
                    "inline int twice(int x) {{ return 2 * x; }}\n\
                     int use_{m}(int x) {{ return twice(x) + 1; }}\n"
                ),
            )
            .unwrap();
            compile(&dir, &src, &format!("{m}.o"), &["-g", "-O0", "-fPIC"])
        })
        .collect();
    let list: Vec<String> = objects.iter().map(|o| o.display().to_string()).collect();
    let out = run_with_timeout(
        Command::new("gdb")
            .args(["-batch", "-nx", "-ex", "break remjit_test_checkpoint"])
            .args([
                "-ex",
                "run",
                "-ex",
                "set language c++",
                "-ex",
                "break twice",
            ])
            .args(["-ex", "break use_b", "-ex", "info breakpoints"])
            .args(["-ex", "kill"])
            .arg("--args")
            .arg(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "modules_for_gdb"])
            .env("REMJIT_DEBUG_OBJECTS", list.join(":"))
            .stdin(Stdio::null()),
        LIMIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // Once, in a.cc (whose module loaded it); b.cc's own code is still known.
    let set: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("Breakpoint 2 at ") || l.starts_with("Breakpoint 3 at "))
        .collect();
    assert_eq!(set.len(), 2, "{text}");
    assert!(
        set[0].ends_with("/a.cc, line 1.") && !set[0].starts_with("Breakpoint 2 at 0x0:"),
        "{text}"
    );
    assert!(set[1].ends_with("/b.cc, line 2."), "{text}");
    assert!(!text.contains("0x0000000000000000 in twice"), "{text}");
}

#[test]
fn perf_inject_attributes_samples_to_jit_source_lines() {
    let dir = tempfile::tempdir().unwrap();
    let obj = compile(dir.path(), &program("spin.c"), "spin.o", &["-g", "-O1"]);
    // perf keeps a build-id cache under $HOME: keep it in the temporary directory.
    let perf = |args: &[&str]| {
        let out = run_with_timeout(
            Command::new("perf")
                .current_dir(dir.path())
                .env("HOME", dir.path())
                .args(args),
            LIMIT,
        );
        assert!(out.status.success(), "perf {args:?}: {out:?}");
        out
    };
    let remjit = remjit().display().to_string();
    let spin = obj.display().to_string();
    perf(&[
        "record",
        "-k",
        "1",
        "-e",
        "cpu-clock",
        "-o",
        "perf.data",
        &remjit,
        "--jitdump",
        &spin,
    ]);
    perf(&["inject", "--jit", "-i", "perf.data", "-o", "perf.jit.data"]);
    let report = perf(&[
        "report",
        "-i",
        "perf.jit.data",
        "--stdio",
        "--sort",
        "sym,srcline",
    ]);
    let text = String::from_utf8_lossy(&report.stdout);
    // `work` is inlined into main at -O1: the samples land in JIT'd main, on spin.c's loop.
    let hot = text
        .lines()
        .find(|l| l.contains("[.] main") && l.contains("spin.c:"))
        .unwrap_or_else(|| panic!("no sample in JIT'd main with a spin.c line:\n{text}"));
    let percent: f64 = hot.split('%').next().unwrap().trim().parse().unwrap();
    assert!(percent > 10.0, "{hot}");
}

/// `n` `-g` objects `f_1.o` ... `f_n.o` in `dir`, compiled in one run with `flags`, where
/// `f_i.c` defines `int f_i(int x)` whose body's lines are `body(i)`; and `main.o`, calling
/// `f_n(1)` on its line 3.
fn numbered_objects(
    dir: &Path,
    n: usize,
    body: &dyn Fn(usize) -> String,
    flags: &[&str],
) -> Vec<PathBuf> {
    let mut srcs = Vec::new();
    for i in 1..=n {
        let src = dir.join(format!("f_{i}.c"));
        let text = format!(
            "int f_{p}(int);\nint f_{i}(int x) {{\n{}}}\n",
            body(i),
            p = i - 1
        );
        std::fs::write(&src, text).unwrap();
        srcs.push(src);
    }
    let main = dir.join("main.c");
    let text = format!(
        "int f_{n}(int);\nint main(void) {{\n    int r = f_{n}(1);\n    return r == 0;\n}}\n"
    );
    std::fs::write(&main, text).unwrap();
    srcs.push(main);
    let st = Command::new("gcc")
        .current_dir(dir)
        .args(["-g", "-O0", "-c"])
        .args(flags)
        .args(&srcs)
        .status()
        .unwrap();
    assert!(st.success());
    srcs.iter().map(|s| s.with_extension("o")).collect()
}

/// A gdb command printing `jit objects: [..]`: how many of `f_1` ... `f_n` each in-memory
/// objfile (registered debug object) defines, sorted.
fn count_jit_objects(n: usize) -> String {
    format!(
        "python print('jit objects:', sorted(sum(1 for i in range(1, {}) \
         if o.lookup_global_symbol('f_%d' % i)) for o in gdb.objfiles() \
         if o.filename.startswith('<in-memory@')))",
        n + 1
    )
}

/// What the `count_jit_objects` commands in gdb's output printed, in order.
fn jit_objects(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.strip_prefix("jit objects: "))
        .collect()
}

/// A chain of 40 `-g` modules, f_40 → ... → f_1, and main.o calling f_40 (`--link-each`
/// makes 41 modules of them).
fn chain_of_modules(test: &str) -> Vec<PathBuf> {
    let body = |i: usize| match i {
        1 => "    int y = x + 1;\n    return y * 3;\n".to_string(),
        _ => format!("    int y = x + {i};\n    return f_{}(y) + 1;\n", i - 1),
    };
    numbered_objects(&work_dir(test), 40, &body, &[])
}

/// gdb's commands on a `chain_of_modules` program, started by `start` (`run`, `continue`):
/// stop in main (the last module), count the debug objects, stop in f_1 (the first), `bt`.
fn chain_commands(start: &str) -> Vec<String> {
    ["break f_1.c:4", "break main.c:3", start]
        .into_iter()
        .map(str::to_string)
        .chain([count_jit_objects(40)])
        .chain(["continue", "bt", "info locals"].map(str::to_string))
        .collect()
}

/// Asserts gdb's output of `chain_commands`: three debug objects (32 + 8 + 1 modules: older
/// modules' objects are merged), the stops by file:line in the last module and in the first,
/// and `bt` with file:line through frames of different modules.
fn assert_chain_stops(text: &str) {
    // main.o's object defines none of f_1 ... f_40.
    assert_eq!(jit_objects(text), ["[0, 8, 32]"], "{text}");
    // 1 + 2 + ... + 40 added to 1 on the way down.
    for want in [
        "Breakpoint 2, main () at ",
        "main.c:3",
        "Breakpoint 1, f_1 (x=820) at ",
        "f_1.c:4",
        "y = 821",
        "in f_2 (x=818) at ",
        "f_2.c:4",
        "in f_33 (x=260) at ",
        "f_33.c:4",
        "in f_40 (x=1) at ",
        "in main () at ",
    ] {
        assert!(text.contains(want), "gdb output lacks `{want}`:\n{text}");
    }
}

/// 41 modules linked one by one in process (`--link-each`), debugged through their three
/// debug objects.
#[test]
fn gdb_debugs_grouped_modules() {
    let objects = chain_of_modules("gdb-groups");
    let mut gdb = Command::new("gdb");
    gdb.args(["-batch", "-nx", "-ex", "set breakpoint pending on"]);
    for c in chain_commands("run") {
        gdb.args(["-ex", &c]);
    }
    gdb.args(["-ex", "kill", "--args"])
        .arg(remjit())
        .args(["--in-process", "--link-each"])
        .args(&objects);
    let out = run_with_timeout(gdb.stdin(Stdio::null()), LIMIT);
    assert_chain_stops(&String::from_utf8_lossy(&out.stdout));
}

/// The same 41 modules linked by the controller into a waiting executor, with gdb attached
/// to it (`gdb -p`): gdb reads the three debug objects when it attaches.
#[test]
fn gdb_attached_debugs_grouped_modules() {
    let objects = chain_of_modules("gdb-groups-attach");
    let args: Vec<&OsStr> = std::iter::once(OsStr::new("--link-each"))
        .chain(objects.iter().map(|o| o.as_os_str()))
        .collect();
    let (mut child, pid) = waiting_remjit(&args);
    let mut gdb = Command::new("gdb");
    gdb.args(["-batch", "-nx", "-p", &pid.to_string()]);
    for c in chain_commands("continue") {
        gdb.args(["-ex", &c]);
    }
    let out = run_with_timeout(gdb.stdin(Stdio::null()), LIMIT);
    assert_chain_stops(&String::from_utf8_lossy(&out.stdout));
    // gdb detached: the program runs to its end (main returns 0).
    let status = common::wait_bounded(&mut child.0, LIMIT, "remjit after gdb detached");
    assert_eq!(status.code(), Some(0));
}

/// Removing a module whose debug object was merged with others' rebuilds that object without
/// it: its function leaves gdb's view, the other members' stay.
#[test]
fn gdb_forgets_a_removed_module_of_a_group() {
    let dir = work_dir("gdb-groups-remove");
    let body = |i: usize| format!("    return x + {i};\n");
    // -fPIC: the test binary has no copy of libc's `stdout` within 32-bit reach.
    let mut objects = numbered_objects(&dir, 40, &body, &["-fPIC"]);
    objects.pop(); // main.o: not needed
    let list: Vec<String> = objects.iter().map(|o| o.display().to_string()).collect();
    let count = count_jit_objects(40);
    let look = ["info functions ^f_[0-9]*$", &count];
    let out = run_with_timeout(
        Command::new("gdb")
            .args(["-batch", "-nx", "-ex", "break remjit_test_checkpoint"])
            .args(["-ex", "run", "-ex", look[0], "-ex", look[1]])
            .args(["-ex", "continue", "-ex", look[0], "-ex", look[1]])
            .args(["-ex", "break f_6", "-ex", "kill"])
            .arg("--args")
            .arg(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "modules_for_gdb"])
            .env("REMJIT_DEBUG_OBJECTS", list.join(":"))
            .env("REMJIT_REMOVE_MODULE", "4")
            .stdin(Stdio::null()),
        LIMIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (before, after) = text
        .split_once("Breakpoint 1, ")
        .and_then(|(_, t)| t.split_once("Breakpoint 1, "))
        .unwrap_or_else(|| panic!("two stops: {text}"));
    let functions = |part: &str| {
        (1..=40)
            .filter(|i| part.contains(&format!("\tint f_{i}(int);")))
            .collect::<Vec<_>>()
    };
    assert_eq!(functions(before), (1..=40).collect::<Vec<_>>(), "{text}");
    assert_eq!(jit_objects(before), ["[8, 32]"], "{text}");
    let mut left: Vec<usize> = (1..=40).collect();
    left.remove(4);
    assert_eq!(functions(after), left, "f_5 is gone: {text}");
    assert_eq!(jit_objects(after), ["[8, 31]"], "{text}");
    assert!(after.contains("/f_6.c, line 3."), "{text}");
}

/// A registered debug object: its `f_*` functions and its `.text` sections' (address, size).
type Registered = (Vec<String>, Vec<(u64, u64)>);

/// The debug objects registered in this process, by address.
fn registered_here() -> Vec<Registered> {
    let mut out: Vec<_> = remjit_executor::runtime::jit_debug::registered()
        .into_iter()
        .map(|(addr, size)| {
            // SAFETY: a registered object, owned by the runtime until deregistered (only
            // this test registers objects in this process).
            let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, size as usize) };
            let file = object::File::parse(bytes).unwrap();
            let mut names: Vec<String> = (file.symbols())
                .filter(|s| s.kind() == object::SymbolKind::Text)
                .filter_map(|s| s.name().ok().filter(|n| n.starts_with("f_")))
                .map(str::to_string)
                .collect();
            names.sort_by_key(|n| n[2..].parse::<u32>().unwrap());
            let texts = (file.sections())
                .filter(|s| s.name() == Ok(".text"))
                .map(|s| (s.address(), s.size()))
                .collect();
            (names, texts)
        })
        .collect();
    out.sort_by_key(|o: &Registered| o.1.first().copied());
    out
}

/// Modules' debug objects are merged like a binary counter (groups of 1, 2, 4, 8 modules),
/// with one `.text` section per run of adjacent module memory; removing a module rebuilds its
/// group without it.
#[test]
fn debug_groups_merge_like_a_binary_counter() {
    use remjit::debug::{DebugInput, GdbGroups};
    let dir = work_dir("gdb-groups-counter");
    let objects = numbered_objects(&dir, 12, &|i| format!("    return x + {i};\n"), &[]);
    let memory = |k: u64| (0x6000_0000 + k * 0x1000, 0x1000);
    let inputs: Vec<Vec<DebugInput>> = (objects.iter().take(12).enumerate())
        .map(|(k, path)| {
            let bytes = std::fs::read(path).unwrap();
            let file = object::File::parse(&*bytes).unwrap();
            let mut section_addrs = vec![0; file.sections().count() + 1];
            let text = file.section_by_name(".text").unwrap();
            section_addrs[text.index().0] = memory(k as u64).0;
            vec![DebugInput {
                name: path.display().to_string(),
                bytes,
                section_addrs,
            }]
        })
        .collect();
    let removed = std::cell::Cell::new(None);
    let of = |k: u64| -> &[DebugInput] {
        match removed.get() {
            Some(r) if r == k => &[],
            _ => &inputs[k as usize],
        }
    };
    let exec = remjit::executor::InProcessExecutor::new();
    let mut groups = GdbGroups::new();
    let names = |r: std::ops::RangeInclusive<usize>| -> Vec<String> {
        r.map(|i| format!("f_{i}")).collect()
    };
    let span = |from: u64, to: u64| (memory(from).0, (to - from) * 0x1000);
    for k in 0..11 {
        groups.add(&exec, k, memory(k), &of).unwrap();
    }
    assert_eq!(
        registered_here(),
        [
            (names(1..=8), vec![span(0, 8)]),
            (names(9..=10), vec![span(8, 10)]),
            (names(11..=11), vec![span(10, 11)]),
        ]
    );
    removed.set(Some(3));
    groups.remove(&exec, 3, &of).unwrap();
    let mut seven = names(1..=8);
    seven.remove(3);
    assert_eq!(
        registered_here(),
        [
            (seven, vec![span(0, 3), span(4, 8)]),
            (names(9..=10), vec![span(8, 10)]),
            (names(11..=11), vec![span(10, 11)]),
        ]
    );
    // 1 + 1 → 2, 2 + 2 → 4, 7 + 4 → 11 (a group merges while smaller than twice the rest).
    groups.add(&exec, 11, memory(11), &of).unwrap();
    let mut all = names(1..=12);
    all.remove(3);
    assert_eq!(registered_here(), [(all, vec![span(0, 3), span(4, 12)])]);
    for k in (0..12).filter(|&k| k != 3) {
        groups.remove(&exec, k, &of).unwrap();
    }
    assert_eq!(registered_here(), []);
}
