//! Constructors, destructors and entry points.

/// Sets the `argc`/`argv` that initialisers and `main` receive (argv[0] first).
pub fn set_program_args(args: &[String]) {
    let _ = args;
    todo!("runtime helper")
}

/// Calls each address as an `.init_array` function `(argc, argv, envp)`, in the given order.
///
/// # Safety
/// Every address must be such a function.
pub unsafe fn run_initializers(fns: &[u64]) {
    let _ = fns;
    todo!("runtime helper")
}

/// Calls each address as a `void(void)` function, in the given order.
///
/// # Safety
/// Every address must be such a function.
pub unsafe fn run_finalizers(fns: &[u64]) {
    let _ = fns;
    todo!("runtime helper")
}

/// Calls `addr` as `int main(int, char **, char **)` with the program args.
///
/// # Safety
/// `addr` must be such a function.
pub unsafe fn run_as_main(addr: u64) -> i32 {
    let _ = addr;
    todo!("runtime helper")
}
