//! `remjit`: link ELF x86-64 objects and archives into memory and run them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use clap::Parser;

use remjit::executor::Executor;
use remjit::remote::{MemoryMode, RemoteExecutor};
use remjit::{Session, SessionOptions};

/// Link relocatable ELF x86-64 objects, archives and C/C++ sources into memory and run them.
#[derive(Parser, Debug)]
#[command(name = "remjit", version, about, long_about = None)]
struct Cli {
    /// Inputs: .o objects, .a archives, .so libraries, linker scripts, .c/.cc/.cpp sources.
    #[arg(required = true, value_name = "INPUTS")]
    inputs: Vec<PathBuf>,
    /// Run the code in remjit's own process.
    #[arg(long)]
    in_process: bool,
    /// Link, but do not run anything (no constructors, no entry point).
    #[arg(long)]
    noexec: bool,
    /// The entry point, called as `int main(int, char **, char **)`.
    #[arg(long, value_name = "SYM", default_value = "main")]
    entry: String,
    /// Print the time of each phase on stderr.
    #[arg(long)]
    show_times: bool,
    /// Add a directory to the library search path.
    #[arg(short = 'L', value_name = "DIR")]
    library_dirs: Vec<PathBuf>,
    /// Link library NAME (libNAME.so before libNAME.a, as the system linker does).
    #[arg(short = 'l', value_name = "NAME")]
    libraries: Vec<String>,
    /// Load a shared library into the executing process before linking.
    #[arg(long, value_name = "PATH")]
    preload: Vec<PathBuf>,
    /// Define an absolute symbol: NAME=ADDR (decimal or 0x hex).
    #[arg(long, value_name = "NAME=ADDR")]
    abs: Vec<String>,
    /// Resolve otherwise undefined symbols to address 0.
    #[arg(long)]
    phony_externals: bool,
    /// Address space per slab reservation, e.g. 1Gb, 512Mb, 64Kb (default 1Gb).
    #[arg(long, value_name = "SIZE")]
    slab_allocate: Option<String>,
    /// Run the code in an executor process (default: remjit-executor beside remjit).
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "")]
    oop_executor: Option<String>,
    /// Connect to an executor listening on HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    oop_executor_connect: Option<String>,
    /// With --oop-executor-connect: the token shared with the executor, from a file of mode
    /// 0600 (default: $REMJIT_TOKEN).
    #[arg(long, value_name = "PATH")]
    oop_executor_token_file: Option<PathBuf>,
    /// Seconds the executor gets to answer when it starts (default 10, or
    /// $REMJIT_EXECUTOR_TIMEOUT).
    #[arg(long, value_name = "SECS")]
    oop_executor_timeout: Option<f64>,
    /// Copy code and data to the executor over the wire instead of sharing memory.
    #[arg(long)]
    no_shared_memory: bool,
    /// Share code and data with the executor through shared memory (the default).
    #[arg(long)]
    use_shared_memory: bool,
}

/// Long options llvm-jitlink also spells with one dash.
const LONG_OPTIONS: &[&str] = &[
    "in-process",
    "noexec",
    "entry",
    "show-times",
    "preload",
    "abs",
    "phony-externals",
    "slab-allocate",
    "oop-executor",
    "oop-executor-connect",
    "oop-executor-token-file",
    "oop-executor-timeout",
    "no-shared-memory",
    "use-shared-memory",
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
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| anyhow!("bad size `{s}`"))
}

fn parse_abs(s: &str) -> anyhow::Result<(String, u64)> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("bad --abs `{s}`: expected NAME=ADDR"))?;
    let addr = match addr.strip_prefix("0x").or_else(|| addr.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => addr.parse(),
    }
    .map_err(|_| anyhow!("bad --abs `{s}`: ADDR must be a decimal or 0x hex number"))?;
    Ok((name.to_string(), addr))
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

/// How long the executor gets to answer at start: --oop-executor-timeout, else
/// $REMJIT_EXECUTOR_TIMEOUT, else 10 s.
fn setup_timeout(cli: &Cli) -> anyhow::Result<std::time::Duration> {
    let secs = match (
        cli.oop_executor_timeout,
        std::env::var("REMJIT_EXECUTOR_TIMEOUT"),
    ) {
        (Some(s), _) => s,
        (None, Ok(v)) => v
            .trim()
            .parse()
            .map_err(|_| anyhow!("REMJIT_EXECUTOR_TIMEOUT=`{v}`: expected seconds"))?,
        (None, Err(_)) => return Ok(remjit::remote::DEFAULT_SETUP_TIMEOUT),
    };
    if !(secs > 0.0 && secs <= 1e6) {
        bail!("executor timeout {secs}: expected a number of seconds above 0");
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn start_executor(cli: &Cli) -> anyhow::Result<Mode> {
    if cli.in_process {
        if cli.oop_executor.is_some() || cli.oop_executor_connect.is_some() {
            bail!("--in-process cannot be combined with --oop-executor or --oop-executor-connect");
        }
        return Ok(Mode::InProcess);
    }
    let timeout = setup_timeout(cli)?;
    if cli.oop_executor_token_file.is_some() && cli.oop_executor_connect.is_none() {
        bail!("--oop-executor-token-file applies only with --oop-executor-connect");
    }
    let exec = if let Some(addr) = &cli.oop_executor_connect {
        // Over TCP the pages cannot be shared unless the peer asks for LLVM's named flavour.
        let memory = if cli.use_shared_memory {
            MemoryMode::Shared
        } else {
            MemoryMode::Copy
        };
        let token = remjit::remote::Token::load(cli.oop_executor_token_file.as_deref())
            .map_err(|e| anyhow!("{e}"))?;
        RemoteExecutor::connect(addr, memory, token.as_ref(), timeout)?
    } else {
        let path = match cli.oop_executor.as_deref() {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => remjit::remote::transport::default_executor_path()?,
        };
        let memory = if cli.no_shared_memory {
            MemoryMode::Copy
        } else {
            MemoryMode::Shared
        };
        RemoteExecutor::spawn_with(&path, memory, timeout)?
    };
    Ok(Mode::Remote(Arc::new(exec)))
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
            .map(|s| parse_abs(s))
            .collect::<anyhow::Result<_>>()?,
        run_initializers: !cli.noexec,
        library_dirs: cli.library_dirs.clone(),
    };
    let mode = start_executor(&cli)?;
    let mut session = match &mode {
        Mode::InProcess => Session::in_process(options)?,
        Mode::Remote(e) => Session::with_executor(e.clone(), options)?,
    };
    let result = link_and_run(&cli, program_args, &mut session, &mode, t_start);
    match (&mode, result) {
        (Mode::InProcess, r) => r,
        (Mode::Remote(exec), Ok(status)) => {
            exec.shutdown();
            Ok(status)
        }
        (Mode::Remote(exec), Err(e)) => {
            let symbolize = |pc: u64| {
                session
                    .symbolize(pc)
                    .map(|(module, f, off)| format!("`{f}`+{off:#x} (module {module})"))
            };
            // A dead executor explains the failure better than the broken call does.
            let ending = exec.ending();
            let death = exec.describe_death(&symbolize);
            exec.shutdown();
            match (ending, death) {
                (remjit::remote::Ending::Exited(code), _) => Ok(code),
                (_, Some(d)) => Err(anyhow!("{d}")),
                (_, None) => Err(e),
            }
        }
    }
}

fn link_and_run(
    cli: &Cli,
    program_args: Vec<String>,
    session: &mut Session,
    mode: &Mode,
    t_start: Instant,
) -> anyhow::Result<i32> {
    let mut argv = vec![cli.inputs[0].display().to_string()];
    argv.extend(program_args);
    session.set_program_args(&argv)?;
    for p in &cli.preload {
        session
            .load_library(p)
            .with_context(|| format!("--preload {}", p.display()))?;
    }
    for input in &cli.inputs {
        session.add_file(input)?;
    }
    for lib in &cli.libraries {
        session.add_library(lib)?;
    }
    let t_read = t_start.elapsed();
    session.link()?;
    let times = session.last_link_times();
    if cli.show_times {
        eprintln!(
            "remjit: times: inputs {:.3} ms, read {:.3} ms, resolve {:.3} ms, layout {:.3} ms, \
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
        return Ok(0);
    }
    let entry = session
        .lookup(&cli.entry)
        .filter(|&a| a != 0)
        .ok_or_else(|| anyhow!("entry point `{}` is not defined by the inputs", cli.entry))?;
    let t_run = Instant::now();
    let status = match mode {
        Mode::Remote(exec) => {
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
            "remjit: times: run {:.3} ms",
            t_run.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(status)
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

fn main() {
    let (ours, program) = normalize_args(std::env::args().collect());
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
    }
}
