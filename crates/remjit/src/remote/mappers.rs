//! Memory mappers for an executor in another process.
//!
//! - [`CopyMapper`]: LLVM's copy-over-the-wire memory manager (reserve / finalize with content /
//!   deallocate), for TCP peers and `--no-shared-memory`.
//! - [`SharedMapper`]: shared memory. The executor maps the pages, remjit maps the same pages
//!   and writes code and data straight into them; finalizing sends only protections and
//!   actions. The pages come as a memfd over the unix socket (ours), or as an LLVM-style named
//!   POSIX shared-memory object that remjit unlinks as soon as it has it open.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use remjit_wire::names;
use remjit_wire::sps::{Bytes, Expected, Sps, SpsError};
use remjit_wire::types::{
    AddrRange, AllocActionCallPair, FinalizeRequest, SegFinalizeRequest,
    SharedMemoryFinalizeRequest, SharedMemorySegFinalizeRequest, WrapperFunctionCall,
};

use super::connection::Connection;
use super::fdpass::ReceivedFds;
use super::ring::Check;
use crate::error::{Error, Result};
use crate::memory::{AllocAction, AllocInfo, MemoryMapper};

fn exec_err(e: String) -> Error {
    Error::Executor(e)
}

/// Turns our finalize/dealloc actions into calls of the executor's services.
pub fn encode_actions(conn: &Connection, info: &AllocInfo) -> Result<Vec<AllocActionCallPair>> {
    let call = |a: &AllocAction| -> Result<WrapperFunctionCall> {
        let (name, args) = match a {
            // The names LLVM 19's executor publishes; ours publishes them too.
            AllocAction::RegisterEhFrame { addr } => (
                names::REGISTER_EH_FRAME_ALT,
                AddrRange {
                    start: *addr,
                    end: addr + 4,
                }
                .to_bytes(),
            ),
            AllocAction::DeregisterEhFrame { addr } => (
                names::DEREGISTER_EH_FRAME_ALT,
                AddrRange {
                    start: *addr,
                    end: addr + 4,
                }
                .to_bytes(),
            ),
            AllocAction::RegisterTls {
                init,
                init_size,
                mem_size,
                align,
                id_slots,
            } => (
                names::REMJIT_REGISTER_TLS,
                (*init, *init_size, *mem_size, *align, id_slots.clone()).to_bytes(),
            ),
            AllocAction::DeregisterTls { id_slot } => {
                (names::REMJIT_DEREGISTER_TLS, id_slot.to_bytes())
            }
            AllocAction::ResolveIfunc { slot, resolver } => {
                (names::REMJIT_RESOLVE_IFUNC, (*slot, *resolver).to_bytes())
            }
            AllocAction::CopyWord { from, to } => {
                (names::REMJIT_COPY_WORD, (*from, *to).to_bytes())
            }
            AllocAction::RunInitializers { fns } => {
                (names::REMJIT_RUN_INITIALIZERS, fns.to_bytes())
            }
            AllocAction::RunFinalizers { dso, fns } => {
                (names::REMJIT_RUN_FINALIZERS, (*dso, fns.clone()).to_bytes())
            }
        };
        let function = conn.symbol(name).map_err(|_| {
            Error::Executor(format!(
                "this executor lacks remjit's runtime service {name} (an LLVM executor cannot run \
                 constructors, thread-locals or IFUNCs of remjit-linked code)"
            ))
        })?;
        Ok(WrapperFunctionCall {
            function,
            args: Bytes(args),
        })
    };
    let mut out = Vec::new();
    for pair in &info.actions {
        // Nothing to run: no message for it.
        if let AllocAction::RunInitializers { fns } = &pair.finalize {
            if fns.is_empty()
                && matches!(&pair.dealloc, Some(AllocAction::RunFinalizers { fns, .. }) if fns.is_empty())
                && !conn.has(names::REMJIT_RUN_FINALIZERS)
            {
                continue;
            }
        }
        out.push(AllocActionCallPair {
            finalize: call(&pair.finalize)?,
            dealloc: match &pair.dealloc {
                Some(d) => call(d)?,
                None => WrapperFunctionCall::default(),
            },
        });
    }
    Ok(out)
}

/// Reserves `size` bytes at exactly `addr` through `mapper`'s own reserve: our executor is
/// told first that the next reservation must start there (LLVM's cannot be).
fn reserve_exactly(
    conn: &Connection,
    mapper: &dyn MemoryMapper,
    addr: u64,
    size: u64,
) -> Result<u64> {
    if !conn.has(names::REMJIT_RESERVE_AT) {
        return Err(Error::Memory(format!(
            "cannot place JIT'd memory at {addr:#x}: this executor chooses its own addresses"
        )));
    }
    let r: SpsError = conn.call_named(names::REMJIT_RESERVE_AT, &addr)?;
    r.into_result()
        .map_err(|e| Error::Memory(format!("cannot place JIT'd memory at {addr:#x}: {e}")))?;
    let base = mapper.reserve(size, None, false)?;
    if base != addr {
        let _ = mapper.release(&[(base, size)]);
        return Err(Error::Memory(format!(
            "the executor placed JIT'd memory at {base:#x}, not at {addr:#x} as asked"
        )));
    }
    Ok(base)
}

/// Content bytes per finalize request to our executor.
const FINALIZE_CHUNK: usize = 16 << 20;

/// Splits finalize segments so that each request carries about `limit` content bytes at most
/// (never more than twice that): big segments are cut at page boundaries, and a request only
/// ends before a page-aligned piece, so protecting one request's pages never covers bytes the
/// next one still has to write.
fn split_for_frames(
    segs: Vec<SegFinalizeRequest>,
    limit: usize,
    page: u64,
) -> Vec<Vec<SegFinalizeRequest>> {
    let mut pieces = Vec::new();
    for s in segs {
        let (mut addr, mut size, mut content) = (s.addr, s.size, &s.content.0[..]);
        while content.len() > limit {
            let cut = (addr.saturating_add(limit as u64) & !(page - 1)).saturating_sub(addr);
            if cut == 0 {
                break;
            }
            let (head, tail) = content.split_at(cut as usize);
            pieces.push(SegFinalizeRequest {
                prot: s.prot,
                addr,
                size: cut,
                content: Bytes(head.to_vec()),
            });
            (addr, size, content) = (addr + cut, size - cut, tail);
        }
        pieces.push(SegFinalizeRequest {
            prot: s.prot,
            addr,
            size,
            content: Bytes(content.to_vec()),
        });
    }
    let mut batches: Vec<Vec<SegFinalizeRequest>> = vec![Vec::new()];
    let mut in_batch = 0;
    for p in pieces {
        let full = in_batch + p.content.0.len() > limit;
        if full && p.addr % page == 0 && batches.last().is_some_and(|b| !b.is_empty()) {
            batches.push(Vec::new());
            in_batch = 0;
        }
        in_batch += p.content.0.len();
        if let Some(b) = batches.last_mut() {
            b.push(p);
        }
    }
    batches
}

/// LLVM's copy-over-the-wire memory manager: each allocation is a reservation of its own;
/// content travels in the finalize message.
pub struct CopyMapper {
    conn: Arc<Connection>,
    instance: u64,
    page: u64,
    /// Working memory per reservation.
    buffers: Mutex<HashMap<u64, Vec<u8>>>,
    /// Reservations finalized (deallocate frees them), by base.
    finalized: Mutex<std::collections::HashSet<u64>>,
}

impl CopyMapper {
    /// A mapper over `conn`'s `SimpleExecutorMemoryManager`.
    pub fn new(conn: Arc<Connection>) -> Result<Self> {
        let instance = conn.symbol(names::MEMORY_MANAGER_INSTANCE)?;
        let page = conn.setup.page_size.max(4096);
        Ok(CopyMapper {
            conn,
            instance,
            page,
            buffers: Mutex::new(HashMap::new()),
            finalized: Mutex::new(Default::default()),
        })
    }

    fn deallocate(&self, bases: &[u64]) -> Result<()> {
        let r: SpsError = self.conn.call_named(
            names::MEMORY_MANAGER_DEALLOCATE,
            &(self.instance, bases.to_vec()),
        )?;
        r.into_result().map_err(exec_err)
    }
}

impl MemoryMapper for CopyMapper {
    fn page_size(&self) -> u64 {
        self.page
    }

    fn reserves_per_allocation(&self) -> bool {
        true
    }

    fn reserve_at(&self, addr: u64, size: u64) -> Result<u64> {
        reserve_exactly(&self.conn, self, addr, size)
    }

    fn reserve(&self, size: u64, _near: Option<u64>, _low: bool) -> Result<u64> {
        let r: Expected<u64> = self
            .conn
            .call_named(names::MEMORY_MANAGER_RESERVE, &(self.instance, size))?;
        let base = r.0.map_err(exec_err)?;
        self.buffers
            .lock()
            .map_err(|_| Error::Memory("mapper state poisoned".into()))?
            .insert(base, vec![0u8; size as usize]);
        Ok(base)
    }

    fn prepare(&self, addr: u64, len: u64) -> Result<*mut u8> {
        let mut b = self
            .buffers
            .lock()
            .map_err(|_| Error::Memory("mapper state poisoned".into()))?;
        let buf = b
            .get_mut(&addr)
            .filter(|v| v.len() as u64 >= len)
            .ok_or_else(|| Error::Memory(format!("no working memory for {addr:#x}")))?;
        // The Vec is never resized while the allocation lives, so the pointer stays valid.
        Ok(buf.as_mut_ptr())
    }

    fn initialize(&self, info: &AllocInfo) -> Result<u64> {
        let buf = self
            .buffers
            .lock()
            .map_err(|_| Error::Memory("mapper state poisoned".into()))?
            .remove(&info.mapping_base)
            .ok_or_else(|| Error::Memory("finalize of an unknown allocation".into()))?;
        let mut segments = Vec::new();
        for s in &info.segments {
            let size = s.content_size + s.zero_fill_size;
            if size == 0 {
                continue;
            }
            let start = s.offset as usize;
            segments.push(SegFinalizeRequest {
                prot: s.prot.0,
                addr: info.mapping_base + s.offset,
                size,
                content: Bytes(buf[start..start + s.content_size as usize].to_vec()),
            });
        }
        let mut actions = encode_actions(&self.conn, info)?;
        // Our executor takes content in several requests (each frame stays far below its
        // frame limit); LLVM's wants one request per allocation.
        let batches = if self.conn.has(names::REMJIT_RUN_MAIN) {
            split_for_frames(segments, FINALIZE_CHUNK, self.page)
        } else {
            vec![segments]
        };
        let last = batches.len() - 1;
        for (i, segments) in batches.into_iter().enumerate() {
            let req = FinalizeRequest {
                segments,
                // The actions (registrations, initializers) once all the content is there.
                actions: if i == last {
                    std::mem::take(&mut actions)
                } else {
                    Vec::new()
                },
            };
            let r: SpsError = self
                .conn
                .call_named(names::MEMORY_MANAGER_FINALIZE, &(self.instance, req))?;
            r.into_result().map_err(exec_err)?;
        }
        if let Ok(mut f) = self.finalized.lock() {
            f.insert(info.mapping_base);
        }
        Ok(info.mapping_base)
    }

    fn deinitialize(&self, allocations: &[u64]) -> Result<()> {
        if let Ok(mut f) = self.finalized.lock() {
            for a in allocations {
                f.remove(a);
            }
        }
        // Runs the dealloc actions and frees the reservation: release has nothing left to do.
        self.deallocate(allocations)
    }

    fn release(&self, reservations: &[(u64, u64)]) -> Result<()> {
        // Reservations never finalized (a failed link) are freed here.
        let unfinalized: Vec<u64> = {
            let mut b = self
                .buffers
                .lock()
                .map_err(|_| Error::Memory("mapper state poisoned".into()))?;
            reservations
                .iter()
                .filter(|r| b.remove(&r.0).is_some())
                .map(|r| r.0)
                .collect()
        };
        if unfinalized.is_empty() {
            Ok(())
        } else {
            self.deallocate(&unfinalized)
        }
    }
}

/// Largest freed allocation whose pages are cleared in place rather than given back.
const CLEAR_AT_MOST: u64 = 64 << 10;

/// Which shared-memory flavour a [`SharedMapper`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedFlavour {
    /// A memfd passed over the unix socket.
    Memfd,
    /// LLVM's named POSIX shared memory.
    Named,
}

struct Region {
    len: u64,
    local: *mut u8,
    fd: OwnedFd,
}

/// An initialized allocation: (reservation, extent).
type LiveAlloc = (u64, u64);

/// Shared memory: remjit writes through its own mapping of the executor's pages.
pub struct SharedMapper {
    conn: Arc<Connection>,
    fds: Arc<ReceivedFds>,
    flavour: SharedFlavour,
    instance: u64,
    page: u64,
    regions: Mutex<HashMap<u64, Region>>,
    /// Allocations initialized: base -> (reservation, extent, file-mapped ranges).
    live: Mutex<HashMap<u64, LiveAlloc>>,
    /// Packs the executor protected ([`MemoryMapper::map_pack`]).
    packs: Mutex<remjit_executor::vm::PackSet<()>>,
}

// SAFETY: the raw pointers refer to mappings owned by the mapper; access is serialized by the
// slab's allocation discipline (each range has one writer).
unsafe impl Send for SharedMapper {}
// SAFETY: as above.
unsafe impl Sync for SharedMapper {}

impl SharedMapper {
    /// A shared-memory mapper of the given flavour over `conn`.
    pub fn new(
        conn: Arc<Connection>,
        fds: Arc<ReceivedFds>,
        flavour: SharedFlavour,
    ) -> Result<Self> {
        let instance = conn.symbol(names::SHM_INSTANCE)?;
        let page = conn.setup.page_size.max(4096);
        Ok(SharedMapper {
            conn,
            fds,
            flavour,
            instance,
            page,
            regions: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            packs: Mutex::new(Default::default()),
        })
    }

    fn region_of(&self, addr: u64) -> Result<(u64, *mut u8, i32)> {
        let r = self
            .regions
            .lock()
            .map_err(|_| Error::Memory("mapper state poisoned".into()))?;
        r.iter()
            .find(|(&b, reg)| addr >= b && addr < b + reg.len)
            .map(|(&b, reg)| (b, reg.local, reg.fd.as_raw_fd()))
            .ok_or_else(|| Error::Memory(format!("{addr:#x} is in no shared region")))
    }
}

impl Drop for SharedMapper {
    fn drop(&mut self) {
        if let Ok(r) = self.regions.lock() {
            for reg in r.values() {
                // SAFETY: our own mapping.
                unsafe { libc::munmap(reg.local.cast(), reg.len as usize) };
            }
        }
    }
}

impl MemoryMapper for SharedMapper {
    fn page_size(&self) -> u64 {
        self.page
    }

    fn can_map_files(&self) -> bool {
        self.flavour == SharedFlavour::Memfd
    }

    fn working_memory_is_live(&self) -> bool {
        true
    }

    fn discard(&self, addr: u64, len: u64) -> Result<()> {
        let (reservation, _, fd) = self.region_of(addr)?;
        // SAFETY: fallocate on our descriptor of the shared object; the executor never mapped
        // these pages accessible (not initialized), so a hole is all it takes.
        let r = unsafe {
            libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (addr - reservation) as libc::off_t,
                len as libc::off_t,
            )
        };
        if r != 0 {
            return Err(Error::Memory(format!(
                "resetting shared pages: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    fn reserve_at(&self, addr: u64, size: u64) -> Result<u64> {
        reserve_exactly(&self.conn, self, addr, size)
    }

    fn reserve(&self, size: u64, _near: Option<u64>, _low: bool) -> Result<u64> {
        let (base, fd) = match self.flavour {
            SharedFlavour::Memfd => {
                let _one_at_a_time = self.fds.exclusive();
                let r: Expected<u64> = self.conn.call_named(names::REMJIT_MEMFD_RESERVE, &size)?;
                let base = r.0.map_err(exec_err)?;
                let fd = self
                    .fds
                    .take()
                    .ok_or_else(|| Error::Executor("the executor's memfd did not arrive".into()))?;
                (base, fd)
            }
            SharedFlavour::Named => {
                let r: Expected<(u64, String)> = self
                    .conn
                    .call_named(names::SHM_RESERVE, &(self.instance, size))?;
                let (base, name) = r.0.map_err(exec_err)?;
                let c = std::ffi::CString::new(name.clone())
                    .map_err(|_| Error::Executor("bad shared-memory name".into()))?;
                // SAFETY: open then unlink at once: the name exists only for this moment.
                let fd = unsafe {
                    let fd = libc::shm_open(c.as_ptr(), libc::O_RDWR, 0);
                    libc::shm_unlink(c.as_ptr());
                    fd
                };
                if fd < 0 {
                    return Err(Error::Memory(format!(
                        "shm_open {name}: {}",
                        std::io::Error::last_os_error()
                    )));
                }
                // SAFETY: a descriptor we own.
                (base, unsafe { OwnedFd::from_raw_fd(fd) })
            }
        };
        // SAFETY: map the shared object read-write in our process.
        let local = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if local == libc::MAP_FAILED {
            return Err(Error::Memory(format!(
                "mapping shared JIT memory: {}",
                std::io::Error::last_os_error()
            )));
        }
        self.regions
            .lock()
            .map_err(|_| Error::Memory("mapper state poisoned".into()))?
            .insert(
                base,
                Region {
                    len: size,
                    local: local.cast(),
                    fd,
                },
            );
        Ok(base)
    }

    fn prepare(&self, addr: u64, _len: u64) -> Result<*mut u8> {
        let (base, local, _) = self.region_of(addr)?;
        // SAFETY: inside our mapping of the region.
        Ok(unsafe { local.add((addr - base) as usize) })
    }

    fn map_pack(&self, addr: u64, area: u64) -> Result<Option<*mut u8>> {
        if self.flavour != SharedFlavour::Memfd || !self.conn.has(names::REMJIT_PACK) {
            return Ok(None);
        }
        // The executor maps it while we go on; the next call waits for that.
        let check = super::ring::sps_error_check("mapping JIT'd memory shared by small modules");
        self.conn
            .post_named(names::REMJIT_PACK, &(addr, area, true), check)?;
        self.packs
            .lock()
            .map_err(|_| Error::Memory("mapper state poisoned".into()))?
            .add(addr, area, ());
        let view = self.prepare(addr, 3 * area)?;
        // Our view too: the linker's first writes to the pack take no faults. The first batch
        // of each area now, the rest as pieces come near it (`populate_pack`): a program
        // linked once uses a few pages of a pack.
        for i in 0..3 {
            let at = view as u64 + i * area;
            remjit_executor::vm::populate(at, crate::memory::pack::BATCH.min(area), true);
        }
        Ok(Some(view))
    }

    fn populate_pack(&self, _pack: u64, addr: u64, len: u64) {
        // Our view only: the executor's pages of the pack come as its first touch asks.
        if let Ok(view) = self.prepare(addr, len) {
            remjit_executor::vm::populate(view as u64, len, true);
        }
    }

    fn unmap_pack(&self, addr: u64, area: u64) -> Result<()> {
        if let Ok(mut p) = self.packs.lock() {
            p.remove(addr);
        }
        let r: SpsError = self
            .conn
            .call_named(names::REMJIT_PACK, &(addr, area, false))?;
        r.into_result().map_err(exec_err)
    }

    fn initialize(&self, info: &AllocInfo) -> Result<u64> {
        let (reservation, _, _) = self.region_of(info.mapping_base)?;
        let mut actions = Vec::new();
        if !info.file_maps.is_empty() {
            // Mapped from files before protections apply, and shared again when freed: both
            // ride in the one initialize message as the first action pair.
            let pid = std::process::id();
            let maps: Vec<(u64, u64, String, u64)> = info
                .file_maps
                .iter()
                .map(|m| {
                    (
                        info.mapping_base + m.offset,
                        m.len,
                        format!("/proc/{pid}/fd/{}", m.file.as_raw_fd()),
                        m.file_offset,
                    )
                })
                .collect();
            let ranges: Vec<(u64, u64)> = maps.iter().map(|m| (m.0, m.1)).collect();
            actions.push(AllocActionCallPair {
                finalize: WrapperFunctionCall {
                    function: self.conn.symbol(names::REMJIT_MAP_FILES)?,
                    args: Bytes(maps.to_bytes()),
                },
                dealloc: WrapperFunctionCall {
                    function: self.conn.symbol(names::REMJIT_RESTORE_SHARED)?,
                    args: Bytes(ranges.to_bytes()),
                },
            });
        }
        actions.extend(encode_actions(&self.conn, info)?);
        // The executor takes the lowest segment address for the allocation's base: an empty
        // first segment (a packed link without code) stays in as that base.
        let segments = info
            .segments
            .iter()
            .filter(|s| s.content_size + s.zero_fill_size > 0 || s.offset == 0)
            .map(|s| SharedMemorySegFinalizeRequest {
                prot: s.prot.0,
                addr: info.mapping_base + s.offset,
                size: s.content_size + s.zero_fill_size,
            })
            .collect();
        let req = SharedMemoryFinalizeRequest { segments, actions };
        let args = (self.instance, reservation, req);
        let base = if info.pipelined {
            // The executor answers with the lowest segment address; its answer is checked
            // before the next call (see Connection::post_named).
            let base = args.2.segments.iter().map(|s| s.addr).min().unwrap_or(0);
            let check: Check = Box::new(move |bytes| {
                let r = Expected::<u64>::from_bytes(bytes)
                    .map_err(|e| format!("initializing JIT'd memory at {base:#x}: {e}"))?;
                match r.0 {
                    Ok(b) if b == base => Ok(()),
                    Ok(b) => Err(format!(
                        "protocol violation: JIT'd memory initialized at {b:#x}, not {base:#x}"
                    )),
                    Err(e) => Err(format!("initializing JIT'd memory at {base:#x}: {e}")),
                }
            });
            // Initializers are JIT'd code: posted only where calls run in order.
            self.conn
                .post_named_in_mailbox(names::SHM_INITIALIZE, &args, check)?;
            base
        } else {
            let r: Expected<u64> = self.conn.call_named(names::SHM_INITIALIZE, &args)?;
            r.0.map_err(exec_err)?
        };
        let extent = info.extent();
        if let Ok(mut l) = self.live.lock() {
            l.insert(base, (reservation, extent));
        }
        Ok(base)
    }

    fn deinitialize(&self, allocations: &[u64]) -> Result<()> {
        let r: SpsError = self.conn.call_named(
            names::SHM_DEINITIALIZE,
            &(self.instance, allocations.to_vec()),
        )?;
        let result = r.into_result().map_err(exec_err);
        for &a in allocations {
            let Some((reservation, extent)) = self.live.lock().ok().and_then(|mut l| l.remove(&a))
            else {
                continue;
            };
            if self.packs.lock().is_ok_and(|p| p.area_bits(a, 1).is_some()) {
                // A piece of a pack: the slab zeroes the link's pieces, the pages stay.
                continue;
            }
            // Give the physical pages back (both processes' RSS falls); the range reads as
            // zeroes when reused.
            let len = extent.div_ceil(self.page) * self.page;
            if len <= CLEAR_AT_MOST {
                // Small (never mapped from files, see FILE_MAP_THRESHOLD): cleared in place
                // instead. The slab hands freed ranges out again first, and the next module
                // there then finds its pages present: measured, a punched hole costs more
                // (the pages leave both processes' page tables) than clearing, plus a fault
                // per page when the range is reused.
                if let Ok((region, local, _)) = self.region_of(a) {
                    // SAFETY: the allocation's bytes in our mapping of its region; the
                    // executor has deinitialized it and no one else writes there now.
                    unsafe {
                        std::ptr::write_bytes(local.add((a - region) as usize), 0, len as usize)
                    };
                }
                continue;
            }
            if let Ok((_, _, fd)) = self.region_of(a) {
                // SAFETY: fallocate on our descriptor of the shared object.
                unsafe {
                    libc::fallocate(
                        fd,
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        (a - reservation) as libc::off_t,
                        len as libc::off_t,
                    )
                };
            }
        }
        result
    }

    fn release(&self, reservations: &[(u64, u64)]) -> Result<()> {
        let bases: Vec<u64> = reservations.iter().map(|r| r.0).collect();
        let r: SpsError = self
            .conn
            .call_named(names::SHM_RELEASE, &(self.instance, bases.clone()))?;
        if let Ok(mut regs) = self.regions.lock() {
            for b in bases {
                if let Some(reg) = regs.remove(&b) {
                    // SAFETY: our own mapping.
                    unsafe { libc::munmap(reg.local.cast(), reg.len as usize) };
                }
            }
        }
        r.into_result().map_err(exec_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(addr: u64, size: u64, content: usize) -> SegFinalizeRequest {
        SegFinalizeRequest {
            prot: 1,
            addr,
            size,
            content: Bytes((0..content).map(|i| i as u8).collect()),
        }
    }

    #[test]
    fn big_content_is_split_at_page_boundaries() {
        // 10 pages of content in a 12-page segment, 3 pages per request; then a small one.
        let segs = vec![seg(0x10000, 12 * 4096, 10 * 4096), seg(0x20000, 100, 100)];
        let batches = split_for_frames(segs.clone(), 3 * 4096, 4096);
        let pieces: Vec<&SegFinalizeRequest> = batches.iter().flatten().collect();
        // Same bytes, same addresses, in order.
        let mut joined = Vec::new();
        let mut at = 0x10000;
        for p in &pieces[..pieces.len() - 1] {
            assert_eq!(p.addr, at);
            assert_eq!(p.addr % 4096, 0);
            joined.extend_from_slice(&p.content.0);
            at += p.size;
        }
        assert_eq!(at, 0x10000 + 12 * 4096);
        assert_eq!(joined, segs[0].content.0);
        assert_eq!(pieces.last().unwrap(), &&segs[1]);
        for b in &batches {
            let n: usize = b.iter().map(|p| p.content.0.len()).sum();
            assert!(n <= 2 * 3 * 4096, "{n}");
        }
        assert!(batches.len() >= 4);
        // Small content stays in one request.
        let one = split_for_frames(vec![seg(0x1000, 8192, 5000)], 1 << 20, 4096);
        assert_eq!(one, vec![vec![seg(0x1000, 8192, 5000)]]);
    }
}
