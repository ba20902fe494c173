//! Which host runs the program: `remjit` starts without the C++ runtime (no libstdc++, copies
//! of the C runtime's data only: its start costs about half of `remjit-cxx`'s), and so does
//! the executor it spawns by default (itself, started as `remjit-executor`). A link that
//! needs the C++ runtime (C++ runtime symbols undefined, or a library that brought libstdc++
//! in whose data JIT'd code cannot reach) fails there before any of the inputs' code ran; then
//! the same command line runs again in `remjit-cxx`, which loads libstdc++ at start with
//! copies of its data below 2 GiB and spawns the full `remjit-executor`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use remjit::Session;

/// Whether this process started without libstdc++ (set once by [`note_start`]).
static LEAN: AtomicBool = AtomicBool::new(false);

/// Notes whether this process started without libstdc++; call before any library is loaded.
pub fn note_start() {
    LEAN.store(!libstdcxx_loaded(), Ordering::Relaxed);
}

/// Whether this process started without the C++ runtime.
pub fn lean() -> bool {
    LEAN.load(Ordering::Relaxed)
}

/// Whether libstdc++ is loaded in this process (its personality routine is defined: a
/// lookup in the loaded objects' hash tables, which opens no file).
fn libstdcxx_loaded() -> bool {
    // SAFETY: dlsym of a NUL-terminated name in the default scope.
    !unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__gxx_personality_v0".as_ptr()) }.is_null()
}

/// `remjit-cxx` beside this program, when it is there.
fn cxx_program() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let p = me.with_file_name("remjit-cxx");
    (p.is_file() && p != me).then_some(p)
}

/// Whether `err`, the failure of a link in a lean host before any of the program's code ran
/// (no constructors of an earlier `--link-each` module), is one that `remjit-cxx` may not
/// have: C++ runtime symbols undefined, or a relocation error with libstdc++ loaded (by a
/// library input) in the process that runs the code.
pub fn link_needs_cxx(err: &anyhow::Error, session: &Session, in_process: bool) -> bool {
    if !lean() || session.ran_input_code() || cxx_program().is_none() {
        return false;
    }
    let Some(e) = err.downcast_ref::<remjit::Error>() else {
        return false;
    };
    if e.lacks_cxx_runtime() {
        return true;
    }
    if !matches!(e, remjit::Error::Relocation(_)) {
        return false;
    }
    if in_process {
        return libstdcxx_loaded();
    }
    let found = session.executor().lookup(&[b"__gxx_personality_v0"]);
    matches!(found.as_deref(), Ok([Some(_)]))
}

/// The first of `inputs` that a run again would not read again: a pipe or socket (`<(...)`,
/// `/dev/stdin`), which this run read to its end.
pub fn read_once_input(inputs: &[PathBuf]) -> Option<&Path> {
    inputs
        .iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| !m.file_type().is_file()))
        .map(PathBuf::as_path)
}

/// In a lean host, a link that lacks the C++ runtime and was not run again in `remjit-cxx`
/// (code of an earlier module ran already, or an input came from a pipe) says how to run it
/// there.
pub fn explain_missing_cxx(err: anyhow::Error, inputs: &[PathBuf]) -> anyhow::Error {
    let lacks = err
        .downcast_ref::<remjit::Error>()
        .is_some_and(remjit::Error::lacks_cxx_runtime);
    if !lean() || !lacks {
        return err;
    }
    let why = match read_once_input(inputs) {
        Some(p) => format!("{} is a pipe, read already", p.display()),
        None => "code of an earlier module ran already".into(),
    };
    anyhow::anyhow!(
        "{err:#}\nhint: remjit starts without the C++ runtime and runs such a program again in \
         remjit-cxx, but {why}: run it with remjit-cxx"
    )
}

/// Runs this command line again in `remjit-cxx`; returns only when that fails.
pub fn exec_cxx() -> anyhow::Error {
    let Some(p) = cxx_program() else {
        return anyhow::anyhow!("remjit-cxx (remjit with the C++ runtime) is not beside remjit");
    };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "remjit".into());
    let e = std::process::Command::new(&p).arg0(argv0).args(args).exec();
    anyhow::anyhow!("cannot run {}: {e}", p.display())
}
