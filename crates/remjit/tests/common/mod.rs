//! Shared test support: compile real programs with gcc/g++, link them natively for the expected
//! output, and run them through the `remjit` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The remjit binary under test.
pub fn remjit() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_remjit"))
}

/// Where this test's files go.
pub fn work_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `files` (name, text) into the work directory `name`; returns it.
pub fn sources(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = work_dir(name);
    for (f, text) in files {
        std::fs::write(dir.join(f), text).unwrap();
    }
    dir
}

/// A program source in tests/programs.
pub fn program(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(name)
}

/// Debian's static libraries.
pub const LIB: &str = "/usr/lib/x86_64-linux-gnu";

/// Compiles `src` to an object in `dir` with `flags`; returns its path.
pub fn compile(dir: &Path, src: &Path, out_name: &str, flags: &[&str]) -> PathBuf {
    let cxx = src.extension().is_some_and(|e| e == "cc");
    let obj = dir.join(out_name);
    let out = Command::new(if cxx { "g++" } else { "gcc" })
        .args(flags)
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(&obj)
        .output()
        .expect("the compiler runs");
    assert!(
        out.status.success(),
        "compiling {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    obj
}

/// Links `objs` natively (plus `libs`), runs the program with `args`, returns (stdout, status).
pub fn native(
    dir: &Path,
    name: &str,
    objs: &[PathBuf],
    libs: &[&str],
    args: &[&str],
) -> (Vec<u8>, i32) {
    let exe = dir.join(format!("{name}-native"));
    let cxx = libs.contains(&"-lstdc++");
    let out = Command::new(if cxx { "g++" } else { "gcc" })
        .args(objs)
        .args(libs)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("the linker runs");
    assert!(
        out.status.success(),
        "native link: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe)
        .args(args)
        .output()
        .expect("native program runs");
    (run.stdout, run.status.code().unwrap_or(-1))
}

/// Runs a command, killing it after `limit` (no test hangs).
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "timed out after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for `child` at most `limit`; on time-out kills it and its process group (when it
/// leads one) and fails the test naming `what`.
pub fn wait_bounded(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if start.elapsed() > limit {
            // SAFETY: kill(2) of the child's group (ESRCH when it leads none).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs remjit with `mode` flags, `inputs` and program `args`.
pub fn jit(mode: &[&str], inputs: &[PathBuf], extra: &[&str], args: &[&str]) -> Output {
    let mut cmd = Command::new(remjit());
    cmd.args(mode).args(inputs).args(extra);
    if !args.is_empty() {
        cmd.arg("--args").args(args);
    }
    run_with_timeout(&mut cmd, Duration::from_secs(120))
}

/// Asserts that the JIT'd run printed exactly what the native one did, with the same status.
pub fn assert_same(what: &str, jit: &Output, expect: &(Vec<u8>, i32)) {
    let stderr = String::from_utf8_lossy(&jit.stderr);
    assert!(
        !stderr.contains("panicked"),
        "{what}: remjit panicked: {stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&jit.stdout),
        String::from_utf8_lossy(&expect.0),
        "{what}: stdout differs; stderr: {stderr}"
    );
    assert_eq!(
        jit.status.code(),
        Some(expect.1),
        "{what}: exit status differs; stderr: {stderr}"
    );
}

/// Writes and compiles (in one compiler run) a chain of `n` one-function modules and a main
/// that prints `chain of N: N`.
pub fn chain_objects(dir: &Path, n: usize) -> Vec<PathBuf> {
    let mut srcs = Vec::new();
    for i in 0..n {
        let src = dir.join(format!("link{i:05}.c"));
        let text = if i == 0 {
            "int link00000(int x) { return x + 1; }\n".to_string()
        } else {
            format!(
                "int link{p:05}(int);\nstatic int table[16] = {{{i}}};\n\
                 const char *name{i:05} = \"link{i:05}\";\n\
                 int link{i:05}(int x) {{ return link{p:05}(x) + table[0] % 3; }}\n",
                p = i - 1
            )
        };
        std::fs::write(&src, text).unwrap();
        srcs.push(src);
    }
    let main = dir.join("chain_main.c");
    std::fs::write(
        &main,
        format!(
            "#include <stdio.h>\nint link{l:05}(int);\n\
             int main(void) {{ printf(\"chain of {n}: %d\\n\", link{l:05}(0)); return 0; }}\n",
            l = n - 1
        ),
    )
    .unwrap();
    srcs.push(main);
    // One compiler run for all of them.
    let st = Command::new("gcc")
        .current_dir(dir)
        .args(["-O1", "-c"])
        .args(&srcs)
        .status()
        .unwrap();
    assert!(st.success());
    srcs.iter().map(|s| s.with_extension("o")).collect()
}
