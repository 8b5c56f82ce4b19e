//! File calls beyond plain I/O: `preadv`/`pwritev` and their `2` forms, `sendfile`,
//! `copy_file_range`, `fallocate`, `close_range`, `memfd_create` and `mknod`/`mknodat`.

use lego_proto::sync::LockExt;
use std::sync::Arc;

use super::fs::common::{check_mode, fdarg, host_read, host_write};
use super::fs::data::{do_read, do_write, read_iovecs};
use super::fs::paths::at_path;
use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::fs::memfd::MemFile;
use crate::process::Process;

const RWF_HIPRI: u64 = 1;
const RWF_DSYNC: u64 = 2;
const RWF_SYNC: u64 = 4;
const RWF_NOWAIT: u64 = 8;
const RWF_APPEND: u64 = 16;
/// Largest piece `sendfile` and `copy_file_range` move at once.
const CHUNK: usize = 1 << 20;

/// The description and position of a vectored positioned call: `-1` (the `2` forms) is the
/// description's own offset.
fn vectored(
    p: &Process,
    fd: u64,
    pos: u64,
    write: bool,
    minus_one: bool,
) -> SysResult<(Arc<OpenFile>, Option<u64>)> {
    let file = p.fds.get(fdarg(fd))?;
    check_mode(&file, write)?;
    let pos = pos as i64;
    if minus_one && pos == -1 {
        return Ok((file, None));
    }
    if pos < 0 {
        return Err(Errno::EINVAL);
    }
    if matches!(file.backing, Backing::Pipe(_) | Backing::Anon(_) | Backing::Socket(_) | Backing::Epoll(_)) {
        return Err(Errno::ESPIPE);
    }
    Ok((file, Some(pos as u64)))
}

pub fn preadv(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (file, pos) = vectored(p, a[0], a[3], false, false)?;
    let segs = read_iovecs(p, a[1], a[2])?;
    do_read(p, &file, &segs, pos)
}

pub fn pwritev(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (file, pos) = vectored(p, a[0], a[3], true, false)?;
    let segs = read_iovecs(p, a[1], a[2])?;
    do_write(p, cpu.tid, &file, &segs, pos)
}

fn check_rwf(flags: u64) -> SysResult<()> {
    if flags & !(RWF_HIPRI | RWF_DSYNC | RWF_SYNC | RWF_NOWAIT | RWF_APPEND) != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    Ok(())
}

/// `preadv2(fd, iov, n, pos_l, pos_h, flags)`: the flags are hints here, but `RWF_NOWAIT` on a
/// pipe or the terminal does not wait.
pub fn preadv2(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    check_rwf(a[5])?;
    let (file, pos) = vectored(p, a[0], a[3], false, true)?;
    let segs = read_iovecs(p, a[1], a[2])?;
    do_read(p, &file, &segs, pos)
}

/// `pwritev2(fd, iov, n, pos_l, pos_h, flags)`: `RWF_APPEND` writes at the end; `RWF_DSYNC` and
/// `RWF_SYNC` sync the file afterwards.
pub fn pwritev2(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[5];
    check_rwf(flags)?;
    let (file, mut pos) = vectored(p, a[0], a[3], true, true)?;
    if flags & RWF_APPEND != 0 {
        if let Backing::File(f) = &file.backing {
            pos = Some(f.stat()?.size);
        }
    }
    let segs = read_iovecs(p, a[1], a[2])?;
    let n = do_write(p, cpu.tid, &file, &segs, pos)?;
    if flags & (RWF_DSYNC | RWF_SYNC) != 0 {
        if let Backing::File(f) = &file.backing {
            f.sync(flags & RWF_SYNC == 0)?;
        }
    }
    Ok(n)
}

/// Reads into `buf` from `file` at `pos` (or its offset, which moves).
fn get(file: &OpenFile, buf: &mut [u8], pos: Option<u64>) -> SysResult<usize> {
    let nonblock = file.status() & libc::O_NONBLOCK != 0;
    match (&file.backing, pos) {
        (Backing::File(f), Some(at)) => f.read_at(buf, at),
        (Backing::File(f), None) => {
            let mut off = file.offset.lock_unpoisoned();
            let n = f.read_at(buf, *off)?;
            *off += n as u64;
            Ok(n)
        }
        (Backing::Pipe(end), None) if !end.is_write_end() => end.read(buf, nonblock),
        (Backing::Host(h), pos) => host_read(std::os::fd::AsRawFd::as_raw_fd(h), buf, pos),
        _ => Err(Errno::EINVAL),
    }
}

/// Writes `data` to `file` at `pos` (or its offset, which moves; at its end with `O_APPEND`).
fn put(file: &OpenFile, data: &[u8], pos: Option<u64>) -> SysResult<usize> {
    let nonblock = file.status() & libc::O_NONBLOCK != 0;
    match (&file.backing, pos) {
        (Backing::File(f), Some(at)) => f.write_at(data, at),
        (Backing::File(f), None) => {
            let mut off = file.offset.lock_unpoisoned();
            let at = if file.status() & libc::O_APPEND != 0 {
                f.stat()?.size
            } else {
                *off
            };
            let n = f.write_at(data, at)?;
            *off = at + n as u64;
            Ok(n)
        }
        (Backing::Pipe(end), None) if end.is_write_end() => end.write(data, nonblock),
        (Backing::Host(h), pos) => host_write(std::os::fd::AsRawFd::as_raw_fd(h), data, pos),
        _ => Err(Errno::EINVAL),
    }
}

/// Moves up to `count` bytes from `input` (at `*from`, advanced, or its offset) to `output`
/// (likewise `to`); returns the bytes moved (a short count at the end of the input).
fn transfer(
    input: &OpenFile,
    mut from: Option<u64>,
    output: &OpenFile,
    mut to: Option<u64>,
    count: u64,
) -> SysResult<(u64, Option<u64>, Option<u64>)> {
    let mut done = 0u64;
    let mut buf = vec![0u8; CHUNK.min(count as usize)];
    while done < count {
        let want = (count - done).min(buf.len() as u64) as usize;
        let n = match get(input, &mut buf[..want], from) {
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        let mut written = 0;
        while written < n {
            match put(output, &buf[written..n], to) {
                Ok(w) => {
                    written += w;
                    to = to.map(|t| t + w as u64);
                }
                Err(e) if done == 0 && written == 0 => return Err(e),
                Err(_) => return Ok((done + written as u64, from.map(|f| f + written as u64), to)),
            }
        }
        from = from.map(|f| f + n as u64);
        done += n as u64;
    }
    Ok((done, from, to))
}

/// Reads the `loff_t` at `addr` (null: `None`).
fn read_off(p: &Process, addr: u64) -> SysResult<Option<u64>> {
    if addr == 0 {
        return Ok(None);
    }
    let v = p.mm.read_u64(addr)? as i64;
    if v < 0 {
        return Err(Errno::EINVAL);
    }
    Ok(Some(v as u64))
}

/// `sendfile(out, in, offset, count)`: from a file (at `*offset`, which is updated, or its
/// offset) to any writable descriptor.
pub fn sendfile(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [out_fd, in_fd, off_addr, count, ..] = a;
    let (output, input) = (p.fds.get(fdarg(out_fd))?, p.fds.get(fdarg(in_fd))?);
    check_mode(&input, false)?;
    check_mode(&output, true)?;
    if !matches!(input.backing, Backing::File(_)) {
        return Err(Errno::EINVAL);
    }
    if output.status() & libc::O_APPEND != 0 && matches!(output.backing, Backing::File(_)) {
        return Err(Errno::EINVAL);
    }
    let from = read_off(p, off_addr)?;
    let (done, from, _) = transfer(&input, from, &output, None, count.min(0x7fff_f000))?;
    if let Some(f) = from.filter(|_| off_addr != 0) {
        p.mm.write_u64(off_addr, f)?;
    }
    Ok(done)
}

/// `copy_file_range(in, off_in, out, off_out, len, flags)` between regular files.
pub fn copy_file_range(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [in_fd, off_in, out_fd, off_out, len, flags] = a;
    if flags != 0 {
        return Err(Errno::EINVAL);
    }
    let (input, output) = (p.fds.get(fdarg(in_fd))?, p.fds.get(fdarg(out_fd))?);
    check_mode(&input, false)?;
    check_mode(&output, true)?;
    let (Backing::File(fi), Backing::File(fo)) = (&input.backing, &output.backing) else {
        return Err(Errno::EINVAL);
    };
    if output.status() & libc::O_APPEND != 0 {
        return Err(Errno::EBADF);
    }
    let (si, so) = (fi.stat()?, fo.stat()?);
    if si.mode & libc::S_IFMT != libc::S_IFREG || so.mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Errno::EINVAL);
    }
    let (from, to) = (read_off(p, off_in)?, read_off(p, off_out)?);
    if (si.dev, si.ino) == (so.dev, so.ino) {
        let a_at = from.unwrap_or_else(|| *input.offset.lock_unpoisoned());
        let b_at = to.unwrap_or_else(|| *output.offset.lock_unpoisoned());
        if a_at < b_at.saturating_add(len) && b_at < a_at.saturating_add(len) {
            return Err(Errno::EINVAL);
        }
    }
    let (done, from, to) = transfer(&input, from, &output, to, len.min(0x7fff_f000))?;
    if let Some(f) = from.filter(|_| off_in != 0) {
        p.mm.write_u64(off_in, f)?;
    }
    if let Some(t) = to.filter(|_| off_out != 0) {
        p.mm.write_u64(off_out, t)?;
    }
    Ok(done)
}

const FALLOC_FL_KEEP_SIZE: u64 = 1;
const FALLOC_FL_PUNCH_HOLE: u64 = 2;
const FALLOC_FL_ZERO_RANGE: u64 = 0x10;

/// `fallocate(fd, mode, offset, len)`: the file systems underneath allocate as they write, so
/// reserving space is making the file long enough (mode 0) or nothing (`KEEP_SIZE`); punching a
/// hole or zeroing a range writes zeroes.
pub fn fallocate(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [fd, mode, offset, len, ..] = a;
    let (offset, len) = (offset as i64, len as i64);
    if offset < 0 || len <= 0 {
        return Err(Errno::EINVAL);
    }
    let end = offset.checked_add(len).ok_or(Errno::EFBIG)? as u64;
    let file = p.fds.get(fdarg(fd))?;
    check_mode(&file, true)?;
    let f = match &file.backing {
        Backing::File(f) => f,
        Backing::Pipe(_) => return Err(Errno::ESPIPE),
        _ => return Err(Errno::ENODEV),
    };
    let st = f.stat()?;
    match st.mode & libc::S_IFMT {
        libc::S_IFREG => {}
        libc::S_IFDIR => return Err(Errno::EISDIR),
        _ => return Err(Errno::ENODEV),
    }
    let zero = |from: u64, to: u64| -> SysResult<()> {
        let chunk = vec![0u8; CHUNK];
        let mut at = from;
        while at < to {
            let n = (to - at).min(CHUNK as u64) as usize;
            at += f.write_at(&chunk[..n], at)? as u64;
        }
        Ok(())
    };
    match mode {
        0 | FALLOC_FL_KEEP_SIZE => {}
        m if m == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE => {
            zero(offset as u64, end.min(st.size))?;
            return Ok(0);
        }
        FALLOC_FL_ZERO_RANGE => zero(offset as u64, end.min(st.size))?,
        m if m == FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE => {
            zero(offset as u64, end.min(st.size))?;
            return Ok(0);
        }
        FALLOC_FL_PUNCH_HOLE => return Err(Errno::EINVAL),
        _ => return Err(Errno::EOPNOTSUPP),
    }
    if mode & FALLOC_FL_KEEP_SIZE == 0 && end > st.size {
        f.set_len(end)?;
    }
    Ok(0)
}

const CLOSE_RANGE_UNSHARE: u64 = 2;
const CLOSE_RANGE_CLOEXEC: u64 = 4;

/// `close_range(first, last, flags)`: closes (or with `CLOSE_RANGE_CLOEXEC` marks close-on-exec)
/// every open descriptor from `first` to `last`. A process's table is its own already, so
/// `CLOSE_RANGE_UNSHARE` changes nothing.
pub fn close_range(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [first, last, flags, ..] = a;
    let (first, last) = (u64::from(first as u32), u64::from(last as u32));
    if flags & !(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC) != 0 || first > last {
        return Err(Errno::EINVAL);
    }
    for fd in first..=last.min(p.fds.limit as u64) {
        let Ok(file) = p.fds.get(fd) else { continue };
        if flags & CLOSE_RANGE_CLOEXEC != 0 {
            p.fds.set_cloexec(fd, true)?;
        } else {
            super::locks::closing(p, &file);
            p.fds.close(fd)?;
        }
    }
    Ok(0)
}

const MFD_CLOEXEC: u64 = 1;
const MFD_ALLOW_SEALING: u64 = 2;
const MFD_NOEXEC_SEAL: u64 = 8;
const MFD_EXEC: u64 = 0x10;
/// Longest memfd name (Linux's `MFD_NAME_MAX_LEN`).
const MFD_NAME_MAX: usize = 249;

/// `memfd_create(name, flags)`: a file in the VMM's memory ([`MemFile`]), at most as large as
/// the vNode's memory (`EFBIG` beyond). Seals are not
/// provided (`F_ADD_SEALS` fails), and huge pages are not asked for (`EINVAL`).
pub fn memfd_create(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [name, flags, ..] = a;
    if flags & !(MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL | MFD_EXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let name = p.mm.read_cstr(name, MFD_NAME_MAX + 1)?;
    if name.len() > MFD_NAME_MAX {
        return Err(Errno::EINVAL);
    }
    let mut path = b"/memfd:".to_vec();
    path.extend_from_slice(&name);
    path.extend_from_slice(b" (deleted)");
    let file = MemFile::new(p.mm.window().unique_id(), p.mm.size(), p.creds.euid, p.creds.egid);
    let status = libc::O_RDWR | 0o100000;
    p.fds.alloc(
        OpenFile::new(Backing::File(Box::new(file)), path, status),
        0,
        flags & MFD_CLOEXEC != 0,
    )
}

/// `mknodat(dirfd, path, mode, dev)`: a regular file (type 0 or `S_IFREG`) is created as
/// `open(O_CREAT | O_EXCL)` makes it, a FIFO ([`crate::fifo`] gives it its pipe) or a socket
/// node by the file system. Devices would need node types the vNode file systems do not keep:
/// `EPERM`.
pub fn mknodat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [dirfd, addr, mode, ..] = a;
    let mode = mode as u32;
    let path = at_path(p, dirfd, addr)?;
    match mode & libc::S_IFMT {
        0 | libc::S_IFREG => {
            let perm = mode & 0o7777 & !p.umask;
            p.fs.open(&path, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, perm, p.creds.creator()).map(|_| 0)
        }
        kind @ (libc::S_IFIFO | libc::S_IFSOCK) => p.fs.mknod(&path, kind | (mode & 0o7777 & !p.umask), p.creds.creator()).map(|_| 0),
        libc::S_IFCHR | libc::S_IFBLK => Err(Errno::EPERM),
        _ => Err(Errno::EINVAL),
    }
}

/// `mknod(path, mode, dev)`.
pub fn mknod(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    mknodat(p, cpu, [libc::AT_FDCWD as u64, a[0], a[1], a[2], 0, 0])
}
