//! Running JIT'd `main` again and again on one long-lived thread, as if each call had a fresh
//! main thread of its own.
//!
//! A native program's main thread ends in `exit`, which runs the thread's `thread_local`
//! destructors before the exit handlers and static destructors. A thread that runs `main` and
//! is then reused does not end, so what ending would do is done here after each call: the
//! destructors JIT'd code registered during the call (`__cxa_thread_atexit`, bound to this
//! runtime) run newest first, and the thread's JIT'd TLS blocks are dropped, so the next call
//! sees the initial values again. Threads that are not running `main` this way hand the
//! registration to the C library unchanged. A JIT'd `exit` on such a thread runs the
//! destructors first, from the exit hook (see [`super::exit`]).

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void};

type Dtor = unsafe extern "C" fn(*mut c_void);

thread_local! {
    /// Whether this thread is running `main` through [`run_main_here`].
    static RUNNING_MAIN: Cell<bool> = const { Cell::new(false) };
    /// Destructors registered while it does: (function, object).
    static DTORS: RefCell<Vec<(Dtor, usize)>> = const { RefCell::new(Vec::new()) };
}

extern "C" {
    fn __cxa_thread_atexit_impl(f: Dtor, obj: *mut c_void, dso: *mut c_void) -> c_int;
}

/// Our `__cxa_thread_atexit` (and `__cxa_thread_atexit_impl`): kept here while the thread
/// runs `main` through [`run_main_here`], else the C library's.
///
/// # Safety
/// `f` must be callable with `obj` when the thread's destructors run.
pub unsafe extern "C" fn cxa_thread_atexit(f: Dtor, obj: *mut c_void, dso: *mut c_void) -> c_int {
    if RUNNING_MAIN.try_with(Cell::get).unwrap_or(false) {
        super::exit::hook_libc_exit();
        let kept = DTORS.try_with(|d| d.borrow_mut().push((f, obj as usize)));
        if kept.is_ok() {
            return 0;
        }
    }
    // SAFETY: forwarded as received.
    unsafe { __cxa_thread_atexit_impl(f, obj, dso) }
}

/// Our `pthread_exit`: on a thread running `main` through [`run_main_here`], the thread would
/// end with nothing to return to the caller, which would wait for ever. A native program whose
/// main thread leaves that way ends with status 0 once its other threads are done: here it
/// ends at once (its other threads are not waited for), through `exit`, which runs the
/// thread's destructors and the exit handlers first. Elsewhere, the C library's.
///
/// # Safety
/// As `pthread_exit`.
pub unsafe extern "C" fn pthread_exit(ret: *mut c_void) -> ! {
    if RUNNING_MAIN.try_with(Cell::get).unwrap_or(false) {
        // SAFETY: exit(3), as the C runtime calls it when the last thread is gone.
        unsafe { libc::exit(0) };
    }
    // SAFETY: forwarded as received.
    unsafe { libc::pthread_exit(ret) }
}

/// Our `thrd_exit` (C11): as [`pthread_exit`].
///
/// # Safety
/// As `thrd_exit`.
pub unsafe extern "C" fn thrd_exit(res: c_int) -> ! {
    // SAFETY: C11 threads are POSIX threads; glibc's thrd_exit passes `res` as the pointer.
    unsafe { pthread_exit(res as isize as *mut c_void) }
}

/// Runs and forgets the destructors kept for this thread, newest first (a destructor may
/// register more; those run too).
pub fn run_thread_dtors() {
    loop {
        let Ok(Some((f, obj))) = DTORS.try_with(|d| d.borrow_mut().pop()) else {
            return;
        };
        // SAFETY: registered by JIT'd code with this signature; called as the outermost frame
        // as its other entry points are.
        unsafe { super::init::call_outermost(f as usize as u64, obj as u64, 0, 0) };
    }
}

/// Calls `addr` as `main` on this thread, then does what the thread's end would do: its
/// `thread_local` destructors run and its JIT'd TLS blocks go (the next call starts fresh).
///
/// # Safety
/// As [`super::init::run_as_main`].
pub unsafe fn run_main_here(addr: u64) -> i32 {
    let was = RUNNING_MAIN.replace(true);
    // SAFETY: the caller vouches for `addr`.
    let status = unsafe { super::init::run_as_main(addr) };
    run_thread_dtors();
    super::tls::reset_thread();
    RUNNING_MAIN.set(was);
    status
}
