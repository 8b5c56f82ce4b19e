//! The ExCache's frames: exactly `--excache` bytes of host memory, given to the guest as the
//! user memslot at guest-physical 0. Guest page tables map user pages onto
//! these frames ([`crate::memory::paging`]), so the resident bound holds by construction. A frame's
//! host page comes in when the VMM first fills it (zeroes or a fetched line), a cheap native
//! fault, so the guest never takes a host fault through KVM; populating all of them up front
//! measured no faster per miss and made every fork pay for the whole cache (ten `fork`+`exec`
//! of busybox: 1.6-3.6 s populated, 0.25-0.44 s lazy, 256 MiB ExCache).
//!
//! A frame is *invalidated* (every KVM shadow entry that maps it dropped) by a userfaultfd
//! write-protect round trip over its host range: write-protecting fires KVM's MMU notifier, and
//! a vCPU that writes the frame meanwhile waits in the kernel until the protection is removed,
//! which wakes it. That is safe while other vCPUs run, and costs ~0.2 µs per page for a run of
//! frames (`ptprobe` P5), against ~6 µs for one mprotect round trip per frame.

use crate::error::VmmError;
use crate::layout::PAGE_SIZE;
use crate::memory::uffd::Uffd;

/// The frame pool.
pub struct FramePool {
    host: *mut u8,
    size: u64,
    uffd: Uffd,
}

// SAFETY: `host` is a private mapping owned by the pool for its whole life; all access to the
// frames goes through methods whose callers serialise it (the ExCache state lock).
unsafe impl Send for FramePool {}
// SAFETY: as above.
unsafe impl Sync for FramePool {}

impl FramePool {
    /// Maps `size` bytes (a multiple of 4 KB) of frames and registers them for
    /// write-protection.
    pub fn new(size: u64) -> Result<FramePool, VmmError> {
        let err = |what: &str, e: std::io::Error| VmmError::Memory { size, reason: format!("{what}: {e}") };
        // SAFETY: a fresh anonymous private mapping; nothing else refers to it.
        let host = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if host == libc::MAP_FAILED {
            return Err(err("mapping the ExCache frames", std::io::Error::last_os_error()));
        }
        let pool = FramePool { host: host.cast(), size, uffd: Uffd::new().map_err(|e| err("userfaultfd", e))? };
        // Lines are 4 KB: a transparent huge page would be split by the first invalidation.
        // SAFETY: the range is our own mapping; the advice changes no contents.
        unsafe { libc::madvise(host, size as usize, libc::MADV_NOHUGEPAGE) };
        pool.uffd.register_wp(pool.host as u64, size).map_err(|e| err("registering the frames for write-protection", e))?;
        Ok(pool)
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of frames.
    pub fn frames(&self) -> u64 {
        self.size / PAGE_SIZE
    }

    /// Host virtual address of guest-physical 0 (for the memslot).
    pub fn host_addr(&self) -> u64 {
        self.host as u64
    }

    /// The frame at guest-physical `gpa`.
    ///
    /// # Safety
    /// The caller must hold whatever serialises VMM access to this frame (the ExCache state
    /// lock) for as long as it uses the slice; the guest may access it concurrently only
    /// through a mapping the caller knows about (a resident line).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn frame(&self, gpa: u64) -> &mut [u8] {
        assert!(gpa.is_multiple_of(PAGE_SIZE) && gpa + PAGE_SIZE <= self.size, "frame {gpa:#x}");
        // SAFETY: inside our mapping (asserted); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.host.add(gpa as usize), PAGE_SIZE as usize) }
    }

    /// Drops every KVM translation of the frames `[gpa, gpa + len)`, keeping their contents: a
    /// cleared A or D bit, an unmapped line or a right taken away is seen by the guest from now
    /// on.
    pub fn invalidate(&self, gpa: u64, len: u64) -> std::io::Result<()> {
        assert!(gpa + len <= self.size, "invalidating {gpa:#x}+{len:#x}");
        if len == 0 {
            return Ok(());
        }
        let at = self.host as u64 + gpa;
        self.uffd.write_protect(at, len, true)?;
        self.uffd.write_protect(at, len, false)
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unused from here on (the VM using it is gone first).
        unsafe { libc::munmap(self.host.cast(), self.size as usize) };
    }
}
