//! The user-memory memslot: `mem_size` bytes of host memory reserved with `MAP_NORESERVE`,
//! identity mapped at guest address 0. The VMM reads and writes guest buffers through it.

use std::sync::atomic::AtomicU32;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::errno::{Errno, SysResult};
use crate::error::VmmError;

/// Host side of the user memslot.
pub struct UserMemory {
    mem: GuestMemoryMmap,
    size: u64,
    host: *mut u8,
}

// SAFETY: `host` points into the mapping owned by `mem`, which is itself Send + Sync; the raw
// pointer is only used for madvise/mprotect on ranges inside that mapping.
unsafe impl Send for UserMemory {}
// SAFETY: as above; the only references derived from `host` are atomic words (`word`).
unsafe impl Sync for UserMemory {}

impl UserMemory {
    /// Reserves `size` bytes (no memory is committed until touched).
    pub fn new(size: u64) -> Result<UserMemory, VmmError> {
        let err = |reason: String| VmmError::Memory { size, reason };
        let region = MmapRegion::build(
            None,
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
        .map_err(|e| err(e.to_string()))?;
        let region = GuestRegionMmap::new(region, GuestAddress(0)).ok_or_else(|| err("bad region".into()))?;
        let mem = GuestMemoryMmap::from_regions(vec![region]).map_err(|e| err(e.to_string()))?;
        let host = mem.get_host_address(GuestAddress(0)).map_err(|e| err(e.to_string()))?;
        Ok(UserMemory { mem, size, host })
    }

    /// The memory as vm-memory sees it (for the ELF loader).
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host virtual address of guest address 0.
    pub fn host_addr(&self) -> u64 {
        self.host as u64
    }

    fn check(&self, addr: u64, len: u64) -> SysResult<()> {
        match addr.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Errno::EFAULT),
        }
    }

    /// Copies guest memory out. Permission checks are the caller's (see [`crate::mm`]).
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> SysResult<()> {
        self.check(addr, buf.len() as u64)?;
        self.mem.read_slice(buf, GuestAddress(addr)).map_err(|_| Errno::EFAULT)
    }

    /// Copies into guest memory. Permission checks are the caller's (see [`crate::mm`]).
    pub fn write(&self, addr: u64, buf: &[u8]) -> SysResult<()> {
        self.check(addr, buf.len() as u64)?;
        self.mem.write_slice(buf, GuestAddress(addr)).map_err(|_| Errno::EFAULT)
    }

    /// The aligned 32-bit word at `addr`, for atomic operations shared with the guest's threads
    /// (futexes). Permission checks are the caller's. A missing or write-protected page faults
    /// into the ExCache handler like any other VMM access.
    pub fn word(&self, addr: u64) -> SysResult<&AtomicU32> {
        self.check(addr, 4)?;
        if !addr.is_multiple_of(4) {
            return Err(Errno::EINVAL);
        }
        // SAFETY: `addr + 4` lies inside our mapping (checked above) and is 4-byte aligned; the
        // mapping lives as long as `self`. Guest memory is shared with running vCPUs, which is
        // why it is only accessed atomically here.
        Ok(unsafe { &*self.host.add(addr as usize).cast::<AtomicU32>() })
    }

    /// Makes KVM drop every guest mapping of a range while keeping its contents, so that a
    /// permission the VMM took away in the guest page tables is seen at once. An mprotect round
    /// trip on the host mapping fires KVM's MMU notifier, which zaps the shadow entries.
    pub fn revoke(&self, addr: u64, len: u64) -> SysResult<()> {
        self.check(addr, len)?;
        // SAFETY: the range lies inside our own mapping (checked above); it is made read-only and
        // then restored to its original read/write protection before anyone else uses it (the
        // VMM thread that calls this is the only host-side user of guest memory while the vCPU
        // is stopped in an exit).
        unsafe {
            let p = self.host.add(addr as usize).cast();
            if libc::mprotect(p, len as usize, libc::PROT_READ) != 0 {
                return Err(Errno::last());
            }
            if libc::mprotect(p, len as usize, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                return Err(Errno::last());
            }
        }
        Ok(())
    }
}
