//! Services for debuggers and profilers: the GDB JIT interface (register a copy of a debug
//! object, deregister it), perf map and jitdump records, and waiting for a debugger.

use remjit_wire::sps::{Bytes, Expected, Sps, SpsError};

use super::services::{decode, Services};
use crate::runtime::{jit_debug, perf};

/// Largest debug object accepted (a copy of an input object with its DWARF).
const MAX_DEBUG_OBJECT: usize = 1 << 31;

/// `Expected<u64>(seq<char>)`: registers a copy of the object, returns its handle.
pub fn gdb_register(_: &Services, args: &[u8]) -> Vec<u8> {
    let r = decode::<Bytes>(args, "GDB JIT registration").and_then(|b| {
        if b.0.len() > MAX_DEBUG_OBJECT || b.0.len() < 64 {
            return Err(format!(
                "GDB JIT registration: a debug object of {} bytes is not an ELF file",
                b.0.len()
            ));
        }
        Ok(jit_debug::register_owned(b.0))
    });
    Expected(r).to_bytes()
}

/// `Error(u64)`: deregisters the object with that handle.
pub fn gdb_deregister(_: &Services, args: &[u8]) -> Vec<u8> {
    let r = decode::<u64>(args, "GDB JIT deregistration").and_then(jit_debug::deregister);
    SpsError::from(r).to_bytes()
}

type WireFunction = (u64, u64, String, Vec<(u64, u32, String)>);

/// `Error((bool, bool, seq<function>))`: records functions in the perf map / jitdump file.
pub fn perf_record(s: &Services, args: &[u8]) -> Vec<u8> {
    let r = (|| {
        let (map, jitdump, fns): (bool, bool, Vec<WireFunction>) = decode(args, "perf record")?;
        let fns: Vec<perf::PerfFunction> = fns
            .into_iter()
            .map(|(addr, size, name, lines)| perf::PerfFunction {
                addr,
                size,
                name,
                lines,
            })
            .collect();
        for f in &fns {
            if jitdump {
                // The jitdump record copies the code bytes: they must be readable.
                s.memory.check_readable(f.addr, f.size)?;
            } else {
                s.memory.check(f.addr, f.size)?;
            }
        }
        // SAFETY: every function lies in memory this executor handed out, readable when the
        // jitdump file copies its bytes (checked above).
        unsafe { perf::record(&fns, perf::PerfOutputs { map, jitdump }) }
    })();
    SpsError::from(r).to_bytes()
}

/// `Error()`: prints the gdb command and waits until a debugger is attached (or the process
/// that started the executor, its controller as a rule, is gone).
pub fn wait_for_debugger(_: &Services, _: &[u8]) -> Vec<u8> {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    // SAFETY: as above.
    let abandoned = || unsafe { libc::getppid() } != parent;
    SpsError::from(jit_debug::wait_for_debugger("remjit-executor", &abandoned)).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use remjit_wire::names;
    use remjit_wire::sps::Expected;
    use remjit_wire::types::AddrRange;

    /// One executor's services for these tests: each `Services` reserves a 1 GiB slab below
    /// 2 GiB for good, and the process has little more room there for the other tests.
    static SERVICES: std::sync::LazyLock<Services> = std::sync::LazyLock::new(Services::new);

    fn error_of(reply: &[u8]) -> String {
        SpsError::from_bytes(reply).unwrap().0.unwrap_or_default()
    }

    #[test]
    fn hostile_requests_are_refused() {
        let s = &*SERVICES;
        let r = Expected::<u64>::from_bytes(&gdb_register(s, &Bytes(vec![0x7f; 10]).to_bytes()));
        assert_eq!(
            r.unwrap().0.unwrap_err(),
            "GDB JIT registration: a debug object of 10 bytes is not an ELF file"
        );
        assert!(error_of(&gdb_deregister(s, &0xdead_beefu64.to_bytes()))
            .starts_with("no debug object is registered under handle 0xdeadbeef"));
        assert!(error_of(&gdb_deregister(s, &[1, 2])).contains("malformed arguments"));
        let fns: Vec<WireFunction> = vec![(0x1000, 16, "f".into(), Vec::new())];
        let reply = perf_record(s, &(true, false, fns).to_bytes());
        assert!(
            error_of(&reply).contains("is not in memory this executor handed out"),
            "{}",
            error_of(&reply)
        );
        // Reserved but never made accessible: refused, not read (which would crash).
        let base = s.memory.reserve(4096).unwrap();
        let fns: Vec<WireFunction> = vec![(base, 16, "f".into(), Vec::new())];
        let reply = perf_record(s, &(false, true, fns).to_bytes());
        assert_eq!(
            error_of(&reply),
            format!(
                "{base:#x}..{:#x} is not readable (reserved but never made accessible)",
                base + 16
            )
        );
        assert!(!std::path::Path::new(&perf::jitdump_name()).exists());
        s.memory.release(base).unwrap();
    }

    /// LLVM's registration call (the debug object lies in JIT memory), by its bootstrap name.
    fn llvm_register(s: &Services, start: u64, len: u64) {
        let tag = s.symbols.iter().find(|x| x.0 == names::GDB_JIT_REGISTER);
        let (h, _, _) = s.lookup(tag.unwrap().1).unwrap();
        let range = AddrRange {
            start,
            end: start + len,
        };
        assert_eq!(error_of(&h(s, &(range, true).to_bytes())), "");
    }

    fn listed(start: u64, len: u64) -> bool {
        jit_debug::registered().contains(&(start, len))
    }

    #[test]
    fn in_place_registrations_end_with_their_memory() {
        let _serial = jit_debug::TEST_SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let s = &*SERVICES;
        let base = s.memory.reserve(3 * 4096).unwrap();
        // Two finalized allocations in the range (as LLVM's shared-memory manager makes them).
        s.memory
            .with_range(base, |r| {
                r.dealloc.push((base, Vec::new()));
                r.dealloc.push((base + 4096, Vec::new()));
            })
            .unwrap();
        let (first, second, third) = ((base + 64, 111), (base + 4096, 222), (base + 8000, 333));
        for (at, len) in [first, second, third] {
            llvm_register(s, at, len);
            assert!(listed(at, len));
        }
        // Deinitializing the first allocation takes out the object in it, and only that one.
        s.memory.take_dealloc(base).unwrap();
        assert!(!listed(first.0, first.1));
        assert!(listed(second.0, second.1) && listed(third.0, third.1));
        // Releasing the range takes out the rest.
        s.memory.release(base).unwrap();
        assert!(!listed(second.0, second.1) && !listed(third.0, third.1));
    }
}
