//! The C and C++ runtimes' exported data reached as a native link reaches it (the host
//! executables' copies), from C++ as g++ builds it by default (PIE) and with -fno-pie, and the
//! low placement of JIT'd memory that position-dependent code needs: whatever the slab size and
//! whatever else is mapped below 2 GiB. Each program is compared with its native build, in every
//! execution mode.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// C++ from plain `g++ -c` (PIE on Debian) and from `-fno-pie`: typeinfos, vtables, the
/// standard streams and locale ids of libstdc++ (without naming libstdc++: the host has it).
fn cxx_runtime_data(mode: &[&str]) {
    let dir = work_dir(&format!("cxxdata{}", mode.join("")));
    let src = program("cxx_runtime_data.cc");
    for (flavour, cflags, ldflags) in [
        ("pie", &[][..], &["-lstdc++"][..]),
        ("nopie", &["-fno-pie"][..], &["-lstdc++", "-no-pie"][..]),
    ] {
        let o = compile(&dir, &src, &format!("{flavour}.o"), cflags);
        let expect = native(&dir, flavour, std::slice::from_ref(&o), ldflags, &[]);
        assert_eq!(
            expect.1, 15,
            "the native {flavour} build caught every exception"
        );
        let out = jit(mode, &[o], &[], &[]);
        assert_same(
            &format!("cxx_runtime_data ({flavour}, {mode:?})"),
            &out,
            &expect,
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr), "to cerr\n");
    }
}

/// Builds the shared library `so` from the C source `src`.
fn shared_library(src: &Path, so: &Path) {
    let out = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2"])
        .arg(src)
        .arg("-o")
        .arg(so)
        .output()
        .expect("gcc runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds one of tests/programs' preload libraries into `dir`.
fn preload_library(dir: &Path, name: &str) -> PathBuf {
    let so = dir.join(format!("{name}.so"));
    shared_library(&program(&format!("{name}.c")), &so);
    so
}

/// Runs remjit (and so its executor) with `preload` in LD_PRELOAD.
fn jit_preloaded(mode: &[&str], preload: &Path, inputs: &[PathBuf], extra: &[&str]) -> Output {
    let mut cmd = Command::new(remjit());
    cmd.env("LD_PRELOAD", preload)
        .args(mode)
        .args(inputs)
        .args(extra);
    run_with_timeout(&mut cmd, Duration::from_secs(120))
}

/// Runs a native program with `preload` in LD_PRELOAD: (stdout, status).
fn native_preloaded(exe: &Path, preload: &Path) -> (Vec<u8>, i32) {
    let out = Command::new(exe)
        .env("LD_PRELOAD", preload)
        .output()
        .expect("native program runs");
    (out.stdout, out.status.code().unwrap_or(-1))
}

/// The C program's objects (PIE and -fno-pie), its native -no-pie build and what that prints.
fn low_slab_program(dir: &Path) -> (Vec<PathBuf>, PathBuf, (Vec<u8>, i32)) {
    let src = program("low_slab.c");
    let pie = compile(dir, &src, "pie.o", &["-O2"]);
    let nopie = compile(dir, &src, "nopie.o", &["-O2", "-fno-pie"]);
    let expect = native(dir, "low", std::slice::from_ref(&nopie), &["-no-pie"], &[]);
    assert_eq!(expect.1, 3, "the native build runs");
    (vec![pie, nopie], dir.join("low-native"), expect)
}

/// A slab of 4 GiB (more than fits below 2 GiB) still leaves the code within reach of stderr.
fn big_slab_reaches_stderr(mode: &[&str]) {
    let dir = work_dir(&format!("bigslab{}", mode.join("")));
    let (objs, _, expect) = low_slab_program(&dir);
    for o in objs {
        for slab in ["--slab-allocate=4Gb", "--slab-allocate=2Gb"] {
            let out = jit(mode, std::slice::from_ref(&o), &[slab], &[]);
            assert_same(&format!("{} {slab} {mode:?}", o.display()), &out, &expect);
            assert_eq!(String::from_utf8_lossy(&out.stderr), "to stderr 5\n");
        }
    }
}

/// With 1 MiB mapped at 1 GiB before main (no 1 GiB gap left below 2 GiB), -fno-pie code still
/// gets low memory; the program sees the blocker, so the preload did reach the executor.
fn blocked_gigabyte(mode: &[&str]) {
    let dir = work_dir(&format!("block{}", mode.join("")));
    let so = preload_library(&dir, "block_1gib");
    let (objs, exe, _) = low_slab_program(&dir);
    let expect = native_preloaded(&exe, &so);
    assert!(
        String::from_utf8_lossy(&expect.0).contains("blocked at 1 GiB: 1"),
        "the blocker maps 1 GiB natively"
    );
    for o in objs {
        let out = jit_preloaded(mode, &so, std::slice::from_ref(&o), &[]);
        assert_same(&format!("{} {mode:?}", o.display()), &out, &expect);
    }
}

/// Nothing free below 2 GiB: the error says so, rather than blaming the object.
fn no_low_memory_is_explained(mode: &[&str]) {
    let dir = work_dir(&format!("fill{}", mode.join("")));
    let so = preload_library(&dir, "fill_low");
    let (objs, _, _) = low_slab_program(&dir);
    let out = jit_preloaded(mode, &so, &objs[1..], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("remjit: error: ")
            && err.contains("nopie.o: section .text")
            && err.contains(": JIT'd memory lies at 0x")
            && err.contains(", above 2 GiB: the process that runs the code has no free range of ")
            && err.contains(" KiB below 2 GiB; "),
        "{err}"
    );
}

/// Data of a library other than the C and C++ runtimes stays out of reach of PIE and -fno-pie
/// code: the error says why and what to do.
fn other_library_data_is_explained(mode: &[&str]) {
    let dir = work_dir(&format!("otherlib{}", mode.join("")));
    let lib_src = dir.join("libdata.c");
    std::fs::write(&lib_src, "int lib_counter = 7;\n").unwrap();
    let lib = dir.join("libdata.so");
    shared_library(&lib_src, &lib);
    let src = dir.join("uses.c");
    std::fs::write(
        &src,
        "extern int lib_counter;\nint main(void) { return lib_counter; }\n",
    )
    .unwrap();
    for (name, flags) in [("pie.o", &[][..]), ("nopie.o", &["-fno-pie"][..])] {
        let o = compile(&dir, &src, name, flags);
        let out = jit(mode, &[o, lib.clone()], &[], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let expect = format!(
            "remjit: error: {}: section .text+0x6: R_X86_64_PC32 against `lib_counter`: this is \
             data of a shared library, at 0x",
            dir.join(name).display()
        );
        assert!(err.starts_with(&expect), "{err}");
        assert!(
            err.ends_with(
                ", beyond the reach of a 32-bit PC-relative reference from JIT'd code; a native \
                 link would copy it into the executable, but remjit's host executables hold \
                 copies (below 2 GiB) of the exported data of libc (but for stdio's `_IO_*` \
                 internals), libm, libstdc++ and libgcc_s only: compile with -fPIC so the access \
                 goes through the GOT\n"
            ),
            "{err}"
        );
    }
}

macro_rules! mode_tests {
    ($modname:ident, $mode:expr) => {
        mod $modname {
            const MODE: &[&str] = $mode;
            #[test]
            fn cxx_runtime_data() {
                super::cxx_runtime_data(MODE)
            }
            #[test]
            fn big_slab_reaches_stderr() {
                super::big_slab_reaches_stderr(MODE)
            }
            #[test]
            fn blocked_gigabyte() {
                super::blocked_gigabyte(MODE)
            }
            #[test]
            fn other_library_data_is_explained() {
                super::other_library_data_is_explained(MODE)
            }
            #[test]
            fn no_low_memory_is_explained() {
                super::no_low_memory_is_explained(MODE)
            }
        }
    };
}

mode_tests!(in_process, &["--in-process"]);
mode_tests!(
    out_of_process_copy,
    &["--oop-executor", "--no-shared-memory"]
);
mode_tests!(default_shared_memory, &[]);
