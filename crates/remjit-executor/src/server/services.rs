//! The services behind the bootstrap symbols: LLVM 19's (dylib manager, memory manager, memory
//! writes, eh_frame registration, run-as-main) and remjit's runtime (TLS, constructors, exit).
//! Each takes SPS argument bytes and returns SPS result bytes; none trusts its input.

use std::collections::HashMap;
use std::ffi::{c_int, c_void, CString};

use remjit_wire::names;
use remjit_wire::sps::{Bytes, Expected, Sps, SpsError};
use remjit_wire::types::{
    AddrRange, AllocActionCallPair, ExecutorSymbolDef, FinalizeRequest, LookupElement,
    SharedMemoryFinalizeRequest, WrapperFunctionCall,
};

use super::memory::Memory;
use crate::runtime;

/// A wrapper-function call to run later (a dealloc action).
#[derive(Debug, Clone)]
pub struct Action {
    /// The service's tag.
    pub function: u64,
    /// SPS arguments.
    pub args: Vec<u8>,
}

/// A service: SPS arguments in, SPS result out.
pub type Handler = fn(&Services, &[u8]) -> Vec<u8>;

/// Whether a call may block for long (it then runs on a thread of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Quick: answered on the reader thread.
    Quick,
    /// Runs JIT'd code (on a pool thread, with the program's signal mask).
    Runs,
    /// Runs `main` (on a pool thread, as if on a fresh main thread: see `run_main_thread`).
    Main,
}

/// The executor's services and their state.
pub struct Services {
    /// JIT memory.
    pub memory: Memory,
    table: HashMap<u64, (Handler, Kind, &'static str)>,
    /// Bootstrap symbols: name -> tag.
    pub symbols: Vec<(String, u64)>,
    /// Handles `dylib_open` returned: the only ones `dylib_lookup` accepts.
    dylibs: std::sync::Mutex<std::collections::HashSet<u64>>,
}

fn err(msg: impl Into<String>) -> Vec<u8> {
    SpsError(Some(msg.into())).to_bytes()
}

pub(crate) fn decode<T: Sps>(args: &[u8], what: &str) -> Result<T, String> {
    T::from_bytes(args).map_err(|e| format!("{what}: malformed arguments: {e}"))
}

static DISPATCH_CTX: u64 = 0;

impl Services {
    /// All services.
    pub fn new() -> Services {
        let mut s = Services {
            memory: Memory::default(),
            table: HashMap::new(),
            symbols: Vec::new(),
            dylibs: Default::default(),
        };
        use Kind::*;
        let entries: &[(&'static str, Handler, Kind)] = &[
            (names::DISPATCH_FN, Services::dispatch_fn, Quick),
            (names::DYLIB_MANAGER_OPEN, Services::dylib_open, Quick),
            (names::DYLIB_MANAGER_LOOKUP, Services::dylib_lookup, Quick),
            (names::MEMORY_MANAGER_RESERVE, Services::mm_reserve, Quick),
            (names::MEMORY_MANAGER_FINALIZE, Services::mm_finalize, Runs),
            (
                names::MEMORY_MANAGER_DEALLOCATE,
                Services::mm_deallocate,
                Runs,
            ),
            (names::MEM_WRITE_UINT8S, Services::write_u8s, Quick),
            (names::MEM_WRITE_UINT16S, Services::write_u16s, Quick),
            (names::MEM_WRITE_UINT32S, Services::write_u32s, Quick),
            (names::MEM_WRITE_UINT64S, Services::write_u64s, Quick),
            (names::MEM_WRITE_BUFFERS, Services::write_buffers, Quick),
            (names::REGISTER_EH_FRAME, Services::register_eh_frame, Quick),
            (
                names::DEREGISTER_EH_FRAME,
                Services::deregister_eh_frame,
                Quick,
            ),
            (
                names::REGISTER_EH_FRAME_ALT,
                Services::register_eh_frame,
                Quick,
            ),
            (
                names::DEREGISTER_EH_FRAME_ALT,
                Services::deregister_eh_frame,
                Quick,
            ),
            (names::RUN_AS_MAIN, Services::run_as_main, Main),
            (names::RUN_AS_VOID, Services::run_as_void, Runs),
            (names::RUN_AS_INT, Services::run_as_int, Runs),
            (names::REMJIT_REGISTER_TLS, Services::register_tls, Quick),
            (
                names::REMJIT_DEREGISTER_TLS,
                Services::deregister_tls,
                Quick,
            ),
            (names::REMJIT_RESOLVE_IFUNC, Services::resolve_ifunc, Runs),
            (names::REMJIT_COPY_WORD, Services::copy_word, Quick),
            (names::REMJIT_RESERVE_AT, Services::reserve_at, Quick),
            (
                names::REMJIT_RUN_INITIALIZERS,
                Services::run_initializers,
                Runs,
            ),
            (names::REMJIT_RUN_FINALIZERS, Services::run_finalizers, Runs),
            (names::REMJIT_SET_ARGS, Services::set_args, Quick),
            (names::REMJIT_RUN_EXIT, Services::run_exit, Runs),
            (names::REMJIT_RUN_MAIN, Services::run_main, Main),
            (names::REMJIT_READ_MEMORY, Services::read_memory, Quick),
            (names::REMJIT_WRITE_MEMORY, Services::write_memory, Quick),
            (names::REMJIT_CALL, Services::call, Runs),
            (names::SHM_RESERVE, super::shm::shm_reserve, Quick),
            (names::SHM_INITIALIZE, super::shm::shm_initialize, Runs),
            (names::SHM_DEINITIALIZE, super::shm::shm_deinitialize, Runs),
            (names::SHM_RELEASE, super::shm::shm_release, Runs),
            (names::REMJIT_MAP_FILES, super::shm::map_files, Quick),
            (names::REMJIT_PACK, super::shm::pack, Quick),
            (
                names::REMJIT_RESTORE_SHARED,
                super::shm::restore_shared,
                Quick,
            ),
            (
                names::REMJIT_MEMFD_RESERVE,
                super::shm::memfd_reserve,
                Quick,
            ),
            (names::GDB_JIT_REGISTER, Services::gdb_register, Quick),
            (
                names::GDB_JIT_REGISTER_ACTION,
                Services::gdb_register,
                Quick,
            ),
            (
                names::REMJIT_GDB_REGISTER,
                super::debug::gdb_register,
                Quick,
            ),
            (
                names::REMJIT_GDB_DEREGISTER,
                super::debug::gdb_deregister,
                Quick,
            ),
            (names::REMJIT_PERF_RECORD, super::debug::perf_record, Quick),
            (
                names::REMJIT_WAIT_FOR_DEBUGGER,
                super::debug::wait_for_debugger,
                Runs,
            ),
        ];
        for &(name, h, kind) in entries {
            // The handler's own address is its tag: unique, and meaningful to nobody else.
            let tag = h as *const () as u64;
            s.table.entry(tag).or_insert((h, kind, name));
            s.symbols.push((name.to_string(), tag));
        }
        let instance = &DISPATCH_CTX as *const u64 as u64;
        for name in [
            names::DISPATCH_CTX,
            names::DYLIB_MANAGER_INSTANCE,
            names::MEMORY_MANAGER_INSTANCE,
            names::SHM_INSTANCE,
        ] {
            s.symbols.push((name.to_string(), instance));
        }
        s.symbols.push((
            names::REMJIT_TLSDESC_RESOLVER.to_string(),
            runtime::tls::tlsdesc_resolver_address(),
        ));
        s
    }

    /// The handler for a tag.
    pub fn lookup(&self, tag: u64) -> Option<(Handler, Kind, &'static str)> {
        self.table.get(&tag).copied()
    }

    /// Runs an action (finalize or dealloc) by tag.
    pub fn run_action(&self, call: &WrapperFunctionCall) -> Result<(), String> {
        if call.function == 0 {
            return Ok(());
        }
        let (h, _, name) = self.lookup(call.function).ok_or_else(|| {
            format!(
                "action names no service of this executor: {:#x}",
                call.function
            )
        })?;
        let out = h(self, &call.args.0);
        SpsError::from_bytes(&out)
            .map_err(|e| format!("{name}: bad result: {e}"))?
            .into_result()
    }

    /// Runs finalize actions in order; on failure, undoes the ones that ran. Returns the dealloc
    /// actions to keep.
    pub fn run_finalize_actions(
        &self,
        actions: &[AllocActionCallPair],
    ) -> Result<Vec<Action>, String> {
        let mut dealloc = Vec::new();
        for a in actions {
            if let Err(e) = self.run_action(&a.finalize) {
                for d in dealloc.iter().rev() {
                    let d: &Action = d;
                    let _ = self.run_action(&WrapperFunctionCall {
                        function: d.function,
                        args: Bytes(d.args.clone()),
                    });
                }
                return Err(e);
            }
            if a.dealloc.function != 0 {
                dealloc.push(Action {
                    function: a.dealloc.function,
                    args: a.dealloc.args.0.clone(),
                });
            }
        }
        Ok(dealloc)
    }

    /// Runs dealloc actions newest first; returns the first error.
    pub fn run_dealloc_actions(&self, actions: &[Action]) -> Result<(), String> {
        let mut first = Ok(());
        for d in actions.iter().rev() {
            let r = self.run_action(&WrapperFunctionCall {
                function: d.function,
                args: Bytes(d.args.clone()),
            });
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// LLVM's debugger registration (`SPSError(SPSExecutorAddrRange, bool)`): the debug object
    /// lies in JIT memory already; it is registered where it is.
    fn gdb_register(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let (range, _auto): (AddrRange, bool) = decode(args, "GDB JIT registration")?;
            let size = range
                .end
                .checked_sub(range.start)
                .ok_or("empty debug object range")?;
            self.memory.check(range.start, size)?;
            runtime::jit_debug::register_in_place(range.start, size);
            Ok(())
        })();
        SpsError::from(r).to_bytes()
    }

    fn dispatch_fn(&self, _: &[u8]) -> Vec<u8> {
        err("remjit-executor does not dispatch calls to the controller")
    }

    /// The main program's handle (what the dylib manager's open of the empty path returns),
    /// now known to lookups.
    pub fn process_handle(&self) -> Result<u64, String> {
        // SAFETY: dlopen of the main program, which is loaded.
        let h = unsafe { libc::dlopen(std::ptr::null(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if h.is_null() {
            return Err(format!("cannot open the main program: {}", dlerror()));
        }
        if let Ok(mut d) = self.dylibs.lock() {
            d.insert(h as u64);
        }
        Ok(h as u64)
    }

    fn dylib_open(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let (_, path, _mode): (u64, String, u64) = decode(args, "dylib open")?;
            if path.is_empty() {
                return self.process_handle();
            }
            let c = CString::new(path.clone()).map_err(|_| "path contains NUL")?;
            // SAFETY: dlopen of a library the user named (its constructors run, as intended).
            let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if h.is_null() {
                return Err(format!("cannot load {path}: {}", dlerror()));
            }
            if let Ok(mut d) = self.dylibs.lock() {
                d.insert(h as u64);
            }
            Ok(h as u64)
        })();
        Expected(r).to_bytes()
    }

    fn dylib_lookup(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let (_, handle, names): (u64, u64, Vec<LookupElement>) = decode(args, "dylib lookup")?;
            let known = handle == 0 || self.dylibs.lock().is_ok_and(|d| d.contains(&handle));
            if !known {
                return Err(format!(
                    "dylib lookup: {handle:#x} is no handle this executor's dylib open returned"
                ));
            }
            let mut out = Vec::with_capacity(names.len());
            let mut missing = Vec::new();
            for n in &names {
                // Our services first: LLVM controllers look some of them up as process symbols.
                let service = self.symbols.iter().find(|(s, _)| *s == n.name).map(|s| s.1);
                let addr = service.unwrap_or_else(|| {
                    CString::new(n.name.as_str())
                        .map(|c| {
                            // SAFETY: dlsym on a handle from dylib_open (or the default scope).
                            unsafe {
                                let h = if handle == 0 {
                                    libc::RTLD_DEFAULT
                                } else {
                                    handle as *mut c_void
                                };
                                libc::dlsym(h, c.as_ptr()) as u64
                            }
                        })
                        .unwrap_or(0)
                });
                if addr == 0 && n.required {
                    missing.push(n.name.clone());
                }
                let mut flags = remjit_wire::types::symbol_flags::EXPORTED;
                if addr != 0 && !is_data_at(addr) {
                    flags |= remjit_wire::types::symbol_flags::CALLABLE;
                }
                out.push(ExecutorSymbolDef {
                    addr,
                    flags,
                    target_flags: 0,
                });
            }
            if !missing.is_empty() {
                return Err(format!("Symbols not found: [ {} ]", missing.join(", ")));
            }
            Ok(out)
        })();
        Expected(r).to_bytes()
    }

    fn mm_reserve(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let (_, size): (u64, u64) = decode(args, "reserve")?;
            if size == 0 || size > 1 << 40 {
                return Err(format!("cannot reserve {size} bytes"));
            }
            let base = self.memory.reserve(size)?;
            let len = self.memory.with_range(base, |r| r.size)?;
            self.memory.mark_unfinalized(base);
            self.memory.note_prot(base, len, 3);
            // LLVM's memory manager hands out writable memory.
            // SAFETY: a range of our own reservation.
            if unsafe {
                libc::mprotect(
                    base as *mut c_void,
                    len as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            } != 0
            {
                return Err(format!("mprotect: {}", std::io::Error::last_os_error()));
            }
            Ok(base)
        })();
        Expected(r).to_bytes()
    }

    fn mm_finalize(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let (_, req): (u64, FinalizeRequest) = decode(args, "finalize")?;
            let base = req
                .segments
                .iter()
                .map(|s| s.addr)
                .min()
                .ok_or("finalization request is empty")?;
            // Check everything before touching anything.
            for s in &req.segments {
                if (s.content.0.len() as u64) > s.size {
                    return Err(format!(
                        "segment at {:#x}: content larger than segment",
                        s.addr
                    ));
                }
                self.memory.check_writable(s.addr, s.size)?;
            }
            for s in &req.segments {
                // SAFETY: checked to lie in memory we handed out, writable (since reserve).
                unsafe {
                    let p = s.addr as *mut u8;
                    std::ptr::copy_nonoverlapping(s.content.0.as_ptr(), p, s.content.0.len());
                    std::ptr::write_bytes(
                        p.add(s.content.0.len()),
                        0,
                        (s.size - s.content.0.len() as u64) as usize,
                    );
                }
                self.protect(s.addr, s.size, s.prot)?;
            }
            self.memory.mark_finalized(base);
            let dealloc = self.run_finalize_actions(&req.actions)?;
            let range = self.memory.check(base, 1)?;
            self.memory
                .with_range(range, |r| r.dealloc.push((base, dealloc)))?;
            Ok(())
        })();
        SpsError::from(r).to_bytes()
    }

    fn mm_deallocate(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let (_, bases): (u64, Vec<u64>) = decode(args, "deallocate")?;
            let mut first = Ok(());
            for base in bases {
                let range = self.memory.check(base, 1)?;
                let actions = self
                    .memory
                    .with_range(range, |r| std::mem::take(&mut r.dealloc))?;
                for (_, a) in actions.iter().rev() {
                    let r = self.run_dealloc_actions(a);
                    if first.is_ok() {
                        first = r;
                    }
                }
                self.memory.release(range)?;
            }
            first
        })();
        SpsError::from(r).to_bytes()
    }

    fn write_ints<T: Sps + Copy>(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let writes: Vec<(u64, T)> = decode(args, "memory write")?;
            let n = std::mem::size_of::<T>() as u64;
            for (addr, _) in &writes {
                self.memory.check_writable(*addr, n)?;
            }
            for (addr, v) in writes {
                // SAFETY: checked to lie in JIT memory; the controller owns its contents.
                unsafe { (addr as *mut T).write_unaligned(v) };
            }
            Ok(())
        })();
        SpsError::from(r).to_bytes()
    }
    fn write_u8s(&self, a: &[u8]) -> Vec<u8> {
        self.write_ints::<u8>(a)
    }
    fn write_u16s(&self, a: &[u8]) -> Vec<u8> {
        self.write_ints::<u16>(a)
    }
    fn write_u32s(&self, a: &[u8]) -> Vec<u8> {
        self.write_ints::<u32>(a)
    }
    fn write_u64s(&self, a: &[u8]) -> Vec<u8> {
        self.write_ints::<u64>(a)
    }

    fn write_buffers(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let writes: Vec<(u64, Bytes)> = decode(args, "buffer write")?;
            for (addr, b) in &writes {
                self.memory.check_writable(*addr, b.0.len() as u64)?;
            }
            for (addr, b) in writes {
                // SAFETY: checked to lie in JIT memory.
                unsafe { std::ptr::copy_nonoverlapping(b.0.as_ptr(), addr as *mut u8, b.0.len()) };
            }
            Ok(())
        })();
        SpsError::from(r).to_bytes()
    }

    fn register_eh_frame(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let range: AddrRange = decode(args, "eh_frame registration")?;
            self.memory
                .check(range.start, range.end.saturating_sub(range.start).max(4))?;
            // SAFETY: a finalized .eh_frame in our memory.
            unsafe { runtime::eh_frame::register(range.start) }
        })();
        SpsError::from(r).to_bytes()
    }

    fn deregister_eh_frame(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let range: AddrRange = decode(args, "eh_frame deregistration")?;
            self.memory.check(range.start, 4)?;
            // SAFETY: deregister refuses what register_eh_frame did not register; that one is
            // in our memory (checked above).
            unsafe { runtime::eh_frame::deregister(range.start) }
        })();
        SpsError::from(r).to_bytes()
    }

    /// Code to call: in finalized executable memory this executor handed out.
    fn code(&self, addr: u64) -> Result<(), String> {
        self.memory.check(addr, 1)?;
        if !self.memory.is_executable(addr) {
            return Err(runtime::access::not_code(addr));
        }
        Ok(())
    }

    /// An entry point: in our memory, and run only once the code it may call has arrived.
    fn entry(&self, addr: u64) -> Result<(), String> {
        self.memory.check(addr, 1)?;
        self.memory
            .wait_for_pending(std::time::Duration::from_secs(10));
        self.code(addr)
    }

    /// mprotect, and the memory map remembers it (to refuse calls and writes it would fault).
    /// A segment in a pack area of its protection needs no mprotect: the map remembers
    /// exactly its bytes (the rest of its pages belong to other links).
    fn protect(&self, addr: u64, size: u64, prot: u8) -> Result<(), String> {
        if size == 0 {
            return Ok(());
        }
        match self.memory.pack_area_bits(addr, size) {
            Some(bits) if bits == prot => {
                self.memory.note_prot_exact(addr, size, prot);
                return Ok(());
            }
            Some(bits) => {
                return Err(format!(
                    "segment at {addr:#x} lies in a pack area of protection {bits} instead of \
                     {prot}"
                ))
            }
            None => {}
        }
        protect(addr, size, prot)?;
        self.memory.note_prot(addr, size, prot);
        Ok(())
    }

    fn run_as_main(&self, args: &[u8]) -> Vec<u8> {
        let Ok((addr, argv)) = decode::<(u64, Vec<String>)>(args, "run_as_main") else {
            return (-1i64).to_bytes();
        };
        if let Err(e) = self.entry(addr) {
            return refused("run_as_main", e, -1i64);
        }
        runtime::init::set_program_args(&argv);
        i64::from(run_main_thread(addr)).to_bytes()
    }

    fn run_main(&self, args: &[u8]) -> Vec<u8> {
        let Ok(addr) = decode::<u64>(args, "run_main") else {
            return (-1i64).to_bytes();
        };
        if let Err(e) = self.code(addr) {
            return refused("run_main", e, -1i64);
        }
        i64::from(run_main_thread(addr)).to_bytes()
    }

    fn run_as_void(&self, args: &[u8]) -> Vec<u8> {
        let Ok(addr) = decode::<u64>(args, "run_as_void") else {
            return (-1i32).to_bytes();
        };
        if let Err(e) = self.entry(addr) {
            return refused("run_as_void", e, -1i32);
        }
        // SAFETY: a void(void) function of JIT'd code.
        unsafe { runtime::init::run_finalizers(&[addr]) };
        0i32.to_bytes()
    }

    fn run_as_int(&self, args: &[u8]) -> Vec<u8> {
        let Ok((addr, arg)) = decode::<(u64, i32)>(args, "run_as_int") else {
            return (-1i32).to_bytes();
        };
        if let Err(e) = self.entry(addr) {
            return refused("run_as_int", e, -1i32);
        }
        // SAFETY: an int(int) function of JIT'd code.
        let f: extern "C" fn(c_int) -> c_int = unsafe { std::mem::transmute(addr as usize) };
        f(arg).to_bytes()
    }

    /// An embedder's read: JIT memory must be readable now; anything else mapped readable
    /// (the heap, libraries) is read without risk of a fault.
    fn read_memory(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let (addr, len): (u64, u64) = decode(args, "read_memory")?;
            runtime::access::check_size("read", len)?;
            if self.memory.is_handed_out(addr) {
                self.memory.check_readable(addr, len)?;
            }
            runtime::access::read(addr, len).map(Bytes)
        })();
        Expected(r).to_bytes()
    }

    /// An embedder's write: only JIT memory handed out and writable now.
    fn write_memory(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let (addr, bytes): (u64, Bytes) = decode(args, "write_memory")?;
            runtime::access::check_size("write", bytes.0.len() as u64)?;
            self.memory.check_writable(addr, bytes.0.len() as u64)?;
            // SAFETY: checked to be writable JIT memory; the controller owns its contents.
            unsafe { runtime::access::write(addr, &bytes.0) };
            Ok(())
        })();
        SpsError::from(r).to_bytes()
    }

    /// An embedder's call of JIT'd code with integer and floating-point arguments.
    fn call(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let (addr, list): (u64, Vec<(u8, u64)>) = decode(args, "call")?;
            runtime::call::check_args(&list)?;
            self.code(addr)?;
            // SAFETY: finalized JIT'd code; the controller vouches for its signature.
            let regs = unsafe { runtime::call::call(addr, &list) }?;
            Ok((regs.rax, regs.xmm0))
        })();
        Expected(r).to_bytes()
    }

    fn register_tls(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let (init, init_size, mem_size, align, slots): (u64, u64, u64, u64, Vec<u64>) =
                decode(args, "register_tls")?;
            self.memory.check(init, init_size.max(1))?;
            for s in &slots {
                self.memory.check(*s, 8)?;
            }
            if mem_size > 1 << 30 || align == 0 || !align.is_power_of_two() || align > 1 << 16 {
                return Err("implausible TLS image".into());
            }
            let id = runtime::tls::register_module(runtime::tls::TlsImage {
                init: init as usize,
                init_size: init_size as usize,
                mem_size: mem_size as usize,
                align: align as usize,
            });
            for s in slots {
                // SAFETY: checked to be JIT memory (GOT words).
                unsafe { (s as *mut u64).write_unaligned(id) };
            }
            Ok(())
        })();
        SpsError::from(r).to_bytes()
    }

    fn deregister_tls(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let slot: u64 = decode(args, "deregister_tls")?;
            self.memory.check(slot, 8)?;
            // SAFETY: a GOT word written by register_tls.
            runtime::tls::deregister_module(unsafe { (slot as *const u64).read_unaligned() });
            Ok(())
        })();
        SpsError::from(r).to_bytes()
    }

    fn resolve_ifunc(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let (slot, resolver): (u64, u64) = decode(args, "resolve_ifunc")?;
            self.memory.check(slot, 8)?;
            self.code(resolver)?;
            // SAFETY: an IFUNC resolver of JIT'd code; the slot is a GOT word.
            unsafe {
                let f: extern "C" fn() -> u64 = std::mem::transmute(resolver as usize);
                (slot as *mut u64).write_unaligned(f());
            }
            Ok(())
        })();
        SpsError::from(r).to_bytes()
    }

    fn copy_word(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let (from, to): (u64, u64) = decode(args, "copy_word")?;
            self.memory.check(from, 8)?;
            self.memory.check(to, 8)?;
            // SAFETY: both checked to be JIT memory.
            unsafe { (to as *mut u64).write_unaligned((from as *const u64).read_unaligned()) };
            Ok(())
        })();
        SpsError::from(r).to_bytes()
    }

    fn functions(&self, fns: &[u64]) -> Result<(), String> {
        fns.iter().try_for_each(|&f| self.code(f))
    }

    fn run_initializers(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let fns: Vec<u64> = decode(args, "run_initializers")?;
            self.functions(&fns)?;
            // SAFETY: constructors of a finalized module.
            unsafe { runtime::init::run_initializers(&fns) };
            Ok(())
        })();
        SpsError::from(r).to_bytes()
    }

    fn run_finalizers(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let (dso, fns): (u64, Vec<u64>) = decode(args, "run_finalizers")?;
            self.functions(&fns)?;
            runtime::exit::run_exit_handlers(Some(dso));
            // SAFETY: destructors of a finalized module.
            unsafe { runtime::init::run_finalizers(&fns) };
            Ok(())
        })();
        SpsError::from(r).to_bytes()
    }

    fn reserve_at(&self, args: &[u8]) -> Vec<u8> {
        let r = decode::<u64>(args, "reserve_at").and_then(|a| self.memory.reserve_next_at(a));
        SpsError::from(r).to_bytes()
    }

    fn set_args(&self, args: &[u8]) -> Vec<u8> {
        let r = decode::<Vec<String>>(args, "set_program_args").map(|a| {
            runtime::init::set_program_args(&a);
        });
        SpsError::from(r).to_bytes()
    }

    fn run_exit(&self, args: &[u8]) -> Vec<u8> {
        let r = (|| {
            let fns: Vec<u64> = decode(args, "run_exit")?;
            self.functions(&fns)?;
            runtime::exit::run_exit_handlers(None);
            // SAFETY: destructors of finalized modules.
            unsafe { runtime::init::run_finalizers(&fns) };
            // JIT'd code wrote through stdio buffers of this process.
            // SAFETY: fflush(NULL) flushes every stream.
            unsafe { libc::fflush(std::ptr::null_mut()) };
            Ok(())
        })();
        SpsError::from(r).to_bytes()
    }

    /// Runs an SPS-encoded shared-memory initialize (used by the shm module).
    pub fn finalize_shared(
        &self,
        base: u64,
        req: &SharedMemoryFinalizeRequest,
    ) -> Result<(), String> {
        for s in &req.segments {
            self.memory.check(s.addr, s.size)?;
        }
        for s in &req.segments {
            self.protect(s.addr, s.size, s.prot)?;
        }
        let dealloc = self.run_finalize_actions(&req.actions)?;
        let range = self.memory.check(base, 1)?;
        self.memory
            .with_range(range, |r| r.dealloc.push((base, dealloc)))?;
        Ok(())
    }
}

impl Default for Services {
    fn default() -> Self {
        Self::new()
    }
}

/// The reply to a run call refused before running anything: LLVM's signatures carry only a
/// status, so the reason goes to stderr.
fn refused<T: Sps>(what: &str, why: String, status: T) -> Vec<u8> {
    eprintln!("remjit-executor: {what}: {why}");
    status.to_bytes()
}

/// Runs `main` on the calling thread (a call thread of the executor: a main-sized stack and
/// an alternate signal stack), with the program's signal mask. Its thread-locals' destructors
/// run before this returns (as `exit` runs the main thread's), so before the controller hears
/// that `main` returned and asks for the exit handlers; see [`runtime::call_thread`].
fn run_main_thread(addr: u64) -> i32 {
    let _mask = crate::signals::ProgramMask::enter();
    // SAFETY: an address in finalized JIT'd memory, called as main.
    unsafe { runtime::call_thread::run_main_here(addr) }
}

/// mprotect with LLVM's protection bits.
pub fn protect(addr: u64, size: u64, prot: u8) -> Result<(), String> {
    if size == 0 {
        return Ok(());
    }
    let mut p = 0;
    if prot & 1 != 0 {
        p |= libc::PROT_READ;
    }
    if prot & 2 != 0 {
        p |= libc::PROT_WRITE;
    }
    if prot & 4 != 0 {
        p |= libc::PROT_EXEC;
    }
    let page = rustix::param::page_size() as u64;
    let start = addr & !(page - 1);
    let len = (addr + size).div_ceil(page) * page - start;
    // SAFETY: the caller checked the range is JIT memory of ours.
    if unsafe { libc::mprotect(start as *mut c_void, len as usize, p) } != 0 {
        return Err(format!(
            "mprotect {addr:#x}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn dlerror() -> String {
    // SAFETY: dlerror returns a thread-local message or null.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown error".into()
        } else {
            std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// `ElfW(Sym)` as `dladdr1(RTLD_DL_SYMENT)` returns it.
#[repr(C)]
struct DlSym {
    st_name: u32,
    st_info: u8,
    st_other: u8,
    st_shndx: u16,
    st_value: u64,
    st_size: u64,
}

extern "C" {
    fn dladdr1(
        addr: *const c_void,
        info: *mut libc::Dl_info,
        extra: *mut *mut c_void,
        flags: c_int,
    ) -> c_int;
}

/// Whether the symbol at `addr` is data (`STT_OBJECT`, `STT_COMMON`, `STT_TLS`).
///
/// Most answers come from the segment holding `addr` (one walk over the loaded objects'
/// program headers): in a segment that cannot execute it is data; in an executable one of an
/// object laid out with separate code (a read-only segment of its own for `.rodata`, as ld
/// does by default on x86-64) it is code. Otherwise (old layouts, thread-local symbols, which
/// lie in no segment) the symbol table tells, through `dladdr1`, which searches it linearly
/// (about 1 µs per symbol of libc: 1 ms for sqlite's externals).
pub fn is_data_at(addr: u64) -> bool {
    match segment_kind(addr) {
        Some(SegmentKind::Data) => true,
        Some(SegmentKind::SeparateCode) => false,
        None => symbol_is_data(addr),
    }
}

/// What the segment holding an address says about the symbol there.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SegmentKind {
    /// Not executable.
    Data,
    /// Executable, in an object whose read-only data has a segment of its own.
    SeparateCode,
}

/// The kind of the loaded segment holding `addr`; `None` when it is executable in an object
/// without separate code, or in no loaded object.
fn segment_kind(addr: u64) -> Option<SegmentKind> {
    struct Search {
        addr: u64,
        found: Option<SegmentKind>,
    }
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: the loader hands a valid info with `dlpi_phnum` headers at `dlpi_phdr`, and
        // `data` is the Search below, alive for the whole walk.
        let (info, search) = unsafe { (&*info, &mut *(data as *mut Search)) };
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: as above.
        let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
        let loads = || headers.iter().filter(|h| h.p_type == libc::PT_LOAD);
        let Some(seg) = loads().find(|h| {
            let start = info.dlpi_addr.wrapping_add(h.p_vaddr);
            search.addr >= start && search.addr - start < h.p_memsz
        }) else {
            return 0;
        };
        let read_only = |h: &libc::Elf64_Phdr| h.p_flags & (libc::PF_X | libc::PF_W) == 0;
        search.found = if seg.p_flags & libc::PF_X == 0 {
            Some(SegmentKind::Data)
        } else if loads().any(read_only) {
            Some(SegmentKind::SeparateCode)
        } else {
            None
        };
        1
    }
    let mut search = Search { addr, found: None };
    // SAFETY: the callback only reads the headers and writes `search`.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut Search as *mut c_void) };
    search.found
}

/// Whether the symbol nearest below `addr` in the symbol table of its object is data.
fn symbol_is_data(addr: u64) -> bool {
    // SAFETY: dladdr1 only reads the loader's tables.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let mut sym: *mut c_void = std::ptr::null_mut();
        if dladdr1(addr as *const c_void, &mut info, &mut sym, 1) == 0 || sym.is_null() {
            return false;
        }
        let ty = (*(sym as *const DlSym)).st_info & 0xf;
        ty == 1 || ty == 5 || ty == 6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The segment walk answers as the symbol table does, for libc's functions and data.
    #[test]
    fn data_and_functions_of_libc() {
        for (name, data) in [
            (c"printf", false),
            (c"malloc", false),
            (c"qsort", false),
            (c"stdout", true),
            (c"optind", true),
            (c"environ", true),
        ] {
            // SAFETY: dlsym of a NUL-terminated name in the default scope.
            let addr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as u64;
            assert_ne!(addr, 0, "{name:?}");
            assert_eq!(is_data_at(addr), data, "{name:?}");
            assert_eq!(symbol_is_data(addr), data, "{name:?} by the symbol table");
            assert!(
                segment_kind(addr).is_some(),
                "{name:?}: libc has separate code"
            );
        }
    }

    fn expected<T: Sps>(reply: &[u8]) -> Result<T, String> {
        Expected::<T>::from_bytes(reply).unwrap().0
    }

    /// The embedder services take nothing on trust: malformed arguments, memory never made
    /// accessible, data called as code, sizes and argument counts over the caps.
    #[test]
    fn embedder_services_refuse_hostile_requests() {
        let s = Services::new();
        let read = |addr: u64, len: u64| expected::<Bytes>(&s.read_memory(&(addr, len).to_bytes()));
        let base = s.memory.reserve(8192).unwrap();
        assert_eq!(
            read(base, 16).unwrap_err(),
            format!(
                "{base:#x}..{:#x} is not readable (reserved but never made accessible)",
                base + 16
            )
        );
        s.protect(base, 4096, 3).unwrap();
        let write = |addr: u64, b: &[u8]| {
            let reply = s.write_memory(&(addr, Bytes(b.to_vec())).to_bytes());
            SpsError::from_bytes(&reply).unwrap().into_result()
        };
        write(base + 8, &[1, 2, 3]).unwrap();
        assert_eq!(read(base + 8, 4).unwrap().0, [1, 2, 3, 0]);
        assert_eq!(
            write(base + 4094, &[0; 4]).unwrap_err(),
            format!(
                "{:#x}..{:#x} is not writable (finalized read-only or executable, or never \
                 made accessible)",
                base + 4094,
                base + 4098
            )
        );
        assert_eq!(
            write(u64::MAX - 1, &[0; 4]).unwrap_err(),
            format!("range {:#x}+0x4 overflows", u64::MAX - 1)
        );
        let call = |a: &[u8]| expected::<(u64, u64)>(&s.call(a));
        assert_eq!(
            call(&(base, Vec::<(u8, u64)>::new()).to_bytes()).unwrap_err(),
            format!("{base:#x} is not in finalized executable memory; refusing to call it")
        );
        assert_eq!(
            call(&(base, vec![(0u8, 0u64); 17]).to_bytes()).unwrap_err(),
            "17 arguments refused: at most 16"
        );
        assert!(call(&[1, 2, 3])
            .unwrap_err()
            .starts_with("call: malformed arguments"));
        assert!(read(0, u64::MAX).unwrap_err().starts_with("read of "));
        s.memory.release(base).unwrap();
    }
}
