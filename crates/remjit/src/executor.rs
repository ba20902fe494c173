//! Where JIT'd code runs: the `Executor` interface the linker and the session use, and the
//! in-process executor (remjit's own process, calling the executor crate's runtime directly).

use std::ffi::CString;
use std::path::Path;
use std::sync::Arc;

use remjit_executor::runtime;
use remjit_executor::runtime::access;
use remjit_executor::runtime::perf::{PerfFunction, PerfOutputs};

use crate::error::{Error, Result};
use crate::memory::{InProcessMapper, MemoryMapper};

/// A symbol found in the executing process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalSymbol {
    /// Its address there.
    pub addr: u64,
    /// Whether it is data (an `STT_OBJECT`) rather than code: data cannot be reached through a
    /// stub, so a 32-bit reference to data out of range is an error.
    pub is_data: bool,
}

/// An argument of [`Executor::call`] (System V x86-64: integers and pointers in general
/// registers, floating point in SSE registers, the rest on the stack).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// Any integer parameter (`char` to `long long`, signed or not, `bool`, enums): the callee
    /// reads as many low bits as its type has.
    I64(i64),
    /// A pointer, an address in the executing process.
    Ptr(u64),
    /// A `double` parameter.
    F64(f64),
    /// A `float` parameter.
    F32(f32),
}

impl Arg {
    /// Its class and bits for the runtime's call.
    fn wire(self) -> (u8, u64) {
        use remjit_executor::runtime::call::{CLASS_FLOAT, CLASS_INT};
        match self {
            Arg::I64(v) => (CLASS_INT, v as u64),
            Arg::Ptr(p) => (CLASS_INT, p),
            Arg::F64(v) => (CLASS_FLOAT, v.to_bits()),
            Arg::F32(v) => (CLASS_FLOAT, u64::from(v.to_bits())),
        }
    }
}

/// The return type [`Executor::call`] reads the result as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetKind {
    /// `void`: no result.
    Void,
    /// `int` (32 bits, sign-extended into [`Ret::I64`]).
    I32,
    /// `long`, `long long` (64 bits).
    I64,
    /// A pointer.
    Ptr,
    /// `float` (widened into [`Ret::F64`], exactly).
    F32,
    /// `double`.
    F64,
}

/// The result of [`Executor::call`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ret {
    /// The function returned nothing (as asked by [`RetKind::Void`]).
    Void,
    /// An integer result.
    I64(i64),
    /// A pointer result.
    Ptr(u64),
    /// A floating-point result.
    F64(f64),
}

impl Ret {
    /// Reads the result registers as `kind` says.
    pub fn from_registers(kind: RetKind, rax: u64, xmm0: u64) -> Ret {
        match kind {
            RetKind::Void => Ret::Void,
            RetKind::I32 => Ret::I64(i64::from(rax as u32 as i32)),
            RetKind::I64 => Ret::I64(rax as i64),
            RetKind::Ptr => Ret::Ptr(rax),
            RetKind::F32 => Ret::F64(f64::from(f32::from_bits(xmm0 as u32))),
            RetKind::F64 => Ret::F64(f64::from_bits(xmm0)),
        }
    }

    /// The integer result, if it is one.
    pub fn as_i64(self) -> Option<i64> {
        match self {
            Ret::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The pointer result, if it is one.
    pub fn as_ptr(self) -> Option<u64> {
        match self {
            Ret::Ptr(v) => Some(v),
            _ => None,
        }
    }

    /// The floating-point result, if it is one.
    pub fn as_f64(self) -> Option<f64> {
        match self {
            Ret::F64(v) => Some(v),
            _ => None,
        }
    }
}

/// The wire form of call arguments.
pub(crate) fn wire_args(args: &[Arg]) -> Vec<(u8, u64)> {
    args.iter().map(|a| a.wire()).collect()
}

/// The refusal of a service only remjit's own executors offer.
pub(crate) fn unsupported(what: &str) -> Error {
    Error::Usage(format!(
        "this executor cannot {what} (remjit-executor and the in-process executor can)"
    ))
}

/// The process that runs JIT'd code, as the controller sees it.
pub trait Executor: Send + Sync {
    /// The memory mapper for this process.
    fn mapper(&self) -> Arc<dyn MemoryMapper>;

    /// Names JIT'd code must bind to the runtime instead of the process's libraries.
    fn runtime_symbols(&self) -> Result<Vec<(String, u64)>>;

    /// Address of the TLS descriptor resolver.
    fn tlsdesc_resolver(&self) -> Result<u64>;

    /// Loads a shared library so that its symbols resolve JIT'd references.
    fn load_library(&self, path: &Path) -> Result<()>;

    /// Looks up many names at once (one batch per link).
    fn lookup(&self, names: &[&[u8]]) -> Result<Vec<Option<ExternalSymbol>>>;

    /// Sets `argc`/`argv` for constructors and `main` (`argv[0]` first).
    fn set_program_args(&self, args: &[String]) -> Result<()>;

    /// Calls `int main(int, char **, char **)` at `entry` with the program args.
    fn run_main(&self, entry: u64) -> Result<i32>;

    /// Calls `void f(void)` at `addr`.
    fn call_void(&self, addr: u64) -> Result<()>;

    /// Runs the exit handlers JIT'd code registered (newest first), then the finalizers given.
    fn run_exit(&self, finalizers: &[u64]) -> Result<()>;

    /// Reads `len` bytes (at most 16 MiB) of the executing process at `addr`: JIT memory must
    /// be readable now, anything else mapped readable (heap, libraries).
    fn read_memory(&self, _addr: u64, _len: u64) -> Result<Vec<u8>> {
        Err(unsupported("read memory"))
    }

    /// Writes `bytes` (at most 16 MiB) at `addr`, which must lie in JIT memory handed out
    /// and writable now (data, not code).
    fn write_memory(&self, _addr: u64, _bytes: &[u8]) -> Result<()> {
        Err(unsupported("write memory"))
    }

    /// Calls JIT'd code at `addr` (finalized executable memory) with `args` (at most 16) and
    /// reads its result as `ret` says. A crash ends the executor as a crash of any JIT'd code
    /// does (a crash report out of process).
    fn call(&self, _addr: u64, _args: &[Arg], _ret: RetKind) -> Result<Ret> {
        Err(unsupported("call functions with arguments"))
    }

    /// Registers a debug object with the GDB JIT interface of the executing process; `None`
    /// when that process has no such interface.
    fn register_debug_object(&self, _object: Vec<u8>) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Deregisters what [`Executor::register_debug_object`] registered.
    fn deregister_debug_object(&self, _handle: u64) -> Result<()> {
        Ok(())
    }

    /// Writes perf map / jitdump records for JIT'd functions in the executing process.
    fn record_perf(&self, _functions: &[PerfFunction], _out: PerfOutputs) -> Result<()> {
        Err(Error::Usage(
            "this executor cannot write perf maps or jitdump files".into(),
        ))
    }

    /// Prints the gdb command for the executing process and waits until a debugger attaches.
    fn wait_for_debugger(&self) -> Result<()> {
        Err(Error::Usage(
            "this executor cannot wait for a debugger".into(),
        ))
    }
}

/// Runs JIT'd code in remjit's own process.
pub struct InProcessExecutor {
    mapper: Arc<InProcessMapper>,
}

impl InProcessExecutor {
    /// The executor for this process.
    pub fn new() -> Self {
        InProcessExecutor {
            mapper: Arc::new(InProcessMapper::new()),
        }
    }
}

impl Default for InProcessExecutor {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether the symbol at `addr` is data, by its ELF symbol type in whichever object holds it.
fn is_data_at(addr: u64) -> bool {
    remjit_executor::server::services::is_data_at(addr)
}

/// `name` in this process's global scope (what JIT'd code running here binds to).
pub(crate) fn lookup_here(name: &[u8]) -> Option<ExternalSymbol> {
    let c = CString::new(name).ok()?;
    // SAFETY: dlsym with RTLD_DEFAULT searches the global scope.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    (!p.is_null()).then(|| ExternalSymbol {
        addr: p as u64,
        is_data: is_data_at(p as u64),
    })
}

/// How many times an object has been loaded into this process so far (the dynamic loader's
/// count): while it is unchanged, so is the global scope.
pub(crate) fn objects_loaded() -> u64 {
    remjit_executor::vm::main_program(|info| info.dlpi_adds).unwrap_or(0)
}

impl Executor for InProcessExecutor {
    fn mapper(&self) -> Arc<dyn MemoryMapper> {
        self.mapper.clone()
    }

    fn runtime_symbols(&self) -> Result<Vec<(String, u64)>> {
        Ok(runtime::symbol_overrides()
            .into_iter()
            .map(|(n, a)| (n.to_string(), a))
            .collect())
    }

    fn tlsdesc_resolver(&self) -> Result<u64> {
        Ok(runtime::tls::tlsdesc_resolver_address())
    }

    fn load_library(&self, path: &Path) -> Result<()> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Dylib(format!("{}: path contains NUL", path.display())))?;
        // SAFETY: dlopen of a user-named library runs its constructors, as intended.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if h.is_null() {
            // SAFETY: dlerror returns a thread-local message or null.
            let msg = unsafe {
                let e = libc::dlerror();
                if e.is_null() {
                    "unknown error".to_string()
                } else {
                    std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
                }
            };
            return Err(Error::Dylib(format!(
                "cannot load {}: {msg}",
                path.display()
            )));
        }
        Ok(())
    }

    fn lookup(&self, names: &[&[u8]]) -> Result<Vec<Option<ExternalSymbol>>> {
        Ok(names.iter().map(|n| lookup_here(n)).collect())
    }

    fn set_program_args(&self, args: &[String]) -> Result<()> {
        runtime::init::set_program_args(args);
        Ok(())
    }

    fn run_main(&self, entry: u64) -> Result<i32> {
        // SAFETY: the session checked that `entry` is a function of a finalized module.
        Ok(unsafe { runtime::init::run_as_main(entry) })
    }

    fn call_void(&self, addr: u64) -> Result<()> {
        // SAFETY: as above.
        unsafe { runtime::init::run_finalizers(&[addr]) };
        Ok(())
    }

    fn run_exit(&self, finalizers: &[u64]) -> Result<()> {
        runtime::exit::run_exit_handlers(None);
        // SAFETY: finalizers of finalized modules.
        unsafe { runtime::init::run_finalizers(finalizers) };
        Ok(())
    }

    fn read_memory(&self, addr: u64, len: u64) -> Result<Vec<u8>> {
        access::check_size("read", len).map_err(Error::Executor)?;
        if self.mapper.touches(addr, len) {
            self.mapper
                .check_access(addr, len, access::prot::READ)
                .map_err(Error::Executor)?;
        }
        access::read(addr, len).map_err(Error::Executor)
    }

    fn write_memory(&self, addr: u64, bytes: &[u8]) -> Result<()> {
        let len = bytes.len() as u64;
        access::check_size("write", len).map_err(Error::Executor)?;
        self.mapper
            .check_access(addr, len, access::prot::WRITE)
            .map_err(Error::Executor)?;
        // SAFETY: checked to be writable JIT memory of a finalized allocation.
        unsafe { access::write(addr, bytes) };
        Ok(())
    }

    fn call(&self, addr: u64, args: &[Arg], ret: RetKind) -> Result<Ret> {
        let args = wire_args(args);
        runtime::call::check_args(&args).map_err(Error::Executor)?;
        self.mapper
            .check_access(addr, 1, access::prot::EXEC)
            .map_err(|_| Error::Executor(access::not_code(addr)))?;
        // SAFETY: finalized JIT'd code; the caller vouches for its signature.
        let regs = unsafe { runtime::call::call(addr, &args) }.map_err(Error::Executor)?;
        Ok(Ret::from_registers(ret, regs.rax, regs.xmm0))
    }

    fn register_debug_object(&self, object: Vec<u8>) -> Result<Option<u64>> {
        Ok(Some(runtime::jit_debug::register_owned(object)))
    }

    fn deregister_debug_object(&self, handle: u64) -> Result<()> {
        runtime::jit_debug::deregister(handle).map_err(Error::Executor)
    }

    fn record_perf(&self, functions: &[PerfFunction], out: PerfOutputs) -> Result<()> {
        // SAFETY: the functions of a module just finalized in this process.
        unsafe { runtime::perf::record(functions, out) }.map_err(Error::Executor)
    }

    fn wait_for_debugger(&self) -> Result<()> {
        runtime::jit_debug::wait_for_debugger("remjit", &|| false).map_err(Error::Executor)
    }
}
