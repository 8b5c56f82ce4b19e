//! File-system system calls: descriptors (`open`, `close`, `dup*`, `pipe*`, `fcntl`, `ioctl`),
//! I/O (`read`, `write`, `pread64`, `pwrite64`, `readv`, `writev`, `lseek`, `getdents64`),
//! metadata (`stat` family, `statx`, `access` family, `readlink*`), name-space changes
//! (`mkdir*`, `rmdir`, `unlink*`, `rename*`) and the working directory (`getcwd`, `chdir`,
//! `fchdir`, `umask`).
//!
//! Paths from the guest are joined with the working directory or a directory descriptor's path
//! into a vNode path and handed to the process's [`FileSystem`](crate::fs::FileSystem)
//! unnormalised; the file system resolves `..` and symlinks inside the vNode root. Positions and
//! status flags live in the open file description ([`OpenFile`]), as in Linux.
//!
//! Data moves between guest memory and the backing through a host buffer of at most
//! [`CHUNK`] bytes, so the size a guest asks for never decides how much the VMM allocates.
//! Guest buffers are checked before anything is consumed from the source: a buffer that is only
//! partly mapped gets a short transfer (as Linux's copy stopping at the fault would), an
//! unmapped one `EFAULT`.

use lego_proto::sync::LockExt;
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile, Pipe, PipeEnd};
use crate::signal::{self, SigInfo, SI_USER};
use crate::fs::{Stat, Timespec};
use crate::process::{Locked, Process};

/// Largest host buffer one transfer step uses.
const CHUNK: u64 = 1 << 20;
/// Linux caps one read/write at `INT_MAX & PAGE_MASK` bytes.
const MAX_RW_COUNT: u64 = 0x7fff_f000;
/// End of the x86-64 user address range (`access_ok`).
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// Most `iovec`s one `readv`/`writev` takes.
const UIO_MAXIOV: u64 = 1024;
/// Longest path, without its NUL.
const PATH_MAX: usize = 4095;
/// Symlinks followed while canonicalising a working directory (Linux's `MAXSYMLINKS`).
const MAXSYMLINKS: u32 = 40;

/// Kernel value of `O_LARGEFILE` (the libc crate defines it as 0 on x86-64); Linux forces it on
/// for every `open` by a 64-bit program, so `F_GETFL` shows it.
const O_LARGEFILE: i32 = 0o100000;
/// The bit that makes `O_TMPFILE` (together with `O_DIRECTORY`).
const O_TMPFILE_BIT: i32 = 0o20000000;

pub(super) const AT_FDCWD: i32 = libc::AT_FDCWD;
pub(super) const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_EACCESS: u64 = 0x200;
const AT_NO_AUTOMOUNT: u64 = 0x800;
pub(super) const AT_EMPTY_PATH: u64 = 0x1000;
const AT_STATX_SYNC_TYPE: u64 = 0x6000;

const RENAME_NOREPLACE: u64 = 1;
const RENAME_EXCHANGE: u64 = 2;
const RENAME_WHITEOUT: u64 = 4;

const SEEK_SET: u32 = 0;
const SEEK_CUR: u32 = 1;
const SEEK_END: u32 = 2;
const SEEK_DATA: u32 = 3;
const SEEK_HOLE: u32 = 4;

const TCGETS: u32 = 0x5401;
const TIOCGPGRP: u32 = 0x540f;
const TIOCGWINSZ: u32 = 0x5413;
const FIONREAD: u32 = 0x541b;
const FIONBIO: u32 = 0x5421;
const FIONCLEX: u32 = 0x5450;
const FIOCLEX: u32 = 0x5451;
/// Size of the kernel's x86 `struct termios` (`NCCS` = 19), which `TCGETS` copies out. (glibc's
/// user-space `struct termios` is 60 bytes; `tcgetattr` converts from this one.)
const KERNEL_TERMIOS_SIZE: usize = 36;
/// Size of `struct winsize`.
const WINSIZE_SIZE: usize = 8;

const F_DUPFD: i32 = 0;
const F_GETFD: i32 = 1;
const F_SETFD: i32 = 2;
const F_GETFL: i32 = 3;
const F_SETFL: i32 = 4;
const F_SETOWN: i32 = 8;
const F_GETOWN: i32 = 9;
const F_DUPFD_CLOEXEC: i32 = 1030;
const F_SETPIPE_SZ: i32 = 1031;
const F_GETPIPE_SZ: i32 = 1032;

/// `STATX_BASIC_STATS`: everything but the birth time.
const STATX_BASIC_STATS: u32 = 0x7ff;
const STATX_RESERVED: u64 = 0x8000_0000;
const STAT_SIZE: usize = 144;
const STATX_SIZE: usize = 256;

const S_IFMT: u32 = libc::S_IFMT;
const S_IFDIR: u32 = libc::S_IFDIR;
const S_IFREG: u32 = libc::S_IFREG;
const S_IFLNK: u32 = libc::S_IFLNK;
const S_IFIFO: u32 = libc::S_IFIFO;

/// A guest buffer list: (address, length) pairs, in transfer order.
pub(super) type Segs = Vec<(u64, u64)>;

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A descriptor argument: the kernel takes `unsigned int`, so only the low 32 bits count.
pub(super) fn fdarg(x: u64) -> u64 {
    u64::from(x as u32)
}

fn is_dir(mode: u32) -> bool {
    mode & S_IFMT == S_IFDIR
}

/// `access_ok`: the range lies in the user half of the address space.
fn access_ok(addr: u64, len: u64) -> bool {
    addr.checked_add(len).is_some_and(|end| end <= TASK_SIZE)
}

/// Copies `v` into `b` at `at` (no-op if it would not fit; all callers write in bounds).
fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = at.checked_add(v.len()).and_then(|end| b.get_mut(at..end)) {
        d.copy_from_slice(v);
    }
}

/// Little-endian u64 at `at` of `b` (0 past the end).
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = at.checked_add(8).and_then(|end| b.get(at..end)) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// Checks the description may be read (`write == false`) or written, as `FMODE_READ` /
/// `FMODE_WRITE` do: `EBADF` otherwise (also for `O_PATH` descriptors).
pub(super) fn check_mode(file: &OpenFile, write: bool) -> SysResult<()> {
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
pub(super) fn not_opath(file: &OpenFile) -> SysResult<()> {
    if file.status() & libc::O_PATH != 0 {
        Err(Errno::EBADF)
    } else {
        Ok(())
    }
}

/// Runs a host libc call returning `-1`/errno on failure, retrying `EINTR`.
fn host_retry(mut f: impl FnMut() -> isize) -> SysResult<usize> {
    loop {
        let r = f();
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = Errno::last();
        if e != Errno::EINTR {
            return Err(e);
        }
    }
}

/// Whether the host descriptor is ready for `events` right now (for guest `O_NONBLOCK`
/// descriptors: lego never changes the flags of the host's own descriptors, which it shares with
/// the shell that started it).
fn host_ready(fd: i32, events: i16) -> SysResult<bool> {
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
pub(super) fn host_read(fd: i32, buf: &mut [u8], pos: Option<u64>) -> SysResult<usize> {
    let pos = pos.map(|o| i64::try_from(o).map_err(|_| Errno::EINVAL)).transpose()?;
    host_retry(|| match pos {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `fd` is owned by the open
        // file description the caller holds, so it stays open during the call.
        None => unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) },
        // SAFETY: as above.
        Some(o) => unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), o) },
    })
}

/// `write`/`pwrite` on a host descriptor.
pub(super) fn host_write(fd: i32, buf: &[u8], pos: Option<u64>) -> SysResult<usize> {
    let pos = pos.map(|o| i64::try_from(o).map_err(|_| Errno::EINVAL)).transpose()?;
    host_retry(|| match pos {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes; `fd` is owned by the open file
        // description the caller holds.
        None => unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) },
        // SAFETY: as above.
        Some(o) => unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), o) },
    })
}

/// `fstat` of a host descriptor, in vNode form.
fn host_stat(fd: i32) -> SysResult<Stat> {
    // SAFETY: `libc::stat` is plain integers, for which all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `struct stat`; `fd` is owned by the caller's description.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(Errno::last());
    }
    Ok(Stat {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        nlink: st.st_nlink as u64,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        size: st.st_size as u64,
        blksize: st.st_blksize as u64,
        blocks: st.st_blocks as u64,
        atime: Timespec { sec: st.st_atime, nsec: st.st_atime_nsec },
        mtime: Timespec { sec: st.st_mtime, nsec: st.st_mtime_nsec },
        ctime: Timespec { sec: st.st_ctime, nsec: st.st_ctime_nsec },
    })
}

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

/// Reads a path argument: `EFAULT`, or `ENAMETOOLONG` beyond `PATH_MAX`.
pub(super) fn read_path(p: &Process, addr: u64) -> SysResult<Vec<u8>> {
    p.mm.read_cstr(addr, PATH_MAX)
}

/// `base` + `/` + `rel`.
fn join(base: &[u8], rel: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(base.len() + rel.len() + 1);
    out.extend_from_slice(base);
    if !out.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(rel);
    out
}

/// The vNode path of the directory relative paths of an `*at` call start from: the working
/// directory for `AT_FDCWD`, else the path `dirfd` was opened by (`EBADF`, or `ENOTDIR` if it
/// is not a directory).
fn dir_path(p: &Process, dirfd: u64) -> SysResult<Vec<u8>> {
    let dirfd = dirfd as i32;
    if dirfd == AT_FDCWD {
        return Ok(p.cwd.clone());
    }
    if dirfd < 0 {
        return Err(Errno::EBADF);
    }
    let file = p.fds.get(dirfd as u64)?;
    match &file.backing {
        Backing::File(f) if is_dir(f.stat()?.mode) => Ok(file.path.clone()),
        _ => Err(Errno::ENOTDIR),
    }
}

/// Joins guest path `path` with the directory `dirfd` names (ignored for absolute paths).
/// Empty paths are `ENOENT` (callers handling `AT_EMPTY_PATH` check before).
pub(super) fn resolve(p: &Process, dirfd: u64, path: &[u8]) -> SysResult<Vec<u8>> {
    match path.first() {
        None => Err(Errno::ENOENT),
        Some(b'/') => Ok(path.to_vec()),
        Some(_) => Ok(join(&dir_path(p, dirfd)?, path)),
    }
}

/// Reads the path at `addr` and resolves it against `dirfd`.
pub(super) fn at_path(p: &Process, dirfd: u64, addr: u64) -> SysResult<Vec<u8>> {
    let path = read_path(p, addr)?;
    resolve(p, dirfd, &path)
}

/// What the last component of a path is, for the calls Linux refuses on `.`, `..` and `/`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Last {
    Normal,
    Dot,
    DotDot,
    Root,
}

pub(super) fn last_kind(path: &[u8]) -> Last {
    let end = path.iter().rposition(|&c| c != b'/').map_or(0, |i| i + 1);
    let trimmed = &path[..end];
    if trimmed.is_empty() {
        return Last::Root;
    }
    let name = match trimmed.iter().rposition(|&c| c == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    match name {
        b"." => Last::Dot,
        b".." => Last::DotDot,
        _ => Last::Normal,
    }
}

/// Non-empty components of `path` other than `.`.
fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&c| c == b'/').filter(|c| !c.is_empty() && *c != b".").map(<[u8]>::to_vec).collect()
}

fn from_components(c: &[Vec<u8>]) -> Vec<u8> {
    if c.is_empty() {
        return b"/".to_vec();
    }
    let mut out = Vec::new();
    for part in c {
        out.push(b'/');
        out.extend_from_slice(part);
    }
    out
}

/// The physical path of an existing directory, as Linux's `getcwd` reports it: `.`, `..`,
/// repeated and trailing slashes and symlinks resolved. `..` is applied lexically only after the
/// symlinks before it have been expanded, so it is the physical parent. (Used for the working
/// directory only; every other path goes to the file system unnormalised.)
fn canonical(p: &Process, path: &[u8]) -> SysResult<Vec<u8>> {
    let mut todo: VecDeque<Vec<u8>> = components(path).into();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == b".." {
            out.pop();
            continue;
        }
        out.push(c);
        let cur = from_components(&out);
        if crate::pseudo::stat(p, &cur, false, file_stat)?.mode & S_IFMT == S_IFLNK {
            links += 1;
            if links > MAXSYMLINKS {
                return Err(Errno::ELOOP);
            }
            let target = crate::pseudo::readlink(p, &cur)?;
            out.pop();
            if target.first() == Some(&b'/') {
                out.clear();
            }
            for t in components(&target).into_iter().rev() {
                todo.push_front(t);
            }
        }
    }
    Ok(from_components(&out))
}

// ---------------------------------------------------------------------------------------------
// Moving data between guest memory and backings
// ---------------------------------------------------------------------------------------------

/// How many bytes from `addr` on (at most `len`) the program may access.
fn user_prefix(p: &Process, addr: u64, len: u64, write: bool) -> u64 {
    if p.mm.user_accessible(addr, len, write) {
        return len;
    }
    let end = addr.saturating_add(len);
    let mut at = addr;
    while at < end {
        match p.mm.vmas().find(at) {
            Some(v) if if write { v.prot.writable() } else { v.prot.readable() } => at = v.end,
            _ => break,
        }
    }
    at.min(end).saturating_sub(addr)
}

/// Cuts `segs` at the first byte the program may not access; `EFAULT` if that leaves nothing
/// of a non-empty request. Returns the kept segments and their total length.
pub(super) fn clip(p: &Process, segs: &[(u64, u64)], write: bool) -> SysResult<(Segs, u64)> {
    let mut out = Vec::with_capacity(segs.len());
    let (mut requested, mut total) = (0u64, 0u64);
    for &(base, len) in segs {
        if len == 0 {
            continue;
        }
        requested = requested.saturating_add(len);
        let ok = user_prefix(p, base, len, write);
        if ok > 0 {
            out.push((base, ok));
            total = total.saturating_add(ok);
        }
        if ok < len {
            break;
        }
    }
    if requested > 0 && total == 0 {
        return Err(Errno::EFAULT);
    }
    Ok((out, total))
}

/// Lays `len` bytes over the segment list, starting `skip` bytes into it: the guest address
/// of each piece and the byte range of the buffer that goes there.
fn pieces(segs: &[(u64, u64)], mut skip: u64, len: usize) -> SysResult<Vec<(u64, std::ops::Range<usize>)>> {
    let mut out = Vec::new();
    let mut at = 0;
    for &(base, seg_len) in segs {
        if at == len {
            break;
        }
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let room = usize::try_from(seg_len - skip).unwrap_or(usize::MAX);
        let n = room.min(len - at);
        out.push((base.checked_add(skip).ok_or(Errno::EFAULT)?, at..at + n));
        at += n;
        skip = 0;
    }
    Ok(out)
}

/// Copies `data` into the segment list starting `skip` bytes into it.
pub(super) fn scatter(p: &Process, segs: &[(u64, u64)], skip: u64, data: &[u8]) -> SysResult<()> {
    for (addr, range) in pieces(segs, skip, data.len())? {
        p.mm.write_user(addr, &data[range])?;
    }
    Ok(())
}

/// Fills `buf` from the segment list starting `skip` bytes into it.
pub(super) fn gather(p: &Process, segs: &[(u64, u64)], skip: u64, buf: &mut [u8]) -> SysResult<()> {
    for (addr, range) in pieces(segs, skip, buf.len())? {
        p.mm.read_user(addr, &mut buf[range])?;
    }
    Ok(())
}

/// Reads up to `total` bytes from `src` into the guest segments, chunk by chunk. `src` gets a
/// buffer and the bytes done so far. With `repeat` false (pipes, host descriptors: a short
/// read is normal there, and a second read could block) only one chunk is read; otherwise
/// reading stops at the first short read. An error after some progress returns the progress.
fn fill(
    p: &Process,
    segs: &[(u64, u64)],
    total: u64,
    repeat: bool,
    mut src: impl FnMut(&mut [u8], u64) -> SysResult<usize>,
) -> SysResult<u64> {
    let mut done = 0u64;
    loop {
        let want = usize::try_from(total.saturating_sub(done).min(CHUNK)).unwrap_or(0);
        let mut buf = vec![0u8; want];
        let n = match src(&mut buf, done) {
            Ok(n) => n.min(want),
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        if let Err(e) = scatter(p, segs, done, &buf[..n]) {
            // Cannot happen after `clip`, but the data is gone either way.
            return if done > 0 { Ok(done) } else { Err(e) };
        }
        done += n as u64;
        if !repeat || n < want || done >= total {
            break;
        }
    }
    Ok(done)
}

/// Writes the `total` bytes of the guest segments to `dst`, chunk by chunk, stopping at the
/// first short write. An error after some progress returns the progress.
fn drain(
    p: &Process,
    segs: &[(u64, u64)],
    total: u64,
    mut dst: impl FnMut(&[u8], u64) -> SysResult<usize>,
) -> SysResult<u64> {
    let mut done = 0u64;
    loop {
        let want = usize::try_from(total.saturating_sub(done).min(CHUNK)).unwrap_or(0);
        let mut buf = vec![0u8; want];
        if let Err(e) = gather(p, segs, done, &mut buf) {
            return if done > 0 { Ok(done) } else { Err(e) };
        }
        let n = match dst(&buf, done) {
            Ok(n) => n.min(want),
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        done += n as u64;
        if n < want || done >= total {
            break;
        }
    }
    Ok(done)
}

/// `rw_verify_area`: the file range `[start, start + len)` must stay below 2^63.
fn check_range(start: u64, len: u64) -> SysResult<()> {
    match start.checked_add(len) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(Errno::EINVAL),
    }
}

/// Reads from `file` into the guest segments, at `pos` (`pread`) or the description's offset.
/// The caller has checked the description is readable.
pub(super) fn do_read(p: &Process, file: &OpenFile, segs: &[(u64, u64)], pos: Option<u64>) -> SysResult<u64> {
    let (segs, total) = clip(p, segs, true)?;
    let nonblock = file.status() & libc::O_NONBLOCK != 0;
    match &file.backing {
        Backing::File(f) => {
            let mut off = file.offset.lock_unpoisoned();
            let start = pos.unwrap_or(*off);
            check_range(start, total)?;
            let done = fill(p, &segs, total, true, |buf, done| f.read_at(buf, start.saturating_add(done)))?;
            if pos.is_none() {
                *off = start.saturating_add(done);
            }
            Ok(done)
        }
        Backing::Host(h) => {
            let fd = h.as_raw_fd();
            // Positioned reads never wait (and on ttys and pipes fail with ESPIPE first).
            if nonblock && pos.is_none() && total > 0 && !host_ready(fd, libc::POLLIN)? {
                return Err(Errno::EAGAIN);
            }
            fill(p, &segs, total, false, |buf, _| host_read(fd, buf, pos))
        }
        Backing::Pipe(end) => {
            if end.is_write_end() {
                return Err(Errno::EBADF);
            }
            fill(p, &segs, total, false, |buf, _| end.read(buf, nonblock))
        }
        // Sockets are read through `super::net`; what comes here is positioned.
        Backing::Socket(_) => Err(Errno::ESPIPE),
        Backing::Epoll(_) => Err(Errno::EINVAL),
        // A signalfd is read by `read` itself ([`super::anon::read_anon`]); a pidfd is not read.
        Backing::Anon(_) => Err(Errno::EINVAL),
    }
}

/// Writes the guest segments to `file`, at `pos` (`pwrite`) or the description's offset
/// (`O_APPEND`: at the end of the file, for `pwrite` too, as Linux does). `EPIPE` also sends
/// `SIGPIPE` to the calling thread `tid`. The caller has checked the description is writable.
pub(super) fn do_write(p: &mut Process, tid: i32, file: &OpenFile, segs: &[(u64, u64)], pos: Option<u64>) -> SysResult<u64> {
    let (segs, total) = clip(p, segs, false)?;
    let status = file.status();
    let nonblock = status & libc::O_NONBLOCK != 0;
    let res = match &file.backing {
        Backing::File(f) => (|| {
            let mut off = file.offset.lock_unpoisoned();
            let start = if status & libc::O_APPEND != 0 { f.stat()?.size } else { pos.unwrap_or(*off) };
            check_range(start, total)?;
            let done = drain(p, &segs, total, |buf, done| f.write_at(buf, start.saturating_add(done)))?;
            if pos.is_none() {
                *off = start.saturating_add(done);
            }
            Ok(done)
        })(),
        Backing::Host(h) => {
            let fd = h.as_raw_fd();
            if nonblock && pos.is_none() && total > 0 && !host_ready(fd, libc::POLLOUT)? {
                return Err(Errno::EAGAIN);
            }
            drain(p, &segs, total, |buf, done| host_write(fd, buf, pos.map(|o| o.saturating_add(done))))
        }
        Backing::Pipe(end) => {
            if !end.is_write_end() {
                return Err(Errno::EBADF);
            }
            drain(p, &segs, total, |buf, _| end.write(buf, nonblock))
        }
        Backing::Socket(_) => Err(Errno::ESPIPE),
        Backing::Epoll(_) => Err(Errno::EINVAL),
        Backing::Anon(_) => Err(Errno::EINVAL),
    };
    if res == Err(Errno::EPIPE) {
        let info = SigInfo::sent(libc::SIGPIPE, SI_USER, p.pid, p.creds.uid);
        // The writer exists: it is the caller.
        let _ = signal::post_thread(p, tid, info, Some(tid));
    }
    res
}

/// One guest buffer of a `read`/`write`-style call: `EFAULT` outside the user range, and the
/// length capped at `MAX_RW_COUNT`.
pub(super) fn one_seg(addr: u64, count: u64) -> SysResult<[(u64, u64); 1]> {
    if !access_ok(addr, count) {
        return Err(Errno::EFAULT);
    }
    Ok([(addr, count.min(MAX_RW_COUNT))])
}

/// Reads an `iovec` array: `EINVAL` for more than `UIO_MAXIOV` entries or a negative length,
/// `EFAULT` for an entry outside the user range; the total is capped at `MAX_RW_COUNT` (later
/// entries shortened), as Linux does.
pub(super) fn read_iovecs(p: &Process, addr: u64, count: u64) -> SysResult<Segs> {
    if count > UIO_MAXIOV {
        return Err(Errno::EINVAL);
    }
    let mut raw = vec![0u8; count as usize * 16];
    p.mm.read_user(addr, &mut raw)?;
    let mut segs = Vec::with_capacity(count as usize);
    let mut total = 0u64;
    for e in raw.chunks_exact(16) {
        let (base, len) = (u64_at(e, 0), u64_at(e, 8));
        if (len as i64) < 0 {
            return Err(Errno::EINVAL);
        }
        if !access_ok(base, len) {
            return Err(Errno::EFAULT);
        }
        let len = len.min(MAX_RW_COUNT - total);
        total += len;
        segs.push((base, len));
    }
    Ok(segs)
}

// ---------------------------------------------------------------------------------------------
// Stat conversions
// ---------------------------------------------------------------------------------------------

/// Metadata of whatever an open file description refers to.
fn file_stat(p: &Process, file: &OpenFile) -> SysResult<Stat> {
    match &file.backing {
        Backing::File(f) => f.stat(),
        Backing::Host(h) => host_stat(h.as_raw_fd()),
        Backing::Socket(s) => host_stat(s.fd()),
        Backing::Epoll(e) => host_stat(e.host_fd()),
        Backing::Anon(a) => Ok(a.stat(p)),
        Backing::Pipe(end) => Ok(Stat {
            // pipefs: an anonymous device, one inode shared by both ends, owned by the creator.
            dev: 0xc,
            ino: end.id() >> 4,
            mode: S_IFIFO | 0o600,
            nlink: 1,
            uid: p.creds.euid,
            gid: p.creds.egid,
            blksize: 4096,
            ..Stat::default()
        }),
    }
}

/// Linux x86-64 `struct stat` (144 bytes) of `st`.
fn linux_stat(st: &Stat) -> [u8; STAT_SIZE] {
    let mut b = [0u8; STAT_SIZE];
    put(&mut b, 0, &st.dev.to_le_bytes());
    put(&mut b, 8, &st.ino.to_le_bytes());
    put(&mut b, 16, &st.nlink.to_le_bytes());
    put(&mut b, 24, &st.mode.to_le_bytes());
    put(&mut b, 28, &st.uid.to_le_bytes());
    put(&mut b, 32, &st.gid.to_le_bytes());
    put(&mut b, 40, &st.rdev.to_le_bytes());
    put(&mut b, 48, &st.size.to_le_bytes());
    put(&mut b, 56, &st.blksize.to_le_bytes());
    put(&mut b, 64, &st.blocks.to_le_bytes());
    for (i, t) in [st.atime, st.mtime, st.ctime].iter().enumerate() {
        put(&mut b, 72 + 16 * i, &t.sec.to_le_bytes());
        put(&mut b, 80 + 16 * i, &t.nsec.to_le_bytes());
    }
    b
}

/// `gnu_dev_major` / `gnu_dev_minor`.
fn dev_major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as u32
}
fn dev_minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32
}

/// Linux `struct statx` (256 bytes) of `st`, reporting `STATX_BASIC_STATS`.
fn linux_statx(st: &Stat) -> [u8; STATX_SIZE] {
    let mut b = [0u8; STATX_SIZE];
    let nsec = |t: &Timespec| t.nsec.clamp(0, 999_999_999) as u32;
    put(&mut b, 0, &STATX_BASIC_STATS.to_le_bytes());
    put(&mut b, 4, &u32::try_from(st.blksize).unwrap_or(u32::MAX).to_le_bytes());
    // 8: stx_attributes = 0
    put(&mut b, 16, &u32::try_from(st.nlink).unwrap_or(u32::MAX).to_le_bytes());
    put(&mut b, 20, &st.uid.to_le_bytes());
    put(&mut b, 24, &st.gid.to_le_bytes());
    put(&mut b, 28, &((st.mode & 0xffff) as u16).to_le_bytes());
    put(&mut b, 32, &st.ino.to_le_bytes());
    put(&mut b, 40, &st.size.to_le_bytes());
    put(&mut b, 48, &st.blocks.to_le_bytes());
    // 56: stx_attributes_mask = 0; 80: stx_btime left zero (not in the mask).
    for (at, t) in [(64, &st.atime), (96, &st.ctime), (112, &st.mtime)] {
        put(&mut b, at, &t.sec.to_le_bytes());
        put(&mut b, at + 8, &nsec(t).to_le_bytes());
    }
    put(&mut b, 128, &dev_major(st.rdev).to_le_bytes());
    put(&mut b, 132, &dev_minor(st.rdev).to_le_bytes());
    put(&mut b, 136, &dev_major(st.dev).to_le_bytes());
    put(&mut b, 140, &dev_minor(st.dev).to_le_bytes());
    b
}

/// The metadata a `newfstatat`/`statx` call asks for: `path` (at `path_addr`) relative to
/// `dirfd`, or with `AT_EMPTY_PATH` and an empty (or NULL) path, `dirfd` itself.
fn stat_at(p: &Process, dirfd: u64, path_addr: u64, flags: u64) -> SysResult<Stat> {
    let empty_ok = flags & AT_EMPTY_PATH != 0;
    let path = if empty_ok && path_addr == 0 { Vec::new() } else { read_path(p, path_addr)? };
    if path.is_empty() {
        if !empty_ok {
            return Err(Errno::ENOENT);
        }
        if dirfd as i32 == AT_FDCWD {
            return crate::pseudo::stat(p, &p.cwd, true, file_stat);
        }
        if (dirfd as i32) < 0 {
            return Err(Errno::EBADF);
        }
        return file_stat(p, &*p.fds.get(fdarg(dirfd))?);
    }
    let path = resolve(p, dirfd, &path)?;
    crate::pseudo::stat(p, &path, flags & AT_SYMLINK_NOFOLLOW == 0, file_stat)
}

// ---------------------------------------------------------------------------------------------
// Opening and closing
// ---------------------------------------------------------------------------------------------

pub fn open(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    openat(p, cpu, [AT_FDCWD as u64, a[0], a[1], a[2], 0, 0])
}

/// `creat(path, mode)`: `open(path, O_CREAT | O_WRONLY | O_TRUNC, mode)`.
pub fn creat(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64;
    openat(p, cpu, [AT_FDCWD as u64, a[0], flags, a[1], 0, 0])
}

/// `openat(dirfd, path, flags, mode)`. `O_PATH` descriptors refuse I/O as Linux's do;
/// `O_TMPFILE` is not supported (`EOPNOTSUPP`, which makes libc fall back to a named file).
pub fn openat(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[2] as i32;
    let path = at_path(p, a[0], a[1])?;
    if flags & O_TMPFILE_BIT != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let mode = (a[3] as u32) & 0o7777 & !p.umask;
    // What `F_GETFL` reports: `O_PATH` keeps only `O_DIRECTORY` and `O_NOFOLLOW`; otherwise the
    // flags minus those that only act at open time.
    let status = if flags & libc::O_PATH != 0 {
        flags & (libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
    } else {
        flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC | libc::O_CLOEXEC)
    } | O_LARGEFILE;
    let file = match crate::pseudo::open(p, path, flags, mode)? {
        crate::pseudo::Opened::New(backing, path) => OpenFile::new(backing, path, status),
        crate::pseudo::Opened::Shared(file) => file,
        crate::pseudo::Opened::Fifo(node, path) => {
            OpenFile::new(Backing::Pipe(open_fifo(p, cpu.tid, node, flags)?), path, status)
        }
    };
    p.fds.alloc(file, 0, flags & libc::O_CLOEXEC != 0)
}

/// Opens an end of FIFO `node`'s pipe as [`crate::fifo`] says, waiting without the process
/// lock for the other side (`EINTR` when the process ends or a signal comes for thread `tid`).
/// A FIFO is opened for reading or for writing: `O_RDWR` (which Linux allows, and which never
/// waits) is refused with `EINVAL`, as a pipe end here carries one direction.
fn open_fifo(p: &mut Locked<'_>, tid: i32, node: crate::fs::NodeId, flags: i32) -> SysResult<PipeEnd> {
    let write = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => false,
        libc::O_WRONLY => true,
        _ => return Err(Errno::EINVAL),
    };
    let pipe = p.fifos.pipe(node);
    let (end, wait) = crate::fifo::take_end(&pipe, write, flags & libc::O_NONBLOCK != 0)?;
    let Some(before) = wait else { return Ok(end) };
    let group = p.group.clone();
    loop {
        if crate::fifo::rendezvous(write, before, pipe.ends().1) {
            return Ok(end);
        }
        p.unlocked(|| pipe.wait_changed(PIPE_SLICE));
        if group.ending() || group.interrupted(tid) {
            return Err(Errno::EINTR);
        }
    }
}

pub fn close(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = p.fds.get(fdarg(a[0]))?;
    super::locks::closing(p, &file);
    p.fds.close(fdarg(a[0]))?;
    Ok(0)
}

pub fn dup(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = p.fds.get(fdarg(a[0]))?;
    p.fds.alloc(file, 0, false)
}

pub fn dup2(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (old, new) = (fdarg(a[0]), fdarg(a[1]));
    if old == new {
        p.fds.get(old)?;
        return Ok(new);
    }
    dup3(p, cpu, [old, new, 0, 0, 0, 0])
}

pub fn dup3(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (old, new, flags) = (fdarg(a[0]), fdarg(a[1]), a[2] as i32);
    if flags & !libc::O_CLOEXEC != 0 || old == new {
        return Err(Errno::EINVAL);
    }
    if new >= p.fds.limit as u64 {
        return Err(Errno::EBADF);
    }
    let file = p.fds.get(old)?;
    p.fds.install(new, file, flags & libc::O_CLOEXEC != 0)?;
    Ok(new)
}

pub fn pipe(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    pipe2(p, cpu, [a[0], 0, 0, 0, 0, 0])
}

/// `pipe2(fds, flags)`: `O_CLOEXEC` and `O_NONBLOCK`; packet mode (`O_DIRECT`) is not
/// supported (`EINVAL`, as kernels without it answer).
pub fn pipe2(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[1] as i32;
    if flags & !(libc::O_CLOEXEC | libc::O_NONBLOCK) != 0 {
        return Err(Errno::EINVAL);
    }
    if !p.mm.user_accessible(a[0], 8, true) {
        return Err(Errno::EFAULT);
    }
    let cloexec = flags & libc::O_CLOEXEC != 0;
    let nonblock = flags & libc::O_NONBLOCK;
    let (r, w) = Pipe::create();
    let rfd = p.fds.alloc(OpenFile::new(Backing::Pipe(r), b"pipe:".to_vec(), libc::O_RDONLY | nonblock), 0, cloexec)?;
    let wfd = match p.fds.alloc(OpenFile::new(Backing::Pipe(w), b"pipe:".to_vec(), libc::O_WRONLY | nonblock), 0, cloexec) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = p.fds.close(rfd);
            return Err(e);
        }
    };
    let mut out = [0u8; 8];
    put(&mut out, 0, &(rfd as i32).to_le_bytes());
    put(&mut out, 4, &(wfd as i32).to_le_bytes());
    if let Err(e) = p.mm.write_user(a[0], &out) {
        let _ = p.fds.close(rfd);
        let _ = p.fds.close(wfd);
        return Err(e);
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// I/O
// ---------------------------------------------------------------------------------------------

/// How long a thread waiting on a pipe waits before it looks at the process again (whether it
/// is ending).
const PIPE_SLICE: std::time::Duration = std::time::Duration::from_millis(10);

/// Waits, without the process lock, until a read (or a write) on `fd` would not block: a pipe
/// with data (room) or without a peer, a host descriptor the host says is ready. Returns the
/// room of a pipe's write end. Descriptors that never block, non-blocking ones and bad ones
/// (also those not open for that direction, such as a read of a write-only standard output)
/// return at once: the call itself deals with them. `EINTR` when the process ends or a signal
/// comes for thread `tid` meanwhile.
fn wait_ready(p: &mut Locked<'_>, tid: i32, fd: u64, write: bool) -> SysResult<Option<usize>> {
    let group = p.group.clone();
    loop {
        let Ok(file) = p.fds.get(fdarg(fd)) else { return Ok(None) };
        if file.status() & libc::O_NONBLOCK != 0 || check_mode(&file, write).is_err() {
            return Ok(None);
        }
        match &file.backing {
            Backing::File(_) | Backing::Socket(_) | Backing::Epoll(_) => return Ok(None),
            // A signalfd read waits itself ([`super::anon::read_anon`]).
            Backing::Anon(_) => return Ok(None),
            Backing::Pipe(end) if end.is_write_end() != write => return Ok(None),
            Backing::Pipe(end) => {
                if let Some(n) = end.ready() {
                    return Ok(write.then_some(n));
                }
                p.unlocked(|| end.wait_ready(PIPE_SLICE));
                if group.ending() || group.interrupted(tid) {
                    return Err(Errno::EINTR);
                }
            }
            Backing::Host(h) => {
                let events = if write { libc::POLLOUT } else { libc::POLLIN };
                let fds = [libc::pollfd { fd: h.as_raw_fd(), events, revents: 0 }];
                let (n, _) = p.unlocked(|| group.poll_host(tid, &fds, None))?;
                if n > 0 {
                    return Ok(None);
                }
            }
        }
    }
}

pub fn read(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if super::net::is_socket(p, a[0]) {
        return super::net::read_socket(p, cpu.tid, a[0], &one_seg(a[1], a[2])?);
    }
    wait_ready(p, cpu.tid, a[0], false)?;
    let file = p.fds.get(fdarg(a[0]))?;
    check_mode(&file, false)?;
    if let Backing::Anon(anon) = &file.backing {
        return super::anon::read_anon(p, cpu.tid, &file, anon, one_seg(a[1], a[2])?[0]);
    }
    do_read(p, &file, &one_seg(a[1], a[2])?, None)
}

/// `write`. A blocking write to a pipe goes in pieces that fit, each written with the lock
/// held and each wait made without it, so that a reader in another thread can drain the pipe.
pub fn write(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [fd, buf, count, ..] = a;
    if super::net::is_socket(p, fd) {
        return super::net::write_socket(p, cpu.tid, fd, &one_seg(buf, count)?);
    }
    let mut done = 0u64;
    loop {
        let room = match wait_ready(p, cpu.tid, fd, true) {
            Ok(room) => room,
            Err(e) if done == 0 => return Err(e),
            Err(_) => return Ok(done),
        };
        let file = p.fds.get(fdarg(fd))?;
        check_mode(&file, true)?;
        let left = count.saturating_sub(done);
        let piece = match room {
            Some(room) if room > 0 => left.min(room as u64),
            _ => left,
        };
        let n = match do_write(p, cpu.tid, &file, &one_seg(buf.saturating_add(done), piece)?, None) {
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => return Ok(done),
        };
        done += n;
        if room.is_none() || n < piece || done >= count {
            return Ok(done);
        }
    }
}

/// The description and position of a `pread64`/`pwrite64`: `EINVAL` for a negative position,
/// `ESPIPE` on pipes (and, from the host, on host ttys/pipes).
fn positioned(p: &Process, a: &Args, write: bool) -> SysResult<(Arc<OpenFile>, u64)> {
    let pos = a[3] as i64;
    if pos < 0 {
        return Err(Errno::EINVAL);
    }
    let file = p.fds.get(fdarg(a[0]))?;
    if matches!(file.backing, Backing::Pipe(_) | Backing::Anon(_)) {
        return Err(Errno::ESPIPE);
    }
    check_mode(&file, write)?;
    Ok((file, pos as u64))
}

pub fn pread64(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (file, pos) = positioned(p, &a, false)?;
    do_read(p, &file, &one_seg(a[1], a[2])?, Some(pos))
}

pub fn pwrite64(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (file, pos) = positioned(p, &a, true)?;
    do_write(p, cpu.tid, &file, &one_seg(a[1], a[2])?, Some(pos))
}

pub fn readv(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if super::net::is_socket(p, a[0]) {
        let segs = read_iovecs(p, a[1], a[2])?;
        return super::net::read_socket(p, cpu.tid, a[0], &segs);
    }
    wait_ready(p, cpu.tid, a[0], false)?;
    let file = p.fds.get(fdarg(a[0]))?;
    check_mode(&file, false)?;
    let segs = read_iovecs(p, a[1], a[2])?;
    do_read(p, &file, &segs, None)
}

/// `writev`. It waits for room without the lock, but then writes everything with it held: a
/// vector larger than a pipe's room, read by another thread of the process, would wait for good.
pub fn writev(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if super::net::is_socket(p, a[0]) {
        let segs = read_iovecs(p, a[1], a[2])?;
        return super::net::write_socket(p, cpu.tid, a[0], &segs);
    }
    wait_ready(p, cpu.tid, a[0], true)?;
    let file = p.fds.get(fdarg(a[0]))?;
    check_mode(&file, true)?;
    let segs = read_iovecs(p, a[1], a[2])?;
    do_write(p, cpu.tid, &file, &segs, None)
}

/// `lseek(fd, offset, whence)`. Regular files support `SEEK_DATA`/`SEEK_HOLE` (the whole file
/// is data); on a directory the offset is the opaque `getdents64` position (`SEEK_SET`,
/// `SEEK_CUR` only). Host descriptors are seeked on the host (`ESPIPE` for ttys and pipes).
pub fn lseek(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (off, whence) = (a[1] as i64, a[2] as u32);
    let file = p.fds.get(fdarg(a[0]))?;
    not_opath(&file)?;
    if whence > SEEK_HOLE {
        return Err(Errno::EINVAL);
    }
    let f = match &file.backing {
        Backing::File(f) => f,
        Backing::Pipe(_) | Backing::Anon(_) | Backing::Socket(_) | Backing::Epoll(_) => return Err(Errno::ESPIPE),
        Backing::Host(h) => {
            // SAFETY: plain syscall on a descriptor the description owns.
            let r = unsafe { libc::lseek(h.as_raw_fd(), off, whence as i32) };
            return if r < 0 { Err(Errno::last()) } else { Ok(r as u64) };
        }
    };
    let st = f.stat()?;
    let mut cur = file.offset.lock_unpoisoned();
    let new = if is_dir(st.mode) {
        match whence {
            SEEK_SET => off,
            SEEK_CUR => (*cur as i64).checked_add(off).ok_or(Errno::EINVAL)?,
            _ => return Err(Errno::EINVAL),
        }
    } else {
        let size = i64::try_from(st.size).unwrap_or(i64::MAX);
        match whence {
            SEEK_SET => off,
            SEEK_CUR => (*cur as i64).checked_add(off).ok_or(Errno::EINVAL)?,
            SEEK_END => size.checked_add(off).ok_or(Errno::EINVAL)?,
            // SEEK_DATA / SEEK_HOLE: no holes are reported.
            _ if st.mode & S_IFMT == S_IFREG => {
                if off < 0 || off >= size {
                    return Err(Errno(libc::ENXIO));
                }
                if whence == SEEK_DATA {
                    off
                } else {
                    size
                }
            }
            _ => return Err(Errno::EINVAL),
        }
    };
    if new < 0 {
        return Err(Errno::EINVAL);
    }
    *cur = new as u64;
    Ok(new as u64)
}

/// `getdents64(fd, buf, count)`: `struct linux_dirent64` records from the description's
/// position, as many as fit; `EINVAL` if not even one does.
pub fn getdents64(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = p.fds.get(fdarg(a[0]))?;
    not_opath(&file)?;
    let Backing::File(f) = &file.backing else { return Err(Errno::ENOTDIR) };
    let (addr, count) = (a[1], u64::from(a[2] as u32));
    if !access_ok(addr, count) {
        return Err(Errno::EFAULT);
    }
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    let mut off = file.offset.lock_unpoisoned();
    let mut pos = *off;
    let mut out: Vec<u8> = Vec::new();
    // Each record takes at least 24 bytes.
    let batch = (count / 24).clamp(1, 512);
    'fill: loop {
        let entries = match f.read_dir(pos, batch) {
            Ok(e) => e,
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        };
        if entries.is_empty() {
            break;
        }
        for e in entries {
            // d_ino 8, d_off 8, d_reclen 2, d_type 1, name, NUL; padded to 8.
            let reclen = (19 + e.name.len() + 1).next_multiple_of(8);
            if out.len().saturating_add(reclen) > count {
                if out.is_empty() {
                    return Err(Errno::EINVAL);
                }
                break 'fill;
            }
            let Ok(reclen16) = u16::try_from(reclen) else { return Err(Errno::EIO) };
            let start = out.len();
            out.resize(start + reclen, 0);
            let rec = &mut out[start..];
            put(rec, 0, &e.ino.to_le_bytes());
            put(rec, 8, &e.next.to_le_bytes());
            put(rec, 16, &reclen16.to_le_bytes());
            put(rec, 18, &[e.kind]);
            put(rec, 19, &e.name);
            pos = e.next;
        }
    }
    p.mm.write_user(addr, &out)?;
    *off = pos;
    Ok(out.len() as u64)
}

/// `ioctl(fd, cmd, arg)`: the terminal queries programs make on their standard descriptors
/// (`TCGETS`, `TIOCGWINSZ`, `TIOCGPGRP`, answered by the host terminal), `FIONREAD`,
/// `FIONBIO`, `FIOCLEX`/`FIONCLEX`; everything else is `ENOTTY`, so setting terminal modes is
/// refused rather than applied to the host terminal.
pub fn ioctl(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (fd, cmd, arg) = (fdarg(a[0]), a[1] as u32, a[2]);
    let file = p.fds.get(fd)?;
    not_opath(&file)?;
    match cmd {
        FIOCLEX | FIONCLEX => {
            p.fds.set_cloexec(fd, cmd == FIOCLEX)?;
            return Ok(0);
        }
        FIONBIO => {
            let mut v = [0u8; 4];
            p.mm.read_user(arg, &mut v)?;
            let mut st = file.status.lock_unpoisoned();
            if i32::from_le_bytes(v) != 0 {
                *st |= libc::O_NONBLOCK;
            } else {
                *st &= !libc::O_NONBLOCK;
            }
            return Ok(0);
        }
        _ => {}
    }
    match (&file.backing, cmd) {
        (Backing::Host(h), TCGETS | TIOCGWINSZ) => {
            let len = if cmd == TCGETS { KERNEL_TERMIOS_SIZE } else { WINSIZE_SIZE };
            let mut buf = [0u8; 64];
            // SAFETY: TCGETS writes a kernel `struct termios` (36 bytes) and TIOCGWINSZ a
            // `struct winsize` (8 bytes) into `buf`, which has 64; the fd is owned by `file`.
            let r = unsafe { libc::ioctl(h.as_raw_fd(), cmd as _, buf.as_mut_ptr()) };
            if r < 0 {
                return Err(Errno::last());
            }
            p.mm.write_user(arg, &buf[..len])?;
            Ok(0)
        }
        (Backing::Host(h), TIOCGPGRP) => {
            // SAFETY: plain query on a descriptor `file` owns.
            if unsafe { libc::isatty(h.as_raw_fd()) } != 1 {
                return Err(Errno::ENOTTY);
            }
            // The vNode process is the foreground process group of its terminal.
            p.mm.write_user(arg, &p.pid.to_le_bytes())?;
            Ok(0)
        }
        (Backing::Host(_) | Backing::Socket(_), FIONREAD) => {
            let fd = file.host_fd().ok_or(Errno::ENOTTY)?;
            let mut n: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int into `n`; the fd is owned by `file`.
            if unsafe { libc::ioctl(fd, FIONREAD as _, &mut n) } < 0 {
                return Err(Errno::last());
            }
            p.mm.write_user(arg, &n.to_le_bytes())?;
            Ok(0)
        }
        (Backing::Pipe(end), FIONREAD) => {
            let n = i32::try_from(end.available()).unwrap_or(i32::MAX);
            p.mm.write_user(arg, &n.to_le_bytes())?;
            Ok(0)
        }
        (Backing::File(f), FIONREAD) => {
            let st = f.stat()?;
            if st.mode & S_IFMT != S_IFREG {
                return Err(Errno::ENOTTY);
            }
            let left = st.size.saturating_sub(*file.offset.lock_unpoisoned());
            p.mm.write_user(arg, &i32::try_from(left).unwrap_or(i32::MAX).to_le_bytes())?;
            Ok(0)
        }
        _ => Err(Errno::ENOTTY),
    }
}

/// `fcntl(fd, cmd, arg)`, but for the record locks ([`super::locks::fcntl`]).
pub(super) fn fcntl(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (fd, cmd, arg) = (fdarg(a[0]), a[1] as i32, a[2]);
    let file = p.fds.get(fd)?;
    if file.status() & libc::O_PATH != 0 && !matches!(cmd, F_DUPFD | F_DUPFD_CLOEXEC | F_GETFD | F_SETFD | F_GETFL) {
        return Err(Errno::EBADF);
    }
    match cmd {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            let from = arg as i32;
            if from < 0 || from as usize >= p.fds.limit {
                return Err(Errno::EINVAL);
            }
            p.fds.alloc(file, from as usize, cmd == F_DUPFD_CLOEXEC)
        }
        F_GETFD => Ok(u64::from(p.fds.cloexec(fd)?)),
        F_SETFD => {
            p.fds.set_cloexec(fd, arg & libc::FD_CLOEXEC as u64 != 0)?;
            Ok(0)
        }
        F_GETFL => Ok(file.status() as u32 as u64),
        F_SETFL => {
            let changeable = libc::O_APPEND | libc::O_NONBLOCK;
            let mut st = file.status.lock_unpoisoned();
            *st = (*st & !changeable) | (arg as i32 & changeable);
            Ok(0)
        }
        F_GETOWN => Ok(0),
        F_SETOWN => Ok(0),
        F_GETPIPE_SZ | F_SETPIPE_SZ => {
            if !matches!(file.backing, Backing::Pipe(_)) {
                return Err(Errno::EBADF);
            }
            // The capacity is fixed: requests it already satisfies succeed.
            if cmd == F_SETPIPE_SZ && arg > crate::fdtable::PIPE_CAPACITY as u64 {
                return Err(Errno::EPERM);
            }
            Ok(crate::fdtable::PIPE_CAPACITY as u64)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// `fsync`/`fdatasync`: the file system's sync; host descriptors are synced on the host
/// (`EINVAL` for ttys and pipes, as here for vNode pipes).
fn sync(p: &Process, fd: u64, data_only: bool) -> SysResult<u64> {
    let file = p.fds.get(fdarg(fd))?;
    not_opath(&file)?;
    match &file.backing {
        Backing::File(f) => f.sync(data_only).map(|()| 0),
        Backing::Pipe(_) | Backing::Anon(_) | Backing::Socket(_) | Backing::Epoll(_) => Err(Errno::EINVAL),
        Backing::Host(h) => {
            // SAFETY: plain syscall on a descriptor `file` owns.
            let r = unsafe { if data_only { libc::fdatasync(h.as_raw_fd()) } else { libc::fsync(h.as_raw_fd()) } };
            if r < 0 {
                Err(Errno::last())
            } else {
                Ok(0)
            }
        }
    }
}

pub fn fsync(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    sync(p, a[0], false)
}

pub fn fdatasync(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    sync(p, a[0], true)
}

/// `sync(2)`: the vNode's file system syncs everything. Linux's sync cannot fail; an error is
/// logged (and reported by the next fsync or syncfs).
pub fn sync_fs(p: &mut Process, _: &mut Cpu<'_>, _: Args) -> SysResult<u64> {
    if let Err(e) = p.fs.sync_all() {
        tracing::warn!(errno = e.0, "sync failed");
    }
    Ok(0)
}

/// Linux x86-64 `struct statfs` (120 bytes) of `st`.
fn linux_statfs(st: &crate::fs::FsStat) -> [u8; 120] {
    let mut b = [0u8; 120];
    for (i, v) in [st.fs_type, st.block_size, st.blocks, st.free, st.available, st.files, st.free_files].iter().enumerate() {
        put(&mut b, 8 * i, &v.to_le_bytes());
    }
    put(&mut b, 64, &st.name_max.to_le_bytes());
    put(&mut b, 72, &st.block_size.to_le_bytes());
    b
}

/// `statfs(path, buf)`: the space of the vNode's file system, which holds every path that
/// exists (`/proc` and `/dev` report it too).
pub fn statfs(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    stat_at(p, AT_FDCWD as u64, a[0], 0)?;
    let st = p.fs.stat_fs()?;
    p.mm.write_user(a[1], &linux_statfs(&st))?;
    Ok(0)
}

/// `fstatfs(fd, buf)`: as `statfs`, for an open descriptor.
pub fn fstatfs(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    p.fds.get(fdarg(a[0]))?;
    let st = p.fs.stat_fs()?;
    p.mm.write_user(a[1], &linux_statfs(&st))?;
    Ok(0)
}

/// `syncfs(2)`: every descriptor is on the vNode's one file system (or on none that keeps data).
pub fn syncfs(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    p.fds.get(fdarg(a[0]))?;
    p.fs.sync_all().map(|()| 0)
}

/// `ftruncate(fd, length)`: `EINVAL` for a negative length, a description not open for
/// writing, or something that is not a regular file (as Linux's `do_ftruncate`).
pub fn ftruncate(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let len = a[1] as i64;
    if len < 0 {
        return Err(Errno::EINVAL);
    }
    let file = p.fds.get(fdarg(a[0]))?;
    not_opath(&file)?;
    if check_mode(&file, true).is_err() {
        return Err(Errno::EINVAL);
    }
    match &file.backing {
        Backing::File(f) => {
            if f.stat()?.mode & S_IFMT != S_IFREG {
                return Err(Errno::EINVAL);
            }
            f.set_len(len as u64)?;
            Ok(0)
        }
        Backing::Pipe(_) | Backing::Anon(_) | Backing::Socket(_) | Backing::Epoll(_) => Err(Errno::EINVAL),
        Backing::Host(h) => {
            // SAFETY: plain syscall on a descriptor `file` owns (the caller's redirected output).
            if unsafe { libc::ftruncate(h.as_raw_fd(), len) } < 0 {
                Err(Errno::last())
            } else {
                Ok(0)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------------------------

pub fn stat(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    newfstatat(p, cpu, [AT_FDCWD as u64, a[0], a[1], 0, 0, 0])
}

pub fn lstat(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    newfstatat(p, cpu, [AT_FDCWD as u64, a[0], a[1], AT_SYMLINK_NOFOLLOW, 0, 0])
}

pub fn fstat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = p.fds.get(fdarg(a[0]))?;
    let st = file_stat(p, &file)?;
    p.mm.write_user(a[1], &linux_stat(&st))?;
    Ok(0)
}

/// `newfstatat(dirfd, path, buf, flags)`: `AT_SYMLINK_NOFOLLOW`, `AT_EMPTY_PATH`.
pub fn newfstatat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[3];
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT) != 0 {
        return Err(Errno::EINVAL);
    }
    let st = stat_at(p, a[0], a[1], flags)?;
    p.mm.write_user(a[2], &linux_stat(&st))?;
    Ok(0)
}

/// `statx(dirfd, path, flags, mask, buf)`: always reports `STATX_BASIC_STATS` whatever `mask`
/// asks (Linux may return more or less than asked); no birth time.
pub fn statx(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (flags, mask) = (a[2] & 0xffff_ffff, a[3] & 0xffff_ffff);
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE) != 0
        || flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE
        || mask & STATX_RESERVED != 0
    {
        return Err(Errno::EINVAL);
    }
    let st = stat_at(p, a[0], a[1], flags)?;
    p.mm.write_user(a[4], &linux_statx(&st))?;
    Ok(0)
}

pub fn access(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    faccessat2(p, cpu, [AT_FDCWD as u64, a[0], a[1], 0, 0, 0])
}

pub fn faccessat(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    faccessat2(p, cpu, [a[0], a[1], a[2], 0, 0, 0])
}

/// `faccessat2(dirfd, path, mode, flags)`. `AT_EACCESS` changes nothing (real and effective ids
/// are checked alike by the file system); with `AT_SYMLINK_NOFOLLOW` a symlink itself is
/// always accessible, as its permission bits are.
pub fn faccessat2(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (mode, flags) = (a[2] as i32, a[3]);
    if flags & !(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    if mode & !0o7 != 0 {
        return Err(Errno::EINVAL);
    }
    let raw = read_path(p, a[1])?;
    let path = if raw.is_empty() && flags & AT_EMPTY_PATH != 0 {
        if a[0] as i32 == AT_FDCWD {
            p.cwd.clone()
        } else {
            let file = p.fds.get(fdarg(a[0]))?;
            match &file.backing {
                Backing::File(_) => file.path.clone(),
                // Pipes and host descriptors: their permissions are the creator's.
                _ => return Ok(0),
            }
        }
    } else {
        resolve(p, a[0], &raw)?
    };
    if flags & AT_SYMLINK_NOFOLLOW != 0 && crate::pseudo::stat(p, &path, false, file_stat)?.mode & S_IFMT == S_IFLNK {
        return Ok(0);
    }
    crate::pseudo::access(p, &path, mode)?;
    Ok(0)
}

pub fn readlink(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    readlinkat(p, cpu, [AT_FDCWD as u64, a[0], a[1], a[2], 0, 0])
}

/// `readlinkat(dirfd, path, buf, bufsiz)`: the target, truncated to `bufsiz`, without a NUL.
pub fn readlinkat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let bufsiz = a[3] as i32;
    if bufsiz <= 0 {
        return Err(Errno::EINVAL);
    }
    let path = at_path(p, a[0], a[1])?;
    let target = crate::pseudo::readlink(p, &path)?;
    let n = target.len().min(bufsiz as usize);
    p.mm.write_user(a[2], &target[..n])?;
    Ok(n as u64)
}

// ---------------------------------------------------------------------------------------------
// Name-space changes
// ---------------------------------------------------------------------------------------------

pub fn mkdir(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    mkdirat(p, cpu, [AT_FDCWD as u64, a[0], a[1], 0, 0, 0])
}

pub fn mkdirat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let raw = read_path(p, a[1])?;
    let path = resolve(p, a[0], &raw)?;
    if last_kind(&raw) != Last::Normal {
        // `.`, `..` and `/` exist by definition (once the path to them resolves).
        p.fs.stat(&path, true)?;
        return Err(Errno::EEXIST);
    }
    let mode = (a[2] as u32) & 0o1777 & !p.umask;
    p.fs.mkdir(&path, mode)?;
    Ok(0)
}

/// `rmdir` of the guest path `raw` relative to `dirfd`: `EINVAL` for `.`, `ENOTEMPTY` for
/// `..`, `EBUSY` for `/`, as Linux.
fn rmdir_at(p: &Process, dirfd: u64, raw: &[u8]) -> SysResult<u64> {
    let path = resolve(p, dirfd, raw)?;
    let special = match last_kind(raw) {
        Last::Normal => None,
        Last::Dot => Some(Errno::EINVAL),
        Last::DotDot => Some(Errno::ENOTEMPTY),
        Last::Root => Some(Errno(libc::EBUSY)),
    };
    if let Some(e) = special {
        p.fs.stat(&path, true)?;
        return Err(e);
    }
    p.fs.rmdir(&path)?;
    Ok(0)
}

/// `unlink` of the guest path `raw` relative to `dirfd`: `EISDIR` for `.`, `..` and `/`.
fn unlink_at(p: &Process, dirfd: u64, raw: &[u8]) -> SysResult<u64> {
    let path = resolve(p, dirfd, raw)?;
    if last_kind(raw) != Last::Normal {
        p.fs.stat(&path, true)?;
        return Err(Errno::EISDIR);
    }
    p.fs.unlink(&path)?;
    Ok(0)
}

pub fn rmdir(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let raw = read_path(p, a[0])?;
    rmdir_at(p, AT_FDCWD as u64, &raw)
}

pub fn unlink(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let raw = read_path(p, a[0])?;
    unlink_at(p, AT_FDCWD as u64, &raw)
}

/// `unlinkat(dirfd, path, flags)`: `AT_REMOVEDIR` makes it `rmdir`.
pub fn unlinkat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[2] as u32 as u64;
    if flags & !AT_REMOVEDIR != 0 {
        return Err(Errno::EINVAL);
    }
    let raw = read_path(p, a[1])?;
    if flags & AT_REMOVEDIR != 0 {
        rmdir_at(p, a[0], &raw)
    } else {
        unlink_at(p, a[0], &raw)
    }
}

pub fn rename(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    renameat2(p, cpu, [AT_FDCWD as u64, a[0], AT_FDCWD as u64, a[1], 0, 0])
}

pub fn renameat(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    renameat2(p, cpu, [a[0], a[1], a[2], a[3], 0, 0])
}

/// `renameat2(olddirfd, old, newdirfd, new, flags)`: `RENAME_NOREPLACE` is emulated by checking
/// the target first (a vNode has one process, so nothing can race in between);
/// `RENAME_EXCHANGE` and `RENAME_WHITEOUT` are not supported (`EINVAL`, as on file systems
/// without them).
pub fn renameat2(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[4] as u32 as u64;
    if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) != 0
        || (flags & (RENAME_NOREPLACE | RENAME_WHITEOUT) != 0 && flags & RENAME_EXCHANGE != 0)
    {
        return Err(Errno::EINVAL);
    }
    let old_raw = read_path(p, a[1])?;
    let new_raw = read_path(p, a[3])?;
    let old = resolve(p, a[0], &old_raw)?;
    let new = resolve(p, a[2], &new_raw)?;
    if last_kind(&old_raw) != Last::Normal {
        return Err(Errno(libc::EBUSY));
    }
    if last_kind(&new_raw) != Last::Normal {
        return Err(if flags & RENAME_NOREPLACE != 0 { Errno::EEXIST } else { Errno(libc::EBUSY) });
    }
    if flags & (RENAME_EXCHANGE | RENAME_WHITEOUT) != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & RENAME_NOREPLACE != 0 {
        // The source must exist (ENOENT first, as Linux), the target must not.
        p.fs.stat(&old, false)?;
        if p.fs.stat(&new, false).is_ok() {
            return Err(Errno::EEXIST);
        }
    }
    p.fs.rename(&old, &new)?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// Working directory and umask
// ---------------------------------------------------------------------------------------------

/// `getcwd(buf, size)`: the path and its NUL; returns the length including the NUL.
pub fn getcwd(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let mut out = p.cwd.clone();
    out.push(0);
    if a[1] < out.len() as u64 {
        return Err(Errno::ERANGE);
    }
    p.mm.write_user(a[0], &out)?;
    Ok(out.len() as u64)
}

/// Makes the directory at vNode path `path` the working directory: `ENOTDIR` unless it is a
/// directory, and search permission needed. The stored path is canonical (see [`canonical`]),
/// so `getcwd` never shows `.`, `..` or symlinks.
fn set_cwd(p: &mut Process, path: &[u8]) -> SysResult<u64> {
    if !is_dir(crate::pseudo::stat(p, path, true, file_stat)?.mode) {
        return Err(Errno::ENOTDIR);
    }
    crate::pseudo::access(p, path, libc::X_OK)?;
    p.cwd = canonical(p, path)?;
    Ok(0)
}

pub fn chdir(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let path = at_path(p, AT_FDCWD as u64, a[0])?;
    set_cwd(p, &path)
}

pub fn fchdir(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = p.fds.get(fdarg(a[0]))?;
    if !matches!(file.backing, Backing::File(_)) {
        return Err(Errno::ENOTDIR);
    }
    set_cwd(p, &file.path)
}

pub fn umask(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let old = p.umask;
    p.umask = (a[0] as u32) & 0o777;
    Ok(u64::from(old))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kvm_bindings::{kvm_regs, kvm_sregs};

    use super::*;
    use crate::fdtable::FdTable;
    use crate::fs::hostdir::HostDir;
    use crate::memory::mm::flags::{MAP_ANONYMOUS, MAP_PRIVATE};
    use crate::memory::paging::Prot;
    use crate::process::{Creds, MAIN_TID, SIG_IGN};
    use lego_proto::vma::VmaKind;

    type Handler = fn(&mut Process, &mut Cpu<'_>, Args) -> SysResult<u64>;
    type BlockingHandler = fn(&mut Locked<'_>, &mut Cpu<'_>, Args) -> SysResult<u64>;

    const BUF_LEN: u64 = 1 << 20;

    /// A process over a temporary directory, with a 1 MiB read-write buffer, a read-only page
    /// after it and a scratch area for strings.
    struct T {
        m: std::sync::Mutex<Process>,
        _server: mem_server::Handle,
        dir: tempfile::TempDir,
        buf: u64,
        ro: u64,
        scratch: u64,
        next: std::cell::Cell<u64>,
    }

    impl T {
        fn new() -> T {
            let dir = tempfile::tempdir().unwrap();
            let fs = Arc::new(HostDir::new(dir.path()).unwrap());
            let crate::testing::TestMm { mut mm, server } = crate::testing::mm(64 << 20);
            let flags = MAP_PRIVATE | MAP_ANONYMOUS;
            let buf = mm.mmap(0, BUF_LEN + 4096, Prot::RW, flags, VmaKind::Anon).unwrap();
            let ro = buf + BUF_LEN;
            mm.mprotect(ro, 4096, Prot::READ).unwrap();
            let scratch = mm.mmap(0, 1 << 16, Prot::RW, flags, VmaKind::Anon).unwrap();
            let creds = Creds { uid: 1000, euid: 1000, suid: 1000, gid: 1000, egid: 1000, sgid: 1000 };
            let mut p = Process::new(mm, fs, "t".into(), b"t").unwrap();
            p.creds = creds;
            p.groups = Vec::new();
            p.fds = FdTable::new(64);
            p.rlimits = [(u64::MAX, u64::MAX); 16];
            T { m: std::sync::Mutex::new(p), _server: server, dir, buf, ro, scratch, next: std::cell::Cell::new(scratch) }
        }

        /// The process, locked.
        fn p(&self) -> std::sync::MutexGuard<'_, Process> {
            self.m.lock().unwrap()
        }

        fn call(&mut self, h: Handler, args: &[u64]) -> SysResult<u64> {
            self.callb_with(|p, cpu, a| h(p, cpu, a), args)
        }

        fn callb(&mut self, h: BlockingHandler, args: &[u64]) -> SysResult<u64> {
            self.callb_with(h, args)
        }

        fn callb_with(&mut self, h: impl FnOnce(&mut Locked<'_>, &mut Cpu<'_>, Args) -> SysResult<u64>, args: &[u64]) -> SysResult<u64> {
            let (mut regs, mut sregs) = (kvm_regs::default(), kvm_sregs::default());
            let mut cpu = Cpu::new(&mut regs, &mut sregs, 1);
            let mut a = [0u64; 6];
            a[..args.len()].copy_from_slice(args);
            h(&mut Locked::lock(&self.m), &mut cpu, a)
        }

        /// Puts a NUL-terminated string in guest memory.
        fn s(&self, s: &str) -> u64 {
            let at = self.next.get();
            let mut b = s.as_bytes().to_vec();
            b.push(0);
            self.p().mm.write_user(at, &b).unwrap();
            self.next.set(at + b.len() as u64);
            at
        }

        fn put(&self, addr: u64, data: &[u8]) {
            self.p().mm.write_user(addr, data).unwrap();
        }

        fn get(&self, addr: u64, len: usize) -> Vec<u8> {
            let mut b = vec![0u8; len];
            self.p().mm.read_user(addr, &mut b).unwrap();
            b
        }

        fn open(&mut self, path: &str, flags: i32, mode: u64) -> SysResult<u64> {
            let s = self.s(path);
            self.callb(openat, &[AT_FDCWD as u64, s, flags as u64, mode])
        }

        fn write_str(&mut self, fd: u64, data: &str) -> SysResult<u64> {
            self.put(self.buf, data.as_bytes());
            self.callb(write, &[fd, self.buf, data.len() as u64])
        }

        fn read_vec(&mut self, fd: u64, len: u64) -> SysResult<Vec<u8>> {
            let n = self.callb(read, &[fd, self.buf, len])?;
            Ok(self.get(self.buf, n as usize))
        }

        fn stat_of(&mut self, path: &str, flags: u64) -> SysResult<Stat> {
            let s = self.s(path);
            let out = self.scratch + 0x8000;
            self.call(newfstatat, &[AT_FDCWD as u64, s, out, flags])?;
            let b = self.get(out, STAT_SIZE);
            Ok(Stat {
                dev: u64_at(&b, 0),
                ino: u64_at(&b, 8),
                nlink: u64_at(&b, 16),
                mode: u64_at(&b, 24) as u32,
                size: u64_at(&b, 48),
                ..Stat::default()
            })
        }

        fn cwd(&mut self) -> Vec<u8> {
            let n = self.call(getcwd, &[self.buf, 4096]).unwrap();
            let mut v = self.get(self.buf, n as usize);
            assert_eq!(v.pop(), Some(0));
            v
        }
    }

    const RW_CREAT: i32 = libc::O_RDWR | libc::O_CREAT;

    #[test]
    fn open_write_seek_read() {
        let mut t = T::new();
        let fd = t.open("/f", RW_CREAT, 0o666).unwrap();
        assert_eq!(fd, 0);
        assert_eq!(t.write_str(fd, "hello world"), Ok(11));
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_CUR)]), Ok(11));
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_SET)]), Ok(0));
        assert_eq!(t.read_vec(fd, 5).unwrap(), b"hello");
        assert_eq!(t.call(pread64, &[fd, t.buf, 100, 6]), Ok(5));
        assert_eq!(t.get(t.buf, 5), b"world");
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_CUR)]), Ok(5), "pread keeps the offset");
        assert_eq!(t.call(lseek, &[fd, -1i64 as u64, u64::from(SEEK_END)]), Ok(10));
        assert_eq!(t.call(lseek, &[fd, -1i64 as u64, u64::from(SEEK_SET)]), Err(Errno::EINVAL));
        assert_eq!(t.call(lseek, &[fd, 0, 9]), Err(Errno::EINVAL));
        assert_eq!(t.call(lseek, &[fd, 20, u64::from(SEEK_DATA)]), Err(Errno(libc::ENXIO)));
        assert_eq!(t.call(lseek, &[fd, 3, u64::from(SEEK_HOLE)]), Ok(11));
        assert_eq!(t.call(fcntl, &[fd, F_GETFL as u64]), Ok((libc::O_RDWR | O_LARGEFILE) as u64));
        let st = t.stat_of("/f", 0).unwrap();
        assert_eq!((st.size, st.mode), (11, S_IFREG | 0o644));
        assert_eq!(t.call(ftruncate, &[fd, 4]), Ok(0));
        assert_eq!(t.call(ftruncate, &[fd, -1i64 as u64]), Err(Errno::EINVAL));
        assert_eq!(t.call(fsync, &[fd]), Ok(0));
        assert_eq!(std::fs::read(t.dir.path().join("f")).unwrap(), b"hell");
        assert_eq!(t.call(close, &[fd]), Ok(0));
        assert_eq!(t.call(close, &[fd]), Err(Errno::EBADF));
    }

    #[test]
    fn append_and_access_modes() {
        let mut t = T::new();
        let fd = t.open("/a", libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND, 0o600).unwrap();
        t.write_str(fd, "ab").unwrap();
        t.call(lseek, &[fd, 0, u64::from(SEEK_SET)]).unwrap();
        t.write_str(fd, "cd").unwrap();
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_CUR)]), Ok(4));
        assert_eq!(t.callb(read, &[fd, t.buf, 1]), Err(Errno::EBADF));
        assert_eq!(t.call(ftruncate, &[fd, 0]), Ok(0));
        let r = t.open("/a", libc::O_RDONLY, 0).unwrap();
        assert_eq!(t.write_str(r, "x"), Err(Errno::EBADF));
        assert_eq!(t.call(ftruncate, &[r, 0]), Err(Errno::EINVAL));
        let p = t.open("/a", libc::O_PATH, 0).unwrap();
        assert_eq!(t.callb(read, &[p, t.buf, 1]), Err(Errno::EBADF));
        assert_eq!(t.call(fcntl, &[p, F_GETFL as u64]), Ok((libc::O_PATH | O_LARGEFILE) as u64));
        assert_eq!(std::fs::read(t.dir.path().join("a")).unwrap(), b"");
        // O_PATH | O_NOFOLLOW opens the symlink itself.
        std::os::unix::fs::symlink("a", t.dir.path().join("l")).unwrap();
        let l = t.open("/l", libc::O_PATH | libc::O_NOFOLLOW, 0).unwrap();
        let st = t.scratch + 0x8000;
        assert_eq!(t.call(fstat, &[l, st]), Ok(0));
        assert_eq!(u64_at(&t.get(st, STAT_SIZE), 24) as u32 & S_IFMT, S_IFLNK);
        assert_eq!(t.call(getdents64, &[l, t.buf, 4096]), Err(Errno::EBADF));
        assert_eq!(t.open("/nope", libc::O_RDONLY, 0), Err(Errno::ENOENT));
        assert_eq!(t.open("", libc::O_RDONLY, 0), Err(Errno::ENOENT));
        assert_eq!(t.open("/t", libc::O_TMPFILE | libc::O_RDWR, 0o600), Err(Errno::EOPNOTSUPP));
    }

    #[test]
    fn guest_buffers_are_checked() {
        let mut t = T::new();
        let fd = t.open("/f", RW_CREAT, 0o644).unwrap();
        t.write_str(fd, "0123456789").unwrap();
        t.call(lseek, &[fd, 0, 0]).unwrap();
        assert_eq!(t.callb(read, &[fd, 0x10, 4]), Err(Errno::EFAULT));
        assert_eq!(t.callb(read, &[fd, t.ro, 4]), Err(Errno::EFAULT));
        assert_eq!(t.callb(read, &[fd, u64::MAX - 2, 4]), Err(Errno::EFAULT));
        // Only three bytes before the read-only page: a short read, the offset follows.
        assert_eq!(t.callb(read, &[fd, t.ro - 3, 10]), Ok(3));
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_CUR)]), Ok(3));
        // Writing from a read-only page is fine.
        assert_eq!(t.callb(write, &[fd, t.ro, 2]), Ok(2));
        assert_eq!(t.callb(read, &[99, t.buf, 1]), Err(Errno::EBADF));
        assert_eq!(t.callb(read, &[u64::MAX, t.buf, 1]), Err(Errno::EBADF));
        let big = t.call(pread64, &[fd, t.buf, u64::from(u32::MAX), 0]);
        assert_eq!(big, Ok(10));
        assert_eq!(t.call(pread64, &[fd, t.buf, 1, -5i64 as u64]), Err(Errno::EINVAL));
        assert_eq!(t.call(getcwd, &[0x10, 100]), Err(Errno::EFAULT));
        assert_eq!(t.callb(openat, &[AT_FDCWD as u64, 0x10, 0, 0]), Err(Errno::EFAULT));
        // A path of PATH_MAX bytes (no NUL within 4095) is too long.
        let long = "x".repeat(4096);
        assert_eq!(t.open(&long, 0, 0), Err(Errno::ENAMETOOLONG));
    }

    #[test]
    fn vectored_io() {
        let mut t = T::new();
        let fd = t.open("/v", RW_CREAT, 0o644).unwrap();
        let iov = t.scratch + 0x4000;
        let mut v = Vec::new();
        for (base, len) in [(t.buf, 3u64), (t.buf + 100, 0), (t.buf + 200, 4)] {
            v.extend_from_slice(&base.to_le_bytes());
            v.extend_from_slice(&len.to_le_bytes());
        }
        t.put(iov, &v);
        t.put(t.buf, b"abc");
        t.put(t.buf + 200, b"defg");
        assert_eq!(t.callb(writev, &[fd, iov, 3]), Ok(7));
        t.call(lseek, &[fd, 0, 0]).unwrap();
        t.put(t.buf, &[0; 300]);
        assert_eq!(t.callb(readv, &[fd, iov, 3]), Ok(7));
        assert_eq!(t.get(t.buf, 3), b"abc");
        assert_eq!(t.get(t.buf + 200, 4), b"defg");
        assert_eq!(t.callb(readv, &[fd, iov, 1025]), Err(Errno::EINVAL));
        let mut bad = v.clone();
        bad[8..16].copy_from_slice(&(-1i64).to_le_bytes());
        t.put(iov, &bad);
        assert_eq!(t.callb(writev, &[fd, iov, 3]), Err(Errno::EINVAL));
        assert_eq!(t.callb(writev, &[fd, 0x10, 1]), Err(Errno::EFAULT));
    }

    #[test]
    fn pipes_and_sigpipe() {
        let mut t = T::new();
        let fds = t.scratch + 0x4000;
        assert_eq!(t.call(pipe2, &[fds, libc::O_NONBLOCK as u64]), Ok(0));
        let b = t.get(fds, 8);
        let (r, w) = (u64::from(u32_at(&b, 0)), u64::from(u32_at(&b, 4)));
        assert_eq!((r, w), (0, 1));
        assert_eq!(t.callb(read, &[r, t.buf, 10]), Err(Errno::EAGAIN));
        assert_eq!(t.callb(read, &[w, t.buf, 10]), Err(Errno::EBADF));
        assert_eq!(t.write_str(w, "xyz"), Ok(3));
        assert_eq!(t.call(ioctl, &[r, u64::from(FIONREAD), t.buf + 64]), Ok(0));
        assert_eq!(t.get(t.buf + 64, 4), 3i32.to_le_bytes());
        assert_eq!(t.call(lseek, &[r, 0, 0]), Err(Errno::ESPIPE));
        assert_eq!(t.call(pread64, &[r, t.buf, 1, 0]), Err(Errno::ESPIPE));
        assert_eq!(t.call(ioctl, &[r, u64::from(TCGETS), t.buf]), Err(Errno::ENOTTY));
        assert_eq!(t.call(fcntl, &[r, F_GETPIPE_SZ as u64]), Ok(65536));
        assert_eq!(t.read_vec(r, 10).unwrap(), b"xyz");
        let st = t.scratch + 0x8000;
        assert_eq!(t.call(fstat, &[r, st]), Ok(0));
        assert_eq!(u32_at(&t.get(st, STAT_SIZE), 24), S_IFIFO | 0o600);
        assert_eq!(t.call(close, &[r]), Ok(0));
        // SIGPIPE goes to the writer, unless ignored; the run loop delivers it.
        let sigpipe = crate::signal::bit(libc::SIGPIPE);
        t.p().signals.actions[libc::SIGPIPE as usize].handler = SIG_IGN;
        assert_eq!(t.write_str(w, "x"), Err(Errno::EPIPE));
        assert_eq!(t.p().thread(MAIN_TID).pending.bits(), 0);
        t.p().signals.actions[libc::SIGPIPE as usize].handler = 0;
        assert_eq!(t.write_str(w, "x"), Err(Errno::EPIPE));
        assert_eq!(t.p().thread(MAIN_TID).pending.bits(), sigpipe);
        assert_eq!(t.call(pipe2, &[fds, libc::O_DIRECT as u64]), Err(Errno::EINVAL));
        assert_eq!(t.call(pipe2, &[t.ro, 0]), Err(Errno::EFAULT));
        assert_eq!(t.p().fds.count(), 1, "a failed pipe2 leaves no descriptors behind");
    }

    #[test]
    fn host_descriptors() {
        use std::os::fd::{FromRawFd, OwnedFd};
        let mut t = T::new();
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe(2) just created these and nothing else owns them.
        let (hr, hw) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let r = t.p().fds.alloc(OpenFile::new(Backing::Host(hr), b"host:r".to_vec(), libc::O_RDONLY), 0, false).unwrap();
        let w = t.p().fds.alloc(OpenFile::new(Backing::Host(hw), b"host:w".to_vec(), libc::O_WRONLY), 0, false).unwrap();
        // A read of a write-only end (a piped standard output) fails at once: it must not wait
        // for the end to become readable, which it never does.
        let iov = t.scratch + 0x4000;
        t.put(iov, &[t.buf.to_le_bytes(), 8u64.to_le_bytes()].concat());
        assert_eq!(t.callb(read, &[w, t.buf, 10]), Err(Errno::EBADF));
        assert_eq!(t.callb(readv, &[w, iov, 1]), Err(Errno::EBADF));
        assert_eq!(t.callb(write, &[r, t.buf, 10]), Err(Errno::EBADF));
        assert_eq!(t.callb(writev, &[r, iov, 1]), Err(Errno::EBADF));
        assert_eq!(t.call(fcntl, &[r, F_SETFL as u64, libc::O_NONBLOCK as u64]), Ok(0));
        assert_eq!(t.callb(read, &[r, t.buf, 10]), Err(Errno::EAGAIN), "emulated, host flags untouched");
        assert_eq!(t.write_str(w, "host"), Ok(4));
        assert_eq!(t.call(ioctl, &[r, u64::from(FIONREAD), t.buf + 64]), Ok(0));
        assert_eq!(t.get(t.buf + 64, 4), 4i32.to_le_bytes());
        assert_eq!(t.read_vec(r, 10).unwrap(), b"host");
        assert_eq!(t.call(lseek, &[r, 0, 0]), Err(Errno::ESPIPE));
        assert_eq!(t.call(pread64, &[r, t.buf, 1, 0]), Err(Errno::ESPIPE));
        assert_eq!(t.call(ioctl, &[r, u64::from(TCGETS), t.buf]), Err(Errno::ENOTTY));
        assert_eq!(t.call(ioctl, &[r, u64::from(TIOCGPGRP), t.buf]), Err(Errno::ENOTTY));
        assert_eq!(t.call(fsync, &[w]), Err(Errno::EINVAL));
        let st = t.scratch + 0x8000;
        assert_eq!(t.call(fstat, &[r, st]), Ok(0));
        assert_eq!(u64_at(&t.get(st, STAT_SIZE), 24) as u32 & S_IFMT, S_IFIFO);
        t.call(close, &[r]).unwrap();
        t.p().signals.actions[libc::SIGPIPE as usize].handler = SIG_IGN;
        assert_eq!(t.write_str(w, "x"), Err(Errno::EPIPE));
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[test]
    fn descriptors() {
        let mut t = T::new();
        let fd = t.open("/f", RW_CREAT | libc::O_CLOEXEC, 0o644).unwrap();
        assert_eq!(t.call(fcntl, &[fd, F_GETFD as u64]), Ok(1));
        assert_eq!(t.call(dup, &[fd]), Ok(1));
        assert_eq!(t.call(fcntl, &[1, F_GETFD as u64]), Ok(0));
        assert_eq!(t.call(dup2, &[fd, fd]), Ok(fd));
        assert_eq!(t.call(dup2, &[7, 7]), Err(Errno::EBADF));
        assert_eq!(t.call(dup3, &[fd, fd, 0]), Err(Errno::EINVAL));
        assert_eq!(t.call(dup3, &[fd, 5, libc::O_CLOEXEC as u64]), Ok(5));
        assert_eq!(t.call(dup3, &[fd, 6, 1]), Err(Errno::EINVAL));
        assert_eq!(t.call(dup2, &[fd, 64]), Err(Errno::EBADF));
        assert_eq!(t.call(fcntl, &[5, F_GETFD as u64]), Ok(1));
        assert_eq!(t.call(fcntl, &[fd, F_DUPFD as u64, 10]), Ok(10));
        assert_eq!(t.call(fcntl, &[fd, F_DUPFD as u64, 64]), Err(Errno::EINVAL));
        assert_eq!(t.call(fcntl, &[fd, F_SETFL as u64, (libc::O_NONBLOCK | libc::O_WRONLY) as u64]), Ok(0));
        assert_eq!(t.call(fcntl, &[1, F_GETFL as u64]), Ok((libc::O_RDWR | libc::O_NONBLOCK | O_LARGEFILE) as u64));
        // Shared description: the offset moves for both.
        t.write_str(fd, "abc").unwrap();
        assert_eq!(t.call(lseek, &[10, 0, u64::from(SEEK_CUR)]), Ok(3));
        assert_eq!(t.call(fcntl, &[fd, 12345]), Err(Errno::EINVAL));
        assert_eq!(t.call(umask, &[0o7077]), Ok(0o022));
        assert_eq!(t.call(umask, &[0o022]), Ok(0o077));
    }

    #[test]
    fn directories_and_cwd() {
        let mut t = T::new();
        let (d, de) = (t.s("/d"), t.s("d/e"));
        assert_eq!(t.call(mkdir, &[d, 0o755]), Ok(0));
        assert_eq!(t.call(mkdir, &[d, 0o755]), Err(Errno::EEXIST));
        assert_eq!(t.call(mkdirat, &[AT_FDCWD as u64, de, 0o777]), Ok(0));
        assert_eq!(t.stat_of("/d/e", 0).unwrap().mode, S_IFDIR | 0o755);
        std::os::unix::fs::symlink("/d/e", t.dir.path().join("l")).unwrap();
        let up = t.s("d/e/..");
        assert_eq!(t.call(chdir, &[up]), Ok(0));
        assert_eq!(t.cwd(), b"/d");
        let l = t.s("/l/");
        assert_eq!(t.call(chdir, &[l]), Ok(0));
        assert_eq!(t.cwd(), b"/d/e");
        let dd = t.s("..");
        assert_eq!(t.call(chdir, &[dd]), Ok(0), "the physical parent of /l");
        assert_eq!(t.cwd(), b"/d");
        assert_eq!(t.call(getcwd, &[t.buf, 2]), Err(Errno::ERANGE));
        assert_eq!(t.call(getcwd, &[t.buf, 3]), Ok(3));
        // Relative to the cwd and to a directory descriptor.
        let f = t.open("e/f", RW_CREAT, 0o644).unwrap();
        assert_eq!(t.call(chdir, &[t.s("e/f")]), Err(Errno::ENOTDIR));
        let dirfd = t.open("/d/e", libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
        let g = t.s("g");
        assert_eq!(t.call(mkdirat, &[dirfd, g, 0o700]), Ok(0));
        assert!(t.dir.path().join("d/e/g").is_dir());
        assert_eq!(t.call(mkdirat, &[f, g, 0o700]), Err(Errno::ENOTDIR));
        assert_eq!(t.call(mkdirat, &[40, g, 0o700]), Err(Errno::EBADF));
        assert_eq!(t.call(fchdir, &[dirfd]), Ok(0));
        assert_eq!(t.cwd(), b"/d/e");
        assert_eq!(t.call(fchdir, &[f]), Err(Errno::ENOTDIR));
        // rmdir / unlink special names.
        assert_eq!(t.call(rmdir, &[t.s("g/.")]), Err(Errno::EINVAL));
        assert_eq!(t.call(rmdir, &[t.s("g/..")]), Err(Errno::ENOTEMPTY));
        assert_eq!(t.call(rmdir, &[t.s("/")]), Err(Errno(libc::EBUSY)));
        assert_eq!(t.call(unlink, &[t.s(".")]), Err(Errno::EISDIR));
        assert_eq!(t.call(unlinkat, &[AT_FDCWD as u64, g, 0x8000]), Err(Errno::EINVAL));
        assert_eq!(t.call(unlinkat, &[AT_FDCWD as u64, g, AT_REMOVEDIR]), Ok(0));
        assert_eq!(t.call(unlink, &[t.s("f")]), Ok(0));
        assert!(!t.dir.path().join("d/e/f").exists());
    }

    #[test]
    fn getdents64_lists_and_rewinds() {
        let mut t = T::new();
        for n in ["a", "bb", "ccc"] {
            std::fs::write(t.dir.path().join(n), n).unwrap();
        }
        let fd = t.open("/", libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
        let list = |t: &mut T, count: u64| -> SysResult<Vec<(Vec<u8>, u8)>> {
            let n = t.call(getdents64, &[fd, t.buf, count])? as usize;
            let b = t.get(t.buf, n);
            let mut out = Vec::new();
            let mut at = 0;
            while at < n {
                let reclen = usize::from(u16::from_le_bytes([b[at + 16], b[at + 17]]));
                assert_eq!(reclen % 8, 0);
                let name = &b[at + 19..at + reclen];
                let end = name.iter().position(|&c| c == 0).unwrap();
                out.push((name[..end].to_vec(), b[at + 18]));
                at += reclen;
            }
            Ok(out)
        };
        let mut all = list(&mut t, 4096).unwrap();
        all.sort();
        let names: Vec<&[u8]> = all.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(names, [&b"."[..], b"..", b"a", b"bb", b"ccc"]);
        assert!(all.iter().any(|(n, k)| n == b"a" && *k == libc::DT_REG));
        assert_eq!(list(&mut t, 4096).unwrap(), Vec::new(), "end of directory");
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_SET)]), Ok(0));
        // Small buffers: one 24-byte record at a time, then too small for any.
        let mut again = Vec::new();
        loop {
            let part = list(&mut t, 24).unwrap();
            if part.is_empty() {
                break;
            }
            assert_eq!(part.len(), 1);
            again.extend(part);
        }
        again.sort();
        assert_eq!(again, all);
        t.call(lseek, &[fd, 0, 0]).unwrap();
        assert_eq!(list(&mut t, 10), Err(Errno::EINVAL));
        let f = t.open("/a", libc::O_RDONLY, 0).unwrap();
        assert_eq!(t.call(getdents64, &[f, t.buf, 4096]), Err(Errno::ENOTDIR));
        assert_eq!(t.callb(read, &[fd, t.buf, 10]), Err(Errno::EISDIR));
        assert_eq!(t.call(lseek, &[fd, 0, u64::from(SEEK_END)]), Err(Errno::EINVAL));
    }

    #[test]
    fn stat_access_readlink_rename() {
        let mut t = T::new();
        std::fs::write(t.dir.path().join("f"), "12345").unwrap();
        std::os::unix::fs::symlink("f", t.dir.path().join("l")).unwrap();
        assert_eq!(t.stat_of("/l", 0).unwrap().size, 5);
        assert_eq!(t.stat_of("/l", AT_SYMLINK_NOFOLLOW).unwrap().mode & S_IFMT, S_IFLNK);
        assert_eq!(t.stat_of("", 0), Err(Errno::ENOENT));
        assert_eq!(t.stat_of("/f", 0x4000_0000), Err(Errno::EINVAL));
        // AT_EMPTY_PATH on a descriptor, and with a NULL path.
        let fd = t.open("/f", libc::O_RDONLY, 0).unwrap();
        let (e, out) = (t.s(""), t.scratch + 0x8000);
        assert_eq!(t.call(newfstatat, &[fd, e, out, AT_EMPTY_PATH]), Ok(0));
        assert_eq!(u64_at(&t.get(out, STAT_SIZE), 48), 5);
        assert_eq!(t.call(newfstatat, &[fd, 0, out, AT_EMPTY_PATH]), Ok(0));
        // statx
        let f = t.s("/f");
        assert_eq!(t.call(statx, &[AT_FDCWD as u64, f, 0, 0xfff, out]), Ok(0));
        let sx = t.get(out, STATX_SIZE);
        assert_eq!(u32_at(&sx, 0), STATX_BASIC_STATS);
        assert_eq!(u64_at(&sx, 40), 5);
        use std::os::unix::fs::MetadataExt;
        let host = std::fs::metadata(t.dir.path().join("f")).unwrap();
        assert_eq!(u32_at(&sx, 28) & 0xffff, host.mode());
        assert_eq!(u32_at(&sx, 16), 1);
        assert_eq!(u64_at(&sx, 32), host.ino());
        assert_eq!(u64_at(&sx, 112) as i64, host.mtime());
        assert_eq!((u32_at(&sx, 136), u32_at(&sx, 140)), (dev_major(host.dev()), dev_minor(host.dev())));
        assert_eq!(t.call(statx, &[AT_FDCWD as u64, f, 0x6000, 0x7ff, out]), Err(Errno::EINVAL));
        // access
        assert_eq!(t.call(access, &[f, libc::R_OK as u64]), Ok(0));
        assert_eq!(t.call(access, &[f, libc::X_OK as u64]), Err(Errno::EACCES));
        assert_eq!(t.call(access, &[f, 8]), Err(Errno::EINVAL));
        assert_eq!(t.call(access, &[t.s("/nope"), 0]), Err(Errno::ENOENT));
        assert_eq!(t.call(faccessat2, &[AT_FDCWD as u64, f, 0, 0x10]), Err(Errno::EINVAL));
        // readlink
        let l = t.s("/l");
        assert_eq!(t.call(readlink, &[l, t.buf, 100]), Ok(1));
        assert_eq!(t.get(t.buf, 1), b"f");
        assert_eq!(t.call(readlink, &[l, t.buf, 0]), Err(Errno::EINVAL));
        assert_eq!(t.call(readlink, &[f, t.buf, 10]), Err(Errno::EINVAL));
        // rename
        let g = t.s("/g");
        assert_eq!(t.call(rename, &[f, g]), Ok(0));
        std::fs::write(t.dir.path().join("f"), "new").unwrap();
        assert_eq!(t.call(renameat2, &[AT_FDCWD as u64, g, AT_FDCWD as u64, f, RENAME_NOREPLACE]), Err(Errno::EEXIST));
        assert_eq!(t.call(renameat2, &[AT_FDCWD as u64, g, AT_FDCWD as u64, f, 8]), Err(Errno::EINVAL));
        assert_eq!(t.call(renameat2, &[AT_FDCWD as u64, g, AT_FDCWD as u64, f, RENAME_EXCHANGE]), Err(Errno::EINVAL));
        assert_eq!(t.call(renameat, &[AT_FDCWD as u64, g, AT_FDCWD as u64, f]), Ok(0));
        assert_eq!(std::fs::read(t.dir.path().join("f")).unwrap(), b"12345");
        assert_eq!(t.call(rename, &[t.s("."), g]), Err(Errno(libc::EBUSY)));
    }
}
