//! Allocating and freeing many small modules keeps mappings and memory flat, in process and
//! out of process with shared memory (where freed pages must leave both processes).

mod common;

use std::sync::Arc;

use common::*;
use remjit::remote::{MemoryMode, RemoteExecutor};
use remjit::{Session, SessionOptions};

/// The churn tests count the mappings of this very process, so they must not run beside each
/// other (the test harness runs tests on parallel threads of one process).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn maps(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| m.lines().count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn small_object() -> Vec<u8> {
    let dir = work_dir("leaks");
    let src = dir.join("small.c");
    std::fs::write(
        &src,
        "static int counter; int bump(void) { return ++counter; }\n\
         const char greeting[] = \"hello\";\n",
    )
    .unwrap();
    std::fs::read(compile(&dir, &src, "small.o", &["-O2", "-fPIC"])).unwrap()
}

/// (mappings, RSS in KiB) after the warm-up and at the end, for one process.
type Sample = ((usize, u64), (usize, u64));

/// Links and removes `n` modules; returns (maps, rss) of the watched processes after a warm-up
/// and at the end.
fn churn(s: &mut Session, obj: &[u8], n: usize, pids: &[u32]) -> Vec<Sample> {
    let mut first = Vec::new();
    for i in 0..n {
        s.add_object_bytes("small.o", obj.to_vec());
        let m = s.link().expect("link");
        assert!(s.lookup("bump").is_some());
        s.remove_module(m).expect("remove");
        if i == 1000 {
            first = pids.iter().map(|&p| (maps(p), rss_kib(p))).collect();
        }
    }
    let last: Vec<(usize, u64)> = pids.iter().map(|&p| (maps(p), rss_kib(p))).collect();
    first.into_iter().zip(last).collect()
}

fn assert_flat(what: &str, samples: &[Sample]) {
    for ((m0, r0), (m1, r1)) in samples {
        assert!(m1 <= &(m0 + 8), "{what}: mappings grew from {m0} to {m1}");
        assert!(
            r1 <= &(r0 + 8 * 1024),
            "{what}: RSS grew from {r0} KiB to {r1} KiB"
        );
    }
}

#[test]
fn hundred_thousand_modules_in_process() {
    let _serial = serial();
    let obj = small_object();
    let mut s = Session::in_process(SessionOptions::default()).unwrap();
    let samples = churn(&mut s, &obj, 100_000, &[std::process::id()]);
    assert_flat("in process", &samples);
}

#[test]
fn hundred_thousand_modules_out_of_process_shared_memory() {
    let _serial = serial();
    let obj = small_object();
    let exec = Arc::new(
        RemoteExecutor::spawn(
            &remjit().with_file_name("remjit-executor"),
            MemoryMode::Shared,
        )
        .unwrap(),
    );
    let pid = exec.pid().unwrap();
    let mut s = Session::with_executor(exec.clone(), SessionOptions::default()).unwrap();
    let samples = churn(&mut s, &obj, 100_000, &[std::process::id(), pid]);
    assert_flat("shared memory", &samples);
}

/// A large initialised section is mapped from its file in the executor; once its module is
/// freed, the range must read as fresh zeroes for the next module (shared pages restored).
#[test]
fn file_mapped_sections_leave_no_trace() {
    let _serial = serial();
    let dir = work_dir("leaks-filemap");
    let big = dir.join("big.c");
    std::fs::write(
        &big,
        "unsigned char big_data[1 << 20] = { [0] = 1, [4096] = 2, [(1 << 20) - 1] = 3 };\n\
         int big_main(void) { return big_data[0] + big_data[4096] + big_data[(1 << 20) - 1]; }\n",
    )
    .unwrap();
    let big = compile(&dir, &big, "big.o", &["-O2", "-fPIC"]);
    let zero = dir.join("zero.c");
    std::fs::write(
        &zero,
        "unsigned char zero_bss[1 << 21];\n\
         int zero_main(void) { long s = 0; for (long i = 0; i < (1L << 21); i += 64) s += zero_bss[i];\n\
         return s != 0; }\n",
    )
    .unwrap();
    let zero = compile(&dir, &zero, "zero.o", &["-O2", "-fPIC"]);
    let exec = Arc::new(
        RemoteExecutor::spawn(
            &remjit().with_file_name("remjit-executor"),
            MemoryMode::Shared,
        )
        .unwrap(),
    );
    let mut s = Session::with_executor(exec, SessionOptions::default()).unwrap();
    for _ in 0..3 {
        s.add_file(&big).unwrap();
        let m = s.link().unwrap();
        assert_eq!(
            s.run_main("big_main", &[]).unwrap(),
            6,
            "data mapped from the file"
        );
        s.remove_module(m).unwrap();
        s.add_file(&zero).unwrap();
        let m = s.link().unwrap();
        assert_eq!(
            s.run_main("zero_main", &[]).unwrap(),
            0,
            "reused range reads as zeroes"
        );
        s.remove_module(m).unwrap();
    }
}
