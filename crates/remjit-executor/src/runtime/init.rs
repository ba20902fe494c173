//! Constructors, destructors and entry points.
use std::ffi::{c_char, c_int, CString};
use std::sync::Mutex;

/// argv as C strings, kept alive for the rest of the process (programs keep argv pointers).
struct Args {
    argc: c_int,
    argv: *mut *mut c_char,
}
// SAFETY: the pointers refer to leaked, immutable allocations.
unsafe impl Send for Args {}

static ARGS: Mutex<Args> = Mutex::new(Args {
    argc: 0,
    argv: std::ptr::null_mut(),
});

extern "C" {
    static mut environ: *mut *mut c_char;
}

/// Sets the `argc`/`argv` that initialisers and `main` receive (argv[0] first).
pub fn set_program_args(args: &[String]) {
    let mut ptrs: Vec<*mut c_char> = args
        .iter()
        .map(|a| {
            CString::new(a.replace('\0', ""))
                .unwrap_or_default()
                .into_raw()
        })
        .collect();
    ptrs.push(std::ptr::null_mut());
    let argv = Box::leak(ptrs.into_boxed_slice()).as_mut_ptr();
    if let Ok(mut a) = ARGS.lock() {
        *a = Args {
            // argv keeps every argument; argc cannot say more than c_int holds.
            argc: c_int::try_from(args.len()).unwrap_or(c_int::MAX),
            argv,
        };
    }
}

fn args() -> (c_int, *mut *mut c_char) {
    ARGS.lock()
        .map(|a| (a.argc, a.argv))
        .unwrap_or((0, std::ptr::null_mut()))
}

/// Calls JIT'd code at `f` with up to three integer arguments, as the outermost frame the
/// unwinder sees (an uncaught C++ exception then terminates as in a native program, instead of
/// unwinding into the host's Rust frames); returns `rax`.
///
/// # Safety
/// `f` must be a function taking (at most) three integer or pointer arguments.
pub unsafe fn call_outermost(f: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    // SAFETY: the caller vouches for `f`.
    super::call::call_ints(f, [a0, a1, a2])
}

/// Calls each address as an `.init_array` function `(argc, argv, envp)`, in the given order.
///
/// # Safety
/// Every address must be such a function.
pub unsafe fn run_initializers(fns: &[u64]) {
    let (argc, argv) = args();
    for &f in fns {
        // SAFETY: the caller vouches for `f`; argv is leaked and NULL-terminated (or null
        // before any set_program_args); `environ` is read by value, never borrowed.
        call_outermost(f, argc as u64, argv as u64, environ as u64);
    }
}

/// Calls each address as a `void(void)` function, in the given order.
///
/// # Safety
/// Every address must be such a function.
pub unsafe fn run_finalizers(fns: &[u64]) {
    for &f in fns {
        // SAFETY: the caller vouches for `f`.
        call_outermost(f, 0, 0, 0);
    }
}

/// Calls `addr` as `int main(int, char **, char **)` with the program args.
///
/// # Safety
/// `addr` must be such a function.
pub unsafe fn run_as_main(addr: u64) -> i32 {
    let (argc, argv) = args();
    // SAFETY: as in run_initializers; `main`'s int is the low half of rax.
    call_outermost(addr, argc as u64, argv as u64, environ as u64) as i32
}
