//! Shared by the benchmarks.

use std::path::PathBuf;

/// The executor built beside the benchmark: target/release/deps/BENCH-* ->
/// target/release/remjit-executor.
pub fn executor_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("remjit-executor")
}
