//! `remjit repl`: reads cells (line editing in a terminal, plain lines from a pipe), hands them
//! to the library's [`Repl`] and prints what they produced.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::Parser;

use remjit::remote::MemoryMode;
use remjit::repl::{
    lex::is_complete, split::awaits_body, Event, ExecutorSpec, Lang, Outcome, Repl, ReplOptions,
};

/// A C or C++ read-eval-print loop over remjit's executor: cells are compiled by the system
/// compiler, linked incrementally, and survive crashes of the code they run.
#[derive(Parser, Debug)]
#[command(name = "remjit repl", version, long_about = None)]
pub struct ReplCli {
    /// The language of the cells: c or c++.
    #[arg(long, value_name = "LANG", default_value = "c")]
    lang: String,
    /// Link library NAME (libNAME.so before libNAME.a).
    #[arg(short = 'l', value_name = "NAME")]
    libraries: Vec<String>,
    /// Add a directory to the library search path.
    #[arg(short = 'L', value_name = "DIR")]
    library_dirs: Vec<PathBuf>,
    /// Pass ARG to the compiler of each cell (after the REPL's own flags).
    #[arg(long = "Xcc", value_name = "ARG", allow_hyphen_values = true)]
    compiler_flags: Vec<String>,
    #[command(flatten)]
    exec: ExecutorArgs,
    /// Copy code and data to the executor instead of sharing memory.
    #[arg(long)]
    no_shared_memory: bool,
    /// After a crash, start the fresh executor empty instead of replaying earlier cells.
    #[arg(long)]
    no_replay: bool,
    /// Reading from a pipe, do not compile the cells that arrived (together where they can)
    /// while the current one runs: one cell at a time.
    #[arg(long)]
    no_compile_ahead: bool,
}

/// Where the code runs: options shared by `remjit` and `remjit repl`.
#[derive(clap::Args, Debug)]
pub struct ExecutorArgs {
    /// Run the code in remjit's own process (for the REPL: a crash then ends it).
    #[arg(long)]
    pub in_process: bool,
    /// Run the code in an executor process (the default; =PATH picks the executor binary,
    /// else remjit-executor beside remjit, else remjit itself acts as the executor).
    #[arg(long, value_name = "PATH", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub oop_executor: Option<String>,
    /// Connect to an executor listening on HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub oop_executor_connect: Option<String>,
    /// With --oop-executor-connect: the token shared with the executor, from a file of mode
    /// 0600 (default: $REMJIT_TOKEN).
    #[arg(long, value_name = "PATH")]
    pub oop_executor_token_file: Option<PathBuf>,
    /// Seconds the executor gets to answer when it starts (default 10, or
    /// $REMJIT_EXECUTOR_TIMEOUT).
    #[arg(long, value_name = "SECS")]
    pub oop_executor_timeout: Option<f64>,
}

impl ExecutorArgs {
    /// Checks the combination and says how to start the executor; `shared_memory` chooses
    /// (by default shared memory for a spawned executor, copies over TCP).
    pub fn spec(&self, shared_memory: Option<bool>) -> anyhow::Result<ExecutorSpec> {
        if self.oop_executor_token_file.is_some() && self.oop_executor_connect.is_none() {
            bail!("--oop-executor-token-file applies only with --oop-executor-connect");
        }
        if self.in_process {
            if self.oop_executor.is_some() || self.oop_executor_connect.is_some() {
                bail!(
                    "--in-process cannot be combined with --oop-executor or --oop-executor-connect"
                );
            }
            return Ok(ExecutorSpec::InProcess);
        }
        let timeout = remjit::repl::exec::setup_timeout(self.oop_executor_timeout)?;
        if let Some(addr) = &self.oop_executor_connect {
            // Over TCP the pages cannot be shared unless the peer asks for LLVM's named flavour.
            let memory = match shared_memory {
                Some(true) => MemoryMode::Shared,
                _ => MemoryMode::Copy,
            };
            let token = remjit::remote::Token::load(self.oop_executor_token_file.as_deref())
                .map_err(|e| anyhow!("{e}"))?;
            return Ok(ExecutorSpec::Connect {
                addr: addr.to_string(),
                memory,
                token,
                timeout,
            });
        }
        let path = match self.oop_executor.as_deref() {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => remjit::remote::transport::default_executor_path()?,
        };
        let memory = match shared_memory {
            Some(false) => MemoryMode::Copy,
            _ => MemoryMode::Shared,
        };
        Ok(ExecutorSpec::Spawn {
            path,
            memory,
            timeout,
        })
    }
}

const HELP: &str = "\
Cells: C or C++ declarations and statements; a cell goes on while brackets are open or a line
ends with `\\`. An expression without a final `;` prints its value and type.
Commands:
  %help          this text
  %quit          end the session (so does end of input)
  %undo          remove the last cell (its code, data and declarations)
  %lib NAME      load library NAME (libNAME.so) for later cells
  %time on|off   print compile, link and run times per cell
  %restart       start a fresh executor and replay the cells
  %save FILE     write the session as a program that compiles natively";

/// The most cells read ahead from a pipe.
const QUEUE: usize = 256;

fn is_command(cell: &str) -> bool {
    cell.trim_start().starts_with('%')
}

/// Where cells come from.
enum Input {
    /// Standard input (a copy of its descriptor), with a buffer we can look into.
    Plain(std::io::BufReader<std::fs::File>),
    Editor(Box<rustyline::DefaultEditor>),
}

impl Input {
    /// The next line; `None` at end of input. Ctrl-C in the editor drops the cell read so far.
    fn line(&mut self, prompt: &str) -> anyhow::Result<Option<String>> {
        match self {
            Input::Plain(r) => {
                let mut s = String::new();
                if r.read_line(&mut s)? == 0 {
                    return Ok(None);
                }
                Ok(Some(s.trim_end_matches(['\n', '\r']).to_string()))
            }
            Input::Editor(ed) => match ed.readline(prompt) {
                Ok(s) => Ok(Some(s)),
                Err(rustyline::error::ReadlineError::Interrupted) => Ok(Some("\u{3}".into())),
                Err(rustyline::error::ReadlineError::Eof) => Ok(None),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Whether a line can be read without waiting: compiling ahead must never keep the
    /// current cell from running while a program driving the REPL waits for its output.
    fn ready(&mut self) -> bool {
        match self {
            Input::Editor(_) => false,
            Input::Plain(r) if !r.buffer().is_empty() => true,
            Input::Plain(r) => {
                use std::os::fd::AsRawFd;
                let mut p = libc::pollfd {
                    fd: r.get_ref().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; no wait.
                unsafe { libc::poll(&mut p, 1, 0) == 1 }
            }
        }
    }

    /// Whether the complete cell `buf` goes on: it ends in a function declarator (or a
    /// condition) whose `{` comes on the next line. From a pipe, only if the next line shows
    /// it; at a terminal the user sees the continuation prompt.
    fn body_follows(&mut self, buf: &str) -> anyhow::Result<bool> {
        if !awaits_body(buf) {
            return Ok(false);
        }
        match self {
            Input::Editor(_) => Ok(true),
            Input::Plain(r) => {
                // Looked at, not consumed: the next line keeps its columns.
                let ahead = r.fill_buf()?;
                let first = ahead.iter().find(|c| !matches!(c, b' ' | b'\t' | b'\r'));
                Ok(first == Some(&b'{'))
            }
        }
    }

    /// A whole cell: lines until brackets close and no line ends in `\`. A cell left open at
    /// the end of input is not submitted: `incomplete` is set and `None` returned.
    fn cell(&mut self, number: u32, incomplete: &mut bool) -> anyhow::Result<Option<String>> {
        let mut buf = String::new();
        loop {
            let prompt = if buf.is_empty() {
                format!("[{number}]> ")
            } else {
                "...> ".to_string()
            };
            let Some(line) = self.line(&prompt)? else {
                if buf.trim().is_empty() || buf.trim_start().starts_with('%') || is_complete(&buf) {
                    return Ok((!buf.trim().is_empty()).then_some(buf));
                }
                *incomplete = true;
                return Ok(None);
            };
            if line == "\u{3}" {
                buf.clear();
                continue;
            }
            buf.push_str(&line);
            buf.push('\n');
            if buf.trim().is_empty() {
                buf.clear();
                continue;
            }
            let command = buf.trim_start().starts_with('%');
            if command || (is_complete(&buf) && !self.body_follows(&buf)?) {
                if let Input::Editor(ed) = self {
                    let _ = ed.add_history_entry(buf.trim_end());
                }
                return Ok(Some(buf));
            }
        }
    }
}

/// Prints what a cell produced: values on stdout, the rest on stderr.
fn print(out: &Outcome, timing: bool) {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for e in &out.events {
        let _ = match e {
            Event::Value(v) => writeln!(stdout, "{v}"),
            Event::Diagnostics(d) => write!(stderr, "{d}"),
            Event::Error(m) => writeln!(stderr, "remjit: error: {m}"),
            Event::Crash(m) | Event::Note(m) => writeln!(stderr, "remjit: {m}"),
        };
    }
    if timing {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let t = out.times;
        let _ = writeln!(
            stderr,
            "remjit: time: compile {:.1} ms (compiler {:.1} ms), link {:.3} ms, run {:.3} ms; \
             remjit's own {:.3} ms",
            ms(t.compile),
            ms(t.compiler),
            ms(t.link),
            ms(t.run),
            ms(t.compile.saturating_sub(t.compiler) + t.link + t.run)
        );
    }
    let _ = stdout.flush();
}

/// Runs a `%` command; false to end the session.
fn command(repl: &mut Repl, line: &str, timing: &mut bool) -> anyhow::Result<bool> {
    let mut words = line.trim().splitn(2, char::is_whitespace);
    let cmd = words.next().unwrap_or("");
    let arg = words.next().unwrap_or("").trim();
    match (cmd, arg) {
        ("%quit" | "%q" | "%exit", _) => return Ok(false),
        ("%help", _) => println!("{HELP}"),
        ("%undo", _) => eprintln!("remjit: {}", repl.undo()?),
        ("%lib", name) if !name.is_empty() => repl.add_library(name)?,
        ("%time", "on") => *timing = true,
        ("%time", "off") => *timing = false,
        ("%restart", _) => eprintln!("remjit: {}", repl.restart(true)?),
        ("%save", file) if !file.is_empty() => {
            repl.save(file.as_ref())?;
            eprintln!("remjit: saved to {file}");
        }
        _ => bail!("unknown command `{}`: %help lists them", line.trim()),
    }
    Ok(true)
}

/// A no-op SIGINT handler: Ctrl-C ends the executor (in our process group) running a cell, not
/// the REPL. A handler, not SIG_IGN, so that executors started later do not inherit it.
extern "C" fn on_interrupt(_: libc::c_int) {}

/// Over TCP, where no signal reaches the executor: Ctrl-C goes to it as urgent data (see
/// [`remjit::repl::exec::send_interrupt`]). When it cannot (LLVM's executor, or a second
/// Ctrl-C before the first took effect), Ctrl-C ends the REPL as it would without a handler.
extern "C" fn on_interrupt_tcp(_: libc::c_int) {
    if !remjit::repl::exec::send_interrupt() {
        // SAFETY: async-signal-safe calls: back to the default disposition, then the signal.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::raise(libc::SIGINT);
        }
    }
}

/// `remjit repl ARGS` (`args[0]` is the program name).
pub fn main(args: Vec<String>) -> anyhow::Result<i32> {
    let cli = match ReplCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let lang = match cli.lang.as_str() {
        "c" | "C" => Lang::C,
        "c++" | "C++" | "cxx" | "cpp" => Lang::Cxx,
        other => bail!("--lang {other}: expected c or c++"),
    };
    let spec = cli.exec.spec(cli.no_shared_memory.then_some(false))?;
    if matches!(spec, ExecutorSpec::InProcess) {
        remjit_executor::signals::restore_program_dispositions();
        remjit_executor::crash::install_in_process()
            .map_err(|e| anyhow!("cannot install the crash handlers: {e}"))?;
    } else {
        let handler = match spec {
            ExecutorSpec::Connect { .. } => on_interrupt_tcp as *const (),
            _ => on_interrupt as *const (),
        };
        // SAFETY: installing a handler that does nothing, or only async-signal-safe calls.
        unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
    }
    let options = ReplOptions {
        compile_flags: cli.compiler_flags,
        library_dirs: cli.library_dirs,
        libraries: cli.libraries,
        replay: !cli.no_replay,
        ..ReplOptions::new(lang)
    };
    let mut repl = Repl::new(options, spec)?;
    let interactive = std::io::stdin().is_terminal();
    let mut input = if interactive {
        Input::Editor(Box::new(rustyline::DefaultEditor::new()?))
    } else {
        use std::os::fd::AsFd;
        let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
        Input::Plain(std::io::BufReader::new(std::fs::File::from(fd)))
    };
    let mut timing = false;
    let mut failed = false;
    // From a pipe, the cells that arrived already compile (together where they can) while
    // the current one runs (a program that feeds cells one by one gets each one's output
    // first).
    let ahead = !interactive && !cli.no_compile_ahead;
    let mut queue: std::collections::VecDeque<String> = Default::default();
    let mut incomplete = false;
    loop {
        let cell = match queue.pop_front() {
            Some(c) => c,
            None => match input.cell(repl.next_cell(), &mut incomplete)? {
                Some(c) => c,
                None => break,
            },
        };
        if is_command(&cell) {
            match command(&mut repl, &cell, &mut timing) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    eprintln!("remjit: error: {e:#}");
                    failed = true;
                    continue;
                }
            }
        }
        // Up to a command: it may change what the cells after it mean.
        while ahead && queue.len() < QUEUE && !queue.back().is_some_and(|c| is_command(c)) {
            if !input.ready() {
                break;
            }
            match input.cell(0, &mut incomplete)? {
                Some(c) => queue.push_back(c),
                None => break,
            }
        }
        let out = repl.eval_queued(&cell, queue.make_contiguous());
        failed |= !out.ok;
        print(&out, timing);
        if repl.is_lost() {
            bail!("the session is lost: no executor runs its code");
        }
    }
    repl.shutdown();
    if incomplete {
        eprintln!("remjit: incomplete cell at end of input");
        return Ok(1);
    }
    Ok(i32::from(failed && !interactive))
}
