//! A small userfaultfd wrapper: write-protection of the ExCache frames, which is how a run of
//! frames is invalidated in KVM while vCPUs run (see [`crate::memory::frame_pool::FramePool::invalidate`]).
//!
//! Written by hand because the `userfaultfd` crate's `-sys` crate needs libclang at build time,
//! for the three ioctls used here.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use vmm_sys_util::ioctl::ioctl_with_mut_ref;
use vmm_sys_util::ioctl_iowr_nr;

const UFFD_API: u64 = 0xaa;
const FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
const REGISTER_MODE_WP: u64 = 2;
const WRITEPROTECT_MODE_WP: u64 = 1;

#[repr(C)]
#[derive(Default)]
struct Api {
    api: u64,
    features: u64,
    ioctls: u64,
}
#[repr(C)]
#[derive(Default)]
struct Range {
    start: u64,
    len: u64,
}
#[repr(C)]
#[derive(Default)]
struct Register {
    range: Range,
    mode: u64,
    ioctls: u64,
}
#[repr(C)]
#[derive(Default)]
struct WriteProtect {
    range: Range,
    mode: u64,
}

ioctl_iowr_nr!(UFFDIO_API, 0xaa, 0x3f, Api);
ioctl_iowr_nr!(UFFDIO_REGISTER, 0xaa, 0x00, Register);
ioctl_iowr_nr!(UFFDIO_WRITEPROTECT, 0xaa, 0x06, WriteProtect);

/// A userfaultfd used for write-protection only. Its fault messages are never read: a thread
/// that writes a protected page waits until the protection is removed, which wakes it.
pub struct Uffd {
    fd: OwnedFd,
}

fn check(r: i32) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Uffd {
    /// Opens a userfaultfd with write-protect fault support.
    pub fn new() -> io::Result<Uffd> {
        // SAFETY: the syscall takes flags only and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("userfaultfd: {e} (is vm.unprivileged_userfaultfd 0 and the process unprivileged?)"),
            ));
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = Api { api: UFFD_API, features: FEATURE_PAGEFAULT_FLAG_WP, ioctls: 0 };
        // SAFETY: UFFDIO_API reads and writes an `Api` struct we own.
        check(unsafe { ioctl_with_mut_ref(&fd, UFFDIO_API(), &mut api) })?;
        Ok(Uffd { fd })
    }

    /// Registers `[start, start+len)` (private anonymous memory) for write-protection.
    pub fn register_wp(&self, start: u64, len: u64) -> io::Result<()> {
        let mut r = Register { range: Range { start, len }, mode: REGISTER_MODE_WP, ioctls: 0 };
        // SAFETY: UFFDIO_REGISTER reads and writes a `Register` struct we own; the range is the
        // caller's own mapping.
        check(unsafe { ioctl_with_mut_ref(&self.fd, UFFDIO_REGISTER(), &mut r) })
    }

    /// Write-protects `[start, start+len)` (`on`), or removes the protection and wakes the
    /// threads that wrote meanwhile.
    pub fn write_protect(&self, start: u64, len: u64, on: bool) -> io::Result<()> {
        let mode = if on { WRITEPROTECT_MODE_WP } else { 0 };
        let mut w = WriteProtect { range: Range { start, len }, mode };
        // SAFETY: UFFDIO_WRITEPROTECT reads a struct we own and changes protection of pages in
        // the registered range only.
        check(unsafe { ioctl_with_mut_ref(&self.fd, UFFDIO_WRITEPROTECT(), &mut w) })
    }
}
