//! The memory manager of one process: its region list, its page tables and its user memory,
//! kept consistent with each other. Every change that takes a right away from a page goes
//! through here, so it is always paired with the invalidation KVM needs (see [`crate::paging`]).

use crate::errno::{Errno, SysResult};
use crate::error::VmmError;
use crate::layout::*;
use crate::paging::{PageTables, Prot};
use crate::sysmem::SysMem;
use crate::user_mem::UserMemory;
use lego_proto::vma::{Vma, VmaKind, VmaList};

/// `mmap(2)` flags the memory manager looks at.
pub mod flags {
    pub const MAP_SHARED: u32 = 0x01;
    pub const MAP_PRIVATE: u32 = 0x02;
    pub const MAP_TYPE: u32 = 0x0f;
    pub const MAP_FIXED: u32 = 0x10;
    pub const MAP_ANONYMOUS: u32 = 0x20;
    pub const MAP_32BIT: u32 = 0x40;
    pub const MAP_FIXED_NOREPLACE: u32 = 0x10_0000;
    pub const MREMAP_MAYMOVE: u32 = 1;
    pub const MREMAP_FIXED: u32 = 2;
    pub const MREMAP_DONTUNMAP: u32 = 4;
}
use flags::*;

/// A process address space.
pub struct Mm {
    user: UserMemory,
    sys: SysMem,
    pt: PageTables,
    vmas: VmaList,
    brk_start: u64,
    brk: u64,
    /// Upper end of the area `mmap` places regions in.
    mmap_top: u64,
    stack_top: u64,
}

impl Mm {
    /// Reserves `size` bytes of user memory and maps the main stack at its top.
    pub fn new(size: u64) -> Result<Mm, VmmError> {
        if !(MIN_USER_MEM..=MAX_USER_MEM).contains(&size) || size % PAGE_SIZE != 0 {
            return Err(VmmError::Config(format!(
                "memory size {size} must be a multiple of 4 KiB between {} MiB and {} GiB",
                MIN_USER_MEM >> 20,
                MAX_USER_MEM >> 30
            )));
        }
        let user = UserMemory::new(size)?;
        let mut sys = SysMem::new(size)?;
        let pt = PageTables::new(&mut sys)
            .map_err(|e| VmmError::Memory { size, reason: e.to_string() })?;
        let stack_top = size;
        let mut mm = Mm {
            user,
            sys,
            pt,
            vmas: VmaList::default(),
            brk_start: 0,
            brk: 0,
            mmap_top: stack_top - STACK_MAX - STACK_GAP,
            stack_top,
        };
        mm.map_region(stack_top - STACK_MAX, stack_top, Prot::RW, VmaKind::Stack)
            .map_err(|e| VmmError::Memory { size, reason: format!("mapping the stack: {e}") })?;
        Ok(mm)
    }

    /// The user memory slot.
    pub fn user(&self) -> &UserMemory {
        &self.user
    }
    /// The VMM-private slot.
    pub fn sys(&self) -> &SysMem {
        &self.sys
    }
    /// Page-table root (CR3).
    pub fn cr3(&self) -> u64 {
        self.pt.root()
    }
    /// Top of the main stack.
    pub fn stack_top(&self) -> u64 {
        self.stack_top
    }
    /// The region list.
    pub fn vmas(&self) -> &VmaList {
        &self.vmas
    }
    /// Bytes of user address space in regions.
    pub fn mapped_bytes(&self) -> u64 {
        self.vmas.iter().map(|v| v.end - v.start).sum()
    }

    /// Sets where the brk heap starts (just after the executable image).
    pub fn set_brk_start(&mut self, addr: u64) {
        let start = page_ceil(addr).unwrap_or(addr);
        self.brk_start = start;
        self.brk = start;
    }

    /// Maps `[start, end)` (page aligned, previously free or replaced) with zeroed memory.
    pub fn map_region(&mut self, start: u64, end: u64, prot: Prot, kind: VmaKind) -> SysResult<()> {
        self.unmap_range(start, end)?;
        self.pt.map_user(&mut self.sys, start, end, prot).map_err(|_| Errno::ENOMEM)?;
        self.vmas.insert(Vma { start, end, prot, kind });
        Ok(())
    }

    /// Removes every region in `[start, end)` and drops its contents.
    fn unmap_range(&mut self, start: u64, end: u64) -> SysResult<()> {
        let removed = self.vmas.remove(start, end);
        for v in removed {
            self.pt.unmap(&mut self.sys, v.start, v.end);
            // Releasing the host pages is also what makes KVM forget the old translations.
            self.user.discard(v.start, v.end - v.start)?;
        }
        Ok(())
    }

    fn check_user_range(&self, addr: u64, len: u64) -> SysResult<u64> {
        let end = addr.checked_add(len).ok_or(Errno::ENOMEM)?;
        if addr < USER_MIN {
            return Err(Errno::EPERM);
        }
        if end > self.stack_top {
            return Err(Errno::ENOMEM);
        }
        Ok(end)
    }

    /// `mmap(2)` placement and mapping (zero-filled; file contents are the caller's).
    pub fn mmap(&mut self, addr: u64, len: u64, prot: Prot, flags: u32, kind: VmaKind) -> SysResult<u64> {
        if len == 0 || addr % PAGE_SIZE != 0 && flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
            return Err(Errno::EINVAL);
        }
        let len = page_ceil(len).ok_or(Errno::ENOMEM)?;
        let start = if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
            let end = self.check_user_range(addr, len)?;
            if flags & MAP_FIXED == 0 && !self.vmas.is_free(addr, end) {
                return Err(Errno::EEXIST);
            }
            addr
        } else {
            self.place(page_floor(addr), len, flags & MAP_32BIT != 0)?
        };
        self.map_region(start, start + len, prot, kind)?;
        Ok(start)
    }

    /// Chooses an address for a new region of `len` bytes: the hint if it is free, else the
    /// highest free gap below the stack.
    fn place(&self, hint: u64, len: u64, low_2g: bool) -> SysResult<u64> {
        if hint != 0 {
            if let Ok(end) = self.check_user_range(hint, len) {
                if self.vmas.is_free(hint, end) {
                    return Ok(hint);
                }
            }
        }
        let top = if low_2g { self.mmap_top.min(1 << 31) } else { self.mmap_top };
        let low = self.brk.max(USER_MIN);
        self.vmas.find_free_top_down(len, low, top).ok_or(Errno::ENOMEM)
    }

    /// `munmap(2)`.
    pub fn munmap(&mut self, addr: u64, len: u64) -> SysResult<()> {
        if addr % PAGE_SIZE != 0 || len == 0 {
            return Err(Errno::EINVAL);
        }
        let len = page_ceil(len).ok_or(Errno::EINVAL)?;
        let end = addr.checked_add(len).ok_or(Errno::EINVAL)?;
        self.unmap_range(addr, end.min(self.stack_top.max(addr)))
    }

    /// `mprotect(2)`.
    pub fn mprotect(&mut self, addr: u64, len: u64, prot: Prot) -> SysResult<()> {
        if addr % PAGE_SIZE != 0 || prot.0 & !7 != 0 {
            return Err(Errno::EINVAL);
        }
        let len = page_ceil(len).ok_or(Errno::ENOMEM)?;
        if len == 0 {
            return Ok(());
        }
        let end = addr.checked_add(len).ok_or(Errno::ENOMEM)?;
        let old = self.vmas.protect(addr, end, prot).ok_or(Errno::ENOMEM)?;
        self.pt.map_user(&mut self.sys, addr, end, prot).map_err(|_| Errno::ENOMEM)?;
        for piece in old.iter().filter(|v| v.prot.loses_rights_to(prot)) {
            self.user.revoke(piece.start, piece.end - piece.start)?;
        }
        Ok(())
    }

    /// `madvise(MADV_DONTNEED)`: anonymous private pages read back as zeroes.
    pub fn madvise_dontneed(&mut self, addr: u64, len: u64) -> SysResult<()> {
        if addr % PAGE_SIZE != 0 {
            return Err(Errno::EINVAL);
        }
        let len = page_ceil(len).ok_or(Errno::EINVAL)?;
        let end = addr.checked_add(len).ok_or(Errno::EINVAL)?;
        if !self.vmas.covered(addr, end, |_| true) {
            return Err(Errno::ENOMEM);
        }
        self.user.discard(addr, len)
    }

    /// `mremap(2)`.
    pub fn mremap(&mut self, old: u64, old_len: u64, new_len: u64, flags: u32, new_addr: u64) -> SysResult<u64> {
        if old % PAGE_SIZE != 0
            || flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) != 0
            || flags & MREMAP_FIXED != 0 && flags & MREMAP_MAYMOVE == 0
        {
            return Err(Errno::EINVAL);
        }
        let old_len = page_ceil(old_len).ok_or(Errno::EINVAL)?;
        let new_len = page_ceil(new_len).ok_or(Errno::EINVAL)?;
        if new_len == 0 || old_len == 0 || flags & MREMAP_DONTUNMAP != 0 {
            // old_len == 0 duplicates shared mappings; DONTUNMAP keeps both: neither has a
            // meaning for private anonymous memory worth supporting here.
            return Err(Errno::EINVAL);
        }
        let old_end = old.checked_add(old_len).ok_or(Errno::EFAULT)?;
        let vma = self.vmas.find(old).cloned().ok_or(Errno::EFAULT)?;
        if old_end > vma.end {
            return Err(Errno::EFAULT);
        }
        if flags & MREMAP_FIXED == 0 {
            if new_len <= old_len {
                self.unmap_range(old + new_len, old_end)?;
                return Ok(old);
            }
            let grow_end = old.checked_add(new_len).ok_or(Errno::ENOMEM)?;
            if old_end == vma.end && grow_end <= self.stack_top && self.vmas.is_free(old_end, grow_end) {
                self.pt.map_user(&mut self.sys, old_end, grow_end, vma.prot).map_err(|_| Errno::ENOMEM)?;
                self.vmas.insert(Vma { start: old_end, end: grow_end, prot: vma.prot, kind: vma.kind });
                return Ok(old);
            }
            if flags & MREMAP_MAYMOVE == 0 {
                return Err(Errno::ENOMEM);
            }
        }
        let dst = if flags & MREMAP_FIXED != 0 {
            if new_addr % PAGE_SIZE != 0 {
                return Err(Errno::EINVAL);
            }
            let dst_end = self.check_user_range(new_addr, new_len)?;
            if new_addr < old_end && old < dst_end {
                return Err(Errno::EINVAL);
            }
            new_addr
        } else {
            self.place(0, new_len, false)?
        };
        self.map_region(dst, dst + new_len, vma.prot, vma.kind)?;
        self.user.copy_within(old, dst, old_len.min(new_len))?;
        self.unmap_range(old, old_end)?;
        Ok(dst)
    }

    /// `brk(2)`: returns the new break (the old one if the request cannot be met).
    pub fn brk(&mut self, want: u64) -> u64 {
        if want < self.brk_start || want >= self.mmap_top {
            return self.brk;
        }
        let (old_top, new_top) = (page_ceil(self.brk).unwrap_or(self.brk), page_ceil(want).unwrap_or(want));
        if new_top > old_top {
            if !self.vmas.is_free(old_top, new_top)
                || self.map_region(old_top, new_top, Prot::RW, VmaKind::Heap).is_err()
            {
                return self.brk;
            }
        } else if new_top < old_top && self.unmap_range(new_top, old_top).is_err() {
            return self.brk;
        }
        self.brk = want;
        self.brk
    }

    /// Whether user code may access `[addr, addr+len)` (`write`: for writing).
    pub fn user_accessible(&self, addr: u64, len: u64, write: bool) -> bool {
        let Some(end) = addr.checked_add(len) else { return false };
        len == 0 || self.vmas.covered(addr, end, |v| if write { v.prot.writable() } else { v.prot.readable() })
    }

    /// `copy_from_user`: reads guest memory the program could read, else `EFAULT`.
    pub fn read_user(&self, addr: u64, buf: &mut [u8]) -> SysResult<()> {
        if !self.user_accessible(addr, buf.len() as u64, false) {
            return Err(Errno::EFAULT);
        }
        self.user.read(addr, buf)
    }

    /// `copy_to_user`: writes guest memory the program could write, else `EFAULT`.
    pub fn write_user(&self, addr: u64, buf: &[u8]) -> SysResult<()> {
        if !self.user_accessible(addr, buf.len() as u64, true) {
            return Err(Errno::EFAULT);
        }
        self.user.write(addr, buf)
    }

    /// Reads a NUL-terminated string of at most `max` bytes (without the NUL):
    /// `ENAMETOOLONG` if longer, `EFAULT` if unreadable.
    pub fn read_cstr(&self, addr: u64, max: usize) -> SysResult<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = addr;
        loop {
            let chunk = (PAGE_SIZE - at % PAGE_SIZE) as usize;
            let mut buf = vec![0u8; chunk];
            self.read_user(at, &mut buf)?;
            if let Some(n) = buf.iter().position(|&b| b == 0) {
                out.extend_from_slice(&buf[..n]);
                return if out.len() > max { Err(Errno::ENAMETOOLONG) } else { Ok(out) };
            }
            out.extend_from_slice(&buf);
            if out.len() > max {
                return Err(Errno::ENAMETOOLONG);
            }
            at = at.checked_add(chunk as u64).ok_or(Errno::EFAULT)?;
        }
    }

    /// Reads a little-endian u64.
    pub fn read_u64(&self, addr: u64) -> SysResult<u64> {
        let mut b = [0u8; 8];
        self.read_user(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian u64.
    pub fn write_u64(&self, addr: u64, v: u64) -> SysResult<()> {
        self.write_user(addr, &v.to_le_bytes())
    }
}
