//! The runtime that JIT'd code calls into, in whichever process runs it: thread-locals
//! (`__tls_get_addr`, TLS descriptors), exit handlers (`atexit`, `__cxa_atexit`), constructors and
//! destructors, unwind-table registration, running an entry point, and what debuggers and
//! profilers read (the GDB JIT interface, perf map and jitdump).
//!
//! The in-process mode of the controller calls these directly; the executor binary exposes them
//! as services. Both therefore share one implementation.

pub mod access;
pub mod call;
pub mod call_thread;
pub mod eh_frame;
pub mod exit;
pub mod init;
pub mod jit_debug;
pub mod perf;
pub mod tls;

/// Names that JIT'd code must bind to this runtime instead of to the process's libraries, with
/// the runtime's addresses for them (`__tls_get_addr`, `atexit`, `__cxa_atexit`,
/// `__cxa_thread_atexit`, `pthread_exit`).
pub fn symbol_overrides() -> Vec<(&'static str, u64)> {
    vec![
        ("__tls_get_addr", tls::tls_get_addr as *const () as u64),
        ("atexit", exit::atexit as *const () as u64),
        ("__cxa_atexit", exit::cxa_atexit as *const () as u64),
        (
            "__cxa_thread_atexit",
            call_thread::cxa_thread_atexit as *const () as u64,
        ),
        (
            "__cxa_thread_atexit_impl",
            call_thread::cxa_thread_atexit as *const () as u64,
        ),
        (
            "pthread_exit",
            call_thread::pthread_exit as *const () as u64,
        ),
        ("thrd_exit", call_thread::thrd_exit as *const () as u64),
    ]
}
