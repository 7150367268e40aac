//! Symbols, sections and the load address of an ELF file mapped into the target.

use super::maps::{Mapping, Process};
use anyhow::{Context, Result, bail};
use goblin::elf::{Elf, program_header::PT_LOAD};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What gilscope needs from one mapped binary: the addresses (already relocated into the
/// target) of a few symbols and sections, and the read-only strings for version sniffing.
#[derive(Debug, Clone)]
pub struct ElfSymbols {
    pub path: PathBuf,
    /// Added to a file's virtual addresses to get addresses in the target.
    pub load_bias: u64,
    symbols: HashMap<String, u64>,
    sections: HashMap<String, (u64, u64)>,
    /// The contents of .rodata, kept to find a version string in older builds.
    pub rodata: Vec<u8>,
}

/// Symbols gilscope may look up; others are not kept.
const WANTED: &[&str] = &[
    "_PyRuntime",
    "Py_Version",
    "PyCode_Type",
    "_PyThreadState_Current",
];

impl ElfSymbols {
    /// Loads the binary behind `mapping_path` as mapped in `process`.
    pub fn load(process: &Process, mapping_path: &Path) -> Result<ElfSymbols> {
        let host = process.host_path(mapping_path);
        let bytes = std::fs::read(&host).with_context(|| format!("reading {}", host.display()))?;
        let load_bias = load_bias(&process.maps, mapping_path, &bytes)?;
        Self::parse(mapping_path, &bytes, load_bias)
    }

    pub fn parse(path: &Path, bytes: &[u8], load_bias: u64) -> Result<ElfSymbols> {
        let elf = Elf::parse(bytes).with_context(|| format!("parsing ELF {}", path.display()))?;
        let mut symbols = HashMap::new();
        let tables = [(&elf.syms, &elf.strtab), (&elf.dynsyms, &elf.dynstrtab)];
        for (syms, strtab) in tables {
            for sym in syms.iter() {
                let Some(name) = strtab.get_at(sym.st_name) else {
                    continue;
                };
                if sym.st_value != 0 && WANTED.contains(&name) {
                    symbols.insert(name.to_string(), load_bias.wrapping_add(sym.st_value));
                }
            }
        }
        let mut sections = HashMap::new();
        let mut rodata = Vec::new();
        for header in &elf.section_headers {
            let Some(name) = elf.shdr_strtab.get_at(header.sh_name) else {
                continue;
            };
            sections.insert(
                name.to_string(),
                (load_bias.wrapping_add(header.sh_addr), header.sh_size),
            );
            if name == ".rodata" {
                let range = header.file_range().unwrap_or_default();
                rodata = bytes.get(range).unwrap_or_default().to_vec();
            }
        }
        Ok(ElfSymbols {
            path: path.to_path_buf(),
            load_bias,
            symbols,
            sections,
            rodata,
        })
    }

    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).copied()
    }

    /// (address in the target, size) of a section.
    pub fn section(&self, name: &str) -> Option<(u64, u64)> {
        self.sections.get(name).copied()
    }
}

/// The difference between where the file asked to be loaded and where it was: the mapping
/// of the file that covers file offset 0, minus the page-aligned vaddr of the PT_LOAD segment
/// at offset 0.
fn load_bias(maps: &[Mapping], path: &Path, bytes: &[u8]) -> Result<u64> {
    let elf = Elf::parse(bytes)?;
    let Some(first) = maps
        .iter()
        .filter(|m| m.path == path)
        .find(|m| m.offset == 0)
    else {
        bail!("{} is not mapped from offset 0", path.display());
    };
    let segment = elf
        .program_headers
        .iter()
        .filter(|ph| ph.p_type == PT_LOAD)
        .min_by_key(|ph| ph.p_offset)
        .context("no PT_LOAD segment")?;
    let page_mask = !(segment.p_align.max(4096) - 1);
    Ok(first.start.wrapping_sub(segment.p_vaddr & page_mask))
}
