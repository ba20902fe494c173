//! Crash reports: when JIT'd code dies of a signal it can report (SIGSEGV, SIGBUS, SIGILL, SIGFPE,
//! SIGABRT, SIGTRAP), a handler on an alternate stack collects the signal, its `si_code`, the
//! sender, the faulting address (only for faults the kernel raised), the program counter, the
//! library and exported symbol that contain it (`dladdr`) and the return addresses above it
//! (`_Unwind_Backtrace`, through the `.eh_frame`s registered for JIT'd code), then lets the signal
//! kill the process as it would have.
//!
//! Out of process the handler writes machine lines to a report descriptor and the controller,
//! which knows the JIT'd functions, turns them into a sentence ([`describe`]). In process the
//! handler writes that sentence itself, symbolizing with the table [`set_jit_functions`] left.
//! The handler allocates nothing and takes no lock but the loader's (in `dladdr`) and the
//! unwinder's; should one of those be held by the code that crashed, a watchdog (SIGALRM) ends
//! the process with the original signal after a few seconds.

mod report;

pub use report::*;

use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};

static REPORT_FD: AtomicI32 = AtomicI32::new(2);
static IN_PROCESS: AtomicBool = AtomicBool::new(false);

/// The signals that mean "the JIT'd code crashed" (or aborted), which the handler reports.
pub const CRASH_SIGNALS: [i32; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
    libc::SIGTRAP,
];

/// A JIT'd function, for symbolizing in process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitFunction {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Symbol name.
    pub name: String,
    /// The module's objects (one string shared by the module's functions).
    pub module: std::sync::Arc<str>,
    /// `(address, line, file)` rows by address, when its object has DWARF: the handler names
    /// the line of a pc from them without allocating.
    pub lines: Vec<(u64, u32, std::sync::Arc<str>)>,
}

impl JitFunction {
    /// Writes ` at file.c:LINE` for `pc`, when a line row covers it.
    fn write_line(&self, pc: u64, out: &mut dyn Sink) {
        let i = self.lines.partition_point(|r| r.0 <= pc);
        if let Some((_, line, file)) = i.checked_sub(1).and_then(|i| self.lines.get(i)) {
            out.push(b" at ");
            out.push(file.as_bytes());
            out.push(b":");
            dec(out, i64::from(*line));
        }
    }
}

static JIT_FUNCTIONS: AtomicPtr<Vec<JitFunction>> = AtomicPtr::new(std::ptr::null_mut());

/// In process: the JIT'd functions the handler names. Each table stays allocated for ever (a
/// handler may be reading the previous one).
pub fn set_jit_functions(mut functions: Vec<JitFunction>) {
    functions.sort_by_key(|f| f.start);
    for f in &mut functions {
        f.lines.sort_by_key(|r| r.0);
    }
    let p = Box::into_raw(Box::new(functions));
    JIT_FUNCTIONS.store(p, Ordering::Release);
}

fn jit_in_process(pc: u64, out: &mut dyn Sink) -> bool {
    let p = JIT_FUNCTIONS.load(Ordering::Acquire);
    if p.is_null() {
        return false;
    }
    // SAFETY: tables are leaked, never freed or changed after publication.
    let table = unsafe { &*p };
    let i = table.partition_point(|f| f.start <= pc);
    match i.checked_sub(1).and_then(|i| table.get(i)) {
        Some(f) if pc < f.end => {
            write_function(out, f.name.as_bytes(), pc - f.start, f.module.as_bytes());
            f.write_line(pc, out);
            true
        }
        _ => false,
    }
}

type UnwindTrace = extern "C" fn(*mut c_void, *mut c_void) -> c_int;

extern "C" {
    fn _Unwind_Backtrace(trace: UnwindTrace, arg: *mut c_void) -> c_int;
    fn _Unwind_GetIPInfo(ctx: *mut c_void, ip_before_insn: *mut c_int) -> usize;
}

const URC_NO_REASON: c_int = 0;
const URC_NORMAL_STOP: c_int = 4;

/// Stack walk state: frames of the handler itself are skipped up to the interrupted pc.
struct Walk<'a> {
    report: &'a mut CrashReport,
    found: bool,
    skipped: usize,
}

extern "C" fn walk_frame(ctx: *mut c_void, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Walk` passed to _Unwind_Backtrace, `ctx` the unwinder's context.
    let (w, ip) = unsafe {
        let mut before: c_int = 0;
        (
            &mut *(arg as *mut Walk),
            _Unwind_GetIPInfo(ctx, &mut before) as u64,
        )
    };
    if !w.found {
        w.found = ip == w.report.pc;
        w.skipped += 1;
        if !w.found {
            return if w.skipped > 32 {
                URC_NORMAL_STOP
            } else {
                URC_NO_REASON
            };
        }
    }
    let r = &mut *w.report;
    r.frames[r.nframes] = ip;
    r.nframes += 1;
    if r.nframes == MAX_FRAMES {
        URC_NORMAL_STOP
    } else {
        URC_NO_REASON
    }
}

/// Fills `frames`: `pc` and the return addresses above it, when the unwinder gets there.
fn collect_frames(r: &mut CrashReport) {
    let mut w = Walk {
        report: r,
        found: false,
        skipped: 0,
    };
    // SAFETY: walk_frame only touches `w`; the unwinder reads the (registered) unwind tables.
    unsafe { _Unwind_Backtrace(walk_frame, &mut w as *mut Walk as *mut c_void) };
    if !w.found {
        r.frames[0] = r.pc;
        r.nframes = 1;
    }
    if r.nframes == 1 {
        // No unwind information at the pc (a call through a bad pointer lands nowhere): the
        // word on top of the stack is likely the caller's return address.
        if let Some(ret) = read_word(r.sp) {
            r.frames[1] = ret;
            r.nframes = 2;
        }
    }
}

/// Reads a word of our own memory without faulting on a bad address.
fn read_word(addr: u64) -> Option<u64> {
    let mut word = 0u64;
    let local = libc::iovec {
        iov_base: (&mut word as *mut u64).cast(),
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: 8,
    };
    // SAFETY: process_vm_readv(2) on our own process writes only into `word`, and reports
    // an unmapped `addr` as an error instead of faulting.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (n == 8).then_some(word)
}

/// Fills the library and exported symbol containing `pc`.
fn find_library(r: &mut CrashReport) {
    // SAFETY: dladdr fills a local Dl_info; the strings belong to loaded objects.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(r.pc as *const c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return;
        }
        r.lib = Name::from_bytes(CStr::from_ptr(info.dli_fname).to_bytes());
        r.lib_base = info.dli_fbase as u64;
        if !info.dli_sname.is_null() {
            r.sym = Name::from_bytes(CStr::from_ptr(info.dli_sname).to_bytes());
            r.sym_addr = info.dli_saddr as u64;
        }
    }
}

/// The signal being reported, for the watchdog.
static DYING_OF: AtomicI32 = AtomicI32::new(0);

/// Seconds the report may take before the watchdog ends the process anyway.
const REPORT_SECONDS: u32 = 3;

/// If the report hangs (the unwinder's lock, held by the code that crashed): die of the
/// signal being reported, now.
extern "C" fn on_watchdog(_: i32) {
    let sig = DYING_OF.load(Ordering::Relaxed);
    // SAFETY: signal(2), raise(3), sigprocmask and _exit(2) are async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::raise(sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::_exit(128 + sig);
    }
}

/// Arms the watchdog: SIGALRM (unblocked here) after [`REPORT_SECONDS`].
fn arm_watchdog(sig: i32) {
    DYING_OF.store(sig, Ordering::Relaxed);
    // SAFETY: sigaction, sigprocmask and alarm(2) are async-signal-safe; the process is dying,
    // so the program's own SIGALRM disposition and alarm no longer matter.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_watchdog as *const () as usize;
        sa.sa_flags = libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::alarm(REPORT_SECONDS);
    }
}

extern "C" fn on_crash(sig: i32, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    arm_watchdog(sig);
    let mut r = CrashReport::new(sig);
    // SAFETY: the kernel passes valid siginfo and ucontext pointers to SA_SIGINFO handlers;
    // getpid(2) is async-signal-safe.
    unsafe {
        r.pid = libc::getpid();
        if !info.is_null() {
            r.code = (*info).si_code;
            if has_fault_address(sig, r.code) {
                r.addr = Some((*info).si_addr() as u64);
            } else if r.code <= 0 {
                r.sender = (*info).si_pid();
            }
        }
        if !ctx.is_null() {
            let uc = ctx as *const libc::ucontext_t;
            r.pc = (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
            r.sp = (*uc).uc_mcontext.gregs[libc::REG_RSP as usize] as u64;
        }
    }
    let in_process = IN_PROCESS.load(Ordering::Relaxed);
    let fd = REPORT_FD.load(Ordering::Relaxed);
    if !in_process {
        // The signal first: the walk below reads memory that may be broken.
        let mut first = Line::<256>::new();
        write_signal_line(&r, &mut first);
        first.write_to(fd);
    }
    collect_frames(&mut r);
    find_library(&mut r);
    if in_process {
        let mut text = Line::<2048>::new();
        text.push(b"remjit: ");
        describe(sig, Some(&r), &mut text, &jit_in_process);
        text.push(b"\n");
        text.write_to(2);
    } else {
        let mut rest = Line::<2048>::new();
        write_detail_lines(&r, &mut rest);
        rest.write_to(fd);
    }
    // SAFETY: signal(2) and raise(3) are async-signal-safe; the signal is blocked until the
    // handler returns, then kills the process with its default action.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Bytes of the crash handler's alternate stack (the unwinder needs room).
const ALT_STACK: usize = 256 * 1024;

/// An alternate signal stack for the current thread, given back when dropped.
pub struct AltStack {
    stack: *mut c_void,
    old: libc::stack_t,
}

impl AltStack {
    /// Maps a stack and makes it the current thread's signal stack.
    pub fn new() -> std::io::Result<AltStack> {
        // SAFETY: a fresh anonymous mapping used only as this thread's signal stack.
        unsafe {
            let stack = libc::mmap(
                std::ptr::null_mut(),
                ALT_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if stack == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            let ss = libc::stack_t {
                ss_sp: stack,
                ss_flags: 0,
                ss_size: ALT_STACK,
            };
            let mut old: libc::stack_t = std::mem::zeroed();
            if libc::sigaltstack(&ss, &mut old) != 0 {
                let e = std::io::Error::last_os_error();
                libc::munmap(stack, ALT_STACK);
                return Err(e);
            }
            Ok(AltStack { stack, old })
        }
    }

    /// Keeps the stack for the rest of the thread's life (the main thread's).
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        // SAFETY: puts back the thread's previous signal stack, then unmaps ours.
        unsafe {
            libc::sigaltstack(&self.old, std::ptr::null_mut());
            libc::munmap(self.stack, ALT_STACK);
        }
    }
}

fn install_handlers() -> std::io::Result<()> {
    AltStack::new()?.keep();
    for sig in CRASH_SIGNALS {
        // SAFETY: installing a handler with a zeroed, then filled, sigaction.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_crash as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            // A report into a closed pipe must not end in SIGPIPE.
            libc::sigaddset(&mut sa.sa_mask, libc::SIGPIPE);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The executor: installs the crash handlers (on an alternate stack, so stack overflows
/// report too); machine lines go to `report_fd` for the controller.
pub fn install(report_fd: i32) -> std::io::Result<()> {
    REPORT_FD.store(report_fd, Ordering::Relaxed);
    IN_PROCESS.store(false, Ordering::Relaxed);
    install_handlers()
}

/// In process: the handlers write the sentence to stderr themselves (`remjit: the JIT'd code
/// crashed: ...`), naming JIT'd functions from [`set_jit_functions`].
pub fn install_in_process() -> std::io::Result<()> {
    IN_PROCESS.store(true, Ordering::Relaxed);
    install_handlers()
}
