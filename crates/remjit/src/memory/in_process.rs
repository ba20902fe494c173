//! `InProcessMapper`: JIT memory in remjit's own process (anonymous mappings, `mprotect`).

use std::collections::HashMap;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use remjit_executor::runtime::access::{self, ProtMap};
use remjit_executor::vm::PackSet;

use crate::error::{Error, Result};
use crate::memory::actions::{run_in_process, AllocAction};
use crate::memory::mapper::{AllocInfo, MemoryMapper, Prot};

/// A memory mapper for code that runs in this process.
#[derive(Default)]
pub struct InProcessMapper {
    /// Each finalized allocation, by handle (its base).
    live: Mutex<HashMap<u64, Live>>,
    /// The memory file behind packs and where they lie in it.
    packs: Mutex<PackFile>,
    /// Protections of the finalized allocations' segments: what an embedder may read, write
    /// or call.
    prots: Mutex<ProtMap>,
}

/// A finalized allocation.
struct Live {
    /// Bytes from the base to the end of the last segment.
    extent: u64,
    /// Dealloc actions, in the order the finalize actions ran.
    dealloc: Vec<AllocAction>,
    /// For a link packed with others: its segments' ranges (its pages are not its own).
    pieces: Option<Vec<(u64, u64)>>,
}

/// The memfd whose pages packs map twice (executable view and writable view).
#[derive(Default)]
struct PackFile {
    fd: Option<OwnedFd>,
    /// Bytes of the file used so far.
    end: u64,
    /// Offsets of packs given back, for reuse.
    spare: Vec<(u64, u64)>,
    /// Packs by base: (offset in the file, writable view).
    at: PackSet<(u64, u64)>,
}

impl PackFile {
    /// The memfd, created on first use.
    fn fd(&mut self) -> Result<std::os::fd::BorrowedFd<'_>> {
        if self.fd.is_none() {
            // SAFETY: memfd_create with a constant name.
            let fd = unsafe { libc::memfd_create(c"remjit-packs".as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err(os_error("memfd_create (packs)"));
            }
            // SAFETY: a descriptor we own from here on.
            self.fd = Some(remjit_executor::fds::out_of_the_way(unsafe {
                OwnedFd::from_raw_fd(fd)
            }));
        }
        self.fd
            .as_ref()
            .map(|f| f.as_fd())
            .ok_or_else(|| Error::Memory("no pack file".into()))
    }

    /// Room in the file for a pack of `len` bytes: a spare one, else the file grows.
    fn room(&mut self, len: u64) -> Result<u64> {
        if let Some(i) = self.spare.iter().position(|s| s.1 == len) {
            return Ok(self.spare.swap_remove(i).0);
        }
        let at = self.end;
        let end = at
            .checked_add(len)
            .ok_or_else(|| Error::Memory("pack file too large".into()))?;
        let fd = self.fd()?;
        // SAFETY: ftruncate on our own memfd (it only grows).
        if unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), end as libc::off_t) } != 0
        {
            return Err(os_error("ftruncate (packs)"));
        }
        self.end = end;
        Ok(at)
    }
}

impl InProcessMapper {
    /// A new mapper.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether any byte of `[addr, addr + len)` lies in a finalized allocation.
    pub fn touches(&self, addr: u64, len: u64) -> bool {
        self.prots.lock().is_ok_and(|m| m.touches(addr, len))
    }

    /// Checks that `[addr, addr + len)` lies in finalized allocations with the protection
    /// bits `need` ([`access::prot`]); the refusal is worded as the executor's.
    pub fn check_access(&self, addr: u64, len: u64, need: u8) -> std::result::Result<(), String> {
        let end = access::end_of(addr, len)?;
        let m = self.prots.lock().map_err(|_| "mapper state poisoned")?;
        if !m.touches(addr, len) {
            return Err(access::not_handed_out(addr, end));
        }
        if m.covered(addr, len, need) {
            return Ok(());
        }
        Err(match need {
            access::prot::WRITE => access::not_writable(addr, end),
            _ => access::not_readable(addr, end),
        })
    }
}

fn os_error(what: &str) -> Error {
    Error::Memory(format!("{what}: {}", std::io::Error::last_os_error()))
}

impl MemoryMapper for InProcessMapper {
    fn page_size(&self) -> u64 {
        rustix::param::page_size() as u64
    }

    fn reserve(&self, size: u64, near: Option<u64>, low: bool) -> Result<u64> {
        remjit_executor::vm::reserve(size, near, low)
            .map_err(|e| Error::Memory(format!("cannot reserve {size} bytes: {e}")))
    }

    fn reserve_slab(
        &self,
        want: u64,
        need: u64,
        near: Option<u64>,
        low: bool,
    ) -> Result<(u64, u64)> {
        remjit_executor::vm::place(want, need, near, low)
            .map_err(|e| Error::Memory(format!("cannot reserve {want} bytes: {e}")))
    }

    fn can_map_files(&self) -> bool {
        true
    }

    fn working_memory_is_live(&self) -> bool {
        true
    }

    fn discard(&self, addr: u64, len: u64) -> Result<()> {
        remjit_executor::vm::reset(addr, len)
            .map_err(|e| Error::Memory(format!("resetting {addr:#x}: {e}")))
    }

    fn prepare(&self, addr: u64, len: u64) -> Result<*mut u8> {
        // SAFETY: the range lies in a reservation of ours that no one else uses.
        if unsafe {
            libc::mprotect(
                addr as *mut libc::c_void,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        } != 0
        {
            return Err(os_error("mprotect (prepare)"));
        }
        Ok(addr as *mut u8)
    }

    fn initialize(&self, info: &AllocInfo) -> Result<u64> {
        for fm in &info.file_maps {
            use std::os::fd::AsRawFd;
            // SAFETY: replaces pages of our own reservation that the linker left untouched.
            let p = unsafe {
                libc::mmap(
                    (info.mapping_base + fm.offset) as *mut libc::c_void,
                    fm.len as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_FIXED,
                    fm.file.as_raw_fd(),
                    fm.file_offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(os_error("mmap of a section from its file"));
            }
        }
        let packs = self
            .packs
            .lock()
            .map_err(|_| Error::Memory("mapper state poisoned".into()))?;
        let mut pieces = Vec::new();
        for seg in &info.segments {
            let len = seg.content_size + seg.zero_fill_size;
            if len == 0 {
                continue;
            }
            let start = info.mapping_base + seg.offset;
            if let Some(prot) = packs.at.area_bits(start, len).map(Prot) {
                // A piece of a pack area: protected once, when the pack was mapped.
                if prot != seg.prot {
                    return Err(Error::Memory(format!(
                        "segment at {start:#x} lies in a pack area of protection {} instead of {}",
                        prot.0, seg.prot.0
                    )));
                }
                pieces.push((start, len));
                continue;
            }
            // Zero fill is already zero: slab memory is fresh or reset when freed. `prepare`
            // made the whole allocation read-write already.
            if seg.prot.to_mprotect() == libc::PROT_READ | libc::PROT_WRITE {
                continue;
            }
            // SAFETY: the segment is working memory we prepared.
            unsafe {
                if libc::mprotect(
                    (info.mapping_base + seg.offset) as *mut libc::c_void,
                    len as usize,
                    seg.prot.to_mprotect(),
                ) != 0
                {
                    return Err(os_error("mprotect (finalize)"));
                }
            }
        }
        drop(packs);
        let pieces = (!pieces.is_empty()).then_some(pieces);
        let extent = info.extent();
        let mut dealloc = Vec::new();
        let mut result = Ok(());
        for pair in &info.actions {
            // SAFETY: the actions name memory of this allocation, now finalized.
            if let Err(e) = unsafe { run_in_process(&pair.finalize) } {
                result = Err(e);
                break;
            }
            if let Some(d) = &pair.dealloc {
                dealloc.push(d.clone());
            }
        }
        if let Err(e) = result {
            // Undo what already ran, newest first.
            for d in dealloc.iter().rev() {
                // SAFETY: as above.
                let _ = unsafe { run_in_process(d) };
            }
            return Err(e);
        }
        if let Ok(mut m) = self.prots.lock() {
            // Pages of its own, or exactly its pieces of shared pages.
            let page = if pieces.is_some() {
                1
            } else {
                self.page_size()
            };
            for seg in &info.segments {
                let start = info.mapping_base + seg.offset;
                let len = (seg.content_size + seg.zero_fill_size).div_ceil(page) * page;
                m.set(start, start + len, seg.prot.0);
            }
        }
        let live = Live {
            extent,
            dealloc,
            pieces,
        };
        self.live
            .lock()
            .map_err(|_| Error::Memory("mapper state poisoned".into()))?
            .insert(info.mapping_base, live);
        Ok(info.mapping_base)
    }

    fn deinitialize(&self, allocations: &[u64]) -> Result<()> {
        let mut first_err = None;
        for &base in allocations.iter().rev() {
            let entry = self
                .live
                .lock()
                .map_err(|_| Error::Memory("mapper state poisoned".into()))?
                .remove(&base);
            let Some(Live {
                extent,
                dealloc,
                pieces,
            }) = entry
            else {
                first_err.get_or_insert(Error::Memory(format!(
                    "deinitialize of unknown allocation {base:#x}"
                )));
                continue;
            };
            for d in dealloc.iter().rev() {
                // SAFETY: the allocation is still mapped.
                if let Err(e) = unsafe { run_in_process(d) } {
                    first_err.get_or_insert(e);
                }
            }
            if let Some(pieces) = pieces {
                // The slab zeroes the pieces for reuse; the pages stay with the pack.
                if let Ok(mut m) = self.prots.lock() {
                    for (start, len) in pieces {
                        m.set(start, start + len, 0);
                    }
                }
                continue;
            }
            let page = self.page_size();
            let len = extent.div_ceil(page) * page;
            if let Ok(mut m) = self.prots.lock() {
                m.set(base, base + len, 0);
            }
            if let Err(e) = remjit_executor::vm::reset(base, len) {
                first_err.get_or_insert(Error::Memory(format!("freeing {base:#x}: {e}")));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn map_pack(&self, addr: u64, area: u64) -> Result<Option<*mut u8>> {
        if crate::memory::pack::code_kept_private()
            || remjit_executor::runtime::jit_debug::tracer_pid() != 0
        {
            // A debugger's breakpoints need private code pages.
            return Ok(None);
        }
        let mut pf = self
            .packs
            .lock()
            .map_err(|_| Error::Memory("mapper state poisoned".into()))?;
        let len = area
            .checked_mul(3)
            .ok_or_else(|| Error::Memory(format!("pack areas of {area} bytes")))?;
        let off = pf.room(len)?;
        let ready = crate::memory::pack::BATCH;
        let mapped = remjit_executor::vm::map_pack(pf.fd()?, off, addr, area, ready);
        match mapped {
            Ok(view) => {
                pf.at.add(addr, area, (off, view));
                Ok(Some(view as *mut u8))
            }
            Err(e) => {
                pf.spare.push((off, len));
                Err(Error::Memory(format!("mapping a pack at {addr:#x}: {e}")))
            }
        }
    }

    fn populate_pack(&self, pack: u64, addr: u64, len: u64) {
        let Ok(pf) = self.packs.lock() else { return };
        if let Some(&(area, (_, view))) = pf.at.get(pack) {
            let (i, at) = ((addr - pack) / area, addr - pack);
            remjit_executor::vm::populate_pack(addr, len, i, view + at);
        }
    }

    fn unmap_pack(&self, addr: u64, _area: u64) -> Result<()> {
        let mut pf = self
            .packs
            .lock()
            .map_err(|_| Error::Memory("mapper state poisoned".into()))?;
        let Some((area, (off, view))) = pf.at.remove(addr) else {
            return Err(Error::Memory(format!("no pack at {addr:#x}")));
        };
        remjit_executor::vm::unmap_pack(pf.fd()?, off, view, area)
            .map_err(|e| Error::Memory(format!("unmapping the pack at {addr:#x}: {e}")))?;
        pf.spare.push((off, 3 * area));
        Ok(())
    }

    fn release(&self, reservations: &[(u64, u64)]) -> Result<()> {
        for &(addr, size) in reservations {
            // SAFETY: a reservation of ours, no longer used.
            if unsafe { libc::munmap(addr as *mut libc::c_void, size as usize) } != 0 {
                return Err(os_error("munmap"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::mapper::SegmentInfo;

    #[test]
    fn a_pack_maps_code_never_writable_and_a_writable_view_never_executable() {
        let m = InProcessMapper::new();
        let area = 16 * 4096;
        let base = m.reserve(3 * area, None, false).unwrap();
        let view = m.map_pack(base, area).unwrap().expect("packs in process") as u64;
        let exec: Vec<String> = (0..3)
            .map(|i| remjit_executor::vm::perms_at(base + i * area))
            .collect();
        assert_eq!(exec, ["r-xs", "r--s", "rw-s"]);
        assert_eq!(
            remjit_executor::vm::perms_at(view),
            "rw-s",
            "the writable view"
        );
        assert_eq!(remjit_executor::vm::perms_at(view + 3 * area - 1), "rw-s");
        // Code written through the view is what runs at the pack's address.
        // SAFETY: the view maps the pack's three areas; `mov eax, 42; ret`.
        unsafe {
            std::ptr::copy_nonoverlapping([0xb8, 42, 0, 0, 0, 0xc3].as_ptr(), view as *mut u8, 6)
        };
        let info = AllocInfo {
            mapping_base: base,
            segments: vec![SegmentInfo {
                offset: 0,
                content_size: 6,
                zero_fill_size: 0,
                prot: Prot::READ_EXEC,
            }],
            actions: Vec::new(),
            file_maps: Vec::new(),
            pipelined: false,
        };
        m.initialize(&info).unwrap();
        assert_eq!(m.check_access(base, 6, access::prot::READ), Ok(()));
        assert!(
            m.check_access(base + 6, 1, access::prot::READ).is_err(),
            "only its bytes"
        );
        // SAFETY: the six bytes just written, finalized as code.
        let f: extern "C" fn() -> i32 = unsafe { std::mem::transmute(base as usize) };
        assert_eq!(f(), 42);
        // Code placed in the data area is refused.
        let wrong = AllocInfo {
            mapping_base: base + 2 * area,
            ..info.clone()
        };
        assert_eq!(
            m.initialize(&wrong).unwrap_err().to_string(),
            Error::Memory(format!(
                "segment at {:#x} lies in a pack area of protection 3 instead of 5",
                base + 2 * area
            ))
            .to_string()
        );
        m.deinitialize(&[base]).unwrap();
        assert!(!m.touches(base, 6));
        m.unmap_pack(base, area).unwrap();
        m.release(&[(base, 3 * area)]).unwrap();
    }
}
