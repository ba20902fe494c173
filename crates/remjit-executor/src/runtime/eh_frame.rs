//! Registration of JIT'd `.eh_frame` sections with the process's unwinder.

/// Registers the zero-terminated `.eh_frame` at `addr` with `__register_frame`.
///
/// # Safety
/// `addr` must point at a complete `.eh_frame` that stays mapped until deregistered.
pub unsafe fn register(addr: u64) -> Result<(), String> {
    let _ = addr;
    todo!("runtime helper")
}

/// Deregisters what [`register`] registered.
///
/// # Safety
/// `addr` must have been registered.
pub unsafe fn deregister(addr: u64) {
    let _ = addr;
    todo!("runtime helper")
}
