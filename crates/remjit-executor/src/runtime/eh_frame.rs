//! Registration of JIT'd `.eh_frame` sections with the process's unwinder (libgcc's, the one
//! libstdc++'s `__cxa_throw` and Rust's panics use).

extern "C" {
    fn __register_frame(begin: *const u8);
    fn __deregister_frame(begin: *const u8);
}

/// Start addresses of the `.eh_frame` sections registered here: libgcc aborts the process on a
/// deregistration it does not know and corrupts its list on a double registration, so both
/// are refused before it sees them.
static REGISTERED: std::sync::Mutex<std::collections::BTreeSet<u64>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn registered() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<u64>> {
    REGISTERED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers the zero-terminated `.eh_frame` at `addr` with `__register_frame`.
///
/// # Safety
/// `addr` must point at a complete `.eh_frame` that stays mapped until deregistered.
pub unsafe fn register(addr: u64) -> Result<(), String> {
    if addr == 0 {
        return Err("cannot register an .eh_frame at address 0".into());
    }
    let mut set = registered();
    if !set.insert(addr) {
        return Err(format!("the .eh_frame at {addr:#x} is registered already"));
    }
    __register_frame(addr as *const u8);
    Ok(())
}

/// Deregisters what [`register`] registered; an address it did not register is an error.
///
/// # Safety
/// The `.eh_frame` registered at `addr` must still be mapped.
pub unsafe fn deregister(addr: u64) -> Result<(), String> {
    if !registered().remove(&addr) {
        return Err(format!("no .eh_frame is registered at {addr:#x}"));
    }
    __deregister_frame(addr as *const u8);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_frame_never_registered_is_refused_not_handed_to_libgcc() {
        // libgcc would abort the process on this one.
        // SAFETY: refused before anything is read at the address.
        let r = unsafe { super::deregister(0x1234) };
        assert_eq!(r, Err("no .eh_frame is registered at 0x1234".to_string()));
    }
}
