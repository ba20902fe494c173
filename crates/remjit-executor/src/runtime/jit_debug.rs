//! The GDB JIT interface (also read by LLDB): `__jit_debug_descriptor` lists in-memory object
//! files that describe JIT'd code, and `__jit_debug_register_code` is the function a debugger
//! breaks on to hear of changes. Entries are inserted at the head and unlinked through their
//! own links, so registering or removing one costs the same however many there are.
//!
//! Objects registered in place (LLVM's registration calls: the object lies in JIT memory the
//! controller allocated) are also indexed by address: when the executor gives that memory back,
//! [`memory_freed`] deregisters them (LLVM itself never does).
//!
//! Also `--wait-for-debugger`: [`wait_for_debugger`] waits until a tracer is attached.

use std::collections::{BTreeSet, HashSet};
use std::ptr::{addr_of_mut, null_mut};
use std::sync::{LazyLock, Mutex};

/// One registered object (the documented `jit_code_entry`).
#[repr(C)]
pub struct JitCodeEntry {
    next_entry: *mut JitCodeEntry,
    prev_entry: *mut JitCodeEntry,
    symfile_addr: *const u8,
    symfile_size: u64,
}

/// The list a debugger reads (the documented `jit_descriptor`).
#[repr(C)]
pub struct JitDescriptor {
    version: u32,
    action_flag: u32,
    relevant_entry: *mut JitCodeEntry,
    first_entry: *mut JitCodeEntry,
}

const JIT_REGISTER_FN: u32 = 1;
const JIT_UNREGISTER_FN: u32 = 2;

/// The descriptor debuggers look up by name.
#[no_mangle]
#[used]
pub static mut __jit_debug_descriptor: JitDescriptor = JitDescriptor {
    version: 1,
    action_flag: 0,
    relevant_entry: null_mut(),
    first_entry: null_mut(),
};

/// Debuggers put a breakpoint here; it is called after every change of the list.
#[no_mangle]
#[inline(never)]
pub extern "C" fn __jit_debug_register_code() {
    // SAFETY: an empty asm statement: a barrier the optimizer cannot remove or merge.
    unsafe { std::arch::asm!("", options(nostack, preserves_flags)) };
}

/// An entry and the object it points at, when the runtime owns that memory.
#[repr(C)]
struct Node {
    entry: JitCodeEntry,
    _owned: Option<Box<[u8]>>,
}

/// What the lock every change of the list holds guards.
struct Registry {
    /// Live entries (their addresses: the handles).
    live: HashSet<u64>,
    /// Objects registered in place, by (address, handle).
    in_place: BTreeSet<(u64, u64)>,
}

static LIVE: LazyLock<Mutex<Registry>> = LazyLock::new(|| {
    Mutex::new(Registry {
        live: HashSet::new(),
        in_place: BTreeSet::new(),
    })
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

fn link(live: &mut Registry, node: Box<Node>) -> u64 {
    let p = Box::into_raw(node);
    // SAFETY: the list is changed only under LIVE's lock; `p` is a fresh node.
    unsafe {
        let d = addr_of_mut!(__jit_debug_descriptor);
        let first = (*d).first_entry;
        (*p).entry.next_entry = first;
        if !first.is_null() {
            (*first).prev_entry = p.cast();
        }
        (*d).first_entry = p.cast();
        (*d).relevant_entry = p.cast();
        (*d).action_flag = JIT_REGISTER_FN;
    }
    __jit_debug_register_code();
    live.live.insert(p as u64);
    p as u64
}

/// Registers a copy of `object` (an ELF file describing loaded code); returns its handle.
pub fn register_owned(object: Vec<u8>) -> u64 {
    let owned: Box<[u8]> = object.into_boxed_slice();
    let node = Box::new(Node {
        entry: JitCodeEntry {
            next_entry: null_mut(),
            prev_entry: null_mut(),
            symfile_addr: owned.as_ptr(),
            symfile_size: owned.len() as u64,
        },
        _owned: Some(owned),
    });
    link(&mut registry(), node)
}

/// Registers an object that already lies in this process's memory (LLVM's registration
/// calls); it stays registered until [`memory_freed`] is told that its memory is given back.
pub fn register_in_place(addr: u64, size: u64) -> u64 {
    let mut live = registry();
    let node = Box::new(Node {
        entry: JitCodeEntry {
            next_entry: null_mut(),
            prev_entry: null_mut(),
            symfile_addr: addr as *const u8,
            symfile_size: size,
        },
        _owned: None,
    });
    let h = link(&mut live, node);
    live.in_place.insert((addr, h));
    h
}

/// Unlinks the entry `handle` (from a register call), tells the debugger, and frees it.
pub fn deregister(handle: u64) -> Result<(), String> {
    let mut live = registry();
    if live.live.contains(&handle) {
        // SAFETY: a live node, read under the lock.
        let addr = unsafe { (*(handle as *const JitCodeEntry)).symfile_addr as u64 };
        live.in_place.remove(&(addr, handle));
    }
    unlink(&mut live, handle)
}

/// The memory `[start, start + len)` is given back (freed, or to be reused for other
/// contents): deregisters the objects registered in place there. Returns how many.
pub fn memory_freed(start: u64, len: u64) -> usize {
    let mut live = registry();
    let end = start.saturating_add(len);
    let gone: Vec<(u64, u64)> = live.in_place.range((start, 0)..(end, 0)).copied().collect();
    for key in &gone {
        live.in_place.remove(key);
        // Listed in `in_place` only while live: unlinking cannot fail.
        let _ = unlink(&mut live, key.1);
    }
    gone.len()
}

fn unlink(live: &mut Registry, handle: u64) -> Result<(), String> {
    if !live.live.remove(&handle) {
        return Err(format!(
            "no debug object is registered under handle {handle:#x}"
        ));
    }
    let p = handle as *mut Node;
    // SAFETY: `p` is a live node (checked above), the list is changed only under the lock.
    unsafe {
        let e = p.cast::<JitCodeEntry>();
        let d = addr_of_mut!(__jit_debug_descriptor);
        let (prev, next) = ((*e).prev_entry, (*e).next_entry);
        if prev.is_null() {
            (*d).first_entry = next;
        } else {
            (*prev).next_entry = next;
        }
        if !next.is_null() {
            (*next).prev_entry = prev;
        }
        (*d).relevant_entry = e;
        (*d).action_flag = JIT_UNREGISTER_FN;
        __jit_debug_register_code();
        (*d).relevant_entry = null_mut();
        drop(Box::from_raw(p));
    }
    Ok(())
}

/// The pid of the process tracing this one (0 for none), from /proc/self/status.
pub fn tracer_pid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Says how to attach a debugger to this process (on stderr), then waits until one is, or
/// until `abandoned` says that nobody wants the program run any more.
pub fn wait_for_debugger(who: &str, abandoned: &dyn Fn() -> bool) -> Result<(), String> {
    let pid = std::process::id();
    eprintln!("{who}: waiting for a debugger to attach to process {pid}: gdb -p {pid}");
    while tracer_pid() == 0 {
        if abandoned() {
            return Err("stopped waiting for a debugger: the controller is gone".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("{who}: debugger attached; running the program");
    Ok(())
}

/// The registered objects, newest first, as a debugger walks the list: `(address, size)`.
/// (A diagnostic: registration itself never walks the list.)
pub fn registered() -> Vec<(u64, u64)> {
    let _live = registry();
    let mut out = Vec::new();
    // SAFETY: the list is read under LIVE's lock; every linked entry is a live node.
    unsafe {
        let mut e = (*addr_of_mut!(__jit_debug_descriptor)).first_entry;
        while !e.is_null() {
            out.push(((*e).symfile_addr as u64, (*e).symfile_size));
            e = (*e).next_entry;
        }
    }
    out
}

/// Held by tests that change the list and look at the descriptor (it is process-wide).
#[cfg(test)]
pub(crate) static TEST_SERIAL: Mutex<()> = Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor() -> (u32, u32, u64) {
        // SAFETY: reading plain fields (the tests that change the list hold TEST_SERIAL).
        unsafe {
            let d = addr_of_mut!(__jit_debug_descriptor);
            ((*d).version, (*d).action_flag, (*d).relevant_entry as u64)
        }
    }

    #[test]
    fn insert_at_head_unlink_anywhere() {
        let _serial = TEST_SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let objs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100 + i as usize]).collect();
        let handles: Vec<u64> = objs.iter().map(|o| register_owned(o.clone())).collect();
        let (version, action, relevant) = descriptor();
        assert_eq!(
            (version, action, relevant),
            (1, JIT_REGISTER_FN, handles[2])
        );
        let sizes = |v: Vec<(u64, u64)>| v.into_iter().map(|e| e.1).collect::<Vec<_>>();
        let listed = sizes(registered());
        let pos = listed
            .iter()
            .position(|&s| s == 102)
            .expect("newest is listed");
        assert_eq!(&listed[pos..pos + 3], &[102, 101, 100], "newest first");
        deregister(handles[1]).unwrap();
        assert_eq!(descriptor().1, JIT_UNREGISTER_FN);
        let listed = sizes(registered());
        assert!(!listed.contains(&101) && listed.contains(&100) && listed.contains(&102));
        assert!(
            deregister(handles[1]).is_err(),
            "a handle is deregistered once"
        );
        assert!(deregister(12345).is_err(), "unknown handles are refused");
        deregister(handles[2]).unwrap();
        deregister(handles[0]).unwrap();
        assert!(!sizes(registered()).iter().any(|s| (100..103).contains(s)));
    }
}
