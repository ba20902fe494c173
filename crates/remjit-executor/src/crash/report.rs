//! What a crash report holds, its machine lines (the executor's handler writes them, the
//! controller parses them) and the sentence both modes print ([`describe`]), formatted without
//! allocating so that the in-process handler can use it.
//!
//! The lines (parsed by [`parse_report`]):
//! ```text
//! remjit-executor: crash: signal=11 code=1 sender=0 pid=77 addr=0x10 pc=0x40001234
//! remjit-executor: crash-lib: base=0x7f0000000000 sym_addr=0x7f0000001000 sym=strlen path=/lib/x86_64-linux-gnu/libc.so.6
//! remjit-executor: crash-frames: 0x40001234 0x40001300
//! ```

/// Return addresses kept per report.
pub const MAX_FRAMES: usize = 24;

#[rustfmt::skip]
const SIGNAL_NAMES: [&str; 32] = [
    "", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE",
    "SIGKILL", "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT",
    "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU",
    "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
];

/// The conventional name of a classic signal (real-time ones have none).
pub fn signal_name(sig: i32) -> Option<&'static str> {
    usize::try_from(sig)
        .ok()
        .and_then(|i| SIGNAL_NAMES.get(i))
        .copied()
        .filter(|n| !n.is_empty())
}

/// Where report text goes: a `String` in the controller, a fixed buffer in the handler.
pub trait Sink {
    /// Appends bytes (a fixed buffer drops what does not fit).
    fn push(&mut self, s: &[u8]);
}

impl Sink for String {
    fn push(&mut self, s: &[u8]) {
        self.push_str(&String::from_utf8_lossy(s));
    }
}

/// A fixed buffer the handler formats into without allocating.
pub(crate) struct Line<const N: usize> {
    pub(crate) buf: [u8; N],
    pub(crate) len: usize,
}

impl<const N: usize> Line<N> {
    pub(crate) fn new() -> Self {
        Line {
            buf: [0; N],
            len: 0,
        }
    }
    pub(crate) fn write_to(&self, fd: i32) {
        let mut done = 0;
        while done < self.len {
            // SAFETY: write(2) from our buffer; async-signal-safe.
            let n = unsafe { libc::write(fd, self.buf[done..].as_ptr().cast(), self.len - done) };
            if n <= 0 {
                return;
            }
            done += n as usize;
        }
    }
}

impl<const N: usize> Sink for Line<N> {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }
}

/// Writes `v` as `0x` hex.
pub fn hex(out: &mut dyn Sink, v: u64) {
    let mut digits = [0u8; 16];
    let mut n = 0;
    let mut v = v;
    loop {
        let d = (v & 0xf) as u8;
        digits[n] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
        n += 1;
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    digits[..n].reverse();
    out.push(b"0x");
    out.push(&digits[..n]);
}

/// Writes `v` in decimal.
pub fn dec(out: &mut dyn Sink, v: i64) {
    if v < 0 {
        out.push(b"-");
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
    digits[..n].reverse();
    out.push(&digits[..n]);
}

/// Writes `SIGSEGV (signal 11)`, or `SIGRTMIN+3 (signal 37)`.
pub fn write_signal(out: &mut dyn Sink, sig: i32) {
    match signal_name(sig) {
        Some(n) => out.push(n.as_bytes()),
        None if sig >= libc::SIGRTMIN() && sig <= libc::SIGRTMAX() => {
            out.push(b"SIGRTMIN+");
            dec(out, i64::from(sig - libc::SIGRTMIN()));
        }
        None => out.push(b"an unknown signal"),
    }
    out.push(b" (signal ");
    dec(out, i64::from(sig));
    out.push(b")");
}

/// A path or symbol name of bounded length, held inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    bytes: [u8; 160],
    len: usize,
}

impl Name {
    const EMPTY: Name = Name {
        bytes: [0; 160],
        len: 0,
    };

    pub(crate) fn from_bytes(b: &[u8]) -> Name {
        let mut n = Name::EMPTY;
        n.len = b.len().min(n.bytes.len());
        n.bytes[..n.len].copy_from_slice(&b[..n.len]);
        n
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Whether there is no name.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// A crash report: what the handler saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashReport {
    /// The signal number.
    pub signal: i32,
    /// `si_code`: positive when the kernel raised the signal (a fault), else sent by a process.
    pub code: i32,
    /// `si_pid`, for a signal a process sent.
    pub sender: i32,
    /// The process that died.
    pub pid: i32,
    /// The faulting address, for faults that have one (SIGSEGV, SIGBUS, SIGILL, SIGFPE,
    /// SIGTRAP raised by the kernel).
    pub addr: Option<u64>,
    /// The instruction pointer when the signal arrived.
    pub pc: u64,
    /// The stack pointer then.
    pub sp: u64,
    /// The library (path) containing `pc`, if any.
    pub lib: Name,
    /// Its load address.
    pub lib_base: u64,
    /// The exported symbol of that library containing `pc`, if any.
    pub sym: Name,
    /// The symbol's address.
    pub sym_addr: u64,
    /// `pc`, then the return addresses of the frames above it (innermost first).
    pub frames: [u64; MAX_FRAMES],
    /// How many `frames` are valid.
    pub nframes: usize,
}

impl CrashReport {
    pub(crate) fn new(signal: i32) -> CrashReport {
        CrashReport {
            signal,
            code: 0,
            sender: 0,
            pid: 0,
            addr: None,
            pc: 0,
            sp: 0,
            lib: Name::EMPTY,
            lib_base: 0,
            sym: Name::EMPTY,
            sym_addr: 0,
            frames: [0; MAX_FRAMES],
            nframes: 0,
        }
    }

    /// Whether the kernel raised the signal (a fault of the code), rather than a process.
    pub fn is_fault(&self) -> bool {
        self.code > 0
    }

    /// The return addresses above the crashing frame.
    pub fn callers(&self) -> &[u64] {
        self.frames[..self.nframes].get(1..).unwrap_or(&[])
    }

    /// Whether this is a fault just beyond the stack pointer: the stack ran out.
    pub fn is_stack_overflow(&self) -> bool {
        const NEAR: u64 = 64 * 1024;
        self.signal == libc::SIGSEGV
            && self.sp != 0
            && self.addr.is_some_and(|a| a.abs_diff(self.sp) < NEAR)
    }
}

/// Whether `si_addr` means something: faults the kernel raised (`si_code` > 0).
pub(crate) fn has_fault_address(sig: i32, code: i32) -> bool {
    code > 0
        && matches!(
            sig,
            libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP
        )
}

fn parse_num(v: &str) -> Option<u64> {
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse::<i64>().ok().map(|x| x as u64),
    }
}

/// Finds and parses the crash lines in `text`.
pub fn parse_report(text: &str) -> Option<CrashReport> {
    let mut r = CrashReport::new(0);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("remjit-executor: crash: ") {
            for (k, v) in rest.split_whitespace().filter_map(|f| f.split_once('=')) {
                let n = parse_num(v)?;
                match k {
                    "signal" => r.signal = n as i32,
                    "code" => r.code = n as i32,
                    "sender" => r.sender = n as i32,
                    "pid" => r.pid = n as i32,
                    "addr" => r.addr = Some(n),
                    "pc" => r.pc = n,
                    "sp" => r.sp = n,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("remjit-executor: crash-lib: ") {
            let (fields, path) = rest.split_once(" path=")?;
            r.lib = Name::from_bytes(path.as_bytes());
            for (k, v) in fields.split_whitespace().filter_map(|f| f.split_once('=')) {
                match k {
                    "base" => r.lib_base = parse_num(v)?,
                    "sym_addr" => r.sym_addr = parse_num(v)?,
                    "sym" => r.sym = Name::from_bytes(v.as_bytes()),
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("remjit-executor: crash-frames:") {
            for pc in rest.split_whitespace().filter_map(parse_num) {
                if r.nframes < MAX_FRAMES {
                    r.frames[r.nframes] = pc;
                    r.nframes += 1;
                }
            }
        }
    }
    (r.signal != 0).then_some(r)
}

/// Writes the report's machine lines (see the module documentation).
#[cfg(test)]
fn write_lines(r: &CrashReport, out: &mut dyn Sink) {
    write_signal_line(r, out);
    write_detail_lines(r, out);
}

pub(crate) fn write_signal_line(r: &CrashReport, out: &mut dyn Sink) {
    out.push(b"remjit-executor: crash: signal=");
    dec(out, i64::from(r.signal));
    out.push(b" code=");
    dec(out, i64::from(r.code));
    out.push(b" sender=");
    dec(out, i64::from(r.sender));
    out.push(b" pid=");
    dec(out, i64::from(r.pid));
    if let Some(a) = r.addr {
        out.push(b" addr=");
        hex(out, a);
    }
    out.push(b" pc=");
    hex(out, r.pc);
    out.push(b" sp=");
    hex(out, r.sp);
    out.push(b"\n");
}

pub(crate) fn write_detail_lines(r: &CrashReport, out: &mut dyn Sink) {
    if !r.lib.is_empty() {
        out.push(b"remjit-executor: crash-lib: base=");
        hex(out, r.lib_base);
        out.push(b" sym_addr=");
        hex(out, r.sym_addr);
        if !r.sym.is_empty() {
            out.push(b" sym=");
            out.push(r.sym.as_bytes());
        }
        out.push(b" path=");
        out.push(r.lib.as_bytes());
        out.push(b"\n");
    }
    out.push(b"remjit-executor: crash-frames:");
    for &pc in &r.frames[..r.nframes] {
        out.push(b" ");
        hex(out, pc);
    }
    out.push(b"\n");
}

/// Names a JIT'd code address (`` `f`+0x4 (module a.o) ``) and returns true, or returns false.
pub type Symbolize<'a> = &'a dyn Fn(u64, &mut dyn Sink) -> bool;

/// Writes `` `name`+0xOFF (module MODULE) ``, the form JIT'd functions are named in.
pub fn write_function(out: &mut dyn Sink, name: &[u8], off: u64, module: &[u8]) {
    out.push(b"`");
    out.push(name);
    out.push(b"`+");
    hex(out, off);
    out.push(b" (module ");
    out.push(module);
    out.push(b")");
}

/// Writes where `r.pc` is: a JIT'd function, a library's symbol, or neither; then the nearest
/// JIT'd caller when the pc itself is not JIT'd code.
fn write_location(r: &CrashReport, out: &mut dyn Sink, jit: Symbolize) {
    out.push(b", in ");
    if jit(r.pc, out) {
        out.push(b" (pc ");
        hex(out, r.pc);
        out.push(b")");
        write_jit_callers(r, out, jit);
        return;
    }
    if !r.lib.is_empty() {
        if r.sym.is_empty() {
            out.push(r.lib.as_bytes());
            out.push(b"+");
            hex(out, r.pc.wrapping_sub(r.lib_base));
        } else {
            out.push(b"`");
            out.push(r.sym.as_bytes());
            out.push(b"`+");
            hex(out, r.pc.wrapping_sub(r.sym_addr));
            out.push(b" (");
            out.push(r.lib.as_bytes());
            out.push(b")");
        }
    } else {
        out.push(b"code at pc ");
        hex(out, r.pc);
        out.push(b" (in no library, nor in a JIT'd function linked so far)");
    }
    // A return address points after its call: name the call's own byte.
    if let Some(&ret) = r
        .callers()
        .iter()
        .find(|&&ret| jit(ret.wrapping_sub(1), &mut Line::<0>::new()))
    {
        out.push(b", called from ");
        jit(ret.wrapping_sub(1), out);
    }
}

/// JIT'd callers shown after a crash in JIT'd code (a deep recursion repeats itself).
const MAX_JIT_CALLERS: usize = 8;

/// The backtrace through JIT'd frames above a crash in JIT'd code: `, called from ...` for each
/// caller, up to the first frame that is not JIT'd code.
fn write_jit_callers(r: &CrashReport, out: &mut dyn Sink, jit: Symbolize) {
    for (i, &ret) in r.callers().iter().enumerate() {
        if i == MAX_JIT_CALLERS {
            out.push(b", ...");
            return;
        }
        // A return address points after its call: name the call's own byte.
        if !jit(ret.wrapping_sub(1), &mut Line::<0>::new()) {
            return;
        }
        out.push(b", called from ");
        jit(ret.wrapping_sub(1), out);
    }
}

/// Describes how the JIT'd program died of `sig`, from its report when it wrote one.
pub fn describe(sig: i32, report: Option<&CrashReport>, out: &mut dyn Sink, jit: Symbolize) {
    let Some(r) = report.filter(|r| r.signal == sig) else {
        if sig == libc::SIGKILL {
            out.push(b"the executor was killed by ");
            write_signal(out, sig);
            out.push(
                b" from outside (kill -9, or the kernel's out-of-memory killer): \
                  not a crash of the JIT'd code",
            );
        } else {
            out.push(b"the JIT'd program was killed by ");
            write_signal(out, sig);
        }
        return;
    };
    if r.is_fault() {
        out.push(b"the JIT'd code crashed: ");
        write_signal(out, sig);
        if let Some(a) = r.addr {
            out.push(b" at address ");
            hex(out, a);
        }
        if r.is_stack_overflow() {
            out.push(b" (stack overflow)");
        }
    } else {
        out.push(b"the JIT'd program died of ");
        write_signal(out, sig);
        if r.sender == r.pid {
            out.push(b", raised by itself (abort, raise or kill)");
        } else {
            out.push(b", sent by process ");
            dec(out, i64::from(r.sender));
        }
    }
    write_location(r, out, jit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jit(_: u64, _: &mut dyn Sink) -> bool {
        false
    }

    #[test]
    fn report_round_trip() {
        let mut r = CrashReport::new(11);
        r.code = 1;
        r.pid = 77;
        r.addr = Some(0x10);
        r.pc = 0x7f00_0000_1010;
        r.sp = 0x7ffe_0000_0000;
        r.lib = Name::from_bytes(b"/lib/with space/libc.so.6");
        r.lib_base = 0x7f00_0000_0000;
        r.sym = Name::from_bytes(b"strlen");
        r.sym_addr = 0x7f00_0000_1000;
        r.frames[..2].copy_from_slice(&[0x7f00_0000_1010, 0x4000_1234]);
        r.nframes = 2;
        let mut text = String::from("noise\n");
        write_lines(&r, &mut text);
        assert_eq!(parse_report(&text), Some(r));
        assert_eq!(parse_report("nothing here"), None);
        let jit = |pc: u64, out: &mut dyn Sink| {
            (0x4000_1000..0x4000_2000).contains(&pc) && {
                write_function(out, b"caller", pc - 0x4000_1000, b"c.o");
                true
            }
        };
        let mut s = String::new();
        describe(11, Some(&r), &mut s, &jit);
        assert_eq!(
            s,
            "the JIT'd code crashed: SIGSEGV (signal 11) at address 0x10, in `strlen`+0x10 \
             (/lib/with space/libc.so.6), called from `caller`+0x233 (module c.o)"
        );
    }

    #[test]
    fn jit_backtrace_stops_at_native_code_and_is_capped() {
        let jit = |pc: u64, out: &mut dyn Sink| {
            (0x4000_0000..0x4000_1000).contains(&pc) && {
                write_function(out, b"f", pc - 0x4000_0000, b"r.o");
                true
            }
        };
        let mut r = CrashReport::new(11);
        r.code = 1;
        r.pc = 0x4000_0010;
        r.frames[..4].copy_from_slice(&[0x4000_0010, 0x4000_0021, 0x5000_0000, 0x4000_0031]);
        r.nframes = 4;
        let mut s = String::new();
        describe(11, Some(&r), &mut s, &jit);
        assert_eq!(
            s,
            "the JIT'd code crashed: SIGSEGV (signal 11), in `f`+0x10 (module r.o) (pc \
             0x40000010), called from `f`+0x20 (module r.o)"
        );
        r.frames = [0x4000_0041; MAX_FRAMES];
        r.nframes = MAX_FRAMES;
        s.clear();
        describe(11, Some(&r), &mut s, &jit);
        assert_eq!(s.matches(", called from `f`+0x40 (module r.o)").count(), 8);
        assert!(s.ends_with("(module r.o), ..."), "{s}");
    }

    #[test]
    fn signals_without_reports_or_addresses() {
        let mut s = String::new();
        describe(10, None, &mut s, &no_jit);
        assert_eq!(s, "the JIT'd program was killed by SIGUSR1 (signal 10)");
        s.clear();
        describe(9, None, &mut s, &no_jit);
        assert!(s.starts_with("the executor was killed by SIGKILL (signal 9) from outside"));
        let mut r = CrashReport::new(6);
        r.code = -6;
        r.sender = 5;
        r.pid = 5;
        r.pc = 0x1234;
        r.nframes = 1;
        r.frames[0] = 0x1234;
        s.clear();
        describe(6, Some(&r), &mut s, &no_jit);
        assert_eq!(
            s,
            "the JIT'd program died of SIGABRT (signal 6), raised by itself (abort, raise or \
             kill), in code at pc 0x1234 (in no library, nor in a JIT'd function linked so far)"
        );
        s.clear();
        write_signal(&mut s, libc::SIGRTMIN() + 2);
        assert_eq!(s, format!("SIGRTMIN+2 (signal {})", libc::SIGRTMIN() + 2));
    }

    #[test]
    fn formatting_without_allocation() {
        let mut l = Line::<64>::new();
        hex(&mut l, 0);
        l.push(b" ");
        hex(&mut l, 0xdead_beef);
        l.push(b" ");
        dec(&mut l, -42);
        assert_eq!(&l.buf[..l.len], b"0x0 0xdeadbeef -42");
        let mut tiny = Line::<4>::new();
        tiny.push(b"abcdef");
        assert_eq!(&tiny.buf[..tiny.len], b"abcd");
    }
}
