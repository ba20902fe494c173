//! Libraries found as the system linker finds them, and the command line: each case is run
//! through the `remjit` binary and compared with the native program or an exact message.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// In process, out of process copying, out of process with shared memory (the default).
const MODES: &[&[&str]] = &[&["--in-process"], &["--no-shared-memory"], &[]];

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// remjit with `args`, run in `cwd`, with `env` added.
fn remjit_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(remjit());
    cmd.current_dir(cwd).args(args).envs(env.iter().copied());
    run_with_timeout(&mut cmd, Duration::from_secs(120))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a failure with exactly `message` on stderr and nothing on stdout.
fn assert_fails(what: &str, out: &Output, message: &str) {
    assert_eq!(stderr(out), message, "{what}");
    assert_eq!(out.stdout, b"", "{what}: nothing runs");
    assert_eq!(out.status.code(), Some(1), "{what}");
}

fn hello(dir: &Path) -> PathBuf {
    compile(dir, &program("hello.c"), "hello.o", &["-O2"])
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn libc_by_name_is_a_shared_library() {
    let dir = work_dir("cli-libc");
    let o = hello(&dir);
    let expect = native(&dir, "hello", std::slice::from_ref(&o), &["-lc"], &[]);
    for mode in MODES {
        let out = jit(mode, std::slice::from_ref(&o), &["-lc"], &[]);
        assert_same(&format!("-lc {mode:?}"), &out, &expect);
    }
}

#[test]
fn libgcc_s_through_its_linker_script() {
    let dir = work_dir("cli-gcc-s");
    let src = write(
        &dir,
        "unwind.c",
        "#include <stdio.h>\n#include <unwind.h>\n\
         static _Unwind_Reason_Code count(struct _Unwind_Context *c, void *n) {\n\
           (void)c; ++*(int *)n; return _URC_NO_REASON; }\n\
         int main(void) { int n = 0; _Unwind_Backtrace(count, &n);\n\
           printf(\"unwound: %s\\n\", n > 0 ? \"yes\" : \"no\"); return 0; }\n",
    );
    let o = compile(&dir, &src, "unwind.o", &["-O2"]);
    let expect = native(&dir, "unwind", std::slice::from_ref(&o), &["-lgcc_s"], &[]);
    assert_eq!(expect.0, b"unwound: yes\n");
    for mode in MODES {
        let out = jit(mode, std::slice::from_ref(&o), &["-lgcc_s"], &[]);
        assert_same(&format!("-lgcc_s {mode:?}"), &out, &expect);
    }
}

/// `mul.o` (6 * 7) and a main that prints `mul(6, 7)`.
fn mul_objects(dir: &Path) -> (PathBuf, PathBuf) {
    let mul = write(dir, "mul.c", "int mul(int a, int b) { return a * b; }\n");
    let main = write(
        dir,
        "usemul.c",
        "#include <stdio.h>\nint mul(int, int);\n\
         int main(void) { printf(\"%d\\n\", mul(6, 7)); return 0; }\n",
    );
    (
        compile(dir, &mul, "mul.o", &["-O2"]),
        compile(dir, &main, "usemul.o", &["-O2"]),
    )
}

fn ar(dir: &Path, args: &[&str]) {
    let st = Command::new("ar")
        .current_dir(dir)
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "ar {args:?}");
}

/// `dir/sub/NAME`: an archive made by `ar MODE` of a copy of `mul.o` in `dir/sub`.
fn mul_archive(dir: &Path, mul: &Path, sub: &str, mode: &str, name: &str) -> PathBuf {
    let sub = dir.join(sub);
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::copy(mul, sub.join("mul.o")).unwrap();
    let _ = std::fs::remove_file(sub.join(name));
    ar(&sub, &[mode, name, "mul.o"]);
    sub.join(name)
}

#[test]
fn linker_script_names_are_searched_in_l_dirs() {
    let dir = work_dir("cli-script");
    let (mul, main) = mul_objects(&dir);
    mul_archive(&dir, &mul, "libs", "rcs", "libmul.a");
    let libs = dir.join("libs");
    write(
        &libs,
        "libscript.so",
        "/* GNU ld script */\nGROUP ( libmul.a )\n",
    );
    for mode in MODES {
        let mut args = mode.to_vec();
        args.extend(["-L", "libs", "-lscript", path_str(&main)]);
        let out = remjit_in(&dir, &args, &[]);
        assert_same(&format!("script {mode:?}"), &out, &(b"42\n".to_vec(), 0));
    }
    // A name that is nowhere says where remjit looked.
    write(&libs, "libbroken.so", "GROUP ( libnowhere.a )\n");
    let out = remjit_in(&dir, &["-L", "libs", "-lbroken", path_str(&main)], &[]);
    let e = stderr(&out);
    assert!(
        e.starts_with(
            "remjit: error: libs/libbroken.so: linker script input `libnowhere.a` not found \
             (searched the current directory and libs /usr/local/lib/x86_64-linux-gnu "
        ),
        "{e}"
    );
}

#[test]
fn thin_archive_members_come_from_their_files() {
    let dir = work_dir("cli-thin");
    let (mul, main) = mul_objects(&dir);
    let thin = mul_archive(&dir, &mul, "thin", "rcT", "libthin.a");
    assert!(std::fs::read(&thin).unwrap().starts_with(b"!<thin>\n"));
    for mode in MODES {
        // Run elsewhere: members are found relative to the archive, not the current directory.
        let out = jit(mode, &[main.clone(), thin.clone()], &[], &[]);
        assert_same(&format!("thin {mode:?}"), &out, &(b"42\n".to_vec(), 0));
    }
    // A member that became a device is refused, not read forever.
    let _ = std::fs::remove_dir_all(dir.join("evil"));
    let evil = mul_archive(&dir, &dir.join("mul.o"), "evil", "rcT", "libthin.a");
    let member = dir.join("evil/mul.o");
    std::fs::remove_file(&member).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &member).unwrap();
    let out = jit(&["--in-process"], &[main.clone(), evil.clone()], &[], &[]);
    assert_fails(
        "thin member /dev/zero",
        &out,
        &format!(
            "remjit: error: {}: malformed ELF object: thin archive member {}: not a regular \
             file\n",
            evil.display(),
            member.display()
        ),
    );
}

/// Offset of the data of the archive member named `name` (GNU `ar` names end with `/`).
fn member_data_offset(archive: &[u8], name: &str) -> usize {
    let mut off = 8;
    while off + 60 <= archive.len() {
        let header = &archive[off..off + 60];
        let size: usize = std::str::from_utf8(&header[48..58])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if header.starts_with(format!("{name}/").as_bytes()) {
            return off + 60;
        }
        off += 60 + size + size % 2;
    }
    panic!("no member {name}");
}

#[test]
fn archive_members_at_any_even_offset_are_read_in_place() {
    // Members lie at even offsets only; ELF structures are read where they lie (no aligned
    // copy), so a member at 2, 4 or 6 modulo 8 links as one at 0 does.
    let dir = work_dir("cli-member-align");
    let (mul, main) = mul_objects(&dir);
    let mut seen = std::collections::BTreeSet::new();
    for pad in 1..=8 {
        let sub = dir.join(format!("pad{pad}"));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("pad.txt"), vec![b'x'; pad]).unwrap();
        std::fs::copy(&mul, sub.join("mul.o")).unwrap();
        let _ = std::fs::remove_file(sub.join("libmul.a"));
        ar(&sub, &["rcs", "libmul.a", "pad.txt", "mul.o"]);
        let lib = sub.join("libmul.a");
        seen.insert(member_data_offset(&std::fs::read(&lib).unwrap(), "mul.o") % 8);
        let out = jit(&["--in-process"], &[main.clone(), lib], &[], &[]);
        assert_same(
            &format!("member after {pad} bytes"),
            &out,
            &(b"42\n".to_vec(), 0),
        );
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [0, 2, 4, 6]);
}

#[test]
fn preload_by_soname() {
    let dir = work_dir("cli-preload");
    let src = write(
        &dir,
        "zver.c",
        "#include <stdio.h>\nconst char *zlibVersion(void);\n\
         int main(void) { printf(\"zlib %s\\n\", zlibVersion()); return 0; }\n",
    );
    let o = compile(&dir, &src, "zver.o", &["-O2"]);
    let expect = native(&dir, "zver", std::slice::from_ref(&o), &["-lz"], &[]);
    for mode in MODES {
        let out = jit(
            mode,
            std::slice::from_ref(&o),
            &["--preload", "libz.so.1"],
            &[],
        );
        assert_same(&format!("--preload libz.so.1 {mode:?}"), &out, &expect);
        let out = jit(
            mode,
            std::slice::from_ref(&o),
            &["--preload", "libnowhere.so.7"],
            &[],
        );
        assert_fails(
            "unknown soname",
            &out,
            "remjit: error: cannot load libnowhere.so.7: cannot open shared object file: No \
             such file or directory\n",
        );
    }
}

#[test]
fn lto_objects_are_named_with_the_fix() {
    let dir = work_dir("cli-lto");
    let (_, main) = mul_objects(&dir);
    let lto = compile(&dir, &dir.join("mul.c"), "mul-lto.o", &["-O2", "-flto"]);
    let out = jit(&[], &[main.clone(), lto.clone()], &[], &[]);
    assert_fails(
        "lto object",
        &out,
        &format!(
            "remjit: error: {}: compiled with -flto (no machine code): rebuild without -flto\n",
            lto.display()
        ),
    );
    let _ = std::fs::remove_file(dir.join("liblto.a"));
    ar(&dir, &["rcs", "liblto.a", "mul-lto.o"]);
    let out = jit(&["--in-process"], &[main, dir.join("liblto.a")], &[], &[]);
    assert_fails(
        "lto archive member",
        &out,
        &format!(
            "remjit: error: {}(mul-lto.o): compiled with -flto (no machine code): rebuild \
             without -flto\n",
            dir.join("liblto.a").display()
        ),
    );
}

#[test]
fn undefined_cxx_symbols_are_demangled_with_a_hint() {
    let dir = work_dir("cli-demangle");
    let src = write(
        &dir,
        "cxx.cc",
        "namespace std { void remjit_not_in_the_runtime(); }\n\
         namespace mine { int helper(int); }\n\
         int main() { std::remjit_not_in_the_runtime(); return mine::helper(1); }\n",
    );
    let o = compile(&dir, &src, "cxx.o", &["-O2"]);
    let out = jit(&["--in-process"], std::slice::from_ref(&o), &[], &[]);
    let d = o.display();
    assert_fails(
        "c++ undefined",
        &out,
        &format!(
            "remjit: error: 2 undefined symbol(s):\n  \
             _ZSt25remjit_not_in_the_runtimev [std::remjit_not_in_the_runtime()] (referenced \
             by {d})\n  \
             _ZN4mine6helperEi [mine::helper(int)] (referenced by {d})\n\
             hint: symbols of the C++ runtime (libstdc++) are missing: add `-l stdc++`\n"
        ),
    );
}

#[test]
fn bare_oop_executor_leaves_the_input_alone() {
    let dir = work_dir("cli-oop");
    let o = hello(&dir);
    let expect = native(&dir, "hello", std::slice::from_ref(&o), &[], &[]);
    let out = jit(&["--oop-executor"], std::slice::from_ref(&o), &[], &[]);
    assert_same("--oop-executor hello.o", &out, &expect);
    let exe = remjit().with_file_name("remjit-executor");
    let flag = format!("--oop-executor={}", exe.display());
    let out = jit(&[&flag], std::slice::from_ref(&o), &[], &[]);
    assert_same("--oop-executor=PATH hello.o", &out, &expect);
}

#[test]
fn entry_is_checked_before_constructors_run() {
    let dir = work_dir("cli-entry");
    let src = write(
        &dir,
        "ctor.c",
        "#include <stdio.h>\n\
         __attribute__((constructor)) static void init(void) { puts(\"constructor ran\"); }\n\
         int main(void) { return 3; }\n",
    );
    let o = compile(&dir, &src, "ctor.o", &["-O2"]);
    for mode in MODES {
        let out = jit(mode, std::slice::from_ref(&o), &["--entry=nosuch"], &[]);
        assert_fails(
            &format!("--entry=nosuch {mode:?}"),
            &out,
            "remjit: error: entry point `nosuch` is not defined by the inputs\n",
        );
    }
}

#[test]
fn help_lists_args_and_xcc() {
    let out = remjit_in(Path::new("."), &["--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--args [<ARGS>...]"), "{help}");
    assert!(
        help.contains("Everything after --args goes to the program as argv[1..]"),
        "{help}"
    );
    assert!(help.contains("--Xcc <ARG>"), "{help}");
}

#[test]
fn show_times_explains_inputs_and_gives_a_total() {
    let dir = work_dir("cli-times");
    let o = hello(&dir);
    for extra in [&[][..], &["--noexec"][..]] {
        let out = jit(&["--show-times"], std::slice::from_ref(&o), extra, &[]);
        assert_eq!(out.status.code(), Some(0));
        let e = stderr(&out);
        let lines: Vec<&str> = e.lines().collect();
        assert!(
            lines[0].starts_with("remjit: times: inputs ")
                && lines[0].contains(
                    " ms (start the executor, load libraries, read and compile the inputs), \
                     read "
                ),
            "{e}"
        );
        let last = lines.last().unwrap();
        let total = if extra.is_empty() {
            last.strip_prefix("remjit: times: run ")
                .and_then(|l| l.split_once(" ms, total "))
                .map(|(_, t)| t)
        } else {
            last.strip_prefix("remjit: times: total ")
        };
        assert!(
            total.is_some_and(|t| t.ends_with(" ms") && t.len() > 3),
            "{e}"
        );
        assert_eq!(lines.len(), 2, "{e}");
    }
}

#[test]
fn missing_files_say_the_cause_once() {
    let dir = work_dir("cli-missing");
    let o = hello(&dir);
    for mode in [&["--in-process"][..], &[][..]] {
        for missing in ["/nonexistent/x.o", "/nonexistent/x.c"] {
            let out = jit(mode, &[PathBuf::from(missing)], &[], &[]);
            assert_fails(
                missing,
                &out,
                &format!("remjit: error: {missing}: No such file or directory (os error 2)\n"),
            );
        }
        let out = jit(
            mode,
            std::slice::from_ref(&o),
            &["--preload", "/nonexistent/x.so"],
            &[],
        );
        assert_fails(
            "--preload",
            &out,
            "remjit: error: /nonexistent/x.so: No such file or directory (os error 2)\n",
        );
    }
}

#[test]
fn cflags_and_xcc_reach_the_compiler() {
    let dir = work_dir("cli-cflags");
    let inc = dir.join("inc");
    std::fs::create_dir_all(&inc).unwrap();
    write(&inc, "extra.h", "#define M 5\n");
    let src = write(
        &dir,
        "defs.c",
        "#include <stdio.h>\n#include \"extra.h\"\n\
         int main(void) { printf(\"N=%d M=%d\\n\", N, M); return 0; }\n",
    );
    let cxx = write(
        &dir,
        "defs.cc",
        "#include <cstdio>\nint main() { std::printf(\"K=%d\\n\", K); return 0; }\n",
    );
    let s = path_str(&src);
    let out = remjit_in(&dir, &[s], &[("CFLAGS", "-DN=3 -Iinc")]);
    assert_same("CFLAGS", &out, &(b"N=3 M=5\n".to_vec(), 0));
    let out = remjit_in(&dir, &["-Xcc", "-DN=4", "-Xcc", "-Iinc", s], &[]);
    assert_same("-Xcc", &out, &(b"N=4 M=5\n".to_vec(), 0));
    let out = remjit_in(&dir, &[path_str(&cxx)], &[("CXXFLAGS", "-DK=9")]);
    assert_same("CXXFLAGS", &out, &(b"K=9\n".to_vec(), 0));
}

#[test]
fn compile_dir_is_fresh_private_and_removed() {
    let dir = work_dir("cli-ccdir");
    let tmp = tempfile::tempdir().unwrap();
    let src = program("hello.c");
    // A compiler that reports the directory it writes to, its mode and how many files it
    // holds, before compiling.
    let report_file = dir.join("spy-report");
    let cc = write(
        &dir,
        "spycc",
        "#!/bin/sh\nfor a; do last=$a; done\nd=$(dirname \"$last\")\n\
         echo \"$d $(stat -c %a \"$d\") $(ls -A \"$d\" | wc -l)\" > \"$SPY_REPORT\"\nexec gcc \"$@\"\n",
    );
    let st = Command::new("chmod").arg("+x").arg(&cc).status().unwrap();
    assert!(st.success());
    // The attacker's guess (the old name scheme): remjit runs under the shell's pid.
    let script = format!(
        "mkdir \"$TMPDIR/remjit-cc-$$-0\" && echo planted > \"$TMPDIR/remjit-cc-$$-0/marker\" \
         && exec '{}' '{}'",
        remjit().display(),
        src.display()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script])
        .env("TMPDIR", tmp.path())
        .env("CC", &cc)
        .env("SPY_REPORT", &report_file);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the JIT, argc=1\n"
    );
    let report = std::fs::read_to_string(&report_file).unwrap();
    let (used, rest) = report.trim_end().split_once(' ').unwrap();
    assert_eq!(rest, "700 0", "private and empty: {report}");
    let used = Path::new(used);
    assert_eq!(used.parent(), Some(tmp.path()));
    let name = used.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("remjit-cc-"), "{name}");
    assert!(
        !name["remjit-cc-".len()..]
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-'),
        "unpredictable: {name}"
    );
    // Only the planted directory is left, untouched.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    let planted = tmp.path().join(&left[0]);
    let contents: Vec<_> = std::fs::read_dir(&planted)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(contents, vec![std::ffi::OsString::from("marker")]);
}

#[test]
fn remjit_alone_is_its_own_executor() {
    // What `cargo install --path crates/remjit` gives: remjit without remjit-executor.
    let dir = work_dir("cli-alone");
    let o = hello(&dir);
    let expect = native(&dir, "hello", std::slice::from_ref(&o), &[], &[]);
    let bin = tempfile::tempdir().unwrap();
    let alone = bin.path().join("remjit");
    std::fs::copy(remjit(), &alone).unwrap();
    for mode in [&["--no-shared-memory"][..], &[][..]] {
        let mut cmd = Command::new(&alone);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(mode)
            .arg(&o);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
        assert_same(&format!("alone {mode:?}"), &out, &expect);
    }
}

/// `--link-each` initializes each module before the next is linked (out of process the
/// executor does it while remjit links the next, several at once when it falls behind):
/// constructors run in link order, as natively, and one that crashes ends the run as natively,
/// named in remjit's report.
#[test]
fn link_each_runs_constructors_in_link_order_and_reports_a_crashing_one() {
    let dir = work_dir("link-each-ctors");
    // 150 modules with a constructor each (more than remjit keeps waiting for the executor,
    // so that some go to it in batches), then main; the one at `crash` crashes.
    const N: usize = 150;
    let source = |i: usize, crash: bool| {
        let poke = if crash {
            " *(volatile int *)8 = 1;"
        } else {
            ""
        };
        let name = format!("c{i:03}{}.c", if crash { "-crash" } else { "" });
        let text = format!(
            "#include <unistd.h>\n__attribute__((constructor)) static void c{i}(void) {{\n\
             write(1, \"c{i:03}\\n\", 5);{poke}\n}}\nint f{i}(void) {{ return {i}; }}\n"
        );
        write(&dir, &name, &text)
    };
    let mut srcs: Vec<PathBuf> = (0..N).map(|i| source(i, false)).collect();
    srcs.push(write(
        &dir,
        "main.c",
        "#include <stdio.h>\nint f0(void);\nint main(void) { printf(\"main %d\\n\", f0()); return 0; }\n",
    ));
    let crash_src = source(107, true);
    // One compiler run for all of them.
    let st = Command::new("gcc")
        .current_dir(&dir)
        .args(["-O2", "-c"])
        .args(&srcs)
        .arg(&crash_src)
        .status()
        .unwrap();
    assert!(st.success());
    let mut objs: Vec<PathBuf> = srcs.iter().map(|s| s.with_extension("o")).collect();
    let expect = native(&dir, "ctors", &objs, &[], &[]);
    let text = String::from_utf8_lossy(&expect.0).into_owned();
    assert!(text.starts_with("c000\nc001\n") && text.ends_with("c149\nmain 0\n"));
    for mode in MODES {
        let out = jit(mode, &objs, &["--link-each"], &[]);
        assert_same(&format!("--link-each {mode:?}"), &out, &expect);
    }
    // The 108th constructor crashes: natively, stdout has c000 to c107 and the shell says 139.
    objs[107] = crash_src.with_extension("o");
    let expect = native(&dir, "ctors-crash", &objs, &[], &[]);
    assert!(String::from_utf8_lossy(&expect.0).ends_with("c106\nc107\n"));
    for mode in MODES {
        let out = jit(mode, &objs, &["--link-each"], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&expect.0)
        );
        assert!(err.contains("SIGSEGV"), "{mode:?}: {err}");
        if mode.contains(&"--in-process") {
            // remjit dies of the signal itself, as the native program does.
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{mode:?}: {err}");
        } else {
            // Out of process, remjit reports the executor's death and exits as a shell would.
            assert_eq!(out.status.code(), Some(139), "{mode:?}: {err}");
            assert!(err.contains("c107-crash.o"), "{mode:?}: {err}");
        }
    }
}

/// `--link-each` out of process: initializes that wait in remjit behind a slow constructor
/// and are too big to go out together (two tables of 16,500 constructors, 132 KB of arguments
/// each, in a mailbox of 256 KiB) go out one by one, each answer checked as its own: the
/// program runs as natively. (The mailbox opens at the fifth call, hence four small modules
/// first.)
#[test]
fn link_each_queued_initializes_too_big_for_one_batch_run_as_natively() {
    let dir = work_dir("link-each-big-batch");
    let mut srcs: Vec<PathBuf> = (0..4)
        .map(|i| {
            let text = format!(
                "#include <unistd.h>\n__attribute__((constructor)) static void c(void) \
                 {{ write(1, \"f{i}\\n\", 3); }}\n"
            );
            write(&dir, &format!("f{i}.c"), &text)
        })
        .collect();
    srcs.push(write(
        &dir,
        "slow.c",
        "#include <unistd.h>\n__attribute__((constructor)) static void c(void) \
         { usleep(300000); write(1, \"slow\\n\", 5); }\n",
    ));
    const K: usize = 16_500;
    for n in ["b", "c"] {
        let table = vec!["inc"; K].join(",");
        let text = format!(
            "int n_{n};\nstatic void inc(void) {{ n_{n}++; }}\n\
             __attribute__((section(\".init_array\"), used, aligned(8)))\n\
             static void (*tab[{K}])(void) = {{{table}}};\n"
        );
        srcs.push(write(&dir, &format!("{n}.c"), &text));
    }
    srcs.push(write(
        &dir,
        "main.c",
        "#include <stdio.h>\nextern int n_b, n_c;\n\
         int main(void) { printf(\"b %d c %d\\n\", n_b, n_c); return 0; }\n",
    ));
    let st = Command::new("gcc")
        .current_dir(&dir)
        .args(["-O2", "-c"])
        .args(&srcs)
        .status()
        .unwrap();
    assert!(st.success());
    let objs: Vec<PathBuf> = srcs.iter().map(|s| s.with_extension("o")).collect();
    let expect = native(&dir, "big-batch", &objs, &[], &[]);
    assert_eq!(
        String::from_utf8_lossy(&expect.0),
        "f0\nf1\nf2\nf3\nslow\nb 16500 c 16500\n"
    );
    for mode in MODES {
        let out = jit(mode, &objs, &["--link-each"], &[]);
        assert_same(&format!("--link-each {mode:?}"), &out, &expect);
    }
}

/// `--noexec --link-each` out of process: the last module's initialize, posted in the call
/// mailbox (open after four modules), is checked before remjit says the link worked. Here the
/// executor refuses it (thread-locals aligned to 128 KiB: more than it takes), so remjit fails
/// as it does without `--link-each`, naming the module's memory.
#[test]
fn noexec_link_each_reports_the_last_modules_failed_initialize() {
    let dir = work_dir("noexec-link-each-last");
    let mut srcs: Vec<PathBuf> = (0..4)
        .map(|i| {
            write(
                &dir,
                &format!("f{i}.c"),
                &format!("int f{i}(void) {{ return {i}; }}\n"),
            )
        })
        .collect();
    srcs.push(write(&dir, "main.c", "int main(void) { return 0; }\n"));
    srcs.push(write(
        &dir,
        "tls.c",
        "__thread char big[16] __attribute__((aligned(131072)));\n\
         char *p(void) { return big; }\n",
    ));
    let st = Command::new("gcc")
        .current_dir(&dir)
        .args(["-O2", "-fPIC", "-c"])
        .args(&srcs)
        .status()
        .unwrap();
    assert!(st.success());
    let objs: Vec<PathBuf> = srcs.iter().map(|s| s.with_extension("o")).collect();
    for mode in [&["--no-shared-memory"][..], &[]] {
        let out = jit(mode, &objs, &["--noexec", "--link-each"], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{mode:?}: {err}");
        assert!(
            err.starts_with("remjit: error: executor: ")
                && err.ends_with("implausible TLS image\n")
                && err.lines().count() == 1,
            "{mode:?}: {err}"
        );
    }
}

/// `--link-each`: one module per object, in the order given, each resolved against the modules
/// before it. Given in link order the chain runs as natively linked; with main first, main's
/// module cannot see the functions of modules not yet linked (one link resolves them all).
#[test]
fn link_each_links_one_module_per_object() {
    let dir = work_dir("link-each");
    let objs = chain_objects(&dir, 50);
    let expect = native(&dir, "chain", &objs, &[], &[]);
    for mode in MODES {
        let out = jit(mode, &objs, &["--link-each"], &[]);
        assert_same(&format!("--link-each {mode:?}"), &out, &expect);
    }
    let mut main_first = objs.clone();
    main_first.rotate_right(1);
    let out = jit(&["--in-process"], &main_first, &[], &[]);
    assert_same("main first, one link", &out, &expect);
    let out = jit(&["--in-process"], &main_first, &["--link-each"], &[]);
    assert_fails(
        "main first, --link-each",
        &out,
        &format!(
            "remjit: error: 1 undefined symbol(s):\n  link00049 (referenced by {})\n",
            main_first[0].display()
        ),
    );
}

#[test]
fn arguments_not_in_utf8_are_refused_with_a_message() {
    use std::os::unix::ffi::OsStrExt;
    let dir = work_dir("cli-not-utf8");
    let o = hello(&dir);
    for args in [
        vec![
            o.as_os_str(),
            std::ffi::OsStr::new("--args"),
            OsStrExt::from_bytes(b"a\xffb"),
        ],
        vec![OsStrExt::from_bytes(b"x\xff.o")],
    ] {
        let mut cmd = Command::new(remjit());
        cmd.arg("--in-process").args(&args);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
        let bad = String::from_utf8_lossy(args[args.len() - 1].as_bytes()).into_owned();
        let message = format!(
            "remjit: error: argument `{bad}` is not valid UTF-8: remjit takes file names and \
             program arguments in UTF-8\n"
        );
        assert_fails(&format!("{args:?}"), &out, &message);
    }
}

#[test]
fn a_linker_script_naming_itself_is_stopped() {
    let dir = work_dir("cli-script-loop");
    write(&dir, "loop.ld", "INPUT ( loop.ld )\n");
    let out = remjit_in(&dir, &["--in-process", "--noexec", "loop.ld"], &[]);
    assert_fails(
        "self-naming script",
        &out,
        "remjit: error: loop.ld: linker scripts nested more than 8 deep (does a script name \
         itself?)\n",
    );
}

#[test]
fn an_executor_timeout_out_of_range_says_the_range() {
    let dir = work_dir("cli-timeout-range");
    let o = hello(&dir);
    for secs in ["0", "2e6"] {
        let out = remjit_in(&dir, &["--oop-executor-timeout", secs, path_str(&o)], &[]);
        let shown: f64 = secs.parse().unwrap();
        assert_fails(
            secs,
            &out,
            &format!(
                "remjit: error: executor timeout {shown}: expected a number of seconds above 0 \
                 and at most 1000000\n"
            ),
        );
    }
}

#[test]
fn a_large_directory_given_as_input_is_named_a_directory() {
    let dir = work_dir("cli-dir-input");
    let big = dir.join("big");
    std::fs::create_dir_all(&big).unwrap();
    // Past 64 KiB remjit maps rather than reads, which fails differently on a directory.
    for i in 0..20_000 {
        if std::fs::metadata(&big).unwrap().len() >= 64 * 1024 {
            break;
        }
        std::fs::write(big.join(format!("a_file_with_a_rather_long_name_{i}")), "").unwrap();
    }
    assert!(std::fs::metadata(&big).unwrap().len() >= 64 * 1024);
    let out = remjit_in(&dir, &["--in-process", "--noexec", "big"], &[]);
    std::fs::remove_dir_all(&big).unwrap();
    assert_fails(
        "directory input",
        &out,
        "remjit: error: big: Is a directory (os error 21)\n",
    );
}

#[test]
fn a_device_given_as_input_is_refused_not_read_forever() {
    let dir = work_dir("cli-device-input");
    let out = remjit_in(&dir, &["--in-process", "--noexec", "/dev/zero"], &[]);
    assert_fails(
        "/dev/zero",
        &out,
        "remjit: error: /dev/zero: a device, not an input file\n",
    );
}

#[test]
fn token_file_without_a_tcp_executor_is_refused() {
    let dir = work_dir("cli-token");
    let o = hello(&dir);
    for mode in [&["--in-process"][..], &[][..]] {
        let mut args = mode.to_vec();
        args.extend(["--oop-executor-token-file=/nonexistent", path_str(&o)]);
        let out = remjit_in(&dir, &args, &[]);
        assert_fails(
            &format!("{mode:?}"),
            &out,
            "remjit: error: --oop-executor-token-file applies only with --oop-executor-connect\n",
        );
    }
}

#[test]
fn cc_with_arguments_is_split_into_words() {
    let dir = work_dir("cli-cc-words");
    let src = write(
        &dir,
        "stdv.c",
        "#include <stdio.h>\nint main(void) { printf(\"%ld\\n\", __STDC_VERSION__); return 0; }\n",
    );
    for (cc, version) in [("gcc -std=c11", "201112\n"), ("gcc  -std=c17 ", "201710\n")] {
        let out = remjit_in(&dir, &["--in-process", path_str(&src)], &[("CC", cc)]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            version,
            "{cc}: {}",
            stderr(&out)
        );
        assert_eq!(out.status.code(), Some(0), "{cc}");
    }
}

/// Prints whether libstdc++ is mapped into the process running the program.
const MAPS_CHECK: &str = "static const char *cxx_runtime(void) {\n\
     FILE *f = fopen(\"/proc/self/maps\", \"r\");\n\
     char line[4096];\n\
     int found = 0;\n\
     while (f && fgets(line, sizeof line, f)) found |= strstr(line, \"libstdc++\") != 0;\n\
     if (f) fclose(f);\n\
     return found ? \"libstdc++ loaded\" : \"no libstdc++\";\n\
     }\n";

/// A C program runs where no libstdc++ was loaded (remjit starts without the C++ runtime, and
/// so does the executor it spawns by default); a C++ program that throws and prints through
/// iostream runs with it (in remjit-cxx, or the full remjit-executor), in every mode, as
/// natively.
#[test]
fn the_cxx_runtime_is_loaded_only_for_programs_that_need_it() {
    let c = format!(
        "#include <stdio.h>\n#include <string.h>\n{MAPS_CHECK}\
         int main(void) {{ printf(\"%s\\n\", cxx_runtime()); return 4; }}\n"
    );
    let cxx = format!(
        "#include <cstdio>\n#include <cstring>\n#include <iostream>\n#include <stdexcept>\n\
         {MAPS_CHECK}\
         int main() {{\n  try {{ throw std::runtime_error(\"thrown\"); }}\n  \
         catch (const std::exception &e) {{ std::cout << \"caught \" << e.what() << '\\n'; }}\n  \
         std::cout << cxx_runtime() << std::endl;\n  return 5;\n}}\n"
    );
    let ctor = "#include <stdio.h>\n\
                __attribute__((constructor)) static void hi(void) { puts(\"ctor\"); }\n";
    let dir = sources(
        "cli-cxx-runtime",
        &[
            ("c.c", &c),
            ("cxx.cc", &cxx),
            ("helper.c", "int helper(void) { return 1; }\n"),
            ("ctor.c", ctor),
        ],
    );
    let helper = compile(&dir, &dir.join("helper.c"), "helper.o", &["-O2"]);
    let ctor = compile(&dir, &dir.join("ctor.c"), "ctor.o", &["-O2"]);
    let c_obj = compile(&dir, &dir.join("c.c"), "c.o", &["-O2"]);
    let cxx_obj = compile(&dir, &dir.join("cxx.cc"), "cxx.o", &["-O2"]);
    let c_expect = native(&dir, "c", std::slice::from_ref(&c_obj), &[], &[]);
    assert_eq!(c_expect, (b"no libstdc++\n".to_vec(), 4));
    let cxx_expect = native(
        &dir,
        "cxx",
        std::slice::from_ref(&cxx_obj),
        &["-lstdc++"],
        &[],
    );
    assert_eq!(
        cxx_expect,
        (b"caught thrown\nlibstdc++ loaded\n".to_vec(), 5)
    );
    for mode in MODES {
        let out = jit(mode, std::slice::from_ref(&c_obj), &[], &[]);
        assert_same(&format!("C program {mode:?}"), &out, &c_expect);
        let out = jit(mode, std::slice::from_ref(&cxx_obj), &[], &[]);
        assert_same(&format!("C++ program {mode:?}"), &out, &cxx_expect);
        // --link-each: a C module first, nothing of which ran, then the C++ one.
        let mut each = mode.to_vec();
        each.push("--link-each");
        let out = jit(&each, &[helper.clone(), cxx_obj.clone()], &[], &[]);
        assert_same(&format!("C, then C++ {mode:?}"), &out, &cxx_expect);
        // A constructor ran before the C++ module came: the program is not run again.
        let out = jit(&each, &[ctor.clone(), cxx_obj.clone()], &[], &[]);
        assert_eq!(out.status.code(), Some(1), "{mode:?}");
        assert_eq!(out.stdout, b"ctor\n", "{mode:?}: the constructor ran once");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("undefined symbol(s):"), "{mode:?}: {err}");
        assert!(
            err.ends_with(
                "\nhint: remjit starts without the C++ runtime and runs such a program again in \
                 remjit-cxx, but code of an earlier module ran already: run it with remjit-cxx\n"
            ),
            "{mode:?}: {err}"
        );
    }
}

/// The processes (other than this test's) whose environment holds `marker`.
fn processes_marked(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if pid != me && env.split(|&b| b == 0).any(|v| v == marker.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// The inputs are read while the executor starts; one that cannot be read is reported as
/// before (by name, in command-line order, exit 1) and leaves no executor process behind, in
/// every mode, for a few inputs (read at once) and for many (read on a thread).
#[test]
fn an_unreadable_input_read_while_the_executor_starts_leaves_no_executor() {
    let dir = work_dir("cli-input-error");
    let o = hello(&dir);
    let missing = dir.join("missing.o");
    let marker = format!("REMJIT_TEST_INPUT_ERROR={}", std::process::id());
    let (key, value) = marker.split_once('=').unwrap();
    let mut many: Vec<&Path> = vec![&o; 20];
    many.push(&missing);
    many.push(&o);
    for mode in MODES {
        for inputs in [vec![&o as &Path, &missing, &o], many.clone()] {
            let mut args: Vec<&str> = mode.to_vec();
            args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
            let out = remjit_in(&dir, &args, &[(key, value)]);
            assert_fails(
                &format!("{mode:?}, {} inputs", inputs.len()),
                &out,
                &format!(
                    "remjit: error: {}: No such file or directory (os error 2)\n",
                    missing.display()
                ),
            );
            assert_eq!(processes_marked(&marker), Vec::<u32>::new(), "{mode:?}");
        }
    }
}

/// remjit with `args`, `obj`'s bytes written to its stdin (a pipe).
fn remjit_reading_stdin(args: &[&str], obj: &Path) -> Output {
    use std::io::Write;
    let mut child = Command::new(remjit())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(obj).unwrap()).unwrap();
    drop(stdin);
    wait_bounded(&mut child, Duration::from_secs(120), "remjit");
    child.wait_with_output().unwrap()
}

/// An object read from a pipe (`/dev/stdin`, as `<(...)` gives) links as from a file: its size
/// is known only at its end.
#[test]
fn an_object_from_a_pipe_links_as_from_a_file() {
    let dir = work_dir("cli-pipe-input");
    let obj = compile(&dir, &program("hello.c"), "hello.o", &["-O2"]);
    let expect = native(&dir, "hello", std::slice::from_ref(&obj), &[], &["pipe"]);
    for mode in MODES {
        let mut args = mode.to_vec();
        args.extend(["/dev/stdin", "--args", "pipe"]);
        let out = remjit_reading_stdin(&args, &obj);
        assert_same(&format!("{mode:?}"), &out, &expect);
    }
    // A C++ program from a pipe cannot be run again in remjit-cxx (the pipe is read): said so.
    let cxx = sources(
        "cli-pipe-input",
        &[(
            "cxx.cc",
            "#include <iostream>\nint main() { std::cout << \"hi\\n\"; }\n",
        )],
    );
    let cxx_obj = compile(&cxx, &cxx.join("cxx.cc"), "cxx.o", &["-O2"]);
    let out = remjit_reading_stdin(&["/dev/stdin"], &cxx_obj);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("remjit: error: "), "{err}");
    assert!(
        err.ends_with(
            "\nhint: remjit starts without the C++ runtime and runs such a program again in \
             remjit-cxx, but /dev/stdin is a pipe, read already: run it with remjit-cxx\n"
        ),
        "{err}"
    );
}

/// JIT'd code gets the descriptors a native program would, in every mode: remjit's own (the
/// memory file of small links' shared pages) and the executor's (its socket, crash-report
/// pipe, the memfds of JIT memory and of the call mailbox) are out of the way, so its first
/// `open` returns 3 (out of process it returned 5 when copying, 8 with shared memory).
#[test]
fn the_programs_first_descriptor_is_3() {
    let dir = sources(
        "cli-first-fd",
        &[(
            "fd.c",
            "#include <fcntl.h>\n#include <stdio.h>\n\
             int main(void) { printf(\"first fd %d\\n\", open(\"/dev/null\", O_RDONLY)); }\n",
        )],
    );
    let obj = compile(&dir, &dir.join("fd.c"), "fd.o", &["-O2"]);
    let expect = native(&dir, "fd", std::slice::from_ref(&obj), &[], &[]);
    assert_eq!(expect, (b"first fd 3\n".to_vec(), 0));
    for mode in MODES {
        let out = jit(mode, std::slice::from_ref(&obj), &[], &[]);
        assert_same(&format!("{mode:?}"), &out, &expect);
    }
}

/// With `--link-each`, a later module's call of an IFUNC defined by an earlier module reaches
/// the function the resolver chose, as natively (not the resolver itself).
#[test]
fn link_each_calls_an_ifunc_of_an_earlier_module() {
    let dir = work_dir("link-each-ifunc");
    let lib = write(
        &dir,
        "pick.c",
        "static int answer(void) { return 42; }\n\
         static int (*resolve_pick(void))(void) { return answer; }\n\
         int pick(void) __attribute__((ifunc(\"resolve_pick\")));\n",
    );
    let main = write(
        &dir,
        "main.c",
        "#include <stdio.h>\nint pick(void);\n\
         int main(void) { printf(\"%d\\n\", pick()); return pick() == 42 ? 0 : 1; }\n",
    );
    let objs = vec![
        compile(&dir, &lib, "pick.o", &["-O2", "-fPIC"]),
        compile(&dir, &main, "main.o", &["-O2"]),
    ];
    let expect = native(&dir, "ifunc", &objs, &[], &[]);
    assert_eq!(expect, (b"42\n".to_vec(), 0));
    for mode in MODES {
        let out = jit(mode, &objs, &["--link-each"], &[]);
        assert_same(&format!("--link-each {mode:?}"), &out, &expect);
    }
}
