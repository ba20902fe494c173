//! The names under which an executor publishes its services (LLVM 19's OrcRTBridge.cpp and
//! SimpleRemoteEPCServer), and remjit's own additions.

/// Dispatch context for calls from the executor to the controller.
pub const DISPATCH_CTX: &str = "__llvm_orc_SimpleRemoteEPC_dispatch_ctx";
/// Dispatch function for calls from the executor to the controller.
pub const DISPATCH_FN: &str = "__llvm_orc_SimpleRemoteEPC_dispatch_fn";

/// Dylib manager instance.
pub const DYLIB_MANAGER_INSTANCE: &str = "__llvm_orc_SimpleExecutorDylibManager_Instance";
/// `Expected<handle>(instance, path, mode)`.
pub const DYLIB_MANAGER_OPEN: &str = "__llvm_orc_SimpleExecutorDylibManager_open_wrapper";
/// `Expected<seq<ExecutorSymbolDef>>(instance, handle, seq<LookupElement>)`.
pub const DYLIB_MANAGER_LOOKUP: &str = "__llvm_orc_SimpleExecutorDylibManager_lookup_wrapper";

/// Copy-over-the-wire memory manager instance.
pub const MEMORY_MANAGER_INSTANCE: &str = "__llvm_orc_SimpleExecutorMemoryManager_Instance";
/// `Expected<addr>(instance, size)`.
pub const MEMORY_MANAGER_RESERVE: &str = "__llvm_orc_SimpleExecutorMemoryManager_reserve_wrapper";
/// `Error(instance, FinalizeRequest)`.
pub const MEMORY_MANAGER_FINALIZE: &str = "__llvm_orc_SimpleExecutorMemoryManager_finalize_wrapper";
/// `Error(instance, seq<addr>)`.
pub const MEMORY_MANAGER_DEALLOCATE: &str =
    "__llvm_orc_SimpleExecutorMemoryManager_deallocate_wrapper";

/// Shared-memory mapper service instance.
pub const SHM_INSTANCE: &str = "__llvm_orc_ExecutorSharedMemoryMapperService_Instance";
/// `Expected<(addr, name)>(instance, size)`.
pub const SHM_RESERVE: &str = "__llvm_orc_ExecutorSharedMemoryMapperService_Reserve";
/// `Expected<addr>(instance, reservation, SharedMemoryFinalizeRequest)`.
pub const SHM_INITIALIZE: &str = "__llvm_orc_ExecutorSharedMemoryMapperService_Initialize";
/// `Error(instance, seq<addr>)`.
pub const SHM_DEINITIALIZE: &str = "__llvm_orc_ExecutorSharedMemoryMapperService_Deinitialize";
/// `Error(instance, seq<addr>)`.
pub const SHM_RELEASE: &str = "__llvm_orc_ExecutorSharedMemoryMapperService_Release";

/// `Error(seq<(addr, u8)>)` and friends: memory writes.
pub const MEM_WRITE_UINT8S: &str = "__llvm_orc_bootstrap_mem_write_uint8s_wrapper";
/// 16-bit writes.
pub const MEM_WRITE_UINT16S: &str = "__llvm_orc_bootstrap_mem_write_uint16s_wrapper";
/// 32-bit writes.
pub const MEM_WRITE_UINT32S: &str = "__llvm_orc_bootstrap_mem_write_uint32s_wrapper";
/// 64-bit writes.
pub const MEM_WRITE_UINT64S: &str = "__llvm_orc_bootstrap_mem_write_uint64s_wrapper";
/// Buffer writes.
pub const MEM_WRITE_BUFFERS: &str = "__llvm_orc_bootstrap_mem_write_buffers_wrapper";

/// `Error(AddrRange)`: register an `.eh_frame` (bootstrap name).
pub const REGISTER_EH_FRAME: &str = "__llvm_orc_bootstrap_register_ehframe_section_wrapper";
/// Deregister an `.eh_frame` (bootstrap name).
pub const DEREGISTER_EH_FRAME: &str = "__llvm_orc_bootstrap_deregister_ehframe_section_wrapper";
/// The names LLVM 19's EPCEHFrameRegistrar looks up.
pub const REGISTER_EH_FRAME_ALT: &str = "llvm_orc_registerEHFrameSectionWrapper";
/// Its deregistration counterpart.
pub const DEREGISTER_EH_FRAME_ALT: &str = "llvm_orc_deregisterEHFrameSectionWrapper";

/// `i64(addr, seq<string>)`.
pub const RUN_AS_MAIN: &str = "__llvm_orc_bootstrap_run_as_main_wrapper";
/// `i32(addr)`.
pub const RUN_AS_VOID: &str = "__llvm_orc_bootstrap_run_as_void_function_wrapper";
/// `i32(addr, i32)`.
pub const RUN_AS_INT: &str = "__llvm_orc_bootstrap_run_as_int_function_wrapper";

/// remjit's runtime: bootstrap-map key whose value is `seq<(name, addr)>` of symbols JIT'd code
/// binds to the executor's runtime (`__tls_get_addr`, `atexit`, `__cxa_atexit`, ...).
pub const REMJIT_RUNTIME_OVERRIDES: &str = "remjit.runtime-overrides";
/// Bootstrap value (SPS u64): the handle the dylib manager's open of the main program (empty
/// path) returns, opened already, so that a controller need not ask for it.
pub const REMJIT_PROCESS_HANDLE: &str = "remjit.process-handle";
/// The TLS descriptor resolver.
pub const REMJIT_TLSDESC_RESOLVER: &str = "__remjit_tlsdesc_resolver";
/// Action `Error((init, init_size, mem_size, align, seq<id_slot>))`.
pub const REMJIT_REGISTER_TLS: &str = "__remjit_register_tls_wrapper";
/// Action `Error(id_slot)`.
pub const REMJIT_DEREGISTER_TLS: &str = "__remjit_deregister_tls_wrapper";
/// Action `Error((slot, resolver))`.
pub const REMJIT_RESOLVE_IFUNC: &str = "__remjit_resolve_ifunc_wrapper";
/// Action `Error((from, to))`.
pub const REMJIT_COPY_WORD: &str = "__remjit_copy_word_wrapper";
/// Action `Error(seq<addr>)`.
pub const REMJIT_RUN_INITIALIZERS: &str = "__remjit_run_initializers_wrapper";
/// Action `Error((dso, seq<addr>))`: exit handlers of `dso`, then the finalizers.
pub const REMJIT_RUN_FINALIZERS: &str = "__remjit_run_finalizers_wrapper";
/// `Error(seq<string>)`: argv for constructors and main.
pub const REMJIT_SET_ARGS: &str = "__remjit_set_program_args_wrapper";
/// `Error(seq<addr>)`: all exit handlers, then these finalizers.
pub const REMJIT_RUN_EXIT: &str = "__remjit_run_exit_wrapper";
/// `i64(addr)`: run main with the args set before.
pub const REMJIT_RUN_MAIN: &str = "__remjit_run_main_wrapper";
/// Our shared-memory mapper (memfd over SCM_RIGHTS): `Expected<addr>(size, low)`; the memfd
/// follows on the socket.
pub const REMJIT_MEMFD_RESERVE: &str = "__remjit_memfd_reserve_wrapper";
/// A bootstrap symbol (no service): this executor, over TCP, interrupts the running JIT'd code
/// as Ctrl-C would when a byte of TCP urgent data (`MSG_OOB`) arrives.
pub const REMJIT_URGENT_INTERRUPT: &str = "__remjit_urgent_interrupt";
/// `Error(addr)`: the next reservation (of any flavour) must start exactly at `addr`, or fail
/// (a REPL's fresh executor taking its predecessor's addresses).
pub const REMJIT_RESERVE_AT: &str = "__remjit_reserve_at_wrapper";
/// `Error((addr, seq<(offset, len, path, file_offset)>))`: map file pages over a range.
pub const REMJIT_MAP_FILES: &str = "__remjit_map_files_wrapper";
/// `Error((addr, area, bool))`: with `true`, give the three areas of `area` bytes of shared
/// memory at `addr` the protections of a pack (code, read-only data, data) once, for small links
/// to share; with `false`, make them inaccessible again (the pack is given back).
pub const REMJIT_PACK: &str = "__remjit_pack_wrapper";

/// Debugger (GDB JIT interface) registration wrapper that LLVM 19's llvm-jitlink looks up.
pub const GDB_JIT_REGISTER: &str = "llvm_orc_registerJITLoaderGDBWrapper";
/// Its alloc-action form.
pub const GDB_JIT_REGISTER_ACTION: &str = "llvm_orc_registerJITLoaderGDBAllocAction";
/// `Error(seq<(addr, len)>)`: map the reservation's shared pages back over ranges that
/// `REMJIT_MAP_FILES` had mapped from files (their allocation was freed).
pub const REMJIT_RESTORE_SHARED: &str = "__remjit_restore_shared_wrapper";
/// `Expected<u64>(seq<char>)`: register a copy of a debug object with the GDB JIT interface;
/// the result is its handle.
pub const REMJIT_GDB_REGISTER: &str = "__remjit_gdb_register_wrapper";
/// `Error(u64)`: deregister the debug object with that handle.
pub const REMJIT_GDB_DEREGISTER: &str = "__remjit_gdb_deregister_wrapper";
/// `Error((bool map, bool jitdump, seq<(addr, size, name, seq<(addr, line, file)>)>))`: record
/// JIT'd functions in the perf map and/or the jitdump file.
pub const REMJIT_PERF_RECORD: &str = "__remjit_perf_record_wrapper";
/// `Error()`: print the gdb command and wait until a debugger is attached.
pub const REMJIT_WAIT_FOR_DEBUGGER: &str = "__remjit_wait_for_debugger_wrapper";
/// `Expected<seq<u8>>((addr, len))`: read the executor's memory (JIT memory must be readable;
/// elsewhere, mapped readable); at most 16 MiB.
pub const REMJIT_READ_MEMORY: &str = "__remjit_read_memory_wrapper";
/// `Error((addr, seq<u8>))`: write JIT memory the executor handed out, writable now; at most
/// 16 MiB.
pub const REMJIT_WRITE_MEMORY: &str = "__remjit_write_memory_wrapper";
/// `Expected<(u64 rax, u64 xmm0)>((addr, seq<(u8 class, u64 bits)>))`: call JIT'd code with
/// integer (class 0) and floating-point (class 1) arguments, System V; at most 16.
pub const REMJIT_CALL: &str = "__remjit_call_wrapper";
