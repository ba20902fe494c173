//! Exit handlers registered by JIT'd code, kept per module (`__dso_handle`), so that removing a
//! module runs its handlers and the end of the program runs all of them, newest first.
use std::ffi::{c_int, c_void};
use std::sync::{Mutex, Once};

#[derive(Clone, Copy)]
enum Handler {
    WithArg(unsafe extern "C" fn(*mut c_void), usize),
    Plain(unsafe extern "C" fn()),
}

struct Entry {
    handler: Handler,
    dso: usize,
}

static HANDLERS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static LIBC_HOOK: Once = Once::new();

extern "C" fn at_libc_exit() {
    // As exit() orders them: the exiting thread's thread_local destructors first.
    super::call_thread::run_thread_dtors();
    run_exit_handlers(None);
}

/// A JIT'd program that calls exit() still runs its handlers: libc's exit calls our hook.
pub(crate) fn hook_libc_exit() {
    LIBC_HOOK.call_once(|| {
        // SAFETY: registering a plain function with libc.
        unsafe { libc::atexit(at_libc_exit) };
    });
}

fn register(entry: Entry) -> c_int {
    hook_libc_exit();
    match HANDLERS.lock() {
        Ok(mut h) => {
            h.push(entry);
            0
        }
        Err(_) => -1,
    }
}

/// Our `__cxa_atexit`.
///
/// # Safety
/// `f` must be callable with `arg`.
pub unsafe extern "C" fn cxa_atexit(
    f: unsafe extern "C" fn(*mut c_void),
    arg: *mut c_void,
    dso: *mut c_void,
) -> c_int {
    register(Entry {
        handler: Handler::WithArg(f, arg as usize),
        dso: dso as usize,
    })
}

/// Our `atexit` (no module handle: runs when all handlers run).
///
/// # Safety
/// `f` must be callable.
pub unsafe extern "C" fn atexit(f: unsafe extern "C" fn()) -> c_int {
    register(Entry {
        handler: Handler::Plain(f),
        dso: 0,
    })
}

/// Runs and forgets the handlers registered for `dso` (all of them for `None`), newest first.
/// Handlers may register further handlers while running; those run too.
pub fn run_exit_handlers(dso: Option<u64>) {
    loop {
        let next = {
            let Ok(mut h) = HANDLERS.lock() else { return };
            let pos = h
                .iter()
                .rposition(|e| dso.is_none_or(|d| e.dso as u64 == d));
            pos.map(|p| h.remove(p))
        };
        // The lock is released while the handler runs.
        let Some(e) = next else { return };
        // SAFETY: registered by JIT'd code with these signatures.
        unsafe {
            match e.handler {
                Handler::WithArg(f, arg) => f(arg as *mut c_void),
                Handler::Plain(f) => f(),
            }
        }
    }
}
