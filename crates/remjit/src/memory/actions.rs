//! Actions that run in the executing process when an allocation is finalized or freed: unwind
//! registration, thread-local storage, IFUNC resolution and constructors/destructors.

use remjit_executor::runtime;

use crate::error::{Error, Result};

/// A runtime step run in the executing process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocAction {
    /// `__register_frame` on a zero-terminated `.eh_frame` at this address.
    RegisterEhFrame {
        /// Address of the first record.
        addr: u64,
    },
    /// `__deregister_frame` of what `RegisterEhFrame` registered.
    DeregisterEhFrame {
        /// Address of the first record.
        addr: u64,
    },
    /// Registers a TLS image and writes its module id into every slot.
    RegisterTls {
        /// Address of the `.tdata` template.
        init: u64,
        /// Template size.
        init_size: u64,
        /// Block size (`.tdata` + `.tbss`).
        mem_size: u64,
        /// Block alignment.
        align: u64,
        /// GOT words that receive the module id.
        id_slots: Vec<u64>,
    },
    /// Deregisters the TLS module whose id is stored at `id_slot`.
    DeregisterTls {
        /// A word holding the module id.
        id_slot: u64,
    },
    /// Calls the IFUNC resolver and stores its result at `slot`.
    ResolveIfunc {
        /// The GOT word to fill.
        slot: u64,
        /// The resolver function.
        resolver: u64,
    },
    /// Copies one 64-bit word (a TLS module id from an earlier link into this one's GOT).
    CopyWord {
        /// Source address.
        from: u64,
        /// Destination address.
        to: u64,
    },
    /// Runs `.preinit_array`/`.init_array`/`.ctors` functions, in order.
    RunInitializers {
        /// Function addresses.
        fns: Vec<u64>,
    },
    /// Runs the exit handlers registered under `dso` (newest first), then the finalizers.
    RunFinalizers {
        /// The module's `__dso_handle`.
        dso: u64,
        /// `.fini_array`/`.dtors` functions in the order to call them.
        fns: Vec<u64>,
    },
}

impl AllocAction {
    /// Whether the action runs code of the inputs (a constructor or an IFUNC resolver), which
    /// may crash.
    pub fn runs_input_code(&self) -> bool {
        match self {
            AllocAction::ResolveIfunc { .. } => true,
            AllocAction::RunInitializers { fns } => !fns.is_empty(),
            _ => false,
        }
    }
}

/// A finalize action and the dealloc action that undoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocActionPair {
    /// Run when the allocation is finalized.
    pub finalize: AllocAction,
    /// Run (in reverse order of the pairs) when it is freed.
    pub dealloc: Option<AllocAction>,
}

/// Runs `action` in this process.
///
/// # Safety
/// The addresses in `action` must be the finalized JIT'd memory they claim to be.
pub unsafe fn run_in_process(action: &AllocAction) -> Result<()> {
    match action {
        AllocAction::RegisterEhFrame { addr } => {
            runtime::eh_frame::register(*addr).map_err(Error::Executor)?
        }
        AllocAction::DeregisterEhFrame { addr } => {
            runtime::eh_frame::deregister(*addr).map_err(Error::Executor)?
        }
        AllocAction::RegisterTls {
            init,
            init_size,
            mem_size,
            align,
            id_slots,
        } => {
            let id = runtime::tls::register_module(runtime::tls::TlsImage {
                init: *init as usize,
                init_size: *init_size as usize,
                mem_size: *mem_size as usize,
                align: *align as usize,
            });
            for slot in id_slots {
                (*slot as *mut u64).write_unaligned(id);
            }
        }
        AllocAction::DeregisterTls { id_slot } => {
            runtime::tls::deregister_module((*id_slot as *const u64).read_unaligned())
        }
        AllocAction::ResolveIfunc { slot, resolver } => {
            let f: extern "C" fn() -> u64 = std::mem::transmute(*resolver as usize);
            (*slot as *mut u64).write_unaligned(f());
        }
        AllocAction::CopyWord { from, to } => {
            (*to as *mut u64).write_unaligned((*from as *const u64).read_unaligned())
        }
        AllocAction::RunInitializers { fns } => runtime::init::run_initializers(fns),
        AllocAction::RunFinalizers { dso, fns } => {
            runtime::exit::run_exit_handlers(Some(*dso));
            runtime::init::run_finalizers(fns);
        }
    }
    Ok(())
}
