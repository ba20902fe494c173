//! GDB JIT interface: the cost of registering (and removing) one debug object with 10 and with
//! 10,000 already registered. Registration inserts at the head and removal unlinks through the
//! entry's own links, so both should cost the same. The objects are real `-g` objects, so the
//! bench can also run under gdb (`gdb -batch -ex run --args BENCH_BINARY --bench`) to see what a
//! debugger adds; `REMJIT_BENCH_RESIDENT=10,1000` sets the counts of resident objects.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use remjit_executor::runtime::jit_debug::{deregister, register_owned};

/// A small object compiled with `-g`.
fn debug_object() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let src = dir.path().join("f.c");
    std::fs::write(&src, "int f(int x) { int y = x * 2; return y + 1; }\n").expect("write");
    let obj = dir.path().join("f.o");
    let st = std::process::Command::new("cc")
        .args(["-g", "-O0", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .expect("cc runs");
    assert!(st.success());
    std::fs::read(&obj).expect("the object")
}

fn registration(c: &mut Criterion) {
    let obj = debug_object();
    let mut group = c.benchmark_group("gdb_jit_register");
    // REMJIT_BENCH_RESIDENT=10,1000 picks other counts (e.g. under gdb, whose own cost grows).
    let counts: Vec<usize> = std::env::var("REMJIT_BENCH_RESIDENT")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 10_000]);
    for resident in counts {
        let handles: Vec<u64> = (0..resident).map(|_| register_owned(obj.clone())).collect();
        group.bench_with_input(
            BenchmarkId::new("register+deregister", resident),
            &resident,
            |b, _| {
                b.iter_batched(
                    || obj.clone(),
                    |o| deregister(register_owned(o)).expect("registered"),
                    BatchSize::SmallInput,
                )
            },
        );
        for h in handles {
            deregister(h).expect("registered");
        }
    }
    group.finish();
}

criterion_group!(benches, registration);
criterion_main!(benches);
