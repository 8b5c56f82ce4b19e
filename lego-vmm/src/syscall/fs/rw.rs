//! Reading and writing: `read`, `write`, `pread64`, `pwrite64`, `readv`, `writev`, `lseek`,
//! the `fsync` family and `ftruncate`.

use lego_proto::sync::LockExt;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use super::common::{SEEK_CUR, SEEK_DATA, SEEK_END, SEEK_HOLE, SEEK_SET, S_IFMT, S_IFREG, check_mode, fdarg, host_stat, is_dir, not_opath};
use super::data::{do_read, do_write, one_seg, read_iovecs};
use crate::syscall::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::process::{Locked, Process};

// ---------------------------------------------------------------------------------------------
// I/O
// ---------------------------------------------------------------------------------------------

/// How long a thread waiting on a pipe waits before it looks at the process again (whether it
/// is ending).
pub(super) const PIPE_SLICE: std::time::Duration = std::time::Duration::from_millis(10);

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
            // A signalfd read waits itself ([`crate::syscall::anon::read_anon`]).
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
    if crate::syscall::net::is_socket(p, a[0]) {
        return crate::syscall::net::read_socket(p, cpu.tid, a[0], &one_seg(a[1], a[2])?);
    }
    wait_ready(p, cpu.tid, a[0], false)?;
    let file = p.fds.get(fdarg(a[0]))?;
    check_mode(&file, false)?;
    if let Backing::Anon(anon) = &file.backing {
        return crate::syscall::anon::read_anon(p, cpu.tid, &file, anon, one_seg(a[1], a[2])?[0]);
    }
    do_read(p, &file, &one_seg(a[1], a[2])?, None)
}

/// `write`. A blocking write to a pipe goes in pieces that fit, each written with the lock
/// held and each wait made without it, so that a reader in another thread can drain the pipe.
pub fn write(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [fd, buf, count, ..] = a;
    if crate::syscall::net::is_socket(p, fd) {
        return crate::syscall::net::write_socket(p, cpu.tid, fd, &one_seg(buf, count)?);
    }
    let done = write_as_ready(p, cpu, fd, buf, count)?;
    pty_typed(p, cpu.tid, fd, &one_seg(buf, done)?);
    Ok(done)
}

/// The writes of `write(fd, buf, count)` to anything but a socket, as the file takes them.
fn write_as_ready(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, fd: u64, buf: u64, count: u64) -> SysResult<u64> {
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
    if crate::syscall::net::is_socket(p, a[0]) {
        let segs = read_iovecs(p, a[1], a[2])?;
        return crate::syscall::net::read_socket(p, cpu.tid, a[0], &segs);
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
    if crate::syscall::net::is_socket(p, a[0]) {
        let segs = read_iovecs(p, a[1], a[2])?;
        return crate::syscall::net::write_socket(p, cpu.tid, a[0], &segs);
    }
    wait_ready(p, cpu.tid, a[0], true)?;
    let file = p.fds.get(fdarg(a[0]))?;
    check_mode(&file, true)?;
    let segs = read_iovecs(p, a[1], a[2])?;
    let done = do_write(p, cpu.tid, &file, &segs, None)?;
    let mut left = done;
    let written: Vec<(u64, u64)> = segs
        .iter()
        .map(|&(at, len)| {
            let n = len.min(left);
            left -= n;
            (at, n)
        })
        .collect();
    pty_typed(p, cpu.tid, a[0], &written);
    Ok(done)
}

/// `written` (guest buffers) went into descriptor `fd` by thread `tid`: if it is the master of
/// one of the run's ptys, the line discipline of its slave takes the bytes as typed, and the
/// VMM raises the signals the interrupt and quit characters call for in the pty's foreground
/// group, as the kernel would for host processes (see [`crate::pty`]).
fn pty_typed(p: &mut Locked<'_>, tid: i32, fd: u64, written: &[(u64, u64)]) {
    let Ok(file) = p.fds.get(fdarg(fd)) else { return };
    let Backing::Host(h) = &file.backing else { return };
    if file.path.as_slice() != b"/dev/ptmx" {
        return;
    }
    let Some(n) = p.ptys.master_number(&file) else { return };
    let mut bytes = Vec::new();
    for &(at, len) in written.iter().filter(|s| s.1 > 0) {
        let mut b = vec![0u8; len as usize];
        if p.mm.read_user(at, &mut b).is_err() {
            return;
        }
        bytes.extend_from_slice(&b);
    }
    let signals = crate::pty::typed(h.as_fd(), &bytes);
    let Some(pgid) = p.ptys.foreground(n).filter(|_| !signals.is_empty()) else { return };
    for sig in signals {
        crate::syscall::signal::terminal_signal(p, tid, pgid, sig);
    }
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

/// Whether `file` is a pipe or a socket (`ESPIPE` for the calls that take file offsets).
fn is_pipe(file: &OpenFile) -> bool {
    match &file.backing {
        Backing::Pipe(_) | Backing::Socket(_) => true,
        Backing::Host(h) => host_stat(h.as_raw_fd()).is_ok_and(|st| matches!(st.mode & S_IFMT, libc::S_IFIFO | libc::S_IFSOCK)),
        _ => false,
    }
}

/// `fadvise64(fd, offset, len, advice)`: advice is checked and taken as given; the vNode's
/// files are read through the VMM, which keeps no page cache to act on it.
pub fn fadvise64(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [fd, _, len, advice, ..] = a;
    let file = p.fds.get(fdarg(fd))?;
    not_opath(&file).map_err(|_| Errno::EBADF)?;
    if is_pipe(&file) {
        return Err(Errno::ESPIPE);
    }
    if (len as i64) < 0 || advice > 5 {
        return Err(Errno::EINVAL);
    }
    Ok(0)
}

/// `readahead(fd, offset, count)`: a regular file open for reading; nothing to read ahead
/// into (see [`fadvise64`]).
pub fn readahead(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = p.fds.get(fdarg(a[0]))?;
    if !file.readable() {
        return Err(Errno::EBADF);
    }
    match &file.backing {
        Backing::File(f) if f.stat()?.mode & S_IFMT == S_IFREG => Ok(0),
        _ => Err(Errno::EINVAL),
    }
}

/// `sync_file_range(fd, offset, nbytes, flags)`: with `SYNC_FILE_RANGE_WRITE`, the file's data
/// is synced (all of it, which is more than asked); the wait flags then have nothing left to
/// wait for.
pub fn sync_file_range(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    const SYNC_FILE_RANGE_WRITE: u64 = 2;
    let [fd, offset, nbytes, flags, ..] = a;
    if flags & !7 != 0 || (offset as i64) < 0 || (nbytes as i64) < 0 {
        return Err(Errno::EINVAL);
    }
    let file = p.fds.get(fdarg(fd))?;
    not_opath(&file).map_err(|_| Errno::EBADF)?;
    if is_pipe(&file) {
        return Err(Errno::ESPIPE);
    }
    match &file.backing {
        Backing::File(f) if flags & SYNC_FILE_RANGE_WRITE != 0 => f.sync(true).map(|()| 0),
        _ => Ok(0),
    }
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
