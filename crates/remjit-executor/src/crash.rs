//! Crash reports: when JIT'd code kills the executor (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT,
//! SIGTRAP), a signal handler writes one line naming the signal, the faulting address and the
//! instruction pointer to a report file descriptor, then lets the signal kill the process as it
//! would have. The controller reads the line and names the JIT'd function.
//!
//! The line's format (parsed by [`parse_report`]):
//! `remjit-executor: crash: signal=11 name=SIGSEGV addr=0x10 pc=0x40001234 code=1`

use std::sync::atomic::{AtomicI32, Ordering};

static REPORT_FD: AtomicI32 = AtomicI32::new(2);

/// The signals that mean "the JIT'd code crashed".
pub const CRASH_SIGNALS: [i32; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
    libc::SIGTRAP,
];

/// The conventional name of a signal.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}

/// A crash report as written by the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashReport {
    /// The signal number.
    pub signal: i32,
    /// The faulting address (`si_addr`).
    pub addr: u64,
    /// The instruction pointer when the signal arrived.
    pub pc: u64,
    /// `si_code`.
    pub code: i32,
}

/// Finds and parses a crash line in `text`.
pub fn parse_report(text: &str) -> Option<CrashReport> {
    let line = text
        .lines()
        .find(|l| l.starts_with("remjit-executor: crash: "))?;
    let mut r = CrashReport {
        signal: 0,
        addr: 0,
        pc: 0,
        code: 0,
    };
    for field in line.split_whitespace() {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        let num = |v: &str| -> Option<u64> {
            match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => v.parse::<i64>().ok().map(|x| x as u64),
            }
        };
        match k {
            "signal" => r.signal = num(v)? as i32,
            "addr" => r.addr = num(v)?,
            "pc" => r.pc = num(v)?,
            "code" => r.code = num(v)? as i32,
            _ => {}
        }
    }
    (r.signal != 0).then_some(r)
}

/// A fixed buffer the handler formats into without allocating.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }
    fn hex(&mut self, v: u64) {
        self.push(b"0x");
        let mut started = false;
        for i in (0..16).rev() {
            let d = ((v >> (i * 4)) & 0xf) as u8;
            if d != 0 || started || i == 0 {
                started = true;
                self.push(&[if d < 10 { b'0' + d } else { b'a' + d - 10 }]);
            }
        }
    }
    fn dec(&mut self, v: i64) {
        if v < 0 {
            self.push(b"-");
        }
        let mut v = v.unsigned_abs();
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for i in (0..n).rev() {
            self.push(&[digits[i]]);
        }
    }
}

extern "C" fn on_crash(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Only async-signal-safe work here: format into a stack buffer, write(2), re-raise.
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    // SAFETY: the kernel passes valid siginfo and ucontext pointers to SA_SIGINFO handlers.
    let (addr, code, pc) = unsafe {
        let addr = if info.is_null() {
            0
        } else {
            (*info).si_addr() as u64
        };
        let code = if info.is_null() { 0 } else { (*info).si_code };
        let pc = if ctx.is_null() {
            0
        } else {
            let uc = ctx as *const libc::ucontext_t;
            (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as u64
        };
        (addr, code, pc)
    };
    line.push(b"remjit-executor: crash: signal=");
    line.dec(i64::from(sig));
    line.push(b" name=");
    line.push(signal_name(sig).as_bytes());
    line.push(b" addr=");
    line.hex(addr);
    line.push(b" pc=");
    line.hex(pc);
    line.push(b" code=");
    line.dec(i64::from(code));
    line.push(b"\n");
    let fd = REPORT_FD.load(Ordering::Relaxed);
    // SAFETY: write(2), signal(2) and raise(3) are async-signal-safe.
    unsafe {
        libc::write(fd, line.buf.as_ptr().cast(), line.len);
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs the crash handlers (on an alternate stack, so stack overflows report too); reports
/// go to `report_fd`.
pub fn install(report_fd: i32) -> std::io::Result<()> {
    REPORT_FD.store(report_fd, Ordering::Relaxed);
    const ALT_STACK: usize = 64 * 1024;
    // SAFETY: a fresh anonymous mapping used only as the signal stack, never freed.
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
        if libc::sigaltstack(&ss, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        for sig in CRASH_SIGNALS {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_crash as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trip() {
        let text = "noise\nremjit-executor: crash: signal=11 name=SIGSEGV addr=0x10 pc=0x40001234 code=1\n";
        assert_eq!(
            parse_report(text),
            Some(CrashReport {
                signal: 11,
                addr: 0x10,
                pc: 0x4000_1234,
                code: 1
            })
        );
        assert_eq!(parse_report("nothing here"), None);
    }

    #[test]
    fn formatting_without_allocation() {
        let mut l = Line {
            buf: [0; 256],
            len: 0,
        };
        l.hex(0);
        l.push(b" ");
        l.hex(0xdead_beef);
        l.push(b" ");
        l.dec(-42);
        assert_eq!(&l.buf[..l.len], b"0x0 0xdeadbeef -42");
    }
}
