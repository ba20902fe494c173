//! perf's views of JIT'd code, written by the process that runs it: the perf map
//! (`/tmp/perf-PID.map`, one `START SIZE name` line per function) and the jitdump file
//! (`jit-PID.dump` in the working directory; perf's format: a header, then code-load records
//! with the code bytes, preceded by debug-info records with line tables, and a close record
//! at exit). The jitdump file is mapped executable once, the marker `perf inject --jit` finds
//! it by.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

/// A JIT'd function and its line table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerfFunction {
    /// Its address.
    pub addr: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its name.
    pub name: String,
    /// `(address, line, file)` rows, by address.
    pub lines: Vec<(u64, u32, String)>,
}

/// Which files to write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerfOutputs {
    /// `/tmp/perf-PID.map`.
    pub map: bool,
    /// `jit-PID.dump`.
    pub jitdump: bool,
}

const JITDUMP_MAGIC: u32 = 0x4A69_5444;
const JIT_CODE_LOAD: u32 = 0;
const JIT_CODE_CLOSE: u32 = 3;
const JIT_CODE_DEBUG_INFO: u32 = 2;
const EM_X86_64: u32 = 62;
/// Bound on one function's code in a record (perf's fields are 32-bit sizes).
const MAX_RECORD: u64 = 1 << 30;

struct Dump {
    file: File,
    next_index: u64,
}

static MAP: Mutex<Option<File>> = Mutex::new(None);
static DUMP: Mutex<Option<Dump>> = Mutex::new(None);

/// The perf map's path for this process.
pub fn map_path() -> String {
    format!("/tmp/perf-{}.map", std::process::id())
}

/// The jitdump file's name for this process (in the working directory).
pub fn jitdump_name() -> String {
    format!("jit-{}.dump", std::process::id())
}

fn timestamp() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a local struct. perf record -k 1 uses CLOCK_MONOTONIC too.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

fn tid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Records `functions` (already in this process's memory, readable) in the files asked for.
///
/// # Safety
/// Every function's `[addr, addr + size)` must be mapped readable.
pub unsafe fn record(functions: &[PerfFunction], out: PerfOutputs) -> Result<(), String> {
    if out.map {
        write_map(functions)?;
    }
    if out.jitdump {
        write_dump(functions)?;
    }
    Ok(())
}

fn write_map(functions: &[PerfFunction]) -> Result<(), String> {
    let mut guard = MAP.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let path = map_path();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open the perf map {path}: {e}"))?;
        *guard = Some(f);
    }
    let mut text = String::new();
    for f in functions {
        // One line per function, whatever bytes the name holds.
        let name = f.name.replace(['\n', '\r'], " ");
        text.push_str(&format!("{:x} {:x} {name}\n", f.addr, f.size));
    }
    let file = guard.as_mut().ok_or("perf map closed")?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write the perf map {}: {e}", map_path()))
}

fn open_dump() -> Result<Dump, String> {
    let name = jitdump_name();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&name)
        .map_err(|e| format!("cannot create the jitdump file {name}: {e}"))?;
    let mut h = Vec::with_capacity(40);
    for v in [JITDUMP_MAGIC, 1, 40, EM_X86_64, 0, std::process::id()] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&timestamp().to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes());
    (&file)
        .write_all(&h)
        .map_err(|e| format!("cannot write the jitdump file {name}: {e}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: maps the file's first page; the mapping is perf's marker and stays for the
    // process's life (never accessed).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!(
            "cannot map the jitdump file {name} (perf's marker): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: registering a plain function with libc's atexit.
    unsafe { libc::atexit(close_dump) };
    Ok(Dump {
        file,
        next_index: 0,
    })
}

fn record_header(out: &mut Vec<u8>, id: u32, total: u64) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&timestamp().to_le_bytes());
}

fn debug_record(out: &mut Vec<u8>, f: &PerfFunction) {
    let entries: u64 = f
        .lines
        .iter()
        .map(|(_, _, n)| 16 + n.len() as u64 + 1)
        .sum();
    if entries > MAX_RECORD {
        return; // Too large for a record's 32-bit size: the code loads without lines.
    }
    record_header(out, JIT_CODE_DEBUG_INFO, 16 + 16 + entries);
    out.extend_from_slice(&f.addr.to_le_bytes());
    out.extend_from_slice(&(f.lines.len() as u64).to_le_bytes());
    for (addr, line, file) in &f.lines {
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&(*line as i32).to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(file.as_bytes());
        out.push(0);
    }
}

unsafe fn load_record(out: &mut Vec<u8>, f: &PerfFunction, index: u64) {
    let total = 16 + 4 + 4 + 8 * 4 + f.name.len() as u64 + 1 + f.size;
    record_header(out, JIT_CODE_LOAD, total);
    // SAFETY: getpid has no preconditions.
    out.extend_from_slice(&(libc::getpid() as u32).to_le_bytes());
    out.extend_from_slice(&tid().to_le_bytes());
    for v in [f.addr, f.addr, f.size, index] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(f.name.as_bytes());
    out.push(0);
    // SAFETY: the caller guarantees the code is mapped readable.
    out.extend_from_slice(std::slice::from_raw_parts(
        f.addr as *const u8,
        f.size as usize,
    ));
}

fn write_dump(functions: &[PerfFunction]) -> Result<(), String> {
    let mut guard = DUMP.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        *guard = Some(open_dump()?);
    }
    let dump = guard.as_mut().ok_or("jitdump closed")?;
    let mut buf = Vec::new();
    for f in functions {
        if f.size == 0 || f.size > MAX_RECORD || f.name.len() as u64 > MAX_RECORD {
            continue;
        }
        if !f.lines.is_empty() {
            debug_record(&mut buf, f);
        }
        // SAFETY: `record`'s caller guarantees the code is readable.
        unsafe { load_record(&mut buf, f, dump.next_index) };
        dump.next_index += 1;
    }
    (&dump.file)
        .write_all(&buf)
        .map_err(|e| format!("cannot write the jitdump file {}: {e}", jitdump_name()))
}

extern "C" fn close_dump() {
    let mut guard = DUMP.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = guard.take() {
        let mut buf = Vec::new();
        record_header(&mut buf, JIT_CODE_CLOSE, 16);
        let _ = (&d.file).write_all(&buf);
    }
}
