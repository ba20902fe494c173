//! Relocation values, independent of the architecture: the formula vocabulary of the ELF
//! psABIs, the one function that computes a relocation's value ([`value`]) and the one that
//! writes it into its field after a range check ([`write_field`]). An architecture maps its
//! relocation types to [`RelocDesc`]s (see [`super::arch::Arch`]).

/// How a relocation's value is computed. Letters as in the psABIs: S symbol, A addend, P place,
/// G GOT entry offset, GOT the GOT's address, L the stub ("PLT entry"), Z symbol size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formula {
    /// Nothing to do.
    None,
    /// S + A.
    Absolute,
    /// S + A - P.
    PcRelative,
    /// L + A - P (S + A - P when the target is reachable directly).
    Branch,
    /// G + GOT + A - P.
    GotPcRel,
    /// G + GOT + A - P, or S + A - P with the instruction relaxed from a GOT load.
    GotPcRelRelaxable,
    /// G + A.
    GotOffset,
    /// S + A - GOT.
    GotRelative,
    /// GOT + A - P.
    GotPc,
    /// L + A - GOT.
    PltGotRelative,
    /// Z + A.
    Size,
    /// Address of the general-dynamic TLS pair + A - P.
    TlsGd,
    /// Address of the local-dynamic TLS pair + A - P.
    TlsLd,
    /// Offset of S in its module's TLS block + A.
    DtpOff,
    /// Address of the TLS descriptor + A - P.
    TlsDesc,
    /// Marker on the descriptor call: nothing to write.
    TlsDescCall,
    /// Static TLS models (initial- and local-exec): not possible in a JIT'd module.
    StaticTls,
}

/// The field a value is written to: its size and the range it must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// Nothing written.
    Zero,
    /// 8 bits, signed or unsigned.
    B8,
    /// 8 bits signed (PC-relative).
    S8,
    /// 16 bits, signed or unsigned.
    B16,
    /// 16 bits signed.
    S16,
    /// 32 bits zero-extended.
    U32,
    /// 32 bits sign-extended.
    S32,
    /// 64 bits.
    B64,
}

impl Width {
    /// Bytes written.
    pub fn bytes(self) -> usize {
        match self {
            Width::Zero => 0,
            Width::B8 | Width::S8 => 1,
            Width::B16 | Width::S16 => 2,
            Width::U32 | Width::S32 => 4,
            Width::B64 => 8,
        }
    }

    /// Whether `v` (as a two's-complement 64-bit value) fits.
    pub fn fits(self, v: u64) -> bool {
        let s = v as i64;
        match self {
            Width::Zero | Width::B64 => true,
            Width::B8 => (-128..=255).contains(&s),
            Width::S8 => (-128..=127).contains(&s),
            Width::B16 => (-32768..=65535).contains(&s),
            Width::S16 => (-32768..=32767).contains(&s),
            Width::U32 => v <= u64::from(u32::MAX),
            Width::S32 => i32::try_from(s).is_ok(),
        }
    }

    /// Human description of the range, for errors.
    pub fn describe(self) -> &'static str {
        match self {
            Width::Zero => "",
            Width::B8 => "8 bits",
            Width::S8 => "a signed 8-bit value",
            Width::B16 => "16 bits",
            Width::S16 => "a signed 16-bit value",
            Width::U32 => "an unsigned 32-bit value (below 4 GiB)",
            Width::S32 => "a signed 32-bit value (+-2 GiB)",
            Width::B64 => "64 bits",
        }
    }
}

/// One row of an architecture's relocation table: how the value is computed and the field it
/// goes to. (x86-64 needs no alignment or instruction-encoded fields; an architecture that does
/// adds them here.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelocDesc {
    /// How the value is computed.
    pub formula: Formula,
    /// Where it must fit.
    pub width: Width,
}

/// What a formula reads about its target, looked up in the link's plan only when the formula
/// needs it (most relocations read two or three of these).
pub trait Operands {
    /// S: the target's address, or why it has none.
    fn symbol(&self) -> Result<u64, String>;
    /// Whether the target is an IFUNC (reached through its stub, never directly).
    fn is_ifunc(&self) -> bool;
    /// Whether the target is a function outside this link (through its stub when out of reach).
    fn is_external_function(&self) -> bool;
    /// L: the target's stub, if the plan made one.
    fn stub(&self) -> Option<u64>;
    /// G: the offset of the target's GOT entry from the GOT, if the plan made one.
    fn got_entry(&self) -> Option<u64>;
    /// GOT: the GOT's address.
    fn got(&self) -> u64;
    /// Z: the target's size.
    fn size(&self) -> u64;
    /// The address of the target's general-dynamic TLS pair, or with `local_dynamic` of the
    /// module's local-dynamic pair.
    fn tls_pair(&self, local_dynamic: bool) -> Option<u64>;
    /// The address of the target's TLS descriptor.
    fn tls_desc(&self) -> Option<u64>;
    /// The target's offset in its module's TLS block.
    fn dtp_offset(&self) -> Option<u64>;
}

/// The value of a relocation with addend `a` at address `p` (`None`: nothing to write), or the
/// problem to report. Where the plan made a stub, a branch (or a narrow absolute reference to a
/// function outside the link) uses it when the target itself is out of the field's reach.
pub fn value(desc: RelocDesc, a: u64, p: u64, o: &impl Operands) -> Result<Option<u64>, String> {
    let width = desc.width;
    let got_entry = || o.got_entry().ok_or_else(|| "no GOT entry".to_string());
    Ok(Some(match desc.formula {
        Formula::None | Formula::TlsDescCall => return Ok(None),
        Formula::StaticTls => {
            return Err("initial-exec/local-exec thread-local access: compile with -fPIC".into())
        }
        Formula::Absolute => {
            let s = if o.is_ifunc() {
                o.stub().unwrap_or(0)
            } else {
                o.symbol()?
            };
            let v = s.wrapping_add(a);
            // The stub is looked up only when needed: most references fit.
            if width.fits(v) || !o.is_external_function() {
                v
            } else {
                o.stub().map_or(v, |stub| stub.wrapping_add(a))
            }
        }
        Formula::PcRelative | Formula::Branch => {
            let direct = if o.is_ifunc() {
                None
            } else {
                Some(o.symbol()?.wrapping_add(a).wrapping_sub(p))
            };
            match direct {
                Some(v) if width.fits(v) => v,
                _ => match o.stub() {
                    Some(stub) => stub.wrapping_add(a).wrapping_sub(p),
                    None => direct.unwrap_or(0),
                },
            }
        }
        Formula::GotPcRel | Formula::GotPcRelRelaxable => o
            .got()
            .wrapping_add(got_entry()?)
            .wrapping_add(a)
            .wrapping_sub(p),
        Formula::GotOffset => got_entry()?.wrapping_add(a),
        Formula::GotRelative => o.symbol()?.wrapping_add(a).wrapping_sub(o.got()),
        Formula::GotPc => o.got().wrapping_add(a).wrapping_sub(p),
        Formula::PltGotRelative => {
            let l = match o.stub() {
                Some(stub) => stub,
                None => o.symbol()?,
            };
            l.wrapping_add(a).wrapping_sub(o.got())
        }
        Formula::Size => o.size().wrapping_add(a),
        Formula::TlsGd | Formula::TlsLd => {
            let pair = o.tls_pair(desc.formula == Formula::TlsLd);
            pair.ok_or("no TLS entry")?.wrapping_add(a).wrapping_sub(p)
        }
        Formula::TlsDesc => {
            let d = o.tls_desc().ok_or("no TLS descriptor")?;
            d.wrapping_add(a).wrapping_sub(p)
        }
        Formula::DtpOff => o
            .dtp_offset()
            .ok_or("DTPOFF against a symbol that is not thread-local")?
            .wrapping_add(a),
    }))
}

/// A value that does not fit its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange;

/// Writes `value` little-endian into the `width`-sized field at `at` in `mem` if it fits the
/// field's range; the caller has checked that the field lies in `mem`.
pub fn write_field(mem: &mut [u8], at: usize, width: Width, value: u64) -> Result<(), OutOfRange> {
    if !width.fits(value) {
        return Err(OutOfRange);
    }
    write_value(mem, at, width, value);
    Ok(())
}

/// Writes `value` little-endian with the width's size at `at` in `mem`, unchecked: for words the
/// linker makes itself, and after [`write_field`]'s range check.
pub fn write_value(mem: &mut [u8], at: usize, width: Width, value: u64) {
    let n = width.bytes();
    mem[at..at + n].copy_from_slice(&value.to_le_bytes()[..n]);
}

/// Why `value` does not fit `width`, for a relocation of `formula` whose target is data of a
/// library of the executing process at `library_data` (if it is).
pub fn range_problem(
    formula: Formula,
    width: Width,
    library_data: Option<u64>,
    value: u64,
) -> String {
    let what = width.describe();
    // What a native link does with such data, and why remjit cannot.
    const COPIED: &str = "a native link would copy it into the executable, but remjit's host \
                          executables hold copies (below 2 GiB) of the exported data of libc \
                          (but for stdio's `_IO_*` internals), libm, libstdc++ and libgcc_s \
                          only";
    match (formula, library_data) {
        (Formula::Absolute, Some(addr)) => format!(
            "this is data of a shared library, at {addr:#x}: its absolute address does not fit \
             in {what}; {COPIED}: compile with -fPIC so the access goes through the GOT"
        ),
        (Formula::Size, _) => {
            format!("the symbol's size plus the addend, {value:#x}, does not fit in {what}")
        }
        (Formula::Absolute, _) => format!(
            "the absolute address {value:#x} does not fit in {what}: compile with -fPIC or \
             -mcmodel=large"
        ),
        (Formula::PcRelative, Some(addr)) if addr >= 1 << 31 => {
            format!(
                "this is data of a shared library, at {addr:#x}, beyond the reach of a 32-bit \
                 PC-relative reference from JIT'd code; {COPIED}: compile with -fPIC so the \
                 access goes through the GOT"
            )
        }
        (Formula::PcRelative, Some(addr)) => format!(
            "the host's copy of this data at {addr:#x} is out of reach of a 32-bit PC-relative \
             reference ({what}) from the JIT'd code: compile with -fPIC so the access goes \
             through the GOT"
        ),
        _ => {
            format!("value {value:#x} does not fit in {what}: compile with -fPIC or -mcmodel=large")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target with everything the plan can give, for the formula table.
    struct Fixed {
        s: Result<u64, String>,
        stub: Option<u64>,
        ifunc: bool,
        external_function: bool,
    }

    impl Operands for Fixed {
        fn symbol(&self) -> Result<u64, String> {
            self.s.clone()
        }
        fn is_ifunc(&self) -> bool {
            self.ifunc
        }
        fn is_external_function(&self) -> bool {
            self.external_function
        }
        fn stub(&self) -> Option<u64> {
            self.stub
        }
        fn got_entry(&self) -> Option<u64> {
            Some(0x18)
        }
        fn got(&self) -> u64 {
            0x5000
        }
        fn size(&self) -> u64 {
            0x40
        }
        fn tls_pair(&self, local_dynamic: bool) -> Option<u64> {
            Some(if local_dynamic { 0x6000 } else { 0x6010 })
        }
        fn tls_desc(&self) -> Option<u64> {
            None
        }
        fn dtp_offset(&self) -> Option<u64> {
            Some(0x20)
        }
    }

    fn target(s: u64, stub: Option<u64>) -> Fixed {
        Fixed {
            s: Ok(s),
            stub,
            ifunc: false,
            external_function: stub.is_some(),
        }
    }

    fn eval(formula: Formula, width: Width, a: i64, p: u64, o: &Fixed) -> Result<u64, String> {
        value(RelocDesc { formula, width }, a as u64, p, o).map(|v| v.unwrap())
    }

    #[test]
    fn formulas() {
        let t = target(0x4000, None);
        assert_eq!(
            eval(Formula::Absolute, Width::B64, 8, 0x1000, &t),
            Ok(0x4008)
        );
        assert_eq!(
            eval(Formula::PcRelative, Width::S32, -4, 0x1000, &t),
            Ok(0x2ffc)
        );
        assert_eq!(
            eval(Formula::GotPcRel, Width::S32, -4, 0x1000, &t),
            Ok(0x4014)
        );
        assert_eq!(eval(Formula::GotOffset, Width::B64, 0, 0, &t), Ok(0x18));
        assert_eq!(
            eval(Formula::GotRelative, Width::B64, 0, 0, &t),
            Ok((-0x1000i64) as u64)
        );
        assert_eq!(eval(Formula::GotPc, Width::S32, 0, 0x1000, &t), Ok(0x4000));
        assert_eq!(eval(Formula::Size, Width::U32, 1, 0, &t), Ok(0x41));
        assert_eq!(eval(Formula::TlsLd, Width::S32, -4, 0x1000, &t), Ok(0x4ffc));
        assert_eq!(eval(Formula::DtpOff, Width::B64, 2, 0, &t), Ok(0x22));
        assert_eq!(
            eval(Formula::TlsDesc, Width::S32, 0, 0, &t),
            Err("no TLS descriptor".into())
        );
    }

    #[test]
    fn branches_use_the_stub_only_out_of_reach() {
        let near = target(0x4000, Some(0x2000));
        assert_eq!(
            eval(Formula::Branch, Width::S32, -4, 0x1000, &near),
            Ok(0x2ffc)
        );
        let far = target(0x7f00_0000_0000, Some(0x2000));
        assert_eq!(
            eval(Formula::Branch, Width::S32, -4, 0x1000, &far),
            Ok(0xffc)
        );
        assert_eq!(eval(Formula::Absolute, Width::U32, 0, 0, &far), Ok(0x2000));
    }

    #[test]
    fn symbol_errors_only_when_read() {
        let tls = Fixed {
            s: Err("thread-local".into()),
            stub: None,
            ifunc: false,
            external_function: false,
        };
        assert_eq!(eval(Formula::GotPcRel, Width::S32, 0, 0, &tls), Ok(0x5018));
        assert_eq!(
            eval(Formula::Absolute, Width::B64, 0, 0, &tls),
            Err("thread-local".into())
        );
    }

    #[test]
    fn widths() {
        assert!(Width::S32.fits((-5i64) as u64));
        assert!(!Width::U32.fits((-5i64) as u64));
        assert!(!Width::S32.fits(0x8000_0000));
        assert!(Width::U32.fits(0x8000_0000));
        assert!(Width::B16.fits(0xffff) && !Width::S16.fits(0xffff));
        let mut mem = [0u8; 4];
        assert_eq!(
            write_field(&mut mem, 0, Width::S32, 0x8000_0000),
            Err(OutOfRange)
        );
        assert_eq!(mem, [0; 4]);
        assert_eq!(write_field(&mut mem, 0, Width::S32, (-2i64) as u64), Ok(()));
        assert_eq!(mem, [0xfe, 0xff, 0xff, 0xff]);
    }
}
