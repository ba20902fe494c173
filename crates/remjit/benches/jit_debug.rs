//! GDB JIT interface: the cost of registering (and removing) one debug object with 10 and with
//! 10,000 already registered. Registration inserts at the head and removal unlinks through the
//! entry's own links, so both should cost the same. The objects are real `-g` objects, each with
//! its sections at addresses of its own (as linked modules are), so the bench can also run under
//! gdb to see what a debugger adds: `bench/gdb_jit_cost.py` does that (it sets
//! `REMJIT_BENCH_STEPS=10,100,1000`, which swaps criterion for a plain table of
//! per-registration times at each count of resident modules, see [`steps`]; the script sets
//! `REMJIT_BENCH_SHAPE=grouped` unless told otherwise: modules registered in groups as sessions
//! do, the table's amortized column without a debugger being what grouping costs us);
//! `REMJIT_BENCH_RESIDENT=10,1000` sets criterion's counts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion};
use object::{Object, ObjectSection, SectionFlags};
use remjit::debug::{debug_object, merged_debug_object, DebugInput, GdbGroups};
use remjit::executor::InProcessExecutor;
use remjit_executor::runtime::jit_debug::{
    deregister, register_owned, tracer_pid, wait_for_debugger,
};

/// A small C++ object compiled with `-g` (and `REMJIT_BENCH_CFLAGS`, e.g. `-g1`): code, data and
/// read-only data, and an inline function whose COMDAT copy is loaded by the first module only
/// (the others share it).
fn compiled_object() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let src = dir.path().join("f.cc");
    std::fs::write(
        &src,
        "inline int twice(int x) { return 2 * x; }\nint counter = 1;\n\
         const char *name() { return \"f\"; }\n\
         int f(int x) { int y = twice(x) + counter; return y + 1; }\n",
    )
    .expect("write");
    let obj = dir.path().join("f.o");
    let extra = std::env::var("REMJIT_BENCH_CFLAGS").unwrap_or_default();
    let st = std::process::Command::new("c++")
        .args(["-g", "-O0", "-c"])
        .args(extra.split_whitespace())
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .expect("cc runs");
    assert!(st.success());
    std::fs::read(&obj).expect("the object")
}

/// Debug objects as modules would register them: the i-th has its loaded sections in a 64 KiB
/// window of its own (the code is never run, so nothing needs to be there).
struct Objects {
    bytes: Vec<u8>,
    /// Each section's offset in the window (None: not loaded).
    offsets: Vec<Option<u64>>,
    /// The sections of the COMDAT group (loaded by the first object only).
    comdat: Vec<usize>,
    /// `REMJIT_BENCH_SHAPE`: `grouped` (modules registered in groups, as sessions do: the
    /// plain mode only), `merged` (default: one object per module, as modules registered
    /// before grouping), `copy` (a copy of the object with its load addresses, sections not
    /// loaded dropped) or `old` (the copy with the sections not loaded left allocatable at
    /// address 0, as remjit registered them first).
    shape: String,
}

impl Objects {
    fn new() -> Self {
        let bytes = compiled_object();
        let file = object::File::parse(&*bytes).expect("an ELF object");
        let mut offsets = vec![None; file.sections().count() + 1];
        let mut at = 0u64;
        let mut comdat = Vec::new();
        for s in file.sections() {
            let SectionFlags::Elf { sh_flags } = s.flags() else {
                continue;
            };
            if s.name().is_ok_and(|n| n.ends_with("_Z5twicei")) {
                comdat.push(s.index().0);
            }
            if sh_flags & u64::from(object::elf::SHF_ALLOC) != 0 && s.size() > 0 {
                at = at.next_multiple_of(s.align().max(1));
                offsets[s.index().0] = Some(at);
                at += s.size();
            }
        }
        assert!(at <= 0x1_0000, "the object fits its window");
        assert!(
            !comdat.is_empty(),
            "the inline function has a COMDAT section"
        );
        let shape = std::env::var("REMJIT_BENCH_SHAPE").unwrap_or_else(|_| "merged".into());
        assert!(
            ["grouped", "merged", "copy", "old"].contains(&shape.as_str()),
            "shape {shape}"
        );
        Objects {
            bytes,
            offsets,
            comdat,
            shape,
        }
    }

    /// The i-th module's memory, `(base, size)`: windows end to end, as a slab hands them out.
    fn memory(i: u64) -> (u64, u64) {
        (0x4000_0000 + i * 0x1_0000, 0x1_0000)
    }

    fn input(&self, i: u64) -> DebugInput {
        let base = Self::memory(i).0;
        let addrs = self.offsets.iter().enumerate().map(|(si, o)| match o {
            Some(o) if i == 0 || !self.comdat.contains(&si) => base + o,
            _ => 0,
        });
        DebugInput {
            name: format!("f{i}.o"),
            bytes: self.bytes.clone(),
            section_addrs: addrs.collect(),
        }
    }

    fn nth(&self, i: u64) -> Vec<u8> {
        let input = self.input(i);
        if self.shape == "merged" || self.shape == "grouped" {
            return merged_debug_object(std::slice::from_ref(&input)).expect("a debug object");
        }
        let mut out = debug_object(&input).expect("a debug object");
        if self.shape == "old" {
            self.restore_dropped(&mut out);
        }
        out
    }

    /// Gives the sections not loaded their flags and symbols back (the original's).
    fn restore_dropped(&self, out: &mut [u8]) {
        let file = object::File::parse(&*self.bytes).expect("an ELF object");
        let shoff = u64::from_le_bytes(self.bytes[0x28..0x30].try_into().unwrap()) as usize;
        for s in file.sections() {
            let flags = shoff + s.index().0 * 64 + 8;
            out[flags..flags + 8].copy_from_slice(&self.bytes[flags..flags + 8]);
            if s.name() == Ok(".symtab") {
                let (off, size) = s.file_range().unwrap();
                let r = off as usize..(off + size) as usize;
                out[r.clone()].copy_from_slice(&self.bytes[r]);
            }
        }
    }
}

fn counts(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn registration(c: &mut Criterion) {
    let objs = Objects::new();
    let mut group = c.benchmark_group("gdb_jit_register");
    let mut next = 0u64;
    for resident in counts("REMJIT_BENCH_RESIDENT", &[10, 10_000]) {
        let handles: Vec<u64> = (0..resident)
            .map(|_| {
                next += 1;
                register_owned(objs.nth(next))
            })
            .collect();
        next += 1;
        let probe = objs.nth(next);
        group.bench_with_input(
            BenchmarkId::new("register+deregister", resident),
            &resident,
            |b, _| {
                b.iter_batched(
                    || probe.clone(),
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// What the plain mode registers modules with: one object each, or a session's groups.
enum Registry {
    Single(HashMap<u64, u64>),
    Grouped {
        groups: GdbGroups,
        inputs: HashMap<u64, Vec<DebugInput>>,
        exec: InProcessExecutor,
    },
}

impl Registry {
    fn new(shape: &str) -> Self {
        if shape != "grouped" {
            return Registry::Single(HashMap::new());
        }
        Registry::Grouped {
            groups: GdbGroups::new(),
            inputs: HashMap::new(),
            exec: InProcessExecutor::new(),
        }
    }

    fn add(&mut self, objs: &Objects, i: u64) {
        match self {
            Registry::Single(handles) => {
                handles.insert(i, register_owned(objs.nth(i)));
            }
            Registry::Grouped {
                groups,
                inputs,
                exec,
            } => {
                inputs.insert(i, vec![objs.input(i)]);
                let of = |k| inputs.get(&k).map_or(&[][..], Vec::as_slice);
                groups
                    .add(exec, i, Objects::memory(i), &of)
                    .expect("registered");
            }
        }
    }

    fn remove(&mut self, i: u64) {
        match self {
            Registry::Single(handles) => deregister(handles.remove(&i).unwrap()).unwrap(),
            Registry::Grouped {
                groups,
                inputs,
                exec,
            } => {
                inputs.remove(&i);
                let of = |k| inputs.get(&k).map_or(&[][..], Vec::as_slice);
                groups.remove(exec, i, &of).expect("deregistered");
            }
        }
    }

    /// (objects registered, modules).
    fn counts(&self) -> (usize, usize) {
        match self {
            Registry::Single(handles) => (handles.len(), handles.len()),
            Registry::Grouped { groups, .. } => groups.counts(),
        }
    }
}

/// The CPU time (seconds) the process tracing this one (a debugger) has used, all its threads
/// (gdb indexes DWARF in worker threads): the sum of their /proc schedstat run times (in
/// nanoseconds); 0 without a tracer.
fn tracer_cpu() -> f64 {
    let pid = tracer_pid();
    if pid == 0 {
        return 0.0;
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// The plain mode (for runs under a debugger, where one registration can take milliseconds):
/// grows the list to each count of `REMJIT_BENCH_STEPS`, then registers and deregisters
/// `REMJIT_BENCH_PROBES` (default 5) more modules one at a time; prints the median of each,
/// and the amortized time of the modules added since the last count, the slowest of them, and
/// the debugger's CPU time for them, amortized (steadier than wall times on a busy machine;
/// with `grouped`, these include re-merging and registering the groups). `REMJIT_BENCH_WAIT` first waits for a
/// debugger to attach (`gdb -p`).
fn steps(steps: Vec<usize>) {
    let objs = Objects::new();
    let probes = counts("REMJIT_BENCH_PROBES", &[5])[0].max(1);
    let mut registry = Registry::new(&objs.shape);
    if std::env::var_os("REMJIT_BENCH_WAIT").is_some() {
        // For `gdb -p`: says how to attach, and waits until a debugger is.
        wait_for_debugger("jit_debug bench", &|| false).expect("a debugger attaches");
    }
    println!(
        "resident  register_us  deregister_us  amortized_us  slowest_ms  fill_s  objects  \
         debugger_cpu_us"
    );
    let mut prev = 0;
    for n in steps {
        let (fill, mut slowest, cpu) = (Instant::now(), Duration::ZERO, tracer_cpu());
        for i in prev..n.max(prev) {
            let t = Instant::now();
            registry.add(&objs, i as u64);
            slowest = slowest.max(t.elapsed());
        }
        let fill = fill.elapsed();
        let added = n.saturating_sub(prev).max(1) as f64;
        let amortized = fill.as_secs_f64() * 1e6 / added;
        let debugger = (tracer_cpu() - cpu) * 1e6 / added;
        prev = prev.max(n);
        let (mut reg, mut dereg) = (Vec::new(), Vec::new());
        for p in 0..probes {
            let i = 1_000_000 + p as u64;
            let t = Instant::now();
            registry.add(&objs, i);
            reg.push(t.elapsed());
            let t = Instant::now();
            registry.remove(i);
            dereg.push(t.elapsed());
        }
        println!(
            "{n:8}  {:11.2}  {:13.2}  {amortized:12.2}  {:10.2}  {:6.1}  {:7}  {debugger:14.0}",
            median(reg).as_secs_f64() * 1e6,
            median(dereg).as_secs_f64() * 1e6,
            slowest.as_secs_f64() * 1e3,
            fill.as_secs_f64(),
            registry.counts().0,
        );
    }
}

criterion_group!(benches, registration);

fn main() {
    match std::env::var("REMJIT_BENCH_STEPS") {
        Ok(_) => steps(counts("REMJIT_BENCH_STEPS", &[])),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
