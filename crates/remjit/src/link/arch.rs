//! What the link pipeline needs to know about an architecture. Everything specific to one
//! instruction set lives in its module ([`super::x86_64`]); a second architecture is a second
//! implementation of [`Arch`], chosen by the objects' `e_machine`, not edits across the stages.

use super::reloc::RelocDesc;

/// An architecture's relocation table, relaxations, stub and TLS descriptor code, and section
/// types: the only architecture-specific knowledge of the link stages.
pub trait Arch {
    /// Size of one stub ("PLT entry") in the code segment.
    const STUB_SIZE: u64;
    /// Size of one TLS descriptor in the read-write segment.
    const TLS_DESC_SIZE: u64;
    /// Offset in a TLS descriptor of the word that holds the TLS module id (filled in when the
    /// module's TLS is registered, or copied from the defining module's id word).
    const TLS_DESC_ID_WORD: u64;
    /// The section type of unwind tables (laid out with `.eh_frame`).
    const UNWIND_SECTION_TYPE: u32;

    /// The descriptor of relocation type `r_type`; `None` for types remjit does not apply.
    fn reloc(r_type: u32) -> Option<RelocDesc>;

    /// Readable name of relocation type `r_type`, for errors.
    fn reloc_name(r_type: u32) -> String;

    /// Rewrites a GOT load whose relocation (of type `r_type`) has its field at `field` in the
    /// section `code` into a direct reference to `target`, when the instruction allows it and
    /// the target is in reach; `place` is the field's address. Returns whether it did (nothing
    /// is written otherwise).
    fn relax_got_load(
        code: &mut [u8],
        field: usize,
        r_type: u32,
        place: u64,
        target: u64,
        addend: i64,
    ) -> bool;

    /// Writes a stub at `at` in `mem` (executor address `stub_addr`) that jumps through the word
    /// at `slot_addr`. False when the slot is out of the stub's reach.
    fn write_stub(mem: &mut [u8], at: usize, stub_addr: u64, slot_addr: u64) -> bool;

    /// Writes a TLS descriptor at `at` in `mem` (executor address `desc_addr`) for the variable
    /// at `offset` in its module's block, resolved by the runtime's `resolver`; the module id
    /// word is left 0.
    fn write_tls_descriptor(mem: &mut [u8], at: usize, desc_addr: u64, resolver: u64, offset: u64);
}
