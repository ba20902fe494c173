//! JIT memory: the seed's `MemoryMapper` interface (reserve / prepare / initialize /
//! deinitialize / release), its in-process implementation, the actions run when memory is
//! finalized or freed, and the slab allocator that carves segments out of one reservation.

pub mod actions;
pub mod in_process;
pub mod mapper;
pub mod pack;
pub mod pretend;
pub mod slab;

pub use actions::{AllocAction, AllocActionPair};
pub use in_process::InProcessMapper;
pub use mapper::{AllocInfo, FileMap, MemoryMapper, Prot, SegmentInfo};
pub use pretend::PretendMapper;
pub use slab::{FinalizedAlloc, FreeList, InFlightAlloc, SlabAllocator};
