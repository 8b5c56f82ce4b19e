//! What the file-system calls share: Linux constants, argument checks and host-descriptor I/O.


use crate::errno::{retry_len, Errno, SysResult};
use crate::fdtable::OpenFile;
use crate::fs::Stat;

/// Largest host buffer one transfer step uses.
pub(super) const CHUNK: u64 = 1 << 20;
/// Linux caps one read/write at `INT_MAX & PAGE_MASK` bytes.
pub(super) const MAX_RW_COUNT: u64 = 0x7fff_f000;
/// End of the x86-64 user address range (`access_ok`).
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// Most `iovec`s one `readv`/`writev` takes.
pub(super) const UIO_MAXIOV: u64 = 1024;
/// Longest path, without its NUL.
pub(super) const PATH_MAX: usize = 4095;
/// Symlinks followed while canonicalising a working directory (Linux's `MAXSYMLINKS`).
pub(super) const MAXSYMLINKS: u32 = 40;

/// Kernel value of `O_LARGEFILE` (the libc crate defines it as 0 on x86-64); Linux forces it on
/// for every `open` by a 64-bit program, so `F_GETFL` shows it.
pub(super) const O_LARGEFILE: i32 = 0o100000;
/// The bit that makes `O_TMPFILE` (together with `O_DIRECTORY`).
pub(super) const O_TMPFILE_BIT: i32 = 0o20000000;

pub(in crate::syscall) const AT_FDCWD: i32 = libc::AT_FDCWD;
pub(in crate::syscall) const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
pub(super) const AT_REMOVEDIR: u64 = 0x200;
pub(super) const AT_EACCESS: u64 = 0x200;
pub(super) const AT_NO_AUTOMOUNT: u64 = 0x800;
pub(in crate::syscall) const AT_EMPTY_PATH: u64 = 0x1000;
pub(super) const AT_STATX_SYNC_TYPE: u64 = 0x6000;

pub(super) const RENAME_NOREPLACE: u64 = 1;
pub(super) const RENAME_EXCHANGE: u64 = 2;
pub(super) const RENAME_WHITEOUT: u64 = 4;

pub(super) const SEEK_SET: u32 = 0;
pub(super) const SEEK_CUR: u32 = 1;
pub(super) const SEEK_END: u32 = 2;
pub(super) const SEEK_DATA: u32 = 3;
pub(super) const SEEK_HOLE: u32 = 4;

pub(super) const TIOCGPGRP: u32 = 0x540f;
pub(super) const TIOCSPGRP: u32 = 0x5410;
pub(super) const FIONREAD: u32 = 0x541b;
pub(super) const FIONBIO: u32 = 0x5421;
pub(super) const FIONCLEX: u32 = 0x5450;
pub(super) const FIOCLEX: u32 = 0x5451;
/// Size of the kernel's x86 `struct termios` (`NCCS` = 19), which `TCGETS` copies out. (glibc's
/// user-space `struct termios` is 60 bytes; `tcgetattr` converts from this one.)
pub(super) const KERNEL_TERMIOS_SIZE: usize = 36;
/// Size of `struct winsize`.
pub(super) const WINSIZE_SIZE: usize = 8;

pub(super) const F_DUPFD: i32 = 0;
pub(super) const F_GETFD: i32 = 1;
pub(super) const F_SETFD: i32 = 2;
pub(super) const F_GETFL: i32 = 3;
pub(super) const F_SETFL: i32 = 4;
pub(super) const F_SETOWN: i32 = 8;
pub(super) const F_GETOWN: i32 = 9;
pub(super) const F_DUPFD_CLOEXEC: i32 = 1030;
pub(super) const F_SETPIPE_SZ: i32 = 1031;
pub(super) const F_GETPIPE_SZ: i32 = 1032;

/// `STATX_BASIC_STATS`: everything but the birth time.
pub(super) const STATX_BASIC_STATS: u32 = 0x7ff;
pub(super) const STATX_RESERVED: u64 = 0x8000_0000;
pub(super) const STAT_SIZE: usize = 144;
pub(super) const STATX_SIZE: usize = 256;

pub(super) const S_IFMT: u32 = libc::S_IFMT;
pub(super) const S_IFDIR: u32 = libc::S_IFDIR;
pub(super) const S_IFREG: u32 = libc::S_IFREG;
pub(super) const S_IFLNK: u32 = libc::S_IFLNK;
pub(super) const S_IFIFO: u32 = libc::S_IFIFO;

/// A guest buffer list: (address, length) pairs, in transfer order.
pub(in crate::syscall) type Segs = Vec<(u64, u64)>;
// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A descriptor argument: the kernel takes `unsigned int`, so only the low 32 bits count.
pub(in crate::syscall) fn fdarg(x: u64) -> u64 {
    u64::from(x as u32)
}

pub(super) fn is_dir(mode: u32) -> bool {
    mode & S_IFMT == S_IFDIR
}

/// `access_ok`: the range lies in the user half of the address space.
pub(super) fn access_ok(addr: u64, len: u64) -> bool {
    addr.checked_add(len).is_some_and(|end| end <= TASK_SIZE)
}

/// Copies `v` into `b` at `at` (no-op if it would not fit; all callers write in bounds).
pub(super) fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = at.checked_add(v.len()).and_then(|end| b.get_mut(at..end)) {
        d.copy_from_slice(v);
    }
}

/// Little-endian u64 at `at` of `b` (0 past the end).
pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = at.checked_add(8).and_then(|end| b.get(at..end)) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// Checks the description may be read (`write == false`) or written, as `FMODE_READ` /
/// `FMODE_WRITE` do: `EBADF` otherwise (also for `O_PATH` descriptors).
pub(in crate::syscall) fn check_mode(file: &OpenFile, write: bool) -> SysResult<()> {
    let st = file.status();
    let acc = st & libc::O_ACCMODE;
    let ok = st & libc::O_PATH == 0
        && if write { acc == libc::O_WRONLY || acc == libc::O_RDWR } else { acc == libc::O_RDONLY || acc == libc::O_RDWR };
    if ok {
        Ok(())
    } else {
        Err(Errno::EBADF)
    }
}

/// `EBADF` for `O_PATH` descriptors, which only a few calls accept.
pub(in crate::syscall) fn not_opath(file: &OpenFile) -> SysResult<()> {
    if file.status() & libc::O_PATH != 0 {
        Err(Errno::EBADF)
    } else {
        Ok(())
    }
}

/// Whether the host descriptor is ready for `events` right now (for guest `O_NONBLOCK`
/// descriptors: lego never changes the flags of the host's own descriptors, which it shares with
/// the shell that started it).
pub(super) fn host_ready(fd: i32, events: i16) -> SysResult<bool> {
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    loop {
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = Errno::last();
        if e != Errno::EINTR {
            return Err(e);
        }
    }
}

/// `read`/`pread` on a host descriptor.
pub(in crate::syscall) fn host_read(fd: i32, buf: &mut [u8], pos: Option<u64>) -> SysResult<usize> {
    let pos = pos.map(|o| i64::try_from(o).map_err(|_| Errno::EINVAL)).transpose()?;
    retry_len(|| match pos {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `fd` is owned by the open
        // file description the caller holds, so it stays open during the call.
        None => unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) },
        // SAFETY: as above.
        Some(o) => unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), o) },
    })
}

/// `write`/`pwrite` on a host descriptor.
pub(in crate::syscall) fn host_write(fd: i32, buf: &[u8], pos: Option<u64>) -> SysResult<usize> {
    let pos = pos.map(|o| i64::try_from(o).map_err(|_| Errno::EINVAL)).transpose()?;
    retry_len(|| match pos {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes; `fd` is owned by the open file
        // description the caller holds.
        None => unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) },
        // SAFETY: as above.
        Some(o) => unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), o) },
    })
}

/// `fstat` of a host descriptor, in vNode form.
pub(super) fn host_stat(fd: i32) -> SysResult<Stat> {
    // SAFETY: `fd` is owned by the caller's description, which outlives the call.
    crate::fs::hostdir::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
}
