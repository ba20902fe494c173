//! Thread-local storage for JIT'd modules (general- and local-dynamic models, TLS descriptors).
//!
//! Each registered module has a TLS image; each thread gets its own block per module, allocated
//! on first access and initialised from the `.tdata` template (the rest, `.tbss`, zeroed), so
//! threads created by JIT'd code work like any other. Blocks are freed when their thread exits
//! and replaced when their module was deregistered (ids are reused under a new generation).

use std::alloc::Layout;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

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

#[derive(Clone, Copy)]
struct Slot {
    image: Option<TlsImage>,
    generation: u64,
}

static MODULES: RwLock<Vec<Slot>> = RwLock::new(Vec::new());
/// Bumped by every deregistration: threads then drop blocks of modules that went away.
static EPOCH: AtomicU64 = AtomicU64::new(0);

struct Block {
    ptr: *mut u8,
    layout: Layout,
    generation: u64,
}

/// One thread's blocks, by module id - 1.
struct ThreadBlocks {
    epoch: u64,
    blocks: Vec<Option<Block>>,
}

impl Drop for ThreadBlocks {
    fn drop(&mut self) {
        for b in self.blocks.drain(..).flatten() {
            // SAFETY: allocated in `allocate_block` with this layout.
            unsafe { std::alloc::dealloc(b.ptr, b.layout) };
        }
    }
}

thread_local! {
    // No destructor on the pointer itself: accesses during thread teardown (C++ thread_local
    // destructors run late) find it null and get a fresh, leaked, set of blocks.
    static BLOCKS: Cell<*mut ThreadBlocks> = const { Cell::new(std::ptr::null_mut()) };
    static GUARD: BlocksGuard = const { BlocksGuard };
}

struct BlocksGuard;

impl Drop for BlocksGuard {
    fn drop(&mut self) {
        reset_thread();
    }
}

fn thread_blocks() -> *mut ThreadBlocks {
    let p = BLOCKS.try_with(|b| b.get()).unwrap_or(std::ptr::null_mut());
    if !p.is_null() {
        return p;
    }
    let fresh = Box::into_raw(Box::new(ThreadBlocks {
        epoch: EPOCH.load(Ordering::Acquire),
        blocks: Vec::new(),
    }));
    if BLOCKS.try_with(|b| b.set(fresh)).is_ok() {
        // Arms the destructor that frees the blocks when the thread exits.
        let _ = GUARD.try_with(|_| ());
    }
    fresh
}

/// Drops the calling thread's blocks, as its end would: later accesses get fresh blocks with
/// the initial values (a thread reused for another `main`, see [`super::call_thread`]).
pub fn reset_thread() {
    let p = BLOCKS.try_with(|b| b.replace(std::ptr::null_mut()));
    if let Ok(p) = p {
        if !p.is_null() {
            // SAFETY: created by Box::into_raw in `thread_blocks`, and now unreachable.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// Registers a module's TLS image; returns its module id (never 0).
pub fn register_module(image: TlsImage) -> u64 {
    let Ok(mut m) = MODULES.write() else { return 0 };
    if let Some(i) = m.iter().position(|s| s.image.is_none()) {
        m[i].image = Some(image);
        m[i].generation += 1;
        return i as u64 + 1;
    }
    m.push(Slot {
        image: Some(image),
        generation: 1,
    });
    m.len() as u64
}

/// Forgets a module: later accesses of its id in any thread get a fresh block of whichever
/// module reuses the id; blocks of the old module are freed lazily.
pub fn deregister_module(id: u64) {
    if let Ok(mut m) = MODULES.write() {
        if let Some(s) = (id as usize).checked_sub(1).and_then(|i| m.get_mut(i)) {
            s.image = None;
            s.generation += 1;
        }
    }
    EPOCH.fetch_add(1, Ordering::AcqRel);
}

#[cold]
fn slow_path(tb: &mut ThreadBlocks, index: usize) -> *mut u8 {
    let Ok(m) = MODULES.read() else {
        return std::ptr::null_mut();
    };
    // Drop blocks of modules deregistered since this thread last looked.
    let epoch = EPOCH.load(Ordering::Acquire);
    if tb.epoch != epoch {
        for (i, b) in tb.blocks.iter_mut().enumerate() {
            let stale = match (b.as_ref(), m.get(i)) {
                (Some(blk), Some(s)) => s.image.is_none() || s.generation != blk.generation,
                (Some(_), None) => true,
                _ => false,
            };
            if stale {
                if let Some(blk) = b.take() {
                    // SAFETY: allocated in this module with this layout.
                    unsafe { std::alloc::dealloc(blk.ptr, blk.layout) };
                }
            }
        }
        tb.epoch = epoch;
    }
    if let Some(Some(b)) = tb.blocks.get(index) {
        return b.ptr;
    }
    let Some(Slot {
        image: Some(img),
        generation,
    }) = m.get(index).copied()
    else {
        return std::ptr::null_mut();
    };
    let Ok(layout) = Layout::from_size_align(img.mem_size.max(1), img.align.max(1)) else {
        return std::ptr::null_mut();
    };
    // SAFETY: non-zero size; the template lies in finalized JIT'd memory of `img.init_size`.
    let ptr = unsafe {
        let p = std::alloc::alloc_zeroed(layout);
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        std::ptr::copy_nonoverlapping(img.init as *const u8, p, img.init_size.min(img.mem_size));
        p
    };
    if tb.blocks.len() <= index {
        tb.blocks.resize_with(index + 1, || None);
    }
    tb.blocks[index] = Some(Block {
        ptr,
        layout,
        generation,
    });
    ptr
}

/// Our `__tls_get_addr`: the address of `ti.offset` inside this thread's block of `ti.module`.
///
/// # Safety
/// `ti` must point at a valid [`TlsIndex`] of a registered module.
pub unsafe extern "C" fn tls_get_addr(ti: *const TlsIndex) -> *mut u8 {
    let TlsIndex { module, offset } = *ti;
    let index = (module as usize).wrapping_sub(1);
    // SAFETY: the thread's own block table; nothing else holds a reference to it.
    let tb = &mut *thread_blocks();
    let base = match tb.blocks.get(index) {
        Some(Some(b)) if tb.epoch == EPOCH.load(Ordering::Relaxed) => b.ptr,
        _ => slow_path(tb, index),
    };
    if base.is_null() {
        // An access to a module that is not registered: as fatal as in the C runtime.
        eprintln!("remjit: __tls_get_addr: unknown TLS module {module}");
        std::process::abort();
    }
    base.add(offset as usize)
}

// The TLS descriptor resolver. Called as `call *(%rax)` with %rax = &descriptor, where the
// descriptor is {resolver, arg} and arg points at a TlsIndex. Returns in %rax the variable's
// offset from the thread pointer and preserves every other register, vector state included
// (saved with xsave into an area on the stack).
std::arch::global_asm!(
    ".globl remjit_tlsdesc_resolver",
    ".type remjit_tlsdesc_resolver,@function",
    "remjit_tlsdesc_resolver:",
    "push rbp",
    "mov rbp, rsp",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push rbx",
    "push rax",
    "mov rbx, [rax + 8]",
    // xsave area: 12 KiB covers every component set, 64-byte aligned, header zeroed.
    "sub rsp, 12352",
    "and rsp, -64",
    "xor eax, eax",
    "mov [rsp + 512], rax",
    "mov [rsp + 520], rax",
    "mov [rsp + 528], rax",
    "mov [rsp + 536], rax",
    "mov [rsp + 544], rax",
    "mov [rsp + 552], rax",
    "mov [rsp + 560], rax",
    "mov [rsp + 568], rax",
    "mov eax, -1",
    "mov edx, -1",
    "xsave64 [rsp]",
    "mov rdi, rbx",
    "call {get_addr}",
    "sub rax, qword ptr fs:[0]",
    "mov rbx, rax",
    "mov eax, -1",
    "mov edx, -1",
    "xrstor64 [rsp]",
    "mov rax, rbx",
    "lea rsp, [rbp - 80]",
    "add rsp, 8",
    "pop rbx",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbp",
    "ret",
    ".size remjit_tlsdesc_resolver, . - remjit_tlsdesc_resolver",
    get_addr = sym tls_get_addr,
);

extern "C" {
    fn remjit_tlsdesc_resolver();
}

/// Address of the TLS descriptor resolver for `R_X86_64_TLSDESC`-style descriptors
/// `{resolver, arg}` where `arg` points at a [`TlsIndex`].
pub fn tlsdesc_resolver_address() -> u64 {
    remjit_tlsdesc_resolver as *const () as u64
}
