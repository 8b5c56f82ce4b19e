//! Loading a parsed ELF executable ([`crate::elf`]) into a process's address space, with its
//! program interpreter when it is dynamically linked.

use crate::elf::{self, ElfError, ElfInfo, Segment};
use crate::fs::FileSystem;
use crate::layout::{page_ceil, page_floor};
use crate::memory::mm::{flags, Mm};
use lego_proto::vma::{Prot, VmaKind};

/// Where a loaded program starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The first instruction: the interpreter's entry for a dynamically linked program (it
    /// jumps to the program's, `AT_ENTRY`, once the libraries are in), else the program's.
    pub entry: u64,
    /// Where the interpreter was loaded (`AT_BASE`); 0 without one.
    pub interp_base: u64,
}

/// A dynamically linked program's interpreter, read and validated before anything is loaded
/// (so that `execve` can still fail with its error).
pub struct Interp {
    path: Vec<u8>,
    bytes: Vec<u8>,
    info: ElfInfo,
}

/// The program interpreter `info` names, read from the vNode's files `fs` and validated:
/// `None` for a static program. It must be position independent, with no interpreter of its
/// own. A missing one is [`ElfError::Interpreter`] (`ENOENT` from `execve`), one that is not
/// such a file [`ElfError::BadInterpreter`] (`ELIBBAD`).
pub fn interpreter(info: &ElfInfo, fs: &dyn FileSystem, user_top: u64) -> Result<Option<Interp>, ElfError> {
    let Some(path) = &info.interp else { return Ok(None) };
    let shown = || String::from_utf8_lossy(path).into_owned();
    let bytes = crate::fs::read_all(fs, path).map_err(|e| ElfError::Interpreter(shown(), e))?;
    let bad = |e: ElfError| ElfError::BadInterpreter(shown(), Box::new(e));
    let interp = elf::parse(&bytes, user_top).map_err(bad)?;
    if interp.interp.is_some() || !interp.relocatable {
        return Err(bad(ElfError::Malformed("not a position-independent file without an interpreter of its own".into())));
    }
    Ok(Some(Interp { path: path.clone(), bytes, info: interp }))
}

/// Loads the executable `file` (validated as `info`) and its interpreter, if it has one, as
/// Linux's `load_elf_binary` does: the interpreter goes where an `mmap` of its size would, and
/// it runs first.
pub fn load(info: &ElfInfo, file: &[u8], interp: Option<&Interp>, mm: &mut Mm) -> Result<Start, ElfError> {
    load_segments(info, file, mm, &VmaKind::Image)?;
    mm.set_brk_start(info.end).map_err(|_| ElfError::DoesNotFit(info.end, info.end))?;
    let Some(Interp { path, bytes, info: interp }) = interp else {
        return Ok(Start { entry: info.entry, interp_base: 0 });
    };
    let bad = |e: ElfError| ElfError::BadInterpreter(String::from_utf8_lossy(path).into_owned(), Box::new(e));
    // The span is reserved inaccessible first, so that the holes between segments stay
    // unusable (as `ld.so` itself maps libraries); the segments then replace their parts of it.
    let (start, end) = interp.span();
    let anywhere = flags::MAP_PRIVATE | flags::MAP_ANONYMOUS;
    let base = mm
        .mmap(0, end - start, Prot(0), anywhere, VmaKind::File(path.clone()))
        .map_err(|_| bad(ElfError::DoesNotFit(start, end)))?;
    let interp = interp.moved(base.wrapping_sub(start));
    load_segments(&interp, bytes, mm, &VmaKind::File(path.clone())).map_err(bad)?;
    Ok(Start { entry: interp.entry, interp_base: interp.load_bias })
}

/// Maps the segments of a validated file as `kind` and copies their file data in.
fn load_segments(info: &ElfInfo, file: &[u8], mm: &mut Mm, kind: &VmaKind) -> Result<(), ElfError> {
    let no_room = |s: &Segment| ElfError::DoesNotFit(s.vaddr, s.vaddr + s.memsz);
    // A page shared by two segments gets the union of their rights, as the kernel's
    // page-granular mappings would give. Nothing is loaded yet, so remapping it loses nothing.
    let mut mapped_end = 0;
    for s in &info.segments {
        let (start, end) = (page_floor(s.vaddr), page_ceil(s.vaddr + s.memsz).ok_or_else(|| no_room(s))?);
        if start < mapped_end {
            let shared = mm.vmas().find(start).map(|v| v.prot).unwrap_or_default().union(s.prot);
            mm.map_region(start, mapped_end, shared, kind.clone()).map_err(|_| no_room(s))?;
        }
        if end > mapped_end.max(start) {
            mm.map_region(mapped_end.max(start), end, s.prot, kind.clone()).map_err(|_| no_room(s))?;
        }
        mapped_end = mapped_end.max(end);
    }
    // The regions were mapped fresh (zero-filled): only the file data, and the rest of the page
    // it ends in, can hold anything but zeroes. Writing zeroes over the whole bss would dirty
    // every line.
    for s in &info.segments {
        let data = usize::try_from(s.offset)
            .ok()
            .and_then(|o| file.get(o..o.checked_add(usize::try_from(s.filesz).ok()?)?))
            .ok_or_else(|| ElfError::Malformed(format!("segment at {:#x}: file data out of bounds", s.vaddr)))?;
        mm.load(s.vaddr, data).map_err(|_| no_room(s))?;
        let bss = s.vaddr + s.filesz;
        let len = (page_ceil(bss).unwrap_or(bss) - bss).min(s.memsz - s.filesz);
        mm.load(bss, &vec![0u8; len as usize]).map_err(|_| no_room(s))?;
    }
    Ok(())
}
