//! GDB JIT interface: the cost of registering (and removing) one debug object with 10 and with
//! 10,000 already registered. Registration inserts at the head and removal unlinks through the
//! entry's own links, so both should cost the same.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use remjit_executor::runtime::jit_debug::{deregister, register_owned};

fn registration(c: &mut Criterion) {
    let mut group = c.benchmark_group("gdb_jit_register");
    for resident in [10usize, 10_000] {
        let handles: Vec<u64> = (0..resident)
            .map(|_| register_owned(vec![0; 256]))
            .collect();
        group.bench_with_input(
            BenchmarkId::new("register+deregister", resident),
            &resident,
            |b, _| {
                b.iter_batched(
                    || vec![0u8; 256],
                    |obj| deregister(register_owned(obj)).expect("registered"),
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
