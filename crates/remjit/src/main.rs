//! `remjit`: link ELF x86-64 objects and archives into memory and run them.
// The C `main` below is the entry: Rust's start-up (which reads /proc/self/maps for the main
// thread's stack guard, in both remjit and the executor it starts) is not needed.
#![cfg_attr(not(test), no_main)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use clap::Parser;

use remjit::executor::Executor;
use remjit::remote::{Ending, RemoteExecutor};
use remjit::{Session, SessionOptions};
use remjit_executor::crash::{self, Sink, Symbolize};
use remjit_executor::signals;

/// Link relocatable ELF x86-64 objects, archives and C/C++ sources into memory and run them.
#[derive(Parser, Debug)]
#[command(name = "remjit", version, about, long_about = None)]
struct Cli {
    /// Inputs: .o objects, .a archives, .so libraries, linker scripts, .c/.cc/.cpp sources.
    #[arg(required = true, value_name = "INPUTS")]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    exec: repl_cli::ExecutorArgs,
    /// Link, but do not run anything (no constructors, no entry point).
    #[arg(long)]
    noexec: bool,
    /// The entry point, called as `int main(int, char **, char **)`.
    #[arg(long, value_name = "SYM", default_value = "main")]
    entry: String,
    /// Link each input object as its own module, in the order given, each resolved against
    /// the modules before it. An archive joins the module of the object before it (the first
    /// module if none), -l libraries the last module.
    #[arg(long)]
    link_each: bool,
    /// Print the time of each phase on stderr.
    #[arg(long)]
    show_times: bool,
    /// Add a directory to the library search path.
    #[arg(short = 'L', value_name = "DIR")]
    library_dirs: Vec<PathBuf>,
    /// Link library NAME (libNAME.so before libNAME.a, as the system linker does).
    #[arg(short = 'l', value_name = "NAME")]
    libraries: Vec<String>,
    /// Load a shared library into the executing process before linking: a path, or a name
    /// such as libz.so.1 that the dynamic loader finds.
    #[arg(long, value_name = "PATH|SONAME")]
    preload: Vec<PathBuf>,
    /// Define an absolute symbol: NAME=ADDR (decimal or 0x hex).
    #[arg(long, value_name = "NAME=ADDR")]
    abs: Vec<String>,
    /// Old spelling of --abs.
    #[arg(long, value_name = "NAME=ADDR", hide = true)]
    define_abs: Vec<String>,
    /// Check the linked memory against the `# jitlink-check:` rules of FILE (repeatable).
    #[arg(long, value_name = "FILE")]
    check: Vec<PathBuf>,
    /// Place the slab at this address (decimal or 0x hex; only with --noexec).
    #[arg(long, value_name = "ADDR")]
    slab_address: Option<String>,
    /// The slab's page size: accepted when it is the host's page size.
    #[arg(long, value_name = "N")]
    slab_page_size: Option<String>,
    /// Resolve otherwise undefined symbols to address 0.
    #[arg(long)]
    phony_externals: bool,
    /// Address space per slab reservation, e.g. 1Gb, 512Mb, 64Kb (default 1Gb).
    #[arg(long, value_name = "SIZE")]
    slab_allocate: Option<String>,
    /// Copy code and data to the executor over the wire instead of sharing memory.
    #[arg(long)]
    no_shared_memory: bool,
    /// Share code and data with the executor through shared memory (the default).
    #[arg(long)]
    use_shared_memory: bool,
    /// Pass ARG to the compiler of .c/.cc sources (after $CFLAGS/$CXXFLAGS), e.g. -Xcc -DN=3.
    #[arg(long = "Xcc", value_name = "ARG", allow_hyphen_values = true)]
    compiler_flags: Vec<String>,
    /// Print the pid of the process that runs the code and a gdb command for it on stderr, and
    /// wait until a debugger is attached before running main.
    #[arg(long)]
    wait_for_debugger: bool,
    /// Write /tmp/perf-PID.map (perf's map of JIT'd functions) in the process that runs the code.
    #[arg(long)]
    perf_map: bool,
    /// Write jit-PID.dump (perf's jitdump, with line tables) in the working directory of the
    /// process that runs the code.
    #[arg(long)]
    jitdump: bool,
    /// Everything after --args goes to the program as argv[1..].
    #[arg(long = "args", value_name = "ARGS", num_args = 0.., allow_hyphen_values = true)]
    #[allow(dead_code)] // For --help only: normalize_args takes --args and what follows first.
    program_args_help: Vec<String>,
}

/// Long options llvm-jitlink also spells with one dash.
const LONG_OPTIONS: &[&str] = &[
    "in-process",
    "noexec",
    "entry",
    "show-times",
    "link-each",
    "preload",
    "abs",
    "define-abs",
    "check",
    "slab-address",
    "slab-page-size",
    "phony-externals",
    "slab-allocate",
    "oop-executor",
    "oop-executor-connect",
    "oop-executor-token-file",
    "oop-executor-timeout",
    "no-shared-memory",
    "use-shared-memory",
    "Xcc",
    "wait-for-debugger",
    "perf-map",
    "jitdump",
    "help",
    "version",
];

/// Splits off the program's arguments (after `--args`) and turns `-long-option` into
/// `--long-option`.
fn normalize_args(raw: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut ours = Vec::new();
    let mut program = Vec::new();
    let mut iter = raw.into_iter();
    if let Some(argv0) = iter.next() {
        ours.push(argv0);
    }
    for a in iter.by_ref() {
        if a == "--args" || a == "-args" {
            program.extend(iter.by_ref());
            break;
        }
        if let Some(rest) = a.strip_prefix('-').filter(|r| !r.starts_with('-')) {
            let name = rest.split('=').next().unwrap_or("");
            if LONG_OPTIONS.contains(&name) {
                ours.push(format!("-{a}"));
                continue;
            }
        }
        ours.push(a);
    }
    (ours, program)
}

/// Parses sizes as llvm-jitlink does (`64Kb`, `1Gb`), plus plain bytes and K/M/G/KiB forms.
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("bad size `{s}`: expected a number with an optional Kb/Mb/Gb unit"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => bail!("bad size `{s}`: unknown unit `{unit}` (use Kb, Mb or Gb)"),
    };
    match n.checked_mul(mult) {
        Some(0) => bail!("bad size `{s}`: must be greater than zero"),
        Some(v) => Ok(v),
        None => bail!("bad size `{s}`: larger than 2^64 bytes"),
    }
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_abs(s: &str) -> anyhow::Result<(String, u64)> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("bad --abs `{s}`: expected NAME=ADDR"))?;
    if name.is_empty() {
        bail!("bad --abs `{s}`: NAME is empty (expected NAME=ADDR)");
    }
    let addr = parse_number(addr)
        .ok_or_else(|| anyhow!("bad --abs `{s}`: ADDR must be a decimal or 0x hex number"))?;
    Ok((name.to_string(), addr))
}

/// `--slab-address` (only with `--noexec`) and `--slab-page-size` (only the host's).
fn slab_placement(cli: &Cli) -> anyhow::Result<Option<u64>> {
    if let Some(p) = &cli.slab_page_size {
        let host = rustix::param::page_size() as u64;
        if parse_size(p)? != host {
            bail!("--slab-page-size {p}: remjit uses the host's page size, {host}");
        }
    }
    let Some(a) = &cli.slab_address else {
        return Ok(None);
    };
    let addr = parse_number(a)
        .ok_or_else(|| anyhow!("bad --slab-address `{a}`: expected a decimal or 0x hex number"))?;
    if !cli.noexec {
        bail!("--slab-address needs --noexec: code placed at a chosen address cannot run");
    }
    Ok(Some(addr))
}

/// Checks the module's link map against each `--check` file; false when a rule failed.
fn run_checks(cli: &Cli, session: &Session, id: remjit::ModuleId) -> anyhow::Result<bool> {
    let map = session
        .link_map(id)
        .ok_or_else(|| anyhow!("no link map was recorded"))?;
    let mut ok = true;
    for f in &cli.check {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read check file {}", f.display()))?;
        let (_, failures) = remjit::check::check_text(&text, map)
            .map_err(|e| anyhow!("check file {}: {e}", f.display()))?;
        for m in &failures {
            eprintln!("remjit: check failed: {}: {m}", f.display());
        }
        ok &= failures.is_empty();
    }
    Ok(ok)
}

/// Finalizers to run when the program ends, however it ends (return from main or `exit()`).
static EXIT_SESSION: Mutex<Option<Session>> = Mutex::new(None);

extern "C" fn run_exit_hook() {
    if let Ok(mut guard) = EXIT_SESSION.lock() {
        if let Some(session) = guard.as_mut() {
            if let Err(e) = session.run_exit() {
                eprintln!("remjit: error: at exit: {e}");
            }
        }
    }
}

/// What runs the code.
enum Mode {
    InProcess,
    Remote(Arc<RemoteExecutor>),
}

/// What runs the code, while it starts.
enum Starting {
    Ready(Mode),
    /// Spawned; its Setup not yet read.
    Spawned(remjit::remote::Starting),
}

fn start_executor(cli: &Cli) -> anyhow::Result<Starting> {
    // A debugger cannot plant breakpoints in code pages shared with us (read-execute
    // MAP_SHARED): for --wait-for-debugger the executor gets private copies.
    let shared_memory = if cli.exec.oop_executor_connect.is_some() {
        Some(cli.use_shared_memory)
    } else {
        Some(!(cli.no_shared_memory || cli.wait_for_debugger))
    };
    let mut spec = cli.exec.spec(shared_memory)?;
    if let remjit::repl::ExecutorSpec::Spawn { path, .. } = &mut spec {
        if lean_default_executor(cli) {
            // This lean process itself, started as the executor (see runtime_choice).
            *path = std::env::current_exe().context("cannot find remjit's own path")?;
        }
    }
    if let remjit::repl::ExecutorSpec::Spawn {
        path,
        memory,
        timeout,
    } = &spec
    {
        return Ok(Starting::Spawned(RemoteExecutor::spawn_begin(
            path, *memory, *timeout,
        )?));
    }
    Ok(Starting::Ready(match spec.start()? {
        remjit::repl::Running::InProcess(_) => Mode::InProcess,
        remjit::repl::Running::Remote(e) => Mode::Remote(e),
    }))
}

/// Whether the executor is the default one and this process is lean: then it is this program
/// (without the C++ runtime) rather than remjit-executor.
fn lean_default_executor(cli: &Cli) -> bool {
    runtime_choice::lean()
        && cli.exec.oop_executor_connect.is_none()
        && cli.exec.oop_executor.as_deref().is_none_or(str::is_empty)
}

/// Like a shell waiting for its child: the executor shares our terminal's foreground process
/// group, so Ctrl-C and Ctrl-\\ reach it too; while `main` runs, its handlers decide, and we
/// report how it ended. (The executor was spawned with our dispositions, not these; before
/// `main`, Ctrl-C ends remjit, and the executor with it.)
fn ignore_terminal_interrupts() {
    // SAFETY: setting signal dispositions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
}

/// The JIT'd program died of `sig` out of process: says how (not for SIGPIPE and SIGINT, which
/// a shell does not comment on either) and gives the status a shell reports, 128 + `sig`. A
/// program ended by SIGINT ends remjit the same way, so that a calling shell stops too.
fn died_of_signal(sig: i32, exec: &RemoteExecutor, jit: Symbolize) -> i32 {
    if sig != libc::SIGPIPE && sig != libc::SIGINT {
        if let Some(d) = exec.describe_death(jit) {
            eprintln!("remjit: {d}");
        }
    }
    exec.shutdown();
    if sig == libc::SIGINT {
        // SAFETY: restoring the default disposition, then raising it on ourselves.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::raise(libc::SIGINT);
        }
    }
    128 + sig
}

fn run(cli: Cli, program_args: Vec<String>) -> anyhow::Result<i32> {
    if cli.use_shared_memory && cli.no_shared_memory {
        bail!("--use-shared-memory and --no-shared-memory contradict each other");
    }
    let t_start = Instant::now();
    let options = SessionOptions {
        slab_size: match &cli.slab_allocate {
            Some(s) => parse_size(s)?,
            None => 1 << 30,
        },
        phony_externals: cli.phony_externals,
        absolutes: cli
            .abs
            .iter()
            .chain(&cli.define_abs)
            .map(|s| parse_abs(s))
            .collect::<anyhow::Result<_>>()?,
        run_initializers: !cli.noexec,
        library_dirs: cli.library_dirs.clone(),
        compile_flags: cli.compiler_flags.clone(),
        // With --link-each, only the last module need define it: checked after the links.
        required_entry: (!cli.noexec && !cli.link_each).then(|| cli.entry.clone()),
        record_link_map: !cli.check.is_empty(),
        // Constructors that crash in process are named (with --link-each the table is set
        // once after the links instead: rebuilding it per module would cost O(n^2)).
        in_process_crash_table: cli.exec.in_process && !cli.noexec && !cli.link_each,
        slab_address: slab_placement(&cli)?,
        share_pages: true,
        // One link, unless --link-each: no later link calls through stubs.
        call_stubs: cli.link_each,
        // Nothing of the program runs before `main`: the executor initializes each module
        // while the next is linked.
        pipelined_initialize: cli.link_each,
        // Nothing runs under --noexec: no crash to report; perf maps still list functions.
        function_symbols: !cli.noexec || cli.perf_map || cli.jitdump,
        perf: remjit_executor::runtime::perf::PerfOutputs {
            map: cli.perf_map,
            jitdump: cli.jitdump,
        },
    };
    let starting = start_executor(&cli)?;
    // The inputs are read while the executor starts.
    let mut inputs = prefetch::Inputs::read(&cli.inputs);
    let mode = match starting {
        Starting::Ready(mode) => mode,
        Starting::Spawned(s) => Mode::Remote(Arc::new(s.finish()?)),
    };
    if let Mode::InProcess = mode {
        if cli.wait_for_debugger {
            // Breakpoints need private code pages (no pages shared between small links).
            remjit::memory::pack::keep_code_private();
        }
        // JIT'd code starts with a native program's dispositions; its crashes are reported
        // (a stack overflow too), then kill remjit with their signal.
        signals::restore_program_dispositions();
        crash::install_in_process().context("cannot install the crash handlers")?;
    }
    let mut session = match &mode {
        Mode::InProcess => Session::in_process(options)?,
        Mode::Remote(e) => Session::with_executor(e.clone(), options)?,
    };
    let result = link_and_run(
        &cli,
        program_args,
        &mut session,
        &mode,
        &mut inputs,
        t_start,
    );
    if let Err(e) = &result {
        let restart = match &mode {
            Mode::InProcess => runtime_choice::link_needs_cxx(e, &session, true),
            Mode::Remote(_) => {
                lean_default_executor(&cli) && runtime_choice::link_needs_cxx(e, &session, false)
            }
        };
        if restart && runtime_choice::read_once_input(&cli.inputs).is_none() {
            if let Mode::Remote(exec) = &mode {
                exec.shutdown();
            }
            return Err(runtime_choice::exec_cxx());
        }
    }
    let result = result.map_err(|e| runtime_choice::explain_missing_cxx(e, &cli.inputs));
    let outcome = match (&mode, result) {
        (Mode::InProcess, r) => r,
        (Mode::Remote(exec), Ok(status)) => {
            exec.shutdown();
            Ok(status)
        }
        (Mode::Remote(exec), Err(e)) => {
            let lines = session.source_lines();
            let jit = |pc: u64, out: &mut dyn Sink| {
                remjit::repl::exec::write_jit_frame(&session, &lines, pc, out)
            };
            // A dead executor explains the failure better than the broken call does.
            match exec.ending() {
                Ending::Exited(code) => {
                    exec.shutdown();
                    Ok(code)
                }
                Ending::Signaled(sig, _) => Ok(died_of_signal(sig, exec, &jit)),
                Ending::Unknown => {
                    exec.shutdown();
                    Err(e)
                }
            }
        }
    };
    // The process ends now: its memory goes with it, no module need be freed one by one
    // (0.8 ms for the 1,000 modules of a --link-each chain; nothing of the session does
    // anything a program would see as it is dropped).
    std::mem::forget(session);
    outcome
}

fn link_and_run(
    cli: &Cli,
    program_args: Vec<String>,
    session: &mut Session,
    mode: &Mode,
    inputs: &mut prefetch::Inputs,
    t_start: Instant,
) -> anyhow::Result<i32> {
    let mut argv = vec![cli.inputs[0].display().to_string()];
    argv.extend(program_args);
    session.set_program_args(&argv)?;
    for p in &cli.preload {
        session.load_library(p)?;
    }
    let (t_read, module) = add_inputs_and_link(cli, session, inputs, t_start)?;
    if !cli.check.is_empty() && !run_checks(cli, session, module)? {
        return Ok(1);
    }
    // What the in-process crash handler names (nothing runs under --noexec); the session
    // published it before constructors ran unless --link-each.
    if matches!(mode, Mode::InProcess) && !cli.noexec && cli.link_each {
        crash::set_jit_functions(session.jit_functions());
    }
    let times = session.last_link_times();
    if cli.show_times {
        eprintln!(
            "remjit: times: inputs {:.3} ms (start the executor, load libraries, read and \
             compile the inputs), read {:.3} ms, resolve {:.3} ms, layout {:.3} ms, \
             fixup {:.3} ms, finalize {:.3} ms",
            t_read.as_secs_f64() * 1e3,
            times.read.as_secs_f64() * 1e3,
            times.resolve.as_secs_f64() * 1e3,
            times.layout.as_secs_f64() * 1e3,
            times.fixup.as_secs_f64() * 1e3,
            times.finalize.as_secs_f64() * 1e3,
        );
    }
    if cli.noexec {
        if let Mode::Remote(exec) = mode {
            // Initializes posted with --link-each are checked before the link is called good
            // (at the hangup, their failure would go unseen).
            exec.connection().settle()?;
        }
        if cli.show_times {
            eprintln!("remjit: times: total {:.3} ms", ms(t_start));
        }
        return Ok(0);
    }
    let entry = session
        .lookup(&cli.entry)
        .filter(|&a| a != 0)
        .ok_or_else(|| anyhow!("entry point `{}` is not defined by the inputs", cli.entry))?;
    if cli.wait_for_debugger {
        session.executor().wait_for_debugger()?;
    }
    let t_run = Instant::now();
    let status = match mode {
        Mode::Remote(exec) => {
            if exec.pid().is_some() {
                ignore_terminal_interrupts();
            }
            let status = exec.run_main(entry)?;
            session.run_exit()?;
            status
        }
        Mode::InProcess => run_in_process(
            std::mem::replace(session, Session::in_process(SessionOptions::default())?),
            entry,
        )?,
    };
    if cli.show_times {
        eprintln!(
            "remjit: times: run {:.3} ms, total {:.3} ms",
            ms(t_run),
            ms(t_start)
        );
    }
    Ok(status)
}

/// Adds the inputs and links them: as one module, or with `--link-each` one module per object.
/// Returns the time spent before the last link.
fn add_inputs_and_link(
    cli: &Cli,
    session: &mut Session,
    inputs: &mut prefetch::Inputs,
    t_start: Instant,
) -> anyhow::Result<(std::time::Duration, remjit::ModuleId)> {
    if cli.link_each && !cli.check.is_empty() {
        bail!("--check reads one module's link: it cannot be combined with --link-each");
    }
    for input in &cli.inputs {
        // With --link-each, the object before this input is linked now, with the archives
        // given between them.
        if cli.link_each && session.has_pending_objects() {
            session.link()?;
        }
        inputs.add_next(session, input)?;
    }
    for lib in &cli.libraries {
        session.add_library(lib)?;
    }
    let t_read = t_start.elapsed();
    let module = session.link()?;
    Ok((t_read, module))
}

/// Milliseconds since `t`.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Runs `main` in this process. From here the program may end in `exit()`: the libc hook runs
/// its exit handlers and finalizers either way.
fn run_in_process(session: Session, entry: u64) -> anyhow::Result<i32> {
    {
        let mut guard = EXIT_SESSION
            .lock()
            .map_err(|_| anyhow!("internal lock poisoned"))?;
        *guard = Some(session);
    }
    // SAFETY: registering a plain function with libc's atexit.
    unsafe { libc::atexit(run_exit_hook) };
    // Not holding the session lock: JIT'd code may call exit(), whose hook takes it.
    let executor = remjit::executor::InProcessExecutor::new();
    Ok(executor.run_main(entry)?)
}

/// The executor's command line: remjit started as `remjit-executor` (which it does itself when
/// no remjit-executor binary is installed beside it) is the executor.
#[path = "../../remjit-executor/src/main.rs"]
mod executor_main;

mod prefetch;
mod repl_cli;
mod runtime_choice;

/// The command line as UTF-8 strings; an argument that is not UTF-8 ends remjit with a message
/// (`std::env::args` would panic on it).
fn utf8_args() -> Vec<String> {
    let args: Result<Vec<String>, _> = std::env::args_os().map(|a| a.into_string()).collect();
    args.unwrap_or_else(|bad| {
        eprintln!(
            "remjit: error: argument `{}` is not valid UTF-8: remjit takes file names and \
             program arguments in UTF-8",
            bad.to_string_lossy()
        );
        std::process::exit(1);
    })
}

/// The process entry (`#![no_main]`): what Rust's start-up would do that remjit needs
/// (SIGPIPE ignored, so that a closed pipe is an error; a panic's status 101), then
/// [`remjit_main`]. `std::env::args` works without that start-up on glibc.
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: std::ffi::c_int, _argv: *const *const std::ffi::c_char) -> i32 {
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    match std::panic::catch_unwind(remjit_main) {
        Ok(()) => 0,
        Err(_) => 101,
    }
}

/// The command line: the executor (when started as `remjit-executor`), `remjit repl`, or a
/// link and run.
pub fn remjit_main() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some("remjit-executor".as_ref()) {
        executor_main::main();
    }
    runtime_choice::note_start();
    let (ours, program) = normalize_args(utf8_args());
    if ours.get(1).is_some_and(|a| a == "repl") {
        if runtime_choice::lean() && ours.iter().any(|a| a == "--in-process") {
            // Cells run here and may be C++ from the first line on.
            eprintln!("remjit: error: {:#}", runtime_choice::exec_cxx());
            std::process::exit(1);
        }
        let mut args = ours;
        args.remove(1);
        args[0] = "remjit repl".into();
        match repl_cli::main(args) {
            Ok(status) => std::process::exit(status),
            Err(e) => {
                eprintln!("remjit: error: {e:#}");
                std::process::exit(1);
            }
        }
    }
    let cli = match Cli::try_parse_from(ours) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match run(cli, program) {
        // In process, exit() runs the hook (exit handlers, finalizers) and flushes stdio.
        Ok(status) => std::process::exit(status),
        Err(e) => {
            eprintln!("remjit: error: {e:#}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_split_and_single_dash() {
        let raw: Vec<String> = ["remjit", "-noexec", "-lm", "a.o", "-args", "-x", "--y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (ours, prog) = normalize_args(raw);
        assert_eq!(ours, vec!["remjit", "--noexec", "-lm", "a.o"]);
        assert_eq!(prog, vec!["-x", "--y"]);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1Gb").unwrap(), 1 << 30);
        assert_eq!(parse_size("64Kb").unwrap(), 64 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn abs_values() {
        assert_eq!(parse_abs("foo=0x10").unwrap(), ("foo".into(), 16));
        assert_eq!(parse_abs("foo=10").unwrap(), ("foo".into(), 10));
        assert!(parse_abs("foo").is_err());
        assert_eq!(
            parse_abs("=5").unwrap_err().to_string(),
            "bad --abs `=5`: NAME is empty (expected NAME=ADDR)"
        );
        assert_eq!(
            parse_size("0").unwrap_err().to_string(),
            "bad size `0`: must be greater than zero"
        );
        assert_eq!(
            parse_size("99999999999Gb").unwrap_err().to_string(),
            "bad size `99999999999Gb`: larger than 2^64 bytes"
        );
    }
}
