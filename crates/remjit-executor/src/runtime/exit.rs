//! Exit handlers registered by JIT'd code, kept per module (`__dso_handle`).
use std::ffi::{c_int, c_void};

/// Our `__cxa_atexit`.
///
/// # Safety
/// `f` must be callable with `arg`.
pub unsafe extern "C" fn cxa_atexit(
    f: unsafe extern "C" fn(*mut c_void),
    arg: *mut c_void,
    dso: *mut c_void,
) -> c_int {
    let _ = (f, arg, dso);
    todo!("runtime helper")
}

/// Our `atexit` (no module handle: runs when all handlers run).
///
/// # Safety
/// `f` must be callable.
pub unsafe extern "C" fn atexit(f: unsafe extern "C" fn()) -> c_int {
    let _ = f;
    todo!("runtime helper")
}

/// Runs and forgets the handlers registered for `dso` (all of them for `None`), newest first.
pub fn run_exit_handlers(dso: Option<u64>) {
    let _ = dso;
    todo!("runtime helper")
}
