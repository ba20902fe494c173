//! Thread-local storage for JIT'd modules (general- and local-dynamic models, TLS descriptors).

/// The argument of `__tls_get_addr`: a module id and an offset in that module's TLS block.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TlsIndex {
    /// Module id returned by [`register_module`].
    pub module: u64,
    /// Offset of the variable inside the module's block.
    pub offset: u64,
}

/// The TLS image of one module: its `.tdata` template followed by `.tbss`.
#[derive(Debug, Clone, Copy)]
pub struct TlsImage {
    /// Address of the `.tdata` initialisation template (in this process).
    pub init: usize,
    /// Bytes of template to copy.
    pub init_size: usize,
    /// Whole block size (`.tdata` + `.tbss`).
    pub mem_size: usize,
    /// Block alignment.
    pub align: usize,
}

/// Registers a module's TLS image; returns its module id (never 0).
pub fn register_module(image: TlsImage) -> u64 {
    let _ = image;
    todo!("runtime helper")
}

/// Forgets a module: later threads get no block for it; existing blocks are freed lazily.
pub fn deregister_module(id: u64) {
    let _ = id;
    todo!("runtime helper")
}

/// Our `__tls_get_addr`: the address of `ti.offset` inside this thread's block of `ti.module`.
///
/// # Safety
/// `ti` must point at a valid [`TlsIndex`] of a registered module.
pub unsafe extern "C" fn tls_get_addr(ti: *const TlsIndex) -> *mut u8 {
    let _ = ti;
    todo!("runtime helper")
}

/// Address of the TLS descriptor resolver for `R_X86_64_TLSDESC`-style descriptors
/// `{resolver, arg}` where `arg` points at a [`TlsIndex`].
pub fn tlsdesc_resolver_address() -> u64 {
    todo!("runtime helper")
}
