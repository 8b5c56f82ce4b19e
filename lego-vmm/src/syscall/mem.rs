//! Memory system calls: brk, mmap, munmap, mprotect, mremap, madvise (msync, mincore and
//! mlock are [`super::mapping`]'s).

use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::Backing;
use crate::layout::PAGE_SIZE;
use crate::memory::mm::flags::*;
use crate::memory::paging::Prot;
use crate::process::Process;
use lego_proto::vma::VmaKind;

/// Largest chunk copied from a file into memory at once.
const FILE_CHUNK: u64 = 1 << 20;

pub fn brk(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    Ok(p.mm.brk(a[0]))
}

/// `mmap`: anonymous memory (shared with the process's children when `MAP_SHARED`, see
/// [`crate::memory::shared`]), or a copy of a file's contents. A writable shared file mapping
/// is written back to its file on `msync`, `munmap` and exit ([`super::mapping`]).
pub fn mmap(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [addr, len, prot, flags, fd, off] = a;
    let (prot, flags) = (prot as u32, flags as u32);
    if prot & !7 != 0 {
        return Err(Errno::EINVAL);
    }
    let map_type = flags & MAP_TYPE;
    if !matches!(map_type, MAP_SHARED | MAP_PRIVATE | 0x03) {
        return Err(Errno::EINVAL);
    }
    if flags & MAP_FIXED != 0 {
        super::mapping::unmapping(p, addr, addr.saturating_add(len));
    }
    if flags & MAP_ANONYMOUS != 0 {
        let start = if map_type == MAP_PRIVATE {
            p.mm.mmap(addr, len, Prot(prot), flags, VmaKind::Anon)?
        } else {
            p.mm.mmap_shared(addr, len, Prot(prot), flags)?
        };
        super::mapping::mapped(p, start, len, None);
        return Ok(start);
    }
    if off % PAGE_SIZE != 0 {
        return Err(Errno::EINVAL);
    }
    // The file offsets the mapping covers must exist (Linux's check in `do_mmap`).
    if off.checked_add(len).is_none_or(|end| end > i64::MAX as u64) {
        return Err(Errno::EOVERFLOW);
    }
    let file = p.fds.get(fd as u32 as u64)?;
    if !file.readable() {
        return Err(Errno::EACCES);
    }
    let shared = map_type != MAP_PRIVATE;
    if shared && prot & libc::PROT_WRITE as u32 != 0 && !file.writable() {
        return Err(Errno::EACCES);
    }
    let Backing::File(f) = &file.backing else { return Err(Errno::ENODEV) };
    let st = f.stat()?;
    if st.mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Errno::ENODEV);
    }
    // A shared mapping shows the run's object of the file, which every process mapping the
    // file shares; a private one a copy of its contents.
    let (start, obj) = if shared {
        let obj = p.mm.window().file_object((st.dev, st.ino)).map_err(|e| {
            tracing::info!("a shared object for mmap(MAP_SHARED) of a file: {e}");
            Errno::ENOMEM
        })?;
        obj.load(off, len, |buf, at| f.read_at(buf, at))?;
        let kind = VmaKind::File(file.path.clone());
        (p.mm.mmap_object(addr, len, Prot(prot), flags, kind, &obj, off)?, Some(obj))
    } else {
        (p.mm.mmap(addr, len, Prot(prot), flags, VmaKind::File(file.path.clone()))?, None)
    };
    // A shared mapping of a file open for writing may be written (now, or after mprotect),
    // and is written back from the bytes the file has for it now.
    let within = st.size.saturating_sub(off).min(len);
    let tracked = match &obj {
        Some(obj) if file.writable() => {
            let mut clean = vec![0u8; within as usize];
            obj.read_at(&mut clean, off).map_err(|_| Errno::EIO)?;
            Some((file.clone(), off, clean))
        }
        Some(_) => None,
        None => {
            let mut done = 0;
            while done < len {
                let want = (len - done).min(FILE_CHUNK) as usize;
                let mut buf = vec![0u8; want];
                let n = f.read_at(&mut buf, off.saturating_add(done))?;
                if n == 0 {
                    break;
                }
                p.mm.load(start + done, &buf[..n])?;
                done += n as u64;
            }
            None
        }
    };
    super::mapping::mapped(p, start, len, tracked);
    Ok(start)
}

pub fn munmap(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if a[0].is_multiple_of(PAGE_SIZE) {
        super::mapping::unmapping(p, a[0], a[0].saturating_add(a[1]));
    }
    p.mm.munmap(a[0], a[1]).map(|()| 0)
}

pub fn mprotect(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    // PROT_GROWSDOWN/GROWSUP are accepted and ignored: the stack is mapped whole.
    let prot = (a[2] as u32) & !(0x0100_0000 | 0x0200_0000);
    p.mm.mprotect(a[0], a[1], Prot(prot)).map(|()| 0)
}

/// `mremap`. A writable shared file mapping that moves or changes size is written back first
/// and is a private copy from then on.
pub fn mremap(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let old_end = a[0].saturating_add(a[1]);
    if p.maps.shared.iter().any(|m| m.start < old_end && a[0] < m.end()) {
        super::mapping::unmapping(p, a[0], old_end);
    }
    p.mm.mremap(a[0], a[1], a[2], a[3] as u32, a[4])
}

pub fn madvise(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [addr, len, advice, ..] = a;
    match advice as i32 {
        // MADV_FREE may drop the contents whenever it likes; dropping them now is allowed.
        libc::MADV_DONTNEED | libc::MADV_FREE => p.mm.madvise_dontneed(addr, len).map(|()| 0),
        libc::MADV_NORMAL
        | libc::MADV_RANDOM
        | libc::MADV_SEQUENTIAL
        | libc::MADV_WILLNEED
        | libc::MADV_HUGEPAGE
        | libc::MADV_NOHUGEPAGE
        | libc::MADV_DONTDUMP
        | libc::MADV_DODUMP
        | libc::MADV_DONTFORK
        | libc::MADV_DOFORK
        | libc::MADV_MERGEABLE
        | libc::MADV_UNMERGEABLE
        | libc::MADV_COLD
        | libc::MADV_PAGEOUT => {
            if addr % PAGE_SIZE != 0 {
                return Err(Errno::EINVAL);
            }
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}
