//! Incremental linking at scale (issue 13): per-module latency as a session grows.
//!
//! * chain: modules linked one by one through the Session API, each defining `fNNNNN`, which
//!   calls the previous module's; after each link, one call of the new function (it calls the
//!   previous module's once). Reports the latency (add + link + finalize + lookup + call) of
//!   module 10, 1,000 and 10,000 as the median over a window of modules ending there, plus
//!   the link's own stage times.
//! * repl: add a module, link it, look up its function, call it with arguments, remove it.
//!
//! In process, out of process with shared memory, out of process copying, interleaved. The
//! default run links 10,000 modules 3 times per mode and runs 5,000 REPL iterations per mode
//! (under a minute on an idle machine); `REMJIT_BENCH_FULL=1` makes it 10 runs and 50,000
//! iterations. `REMJIT_BENCH_MODULES`, `REMJIT_BENCH_RUNS`, `REMJIT_BENCH_REPL` override the
//! counts and `REMJIT_BENCH_MODES` (e.g. `shared,copy`) picks modes, for instance to count
//! the messages per module with strace on a short run.
//! `--markdown` prints only the table for the README (bench/compare.py uses it).
//!
//! cargo bench -p remjit --bench incremental [-- --markdown]

use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;
use support::executor_path;

use remjit::remote::{MemoryMode, RemoteExecutor};
use remjit::{Session, SessionOptions};

const CHAIN_BASE: &str = "int fAAAAA(int argc, char **argv, char **envp) { return 0; }\n";
const CHAIN_STEP: &str = "int fBBBBB(int, char **, char **);\n\
    int fAAAAA(int argc, char **argv, char **envp) {\n\
    \x20 return argc > 1 ? fBBBBB(argc - 1, argv, envp) + 1 : 0;\n}\n";
const REPL: &str = "#include <string.h>\n\
    int repl(int argc, char **argv, char **envp) { return argc * 7 + (int)strlen(argv[1]); }\n";

/// Compiles C source with `cc -O2 -c` in a fresh temporary directory.
fn compile(src: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let c = dir.path().join("m.c");
    let o = dir.path().join("m.o");
    std::fs::write(&c, src).unwrap();
    let st = std::process::Command::new("cc")
        .args(["-O2", "-c"])
        .arg(&c)
        .arg("-o")
        .arg(&o)
        .status()
        .expect("cc");
    assert!(st.success(), "cc failed");
    std::fs::read(o).unwrap()
}

/// `bytes` with every `from` replaced by `to` (same length: names in the string table).
fn rename(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

fn chain_objects(n: usize) -> Vec<Vec<u8>> {
    let base = compile(CHAIN_BASE);
    let step = compile(CHAIN_STEP);
    (0..n)
        .map(|i| {
            let me = format!("f{i:05}");
            if i == 0 {
                return rename(&base, b"fAAAAA", me.as_bytes());
            }
            let prev = format!("f{:05}", i - 1);
            rename(
                &rename(&step, b"fAAAAA", me.as_bytes()),
                b"fBBBBB",
                prev.as_bytes(),
            )
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Mode {
    InProcess,
    Shared,
    Copy,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::InProcess => "in process",
            Mode::Shared => "out of process, shared memory",
            Mode::Copy => "out of process, copying",
        }
    }
}

fn session(mode: Mode) -> Session {
    let memory = match mode {
        Mode::InProcess => return Session::in_process(SessionOptions::default()).unwrap(),
        Mode::Shared => MemoryMode::Shared,
        Mode::Copy => MemoryMode::Copy,
    };
    let path = executor_path();
    assert!(
        path.exists(),
        "{} not built: run cargo build --release first",
        path.display()
    );
    let exec = Arc::new(RemoteExecutor::spawn(&path, memory).unwrap());
    Session::with_executor(exec, SessionOptions::default()).unwrap()
}

fn args(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("a{i}")).collect()
}

/// Per-module samples of one chain run.
#[derive(Default)]
struct ChainRun {
    total: Vec<Duration>,
    link: Vec<Duration>,
    call: Vec<Duration>,
    stages: Vec<remjit::link::LinkTimes>,
}

fn run_chain(mode: Mode, objects: &[Vec<u8>]) -> ChainRun {
    let mut s = session(mode);
    s.set_program_args(&args(2)).unwrap();
    let mut run = ChainRun::default();
    for (i, obj) in objects.iter().enumerate() {
        let t0 = Instant::now();
        s.add_object_bytes("chain.o", obj.clone());
        s.link().unwrap();
        let t1 = Instant::now();
        let addr = s.lookup(&format!("f{i:05}")).expect("the new function");
        let r = s.executor().run_main(addr).unwrap();
        let t2 = Instant::now();
        assert_eq!(r, i32::from(i > 0), "module {i} returned {r}");
        run.total.push(t2 - t0);
        run.link.push(t1 - t0);
        run.call.push(t2 - t1);
        run.stages.push(s.last_link_times());
    }
    // The whole chain, once: argc = n walks every module down to the first.
    let n = objects.len();
    s.set_program_args(&args(n)).unwrap();
    let last = s.lookup(&format!("f{:05}", n - 1)).unwrap();
    assert_eq!(s.executor().run_main(last).unwrap() as usize, n - 1);
    run
}

/// An in-process chain runs in a child process of its own: its memory stays mapped, and a
/// module too large for a pack maps three areas (code, read-only data, data) of its own, so
/// 10,000 such modules would use 30,000 of the process's 65,530 (`vm.max_map_count`) and a
/// second run in the same process could fail.
fn run_chain_in_child(n: usize) -> ChainRun {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD_CHAIN, n.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("the benchmark runs itself");
    assert!(out.status.success(), "in-process chain run failed");
    let mut run = ChainRun::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Vec<Duration> = line
            .split(' ')
            .map(|x| Duration::from_nanos(x.parse().expect("nanoseconds")))
            .collect();
        assert_eq!(v.len(), 8, "bad line from the child: {line}");
        run.total.push(v[0]);
        run.link.push(v[1]);
        run.call.push(v[2]);
        run.stages.push(remjit::link::LinkTimes {
            read: v[3],
            resolve: v[4],
            layout: v[5],
            fixup: v[6],
            finalize: v[7],
        });
    }
    assert_eq!(run.total.len(), n, "the child reported every module");
    run
}

/// In the child: runs the chain in process and prints one line of nanoseconds per module.
fn chain_child(n: usize) {
    let run = run_chain(Mode::InProcess, &chain_objects(n));
    let mut out = String::new();
    for (i, st) in run.stages.iter().enumerate() {
        let row = [
            run.total[i],
            run.link[i],
            run.call[i],
            st.read,
            st.resolve,
            st.layout,
            st.fixup,
            st.finalize,
        ];
        let row: Vec<String> = row.iter().map(|d| d.as_nanos().to_string()).collect();
        out.push_str(&row.join(" "));
        out.push('\n');
    }
    print!("{out}");
}

const CHILD_CHAIN: &str = "REMJIT_BENCH_CHILD_CHAIN";

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

/// 10000 -> "10,000".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Median over the modules `[end - width, end)` of every run.
fn window(runs: &[ChainRun], end: usize, pick: impl Fn(&ChainRun, usize) -> Duration) -> Duration {
    let width = (end / 10).clamp(5, 200);
    let mut xs = Vec::new();
    for r in runs {
        for i in end.saturating_sub(width)..end.min(r.total.len()) {
            xs.push(pick(r, i));
        }
    }
    median(xs)
}

/// Per-iteration samples of the REPL loop: link, lookup, call, remove.
fn run_repl(mode: Mode, obj: &[u8], iterations: usize) -> [Vec<Duration>; 6] {
    let mut s = session(mode);
    let mut out: [Vec<Duration>; 6] = Default::default();
    for i in 0..iterations {
        let argv = vec!["repl".to_string(), "x".repeat(i % 8)];
        let t0 = Instant::now();
        s.add_object_bytes("repl.o", obj.to_vec());
        let m = s.link().unwrap();
        let t1 = Instant::now();
        let addr = s.lookup("repl").expect("repl");
        let t2 = Instant::now();
        s.set_program_args(&argv).unwrap();
        let t3 = Instant::now();
        let r = s.executor().run_main(addr).unwrap();
        let t4 = Instant::now();
        s.remove_module(m).unwrap();
        let t5 = Instant::now();
        assert_eq!(r as usize, 14 + i % 8);
        for (k, d) in [t5 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4]
            .into_iter()
            .enumerate()
        {
            out[k].push(d);
        }
    }
    out
}

/// A count from the environment, e.g. to count messages with strace on a short run.
fn env_count(var: &str) -> Option<usize> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

fn main() {
    if let Some(n) = env_count(CHILD_CHAIN) {
        return chain_child(n);
    }
    let markdown = std::env::args().any(|a| a == "--markdown");
    let full = std::env::var_os("REMJIT_BENCH_FULL").is_some_and(|v| v != "0");
    let (chain_runs, repl_iters) = if full { (10, 50_000) } else { (3, 5_000) };
    let n = env_count("REMJIT_BENCH_MODULES").unwrap_or(10_000).max(20);
    let repl_iters = env_count("REMJIT_BENCH_REPL").unwrap_or(repl_iters);
    let chain_runs = env_count("REMJIT_BENCH_RUNS").unwrap_or(chain_runs).max(1);
    let objects = chain_objects(n);
    let repl = compile(REPL);
    let only = std::env::var("REMJIT_BENCH_MODES").unwrap_or_default();
    let modes: Vec<Mode> = [
        ("in", Mode::InProcess),
        ("shared", Mode::Shared),
        ("copy", Mode::Copy),
    ]
    .into_iter()
    .filter(|(k, _)| only.is_empty() || only.split(',').any(|o| o == *k))
    .map(|(_, m)| m)
    .collect();

    // Interleaved: one run of each mode in turn.
    let mut chains: Vec<Vec<ChainRun>> = modes.iter().map(|_| Vec::new()).collect();
    let mut repls: Vec<Vec<[Vec<Duration>; 6]>> = modes.iter().map(|_| Vec::new()).collect();
    for _ in 0..chain_runs {
        for (k, &m) in modes.iter().enumerate() {
            let t = Instant::now();
            chains[k].push(match m {
                Mode::InProcess => run_chain_in_child(n),
                _ => run_chain(m, &objects),
            });
            eprintln!(
                "chain of {n}, {}: {:.2} s",
                m.name(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    for (k, &m) in modes.iter().enumerate() {
        repls[k].push(run_repl(m, &repl, repl_iters));
    }

    let mut lines = vec![
        format!(
            "Incremental linking through the Session API (`cargo bench -p remjit --bench \
             incremental`): {} modules linked one by one, each calling the previous one's \
             function, one call after each link; median over the modules just before the \
             named one (out of process with shared memory, initialize and call go through \
             the call mailbox in shared memory, no socket round trip; copying, 4 socket round \
             trips: reserve, finalize, call-stub slot write, call), {chain_runs} run(s) per \
             mode. REPL: add + link + lookup + call with arguments + remove, median of {} \
             iterations (with shared memory initialize, set args, call, deinitialize through \
             the mailbox; copying 7 socket round trips: reserve, finalize, slot write, set \
             args, call, slot clear, deallocate; strlen is looked up once per session).",
            thousands(n),
            thousands(repl_iters)
        ),
        String::new(),
        format!(
            "| session workload | mode | module 10 | module 1,000 | module {} | {} / 10 |",
            thousands(n),
            thousands(n)
        ),
        "|---|---|---|---|---|---|".to_string(),
    ];
    for (k, &m) in modes.iter().enumerate() {
        let r = &chains[k];
        let at = |end| window(r, end, |c, i| c.total[i]);
        let (a, b, c) = (at(10), at(1000.min(n)), at(n));
        lines.push(format!(
            "| link + finalize + call, module N | {} | {} | {} | {} | {:.2} |",
            m.name(),
            us(a),
            us(b),
            us(c),
            c.as_secs_f64() / a.as_secs_f64()
        ));
    }
    lines.push(String::new());
    lines.push(
        "| REPL iteration | mode | total | add + link | lookup | set args | call | remove |".into(),
    );
    lines.push("|---|---|---|---|---|---|---|---|".into());
    for (k, &m) in modes.iter().enumerate() {
        let cols: Vec<String> = (0..6)
            .map(|j| us(median(repls[k].iter().flat_map(|r| r[j].clone()).collect())))
            .collect();
        lines.push(format!(
            "| add, link, look up, call, remove | {} | {} |",
            m.name(),
            cols.join(" | ")
        ));
    }
    if !markdown {
        lines.push(String::new());
        lines.push("Where the chain's time goes (median per module, µs):".into());
        lines.push("| mode | module | link (add..finalize) | call | read | resolve | layout | fixup | finalize |".into());
        lines.push("|---|---|---|---|---|---|---|---|---|".into());
        for (k, &m) in modes.iter().enumerate() {
            let r = &chains[k];
            for end in [10, 1000.min(n), n] {
                let st = |f: fn(&remjit::link::LinkTimes) -> Duration| {
                    us(window(r, end, |c, i| f(&c.stages[i])))
                };
                lines.push(format!(
                    "| {} | {end} | {} | {} | {} | {} | {} | {} | {} |",
                    m.name(),
                    us(window(r, end, |c, i| c.link[i])),
                    us(window(r, end, |c, i| c.call[i])),
                    st(|t| t.read),
                    st(|t| t.resolve),
                    st(|t| t.layout),
                    st(|t| t.fixup),
                    st(|t| t.finalize),
                ));
            }
        }
    }
    println!("{}", lines.join("\n"));
}
