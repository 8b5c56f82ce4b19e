//! Loading a parsed ELF executable ([`crate::elf`]) into a process's address space.

use crate::elf::{ElfError, ElfInfo, Segment};
use crate::layout::{page_ceil, page_floor};
use crate::memory::mm::Mm;
use lego_proto::vma::VmaKind;

/// Maps the segments of a validated executable and copies their file data in.
pub fn load(info: &ElfInfo, file: &[u8], mm: &mut Mm) -> Result<(), ElfError> {
    let no_room = |s: &Segment| ElfError::DoesNotFit(s.vaddr, s.vaddr + s.memsz);
    let no_room_at = |end: u64| ElfError::DoesNotFit(end, end);
    // A page shared by two segments gets the union of their rights, as the kernel's
    // page-granular mappings would give. Nothing is loaded yet, so remapping it loses nothing.
    let mut mapped_end = 0;
    for s in &info.segments {
        let (start, end) = (page_floor(s.vaddr), page_ceil(s.vaddr + s.memsz).ok_or_else(|| no_room(s))?);
        if start < mapped_end {
            let shared = mm.vmas().find(start).map(|v| v.prot).unwrap_or_default().union(s.prot);
            mm.map_region(start, mapped_end, shared, VmaKind::Image).map_err(|_| no_room(s))?;
        }
        if end > mapped_end.max(start) {
            mm.map_region(mapped_end.max(start), end, s.prot, VmaKind::Image).map_err(|_| no_room(s))?;
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
    mm.set_brk_start(info.end).map_err(|_| no_room_at(info.end))?;
    Ok(())
}
