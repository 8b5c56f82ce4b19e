//! A small userfaultfd wrapper: the handful of ioctls the ExCache uses.
//!
//! Written by hand because the `userfaultfd` crate cannot install a page write-protected
//! (`UFFDIO_COPY_MODE_WP`), which is how the ExCache learns that a clean line became dirty, and
//! its `-sys` crate needs libclang at build time.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};
use vmm_sys_util::{ioctl_ior_nr, ioctl_iowr_nr};

const UFFD_API: u64 = 0xaa;
const FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
const FEATURE_THREAD_ID: u64 = 1 << 8;
const REGISTER_MODE_MISSING: u64 = 1;
const REGISTER_MODE_WP: u64 = 2;
const COPY_MODE_DONTWAKE: u64 = 1;
const COPY_MODE_WP: u64 = 2;
const WRITEPROTECT_MODE_WP: u64 = 1;
const EVENT_PAGEFAULT: u8 = 0x12;
const PAGEFAULT_FLAG_WRITE: u64 = 1;
const PAGEFAULT_FLAG_WP: u64 = 2;

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
struct Copy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}
#[repr(C)]
#[derive(Default)]
struct WriteProtect {
    range: Range,
    mode: u64,
}

ioctl_iowr_nr!(UFFDIO_API, 0xaa, 0x3f, Api);
ioctl_iowr_nr!(UFFDIO_REGISTER, 0xaa, 0x00, Register);
ioctl_ior_nr!(UFFDIO_WAKE, 0xaa, 0x02, Range);
ioctl_iowr_nr!(UFFDIO_COPY, 0xaa, 0x03, Copy);
ioctl_iowr_nr!(UFFDIO_WRITEPROTECT, 0xaa, 0x06, WriteProtect);

/// A page fault reported by the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Faulting host address (page aligned by the kernel).
    pub addr: u64,
    /// The access was a write.
    pub write: bool,
    /// A write to a write-protected page (not a missing page).
    pub wp: bool,
}

/// A userfaultfd with missing-page and write-protect tracking.
pub struct Uffd {
    fd: OwnedFd,
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

fn check(r: i32) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Uffd {
    /// Opens a non-blocking userfaultfd with write-protect fault reporting.
    pub fn new() -> io::Result<Uffd> {
        // Non-blocking: on a blocking userfaultfd, poll(2) reports only POLLERR, so a handler
        // could never wait for "a fault or a stop request" at once.
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
        let mut api = Api { api: UFFD_API, features: FEATURE_PAGEFAULT_FLAG_WP | FEATURE_THREAD_ID, ioctls: 0 };
        // SAFETY: UFFDIO_API reads and writes an `Api` struct we own.
        check(unsafe { ioctl_with_mut_ref(&fd, UFFDIO_API(), &mut api) })?;
        Ok(Uffd { fd })
    }

    /// Registers `[start, start+len)` for missing-page and write-protect faults.
    pub fn register(&self, start: u64, len: u64) -> io::Result<()> {
        let mut r = Register { range: Range { start, len }, mode: REGISTER_MODE_MISSING | REGISTER_MODE_WP, ioctls: 0 };
        // SAFETY: UFFDIO_REGISTER reads and writes a `Register` struct we own; the range is the
        // caller's own mapping.
        check(unsafe { ioctl_with_mut_ref(&self.fd, UFFDIO_REGISTER(), &mut r) })
    }

    /// The next queued fault; `None` when there is none (the fd is non-blocking: a fault can be
    /// woken before it is read), for other events (none are requested) and for a read
    /// interrupted by a signal.
    pub fn read_fault(&self) -> io::Result<Option<Fault>> {
        let mut msg = [0u8; 32];
        // SAFETY: reads at most 32 bytes into our buffer.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), msg.as_mut_ptr().cast(), msg.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        if n as usize != msg.len() || msg[0] != EVENT_PAGEFAULT {
            return Ok(None);
        }
        let flags = u64::from_le_bytes(msg[8..16].try_into().expect("8 bytes"));
        let addr = u64::from_le_bytes(msg[16..24].try_into().expect("8 bytes"));
        Ok(Some(Fault { addr, write: flags & PAGEFAULT_FLAG_WRITE != 0, wp: flags & PAGEFAULT_FLAG_WP != 0 }))
    }

    /// Atomically fills the missing pages `[dst, dst+len)` with a copy of `src`; `wp` installs
    /// them write-protected. Does not wake the faulting thread (see [`Uffd::wake`]). `EEXIST`
    /// means some page is already there.
    ///
    /// # Safety
    /// `src` must be readable for `len` bytes.
    pub unsafe fn copy(&self, dst: u64, src: *const u8, len: u64, wp: bool) -> io::Result<()> {
        let mut c = Copy { dst, src: src as u64, len, mode: COPY_MODE_DONTWAKE | if wp { COPY_MODE_WP } else { 0 }, copy: 0 };
        // SAFETY: UFFDIO_COPY reads `len` bytes at `src` (the caller's promise) and fills only
        // missing pages of the registered range.
        check(unsafe { ioctl_with_mut_ref(&self.fd, UFFDIO_COPY(), &mut c) })
    }

    /// Write-protects `[start, start+len)` (`on`) or removes the protection (without waking).
    pub fn write_protect(&self, start: u64, len: u64, on: bool) -> io::Result<()> {
        let mode = if on { WRITEPROTECT_MODE_WP } else { 2 /* DONTWAKE */ };
        let mut w = WriteProtect { range: Range { start, len }, mode };
        // SAFETY: UFFDIO_WRITEPROTECT reads a struct we own and changes protection of pages in
        // the registered range only.
        check(unsafe { ioctl_with_mut_ref(&self.fd, UFFDIO_WRITEPROTECT(), &mut w) })
    }

    /// Wakes threads waiting on faults in `[start, start+len)`; they retry their access.
    pub fn wake(&self, start: u64, len: u64) -> io::Result<()> {
        let r = Range { start, len };
        // SAFETY: UFFDIO_WAKE only reads the range.
        check(unsafe { ioctl_with_ref(&self.fd, UFFDIO_WAKE(), &r) })
    }
}
