//! Moving data between guest memory and backings, through a host buffer of at most
//! [`CHUNK`](super::common::CHUNK) bytes.

use lego_proto::sync::LockExt;
use std::os::fd::AsRawFd;

use super::common::{CHUNK, MAX_RW_COUNT, Segs, UIO_MAXIOV, access_ok, host_read, host_ready, host_write, u64_at};
use crate::delivery;
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::signal::{SigInfo, SI_USER};
use crate::process::Process;

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
pub(in crate::syscall) fn clip(p: &Process, segs: &[(u64, u64)], write: bool) -> SysResult<(Segs, u64)> {
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
pub(in crate::syscall) fn scatter(p: &Process, segs: &[(u64, u64)], skip: u64, data: &[u8]) -> SysResult<()> {
    for (addr, range) in pieces(segs, skip, data.len())? {
        p.mm.write_user(addr, &data[range])?;
    }
    Ok(())
}

/// Fills `buf` from the segment list starting `skip` bytes into it.
pub(in crate::syscall) fn gather(p: &Process, segs: &[(u64, u64)], skip: u64, buf: &mut [u8]) -> SysResult<()> {
    for (addr, range) in pieces(segs, skip, buf.len())? {
        p.mm.read_user(addr, &mut buf[range])?;
    }
    Ok(())
}

/// Reads up to `total` bytes from `src` into the guest segments, chunk by chunk. `src` gets a
/// buffer and the bytes done so far. With `repeat` false (pipes, host descriptors: a short
/// read is normal there, and a second read could block) only one chunk is read; otherwise
/// reading stops at the first short read. An error after some progress returns the progress.
pub(super) fn fill(
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
pub(in crate::syscall) fn do_read(p: &Process, file: &OpenFile, segs: &[(u64, u64)], pos: Option<u64>) -> SysResult<u64> {
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
        // A signalfd is read by `read` itself ([`crate::syscall::anon::read_anon`]); a pidfd is not read.
        Backing::Anon(_) => Err(Errno::EINVAL),
    }
}

/// Writes the guest segments to `file`, at `pos` (`pwrite`) or the description's offset
/// (`O_APPEND`: at the end of the file, for `pwrite` too, as Linux does). `EPIPE` also sends
/// `SIGPIPE` to the calling thread `tid`. The caller has checked the description is writable.
pub(in crate::syscall) fn do_write(p: &mut Process, tid: i32, file: &OpenFile, segs: &[(u64, u64)], pos: Option<u64>) -> SysResult<u64> {
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
        let _ = delivery::post_thread(p, tid, info, Some(tid));
    }
    res
}

/// One guest buffer of a `read`/`write`-style call: `EFAULT` outside the user range, and the
/// length capped at `MAX_RW_COUNT`.
pub(in crate::syscall) fn one_seg(addr: u64, count: u64) -> SysResult<[(u64, u64); 1]> {
    if !access_ok(addr, count) {
        return Err(Errno::EFAULT);
    }
    Ok([(addr, count.min(MAX_RW_COUNT))])
}

/// Reads an `iovec` array: `EINVAL` for more than `UIO_MAXIOV` entries or a negative length,
/// `EFAULT` for an entry outside the user range; the total is capped at `MAX_RW_COUNT` (later
/// entries shortened), as Linux does.
pub(in crate::syscall) fn read_iovecs(p: &Process, addr: u64, count: u64) -> SysResult<Segs> {
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
