//! x86-64 ELF executables and their program interpreters (`ld.so`): validation, pure so it can
//! be fuzzed. [`crate::loader`] loads what passes.

use crate::errno::Errno;
use crate::layout::{page_ceil, PIE_BASE, USER_MIN};
use lego_proto::vma::Prot;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const MAX_PHNUM: usize = 256;
/// Longest program interpreter path accepted (Linux's `PATH_MAX`).
const MAX_INTERP: u64 = 4096;

/// Why a file is not something lego can run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF executable")]
    NotElf,
    #[error("truncated ELF file ({0})")]
    Truncated(&'static str),
    #[error("not a 64-bit ELF file: lego runs x86-64 Linux programs")]
    Not64Bit,
    #[error("big-endian ELF file: lego runs x86-64 Linux programs")]
    BigEndian,
    #[error("ELF file for another architecture ({0}): lego runs x86-64 Linux programs")]
    WrongArch(&'static str),
    #[error("ELF file is not an executable (type {0}): lego runs executables")]
    NotExecutable(u16),
    #[error("dynamically linked, and its program interpreter {0} cannot be read from the vNode's files: {1}")]
    Interpreter(String, Errno),
    #[error("program interpreter {0}: {1}")]
    BadInterpreter(String, Box<ElfError>),
    #[error("malformed ELF file: {0}")]
    Malformed(String),
    #[error("ELF segment at {0:#x}..{1:#x} does not fit in the vNode's user memory")]
    DoesNotFit(u64, u64),
}

impl ElfError {
    /// The errno `execve` fails with for this file: the interpreter's own error when it could
    /// not be read (`ENOENT` when missing), `ELIBBAD` when it is no interpreter, else `ENOEXEC`.
    pub fn errno(&self) -> Errno {
        match self {
            ElfError::Interpreter(_, e) => *e,
            ElfError::BadInterpreter(..) => Errno::ELIBBAD,
            _ => Errno::ENOEXEC,
        }
    }
}

/// One loadable segment, at its final (biased) address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub prot: Prot,
}

/// A validated executable, with everything the initial stack needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub entry: u64,
    pub load_bias: u64,
    /// Address of the program headers in memory (`AT_PHDR`).
    pub phdr: u64,
    pub phnum: u64,
    pub segments: Vec<Segment>,
    /// End of the highest segment (where brk starts).
    pub end: u64,
    /// The program interpreter (`PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`) of a
    /// dynamically linked executable, to be loaded beside it and started first.
    pub interp: Option<Vec<u8>>,
    /// Whether the file is position independent (`ET_DYN`): [`ElfInfo::moved`] may move it.
    pub relocatable: bool,
}

impl ElfInfo {
    /// The page-rounded range its segments span: its first byte and the end.
    pub fn span(&self) -> (u64, u64) {
        let start = self.segments.first().map_or(0, |s| crate::layout::page_floor(s.vaddr));
        (start, page_ceil(self.end).unwrap_or(self.end))
    }

    /// The same position-independent file loaded `delta` bytes higher (wrapping: a negative
    /// move is a large `delta`). The caller checks that the new span fits.
    pub fn moved(&self, delta: u64) -> ElfInfo {
        let mut info = self.clone();
        info.entry = info.entry.wrapping_add(delta);
        info.load_bias = info.load_bias.wrapping_add(delta);
        info.phdr = info.phdr.wrapping_add(delta);
        info.end = info.end.wrapping_add(delta);
        for s in &mut info.segments {
            s.vaddr = s.vaddr.wrapping_add(delta);
        }
        info
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default())
}

fn machine_name(m: u16) -> &'static str {
    match m {
        3 => "i386",
        8 => "MIPS",
        20 => "PowerPC",
        21 => "PowerPC64",
        40 => "ARM",
        183 => "AArch64",
        243 => "RISC-V",
        _ => "unknown machine",
    }
}

/// Validates `file` as an x86-64 executable (static, position independent or dynamically linked)
/// that fits below `user_top`.
pub fn parse(file: &[u8], user_top: u64) -> Result<ElfInfo, ElfError> {
    if file.len() < 4 || &file[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    if file.len() < EHDR_SIZE {
        return Err(ElfError::Truncated("ELF header"));
    }
    if file[4] != 2 {
        return Err(ElfError::Not64Bit);
    }
    if file[5] != 1 {
        return Err(ElfError::BigEndian);
    }
    let (e_type, machine) = (u16_at(file, 16), u16_at(file, 18));
    if machine != EM_X86_64 {
        return Err(ElfError::WrongArch(machine_name(machine)));
    }
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(ElfError::NotExecutable(e_type));
    }
    let entry = u64_at(file, 24);
    let phoff = u64_at(file, 32);
    let (phentsize, phnum) = (u16_at(file, 54) as usize, u16_at(file, 56) as usize);
    if phoff < EHDR_SIZE as u64 {
        return Err(ElfError::Malformed(format!("program headers at offset {phoff}")));
    }
    if phentsize != PHDR_SIZE {
        return Err(ElfError::Malformed(format!("program header size {phentsize}")));
    }
    if phnum == 0 || phnum > MAX_PHNUM {
        return Err(ElfError::Malformed(format!("{phnum} program headers")));
    }
    let ph_end = phoff
        .checked_add((phnum * PHDR_SIZE) as u64)
        .ok_or_else(|| ElfError::Malformed("program header offset".into()))?;
    if ph_end > file.len() as u64 {
        return Err(ElfError::Truncated("program headers"));
    }
    let bias = if e_type == ET_DYN { PIE_BASE } else { 0 };
    let mut segments = Vec::new();
    let mut phdr_vaddr = None;
    let mut has_dynamic = false;
    let mut interp = None;
    for i in 0..phnum {
        let h = &file[phoff as usize + i * PHDR_SIZE..][..PHDR_SIZE];
        let (p_type, p_flags) = (u32_at(h, 0), u32_at(h, 4));
        let (offset, vaddr, paddr) = (u64_at(h, 8), u64_at(h, 16), u64_at(h, 24));
        let (filesz, memsz) = (u64_at(h, 32), u64_at(h, 40));
        match p_type {
            PT_INTERP => {
                // A path ending in its NUL, as the kernel requires.
                let bad = || ElfError::Malformed(format!("program interpreter path of {filesz} bytes"));
                if interp.is_some() || !(2..=MAX_INTERP).contains(&filesz) {
                    return Err(bad());
                }
                let raw = file.get(offset as usize..offset.saturating_add(filesz) as usize).ok_or(ElfError::Truncated("program interpreter path"))?;
                match raw.split_last() {
                    Some((0, path)) if !path.contains(&0) => interp = Some(path.to_vec()),
                    _ => return Err(bad()),
                }
            }
            PT_DYNAMIC => has_dynamic = true,
            PT_PHDR => phdr_vaddr = Some(vaddr),
            PT_LOAD => {
                if memsz == 0 {
                    continue;
                }
                if filesz > memsz {
                    return Err(ElfError::Malformed(format!("segment {i}: file size above memory size")));
                }
                if offset.checked_add(filesz).is_none_or(|e| e > file.len() as u64) {
                    return Err(ElfError::Truncated("segment data"));
                }
                if paddr != vaddr {
                    return Err(ElfError::Malformed(format!(
                        "segment {i}: physical address {paddr:#x} differs from virtual {vaddr:#x}"
                    )));
                }
                let start = vaddr.checked_add(bias);
                let end = start.and_then(|s| s.checked_add(memsz)).and_then(page_ceil);
                match (start, end) {
                    (Some(s), Some(e)) if s >= USER_MIN && e <= user_top => {}
                    _ => return Err(ElfError::DoesNotFit(vaddr.wrapping_add(bias), vaddr.wrapping_add(bias).wrapping_add(memsz))),
                }
                let prot = Prot(((p_flags & 4) >> 2) | (p_flags & 2) | ((p_flags & 1) << 2));
                segments.push(Segment { vaddr: vaddr + bias, memsz, offset, filesz, prot });
            }
            _ => {}
        }
    }
    if e_type == ET_DYN && !has_dynamic {
        return Err(ElfError::Malformed("position-independent file without dynamic section".into()));
    }
    if segments.is_empty() {
        return Err(ElfError::Malformed("no loadable segment".into()));
    }
    segments.sort_by_key(|s| s.vaddr);
    for w in segments.windows(2) {
        if w[0].vaddr + w[0].memsz > w[1].vaddr {
            return Err(ElfError::Malformed("overlapping segments".into()));
        }
    }
    let entry = entry.wrapping_add(bias);
    if !segments.iter().any(|s| s.prot.executable() && (s.vaddr..s.vaddr + s.memsz).contains(&entry)) {
        return Err(ElfError::Malformed(format!("entry point {entry:#x} is not in an executable segment")));
    }
    let phdr = match phdr_vaddr {
        Some(v) => v.wrapping_add(bias),
        None => segments
            .iter()
            .find(|s| s.offset <= phoff && ph_end <= s.offset + s.filesz)
            .map(|s| s.vaddr + (phoff - s.offset))
            .unwrap_or(0),
    };
    let end = segments.iter().map(|s| s.vaddr + s.memsz).max().unwrap_or(0);
    Ok(ElfInfo { entry, load_bias: bias, phdr, phnum: phnum as u64, segments, end, interp, relocatable: e_type == ET_DYN })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal static executable: one RX segment holding the headers and `code`.
    pub(crate) fn tiny_elf(code: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x78];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[24..32].copy_from_slice(&(0x40_0078u64).to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let total = (0x78 + code.len()) as u64;
        let ph = &mut f[64..120];
        ph[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        ph[4..8].copy_from_slice(&5u32.to_le_bytes());
        ph[16..24].copy_from_slice(&0x40_0000u64.to_le_bytes());
        ph[24..32].copy_from_slice(&0x40_0000u64.to_le_bytes());
        ph[32..40].copy_from_slice(&total.to_le_bytes());
        ph[40..48].copy_from_slice(&total.to_le_bytes());
        f.extend_from_slice(code);
        f
    }

    #[test]
    fn accepts_a_minimal_executable() {
        let info = parse(&tiny_elf(&[0xf4]), 1 << 32).unwrap();
        assert_eq!(info.entry, 0x40_0078);
        assert_eq!(info.phdr, 0x40_0040);
        assert_eq!(info.segments[0].prot, Prot(5));
    }

    #[test]
    fn clear_errors() {
        let good = tiny_elf(&[0xf4]);
        assert_eq!(parse(b"#!/bin/sh\n", 1 << 32), Err(ElfError::NotElf));
        assert_eq!(parse(&good[..40], 1 << 32), Err(ElfError::Truncated("ELF header")));
        assert_eq!(parse(&good[..100], 1 << 32), Err(ElfError::Truncated("program headers")));
        let mut arm = good.clone();
        arm[18] = 183;
        assert_eq!(parse(&arm, 1 << 32), Err(ElfError::WrongArch("AArch64")));
        let mut small = good.clone();
        small[4] = 1;
        assert_eq!(parse(&small, 1 << 32), Err(ElfError::Not64Bit));
        assert!(matches!(parse(&good, 0x40_0000), Err(ElfError::DoesNotFit(..))));
    }

    /// `tiny_elf` with a second program header: a `PT_INTERP` naming `path` (its bytes as
    /// given, NUL included or not), stored after the code.
    fn with_interp(path: &[u8]) -> Vec<u8> {
        let mut f = tiny_elf(&[0xf4]);
        let at = f.len() as u64;
        f.extend_from_slice(path);
        let mut ph = [0u8; PHDR_SIZE];
        ph[0..4].copy_from_slice(&PT_INTERP.to_le_bytes());
        ph[8..16].copy_from_slice(&at.to_le_bytes());
        ph[32..40].copy_from_slice(&(path.len() as u64).to_le_bytes());
        // The headers move to the end, so that the first segment's bytes stay where they are.
        let phoff = f.len() as u64;
        f.extend_from_within(64..120);
        f.extend_from_slice(&ph);
        f[32..40].copy_from_slice(&phoff.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        f
    }

    #[test]
    fn a_dynamically_linked_executable_names_its_interpreter() {
        let info = parse(&with_interp(b"/lib64/ld-linux-x86-64.so.2\0"), 1 << 32).unwrap();
        assert_eq!(info.interp.as_deref(), Some(&b"/lib64/ld-linux-x86-64.so.2"[..]));
        assert!(!info.relocatable);
        assert_eq!(parse(&tiny_elf(&[0xf4]), 1 << 32).unwrap().interp, None);
        for bad in [&b"/lib64/ld.so"[..], b"\0", b"/lib\0/x\0"] {
            assert!(matches!(parse(&with_interp(bad), 1 << 32), Err(ElfError::Malformed(_))), "{bad:?}");
        }
        let mut cut = with_interp(b"/lib64/ld.so\0");
        let at = cut.len() - 2 * PHDR_SIZE;
        cut[at + PHDR_SIZE + 8..at + PHDR_SIZE + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse(&cut, 1 << 32), Err(ElfError::Truncated("program interpreter path")));
    }

    #[test]
    fn a_position_independent_file_moves_whole() {
        let mut f = tiny_elf(&[0xf4]);
        f[16..18].copy_from_slice(&ET_DYN.to_le_bytes());
        // A dynamic section, as every position-independent file has.
        let mut dynamic = [0u8; PHDR_SIZE];
        dynamic[0..4].copy_from_slice(&PT_DYNAMIC.to_le_bytes());
        let phoff = f.len() as u64;
        f.extend_from_within(64..120);
        f.extend_from_slice(&dynamic);
        f[32..40].copy_from_slice(&phoff.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        let info = parse(&f, 1 << 32).unwrap();
        assert!(info.relocatable);
        assert_eq!(info.load_bias, PIE_BASE);
        let moved = info.moved(0x1000_0000);
        assert_eq!(moved.entry, info.entry + 0x1000_0000);
        assert_eq!(moved.span(), (info.span().0 + 0x1000_0000, info.span().1 + 0x1000_0000));
        assert_eq!(moved.segments[0].vaddr, info.segments[0].vaddr + 0x1000_0000);
        assert_eq!(moved.load_bias, PIE_BASE + 0x1000_0000);
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes, 1 << 32);
        }

        #[test]
        fn never_panics_on_mutated_headers(pos in 0usize..0x79, val in any::<u8>(), pos2 in 0usize..0x79, val2 in any::<u8>()) {
            let mut f = tiny_elf(&[0xf4]);
            f[pos] = val;
            f[pos2] = val2;
            if let Ok(info) = parse(&f, 1 << 32) {
                prop_assert!(info.segments.iter().all(|s| s.vaddr >= USER_MIN && s.vaddr + s.memsz <= 1 << 32));
            }
        }
    }
}
