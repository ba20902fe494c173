//! Registration of JIT'd `.eh_frame` sections with the process's unwinder (libgcc's, the one
//! libstdc++'s `__cxa_throw` and Rust's panics use).

extern "C" {
    fn __register_frame(begin: *const u8);
    fn __deregister_frame(begin: *const u8);
}

/// Registers the zero-terminated `.eh_frame` at `addr` with `__register_frame`.
///
/// # Safety
/// `addr` must point at a complete `.eh_frame` that stays mapped until deregistered.
pub unsafe fn register(addr: u64) -> Result<(), String> {
    if addr == 0 {
        return Err("cannot register an .eh_frame at address 0".into());
    }
    __register_frame(addr as *const u8);
    Ok(())
}

/// Deregisters what [`register`] registered.
///
/// # Safety
/// `addr` must have been registered.
pub unsafe fn deregister(addr: u64) {
    if addr != 0 {
        __deregister_frame(addr as *const u8);
    }
}
