//! The read stage: one ELF64 x86-64 relocatable object, parsed in place with `object`'s
//! low-level ELF API (no copies of section data, symbols or relocations).

use object::elf;
use object::read::elf::{FileHeader, SectionHeader, SectionTable, Sym, SymbolTable};
use object::LittleEndian as LE;

use crate::error::{Error, Result};

type Header = elf::FileHeader64<LE>;
/// A section header of a parsed object.
pub type Shdr = elf::SectionHeader64<LE>;
/// A symbol of a parsed object.
pub type ElfSym = elf::Sym64<LE>;
/// A relocation with addend of a parsed object.
pub type ElfRela = elf::Rela64<LE>;

/// A COMDAT group: its signature and member sections.
#[derive(Debug, Clone)]
pub struct ComdatGroup<'d> {
    /// The group's signature (the name of its signature symbol).
    pub signature: &'d [u8],
    /// Indices of the sections in the group.
    pub members: Vec<usize>,
}

/// A parsed relocatable object.
pub struct ObjectFile<'d> {
    /// Name for messages (`path` or `archive(member)`).
    pub name: String,
    data: &'d [u8],
    /// The section table.
    pub sections: SectionTable<'d, Header>,
    /// The symbol table (empty for objects without one).
    pub symtab: SymbolTable<'d, Header>,
    /// For each section, the index of the `SHT_RELA` section that applies to it (0 = none).
    pub rela_for: Vec<usize>,
    /// COMDAT groups, in section order.
    pub comdat_groups: Vec<ComdatGroup<'d>>,
}

fn machine_name(m: u16) -> String {
    match m {
        elf::EM_386 => "i386".into(),
        elf::EM_AARCH64 => "AArch64".into(),
        elf::EM_ARM => "ARM".into(),
        elf::EM_RISCV => "RISC-V".into(),
        elf::EM_PPC64 => "PowerPC64".into(),
        elf::EM_S390 => "s390".into(),
        other => format!("machine {other}"),
    }
}

impl<'d> ObjectFile<'d> {
    /// Parses and validates `data` as an ELF64 little-endian x86-64 `ET_REL` object.
    pub fn parse(name: String, data: &'d [u8]) -> Result<Self> {
        if data.len() < 4 || &data[..4] != b"\x7fELF" {
            return Err(Error::UnknownInput(name));
        }
        if data.len() < 64 {
            return Err(Error::malformed(&name, "truncated ELF header"));
        }
        if data[4] != elf::ELFCLASS64 {
            return Err(Error::WrongMachine {
                path: name,
                machine: "32-bit ELF".into(),
            });
        }
        if data[5] != elf::ELFDATA2LSB {
            return Err(Error::WrongMachine {
                path: name,
                machine: "big-endian ELF".into(),
            });
        }
        let header = Header::parse(data).map_err(|e| Error::malformed(&name, e))?;
        let machine = header.e_machine.get(LE);
        if machine != elf::EM_X86_64 {
            return Err(Error::WrongMachine {
                path: name,
                machine: machine_name(machine),
            });
        }
        let e_type = header.e_type.get(LE);
        if e_type != elf::ET_REL {
            let kind = match e_type {
                elf::ET_EXEC => "executable".to_string(),
                elf::ET_DYN if crate::input::is_executable(data) => {
                    "position-independent executable".to_string()
                }
                elf::ET_DYN => "shared object".to_string(),
                elf::ET_CORE => "core dump".to_string(),
                t => t.to_string(),
            };
            return Err(Error::NotRelocatable { path: name, kind });
        }
        let sections = header
            .sections(LE, data)
            .map_err(|e| Error::malformed(&name, e))?;
        let symtab = sections
            .symbols(LE, data, elf::SHT_SYMTAB)
            .map_err(|e| Error::malformed(&name, e))?;
        let mut rela_for = vec![0usize; sections.len()];
        let mut comdat_groups = Vec::new();
        for (index, shdr) in sections.iter().enumerate() {
            match shdr.sh_type(LE) {
                elf::SHT_RELA => {
                    let target = shdr.sh_info(LE) as usize;
                    if target >= sections.len() {
                        return Err(Error::malformed(
                            &name,
                            format!(
                                "relocation section {index} applies to missing section {target}"
                            ),
                        ));
                    }
                    if shdr.sh_link(LE) as usize != symtab.section().0 {
                        return Err(Error::malformed(
                            &name,
                            format!("relocation section {index} does not use the symbol table"),
                        ));
                    }
                    rela_for[target] = index;
                }
                elf::SHT_REL => {
                    return Err(Error::malformed(
                        &name,
                        "SHT_REL relocations (without addends) are not used on x86-64",
                    ))
                }
                elf::SHT_GROUP => {
                    let words: &[object::U32<LE>] = shdr
                        .data_as_array(LE, data)
                        .map_err(|e| Error::malformed(&name, e))?;
                    let Some((flags, members)) = words.split_first() else {
                        continue;
                    };
                    if flags.get(LE) & elf::GRP_COMDAT == 0 {
                        continue;
                    }
                    let sym_index = shdr.sh_info(LE) as usize;
                    let sym = symtab
                        .symbol(object::SymbolIndex(sym_index))
                        .map_err(|e| Error::malformed(&name, e))?;
                    let signature = sym
                        .name(LE, symtab.strings())
                        .map_err(|e| Error::malformed(&name, e))?;
                    let members: Vec<usize> = members.iter().map(|w| w.get(LE) as usize).collect();
                    if members.iter().any(|&m| m >= sections.len()) {
                        return Err(Error::malformed(
                            &name,
                            "COMDAT group names a missing section",
                        ));
                    }
                    comdat_groups.push(ComdatGroup { signature, members });
                }
                _ => {}
            }
        }
        Ok(ObjectFile {
            name,
            data,
            sections,
            symtab,
            rela_for,
            comdat_groups,
        })
    }

    /// The whole file.
    pub fn data(&self) -> &'d [u8] {
        self.data
    }

    /// The section header at `index`.
    pub fn section(&self, index: usize) -> Result<&'d Shdr> {
        self.sections
            .section(object::SectionIndex(index))
            .map_err(|e| Error::malformed(&self.name, e))
    }

    /// The name of the section at `index`.
    pub fn section_name(&self, index: usize) -> Result<&'d [u8]> {
        let shdr = self.section(index)?;
        self.sections
            .section_name(LE, shdr)
            .map_err(|e| Error::malformed(&self.name, e))
    }

    /// The section's name for messages: its name, or `#INDEX` when it has none (or a bad one).
    pub fn section_label(&self, index: usize) -> String {
        match self.section_name(index) {
            Ok(n) if !n.is_empty() => String::from_utf8_lossy(n).into_owned(),
            _ => format!("#{index}"),
        }
    }

    /// The file bytes of a section (empty for `SHT_NOBITS`).
    pub fn section_data(&self, shdr: &Shdr) -> Result<&'d [u8]> {
        if shdr.sh_type(LE) == elf::SHT_NOBITS {
            return Ok(&[]);
        }
        shdr.data(LE, self.data)
            .map_err(|e| Error::malformed(&self.name, e))
    }

    /// The relocations that apply to section `index`.
    pub fn relocations(&self, index: usize) -> Result<&'d [ElfRela]> {
        let rela = self.rela_for.get(index).copied().unwrap_or(0);
        if rela == 0 {
            return Ok(&[]);
        }
        let shdr = self.section(rela)?;
        shdr.data_as_array(LE, self.data)
            .map_err(|e| Error::malformed(&self.name, e))
    }

    /// All symbols (index 0 is the null symbol).
    pub fn symbols(&self) -> &'d [ElfSym] {
        self.symtab.symbols()
    }

    /// The name of a symbol.
    pub fn symbol_name(&self, sym: &ElfSym) -> Result<&'d [u8]> {
        sym.name(LE, self.symtab.strings())
            .map_err(|e| Error::malformed(&self.name, e))
    }

    /// The section index a symbol is defined in, resolving `SHN_XINDEX`.
    pub fn symbol_section(&self, sym: &ElfSym, index: usize) -> Result<Option<usize>> {
        self.symtab
            .symbol_section(LE, sym, object::SymbolIndex(index))
            .map(|s| s.map(|s| s.0))
            .map_err(|e| Error::malformed(&self.name, e))
    }
}
