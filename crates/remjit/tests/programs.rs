//! Real programs, JIT'd and compared byte for byte with their natively linked builds, in each
//! execution mode: in process, out of process copying, out of process with shared memory.

mod common;

use std::path::PathBuf;

use common::*;

/// The code-generation flavours of the acceptance corpus.
const FLAVOURS: &[(&str, &[&str])] = &[
    ("pie", &["-O2"]),
    ("pic", &["-O2", "-fPIC"]),
    ("nopie", &["-O2", "-fno-pic", "-fno-pie"]),
    ("large", &["-O2", "-fno-pic", "-mcmodel=large"]),
    ("largepic", &["-O2", "-fPIC", "-mcmodel=large"]),
];

fn corpus_program(mode: &[&str], tag: &str, src: &str, archive: Option<&str>, libs: &[&str]) {
    let dir = work_dir(&format!("{tag}-{}", src.replace('.', "_")));
    let native_obj = compile(&dir, &program(src), "native.o", &["-O2"]);
    let mut native_inputs = vec![native_obj];
    if let Some(a) = archive {
        native_inputs.push(PathBuf::from(format!("{LIB}/{a}")));
    }
    let expect = native(&dir, "prog", &native_inputs, &["-lm", "-pthread"], &[]);
    assert_eq!(expect.1, 0, "{src} runs natively");
    for (flavour, flags) in FLAVOURS {
        let obj = compile(&dir, &program(src), &format!("{flavour}.o"), flags);
        let mut inputs = vec![obj];
        if let Some(a) = archive {
            inputs.push(PathBuf::from(format!("{LIB}/{a}")));
        }
        let out = jit(mode, &inputs, libs, &[]);
        // hello prints argc; argv[0] differs in name only, not in count.
        assert_same(&format!("{src} ({flavour}, {mode:?})"), &out, &expect);
    }
}

fn hello(mode: &[&str]) {
    corpus_program(mode, &mode.join(""), "hello.c", None, &[]);
}

fn zlib(mode: &[&str]) {
    corpus_program(
        mode,
        &mode.join(""),
        "zlib_roundtrip.c",
        Some("libz.a"),
        &[],
    );
}

fn sqlite(mode: &[&str]) {
    corpus_program(
        mode,
        &mode.join(""),
        "sqlite_memdb.c",
        Some("libsqlite3.a"),
        &["-lm"],
    );
}

fn c_features(mode: &[&str]) {
    let dir = work_dir(&format!("c-features{}", mode.join("")));
    let flags = ["-O2", "-fPIC", "-fcommon"];
    let a = compile(&dir, &program("c_features.c"), "a.o", &flags);
    let b = compile(&dir, &program("c_features_strong.c"), "b.o", &flags);
    let args = ["-a", "-b", "zz", "rest"];
    let expect = native(&dir, "c", &[a.clone(), b.clone()], &["-pthread"], &args);
    assert_eq!(expect.1, 3, "the program's own exit status");
    let out = jit(mode, &[a, b], &[], &args);
    assert_same("c_features", &out, &expect);
    assert!(String::from_utf8_lossy(&out.stderr).contains("to stderr"));
}

fn linker_features(mode: &[&str]) {
    let dir = work_dir(&format!("linker-features{}", mode.join("")));
    for (tag, flags) in [
        ("gd", &["-O2", "-fPIC"][..]),
        ("desc", &["-O2", "-fPIC", "-mtls-dialect=gnu2"][..]),
    ] {
        let o = compile(
            &dir,
            &program("c_linker_features.c"),
            &format!("{tag}.o"),
            flags,
        );
        let expect = native(&dir, tag, std::slice::from_ref(&o), &[], &[]);
        let out = jit(mode, &[o], &[], &[]);
        assert_same(&format!("c_linker_features ({tag})"), &out, &expect);
    }
}

fn getopt_nopie(mode: &[&str]) {
    let dir = work_dir(&format!("getopt{}", mode.join("")));
    let o = compile(
        &dir,
        &program("getopt_nopie.c"),
        "g.o",
        &["-O2", "-fno-pic", "-fno-pie"],
    );
    let args = ["-a", "-b", "value", "rest"];
    let expect = native(&dir, "g", std::slice::from_ref(&o), &["-no-pie"], &args);
    let out = jit(mode, &[o], &[], &args);
    assert_same("getopt_nopie", &out, &expect);
}

fn cxx_features(mode: &[&str]) {
    let dir = work_dir(&format!("cxx{}", mode.join("")));
    let o = compile(&dir, &program("cxx_features.cc"), "x.o", &["-O2", "-fPIC"]);
    let expect = native(&dir, "x", std::slice::from_ref(&o), &["-lstdc++"], &[]);
    let out = jit(mode, &[o], &["-l", "stdc++"], &[]);
    assert_same("cxx_features", &out, &expect);
}

fn lua(mode: &[&str]) {
    let dir = work_dir(&format!("lua{}", mode.join("")));
    let o = compile(&dir, &program("lua_driver.c"), "l.o", &["-O2"]);
    let lua = PathBuf::from(format!("{LIB}/liblua5.4.a"));
    let expect = native(&dir, "l", &[o.clone(), lua.clone()], &["-lm"], &[]);
    let out = jit(mode, &[o, lua], &["-lm"], &[]);
    assert_same("lua_driver", &out, &expect);
}

fn chain(mode: &[&str]) {
    let dir = work_dir(&format!("chain{}", mode.join("")));
    let objs = chain_objects(&dir, 200);
    let expect = native(&dir, "chain", &objs, &[], &[]);
    let out = jit(mode, &objs, &[], &[]);
    assert_same("chain", &out, &expect);
}

macro_rules! mode_tests {
    ($modname:ident, $mode:expr $(, #[$attr:meta])?) => {
        mod $modname {

            const MODE: &[&str] = $mode;
            $(#[$attr])? #[test] fn hello() { super::hello(MODE) }
            $(#[$attr])? #[test] fn zlib() { super::zlib(MODE) }
            $(#[$attr])? #[test] fn sqlite() { super::sqlite(MODE) }
            $(#[$attr])? #[test] fn c_features() { super::c_features(MODE) }
            $(#[$attr])? #[test] fn getopt_nopie() { super::getopt_nopie(MODE) }
            $(#[$attr])? #[test] fn linker_features() { super::linker_features(MODE) }
            $(#[$attr])? #[test] fn cxx_features() { super::cxx_features(MODE) }
            $(#[$attr])? #[test] fn lua() { super::lua(MODE) }
            $(#[$attr])? #[test] fn chain() { super::chain(MODE) }
        }
    };
}

mode_tests!(in_process, &["--in-process"]);
mode_tests!(
    out_of_process_copy,
    &["--oop-executor", "--no-shared-memory"]
);
mode_tests!(default_shared_memory, &[]);

#[test]
fn args_exit_status_entry_and_noexec() {
    let dir = work_dir("cli");
    let src = dir.join("cli.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nint main(int c, char **v) { for (int i = 0; i < c; i++) printf(\"%d:%s\\n\", i, v[i]); return 3; }\n\
         int other(void) { printf(\"other entry\\n\"); return 9; }\n",
    )
    .unwrap();
    let o = compile(&dir, &src, "cli.o", &["-O2"]);
    let out = jit(
        &["--in-process"],
        std::slice::from_ref(&o),
        &[],
        &["x", "--y", "-z"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        format!("0:{}\n1:x\n2:--y\n3:-z\n", o.display()),
        "argv[0] is the first input, then the --args"
    );
    assert_eq!(out.status.code(), Some(3));
    let out = jit(
        &["--in-process", "--entry=other"],
        std::slice::from_ref(&o),
        &[],
        &[],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "other entry\n");
    assert_eq!(out.status.code(), Some(9));
    // Single-dash spellings, as llvm-jitlink takes them; --noexec runs nothing.
    let out = jit(&["-in-process", "-noexec"], &[o], &[], &[]);
    assert_eq!(out.stdout, b"");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn c_source_input_and_library_search() {
    let dir = work_dir("search");
    let lib_src = dir.join("twice.c");
    std::fs::write(&lib_src, "int twice(int x) { return 2 * x; }\n").unwrap();
    let lib_obj = compile(&dir, &lib_src, "twice.o", &["-O2"]);
    let libdir = dir.join("lib");
    std::fs::create_dir_all(&libdir).unwrap();
    let archive = libdir.join("libtwice.a");
    let _ = std::fs::remove_file(&archive);
    let st = std::process::Command::new("ar")
        .arg("rcs")
        .arg(&archive)
        .arg(&lib_obj)
        .status()
        .unwrap();
    assert!(st.success());
    let main = dir.join("main.c");
    std::fs::write(
        &main,
        "#include <stdio.h>\n#include <math.h>\nint twice(int);\n\
         int main(void) { printf(\"%d %.1f\\n\", twice(21), sqrt(2.25)); return 0; }\n",
    )
    .unwrap();
    let libdir_s = libdir.display().to_string();
    // A .c input is compiled on the fly; -L/-l find the archive; -l m is Debian's linker script.
    let out = jit(
        &["--in-process"],
        &[main],
        &["-L", &libdir_s, "-l", "twice", "-l", "m"],
        &[],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "42 1.5\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
