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
            argc: args.len() as c_int,
            argv,
        };
    }
}

fn args() -> (c_int, *mut *mut c_char) {
    ARGS.lock()
        .map(|a| (a.argc, a.argv))
        .unwrap_or((0, std::ptr::null_mut()))
}

/// Calls each address as an `.init_array` function `(argc, argv, envp)`, in the given order.
///
/// # Safety
/// Every address must be such a function.
pub unsafe fn run_initializers(fns: &[u64]) {
    let (argc, argv) = args();
    for &f in fns {
        let f: unsafe extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) =
            std::mem::transmute(f as usize);
        f(argc, argv, environ);
    }
}

/// Calls each address as a `void(void)` function, in the given order.
///
/// # Safety
/// Every address must be such a function.
pub unsafe fn run_finalizers(fns: &[u64]) {
    for &f in fns {
        let f: unsafe extern "C" fn() = std::mem::transmute(f as usize);
        f();
    }
}

/// Calls `addr` as `int main(int, char **, char **)` with the program args.
///
/// # Safety
/// `addr` must be such a function.
pub unsafe fn run_as_main(addr: u64) -> i32 {
    let (argc, argv) = args();
    let f: unsafe extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) -> c_int =
        std::mem::transmute(addr as usize);
    f(argc, argv, environ)
}
