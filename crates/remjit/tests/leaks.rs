//! Allocating and freeing many small modules keeps mappings and memory flat, in process and
//! out of process with shared memory (where freed pages must leave both processes).

mod common;

use std::sync::Arc;

use common::*;
use remjit::remote::{MemoryMode, RemoteExecutor};
use remjit::{Session, SessionOptions};

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
    let obj = small_object();
    let mut s = Session::in_process(SessionOptions::default()).unwrap();
    let samples = churn(&mut s, &obj, 100_000, &[std::process::id()]);
    assert_flat("in process", &samples);
}

#[test]
fn hundred_thousand_modules_out_of_process_shared_memory() {
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
