//! Micro-benchmarks of the hot parts: slab allocate/free, relocation application, SPS
//! encode/decode, one call round trip to the executor, and linking one small module end to end
//! (in process and out of process with shared memory).

use std::sync::Arc;

mod support;
use support::executor_path;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use remjit::link::reloc::{write_value, Width};
use remjit::link::x86_64::{apply_relaxation, relaxation_for, reloc_desc};
use remjit::memory::{FreeList, InProcessMapper, SlabAllocator};
use remjit::remote::{MemoryMode, RemoteExecutor};
use remjit::{Session, SessionOptions};
use remjit_wire::sps::{Bytes, Sps};
use remjit_wire::types::{FinalizeRequest, SegFinalizeRequest};

fn small_object() -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("remjit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("small.c");
    std::fs::write(
        &src,
        "#include <string.h>\nint f(const char *s) { return strlen(s) + 1; }\nint g = 3;\n",
    )
    .unwrap();
    let obj = dir.join("small.o");
    let st = std::process::Command::new("cc")
        .args(["-O2", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(obj).unwrap()
}

fn benches(c: &mut Criterion) {
    c.bench_function("free list: take + insert (coalescing)", |b| {
        let mut f = FreeList::new();
        f.insert(0x1000_0000, 1 << 30);
        b.iter(|| {
            let a = f.take(black_box(0x3000), 0x1000).unwrap();
            f.insert(a, 0x3000);
        })
    });
    c.bench_function("slab: allocate + abandon (in process)", |b| {
        let slab = SlabAllocator::new(Arc::new(InProcessMapper::new()), 1 << 30, true);
        b.iter(|| {
            let a = slab.allocate(black_box(0x3000)).unwrap();
            slab.abandon(a);
        })
    });
    c.bench_function("fixup: table lookup + range check + write (PC32)", |b| {
        let mut mem = vec![0u8; 4096];
        b.iter(|| {
            let k = reloc_desc(black_box(2)).unwrap();
            let v = black_box(0x4000_1000u64).wrapping_sub(black_box(0x4000_0800));
            if k.width.fits(v) {
                write_value(&mut mem, black_box(100), Width::S32, v);
            }
        })
    });
    c.bench_function("fixup: GOTPCRELX mov -> lea relaxation", |b| {
        b.iter(|| {
            let mut code = [0x48u8, 0x8b, 0x05, 0, 0, 0, 0];
            let r = relaxation_for(&code, 3, 1).unwrap();
            apply_relaxation(&mut code, 3, r, 0x1003, black_box(0x2000), -4)
        })
    });
    let req = FinalizeRequest {
        segments: (0..3)
            .map(|i| SegFinalizeRequest {
                prot: 5,
                addr: 0x4000_0000 + i * 0x1000,
                size: 0x1000,
                content: Bytes(vec![0x90; 2000]),
            })
            .collect(),
        actions: vec![],
    };
    c.bench_function("SPS: encode a 3-segment finalize request", |b| {
        b.iter(|| black_box(&req).to_bytes())
    });
    let bytes = req.to_bytes();
    c.bench_function("SPS: decode a 3-segment finalize request", |b| {
        b.iter(|| FinalizeRequest::from_bytes(black_box(&bytes)).unwrap())
    });

    let obj = small_object();
    c.bench_function("link one small module + remove (in process)", |b| {
        let mut s = Session::in_process(SessionOptions::default()).unwrap();
        b.iter(|| {
            s.add_object_bytes("small.o", obj.clone());
            let m = s.link().unwrap();
            s.remove_module(m).unwrap();
        })
    });
    let path = executor_path();
    if path.exists() {
        let exec = Arc::new(RemoteExecutor::spawn(&path, MemoryMode::Shared).unwrap());
        let mut s = Session::with_executor(exec.clone(), SessionOptions::default()).unwrap();
        c.bench_function(
            "link one small module + remove (out of process, shared memory)",
            |b| {
                b.iter(|| {
                    s.add_object_bytes("small.o", obj.clone());
                    let m = s.link().unwrap();
                    s.remove_module(m).unwrap();
                })
            },
        );
        c.bench_function(
            "one call round trip to the executor (set_program_args)",
            |b| {
                use remjit::executor::Executor;
                let args = vec!["x".to_string()];
                b.iter(|| exec.set_program_args(&args).unwrap())
            },
        );
    } else {
        eprintln!(
            "{} not built: skipping the executor benchmarks",
            path.display()
        );
    }
}

criterion_group!(hot, benches);
criterion_main!(hot);
