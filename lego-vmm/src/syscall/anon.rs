//! Descriptors the VMM answers itself ([`crate::anonfd`]): `signalfd`/`signalfd4`, reading
//! them, `pidfd_open` and `pidfd_send_signal`.

use lego_proto::sync::LockExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Args, Cpu};
use crate::delivery;
use crate::anonfd::{signalfd_siginfo, AnonFile, SIGNALFD_SIZE};
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::process::{Locked, Process};
use crate::signal::{UNBLOCKABLE};

const SFD_CLOEXEC: u64 = libc::O_CLOEXEC as u64;
const SFD_NONBLOCK: u64 = libc::O_NONBLOCK as u64;

/// `signalfd4(fd, mask, size, flags)`: a new signalfd (`fd == -1`) or a new mask for one.
pub fn signalfd4(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [fd, mask, size, flags, ..] = a;
    if size != 8 || flags & !(SFD_CLOEXEC | SFD_NONBLOCK) != 0 {
        return Err(Errno::EINVAL);
    }
    let mask = p.mm.read_u64(mask)? & !UNBLOCKABLE;
    if fd as i32 != -1 {
        let file = p.fds.get(u64::from(fd as u32))?;
        let Backing::Anon(AnonFile::Signal(m)) = &file.backing else {
            return Err(Errno::EINVAL);
        };
        *m.lock_unpoisoned() = mask;
        return Ok(fd);
    }
    let status = libc::O_RDWR | (flags & SFD_NONBLOCK) as i32;
    let anon = AnonFile::Signal(Mutex::new(mask));
    let file = OpenFile::new(
        Backing::Anon(anon),
        b"anon_inode:[signalfd]".to_vec(),
        status,
    );
    p.fds.alloc(file, 0, flags & SFD_CLOEXEC != 0)
}

/// `signalfd(fd, mask, size)`.
pub fn signalfd(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    signalfd4(p, cpu, [a[0], a[1], a[2], 0, 0, 0])
}

/// How long a blocking signalfd read sleeps before it looks again: the signals it takes are
/// blocked, so their arrival does not interrupt the sleep.
const SIGNAL_SLICE: Duration = Duration::from_millis(5);

/// `read` of an anonymous descriptor into `(addr, len)`: a signalfd takes as many of the
/// caller's pending signals of its mask as fit, waiting for one unless the descriptor is
/// non-blocking (`EAGAIN`); a signal the caller does not block ends the wait (`EINTR`). A pidfd
/// cannot be read.
pub fn read_anon(
    p: &mut Locked<'_>,
    tid: i32,
    file: &OpenFile,
    anon: &AnonFile,
    (addr, len): (u64, u64),
) -> SysResult<u64> {
    let AnonFile::Signal(_) = anon else {
        if let AnonFile::Mqueue(q) = anon {
            return read_text(p, file, &q.describe(), addr, len);
        }
        return Err(Errno::EINVAL);
    };
    if len < SIGNALFD_SIZE as u64 {
        return Err(Errno::EINVAL);
    }
    let group = p.group.clone();
    loop {
        let mask = anon.signal_mask();
        let mut out = Vec::new();
        while out.len() + SIGNALFD_SIZE <= len as usize {
            let Some(info) = delivery::take(p, tid, mask) else {
                break;
            };
            out.extend_from_slice(&signalfd_siginfo(&info));
        }
        if !out.is_empty() {
            p.mm.write_user(addr, &out)?;
            return Ok(out.len() as u64);
        }
        if file.status() & libc::O_NONBLOCK != 0 {
            return Err(Errno::EAGAIN);
        }
        let until = Instant::now() + SIGNAL_SLICE;
        p.unlocked(|| group.sleep_until(tid, Some(until)))?;
    }
}

/// `pidfd_open(pid, flags)`: a descriptor of process `pid` of the run, readable once it ended.
pub fn pidfd_open(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [pid, flags, ..] = a;
    let pid = pid as i32;
    if flags & !(libc::O_NONBLOCK as u64) != 0 || pid <= 0 {
        return Err(Errno::EINVAL);
    }
    // A thread id that is not a process is EINVAL on Linux; a gone process is ESRCH.
    p.procs.pgid(pid)?;
    let anon = AnonFile::Pid {
        pid,
        procs: p.procs.clone(),
    };
    let file = OpenFile::new(
        Backing::Anon(anon),
        b"anon_inode:[pidfd]".to_vec(),
        libc::O_RDWR | flags as i32,
    );
    p.fds.alloc(file, 0, true)
}

/// `pidfd_send_signal(pidfd, sig, info, flags)`: `kill` through a pidfd (`info` must be null).
pub fn pidfd_send_signal(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [fd, sig, info, flags, ..] = a;
    if flags != 0 || info != 0 {
        return Err(Errno::EINVAL);
    }
    let file = p.fds.get(u64::from(fd as u32))?;
    let Backing::Anon(AnonFile::Pid { pid, procs }) = &file.backing else {
        return Err(Errno::EBADF);
    };
    if procs.ended(*pid) {
        return Err(Errno::ESRCH);
    }
    super::signal::kill(p, cpu, [*pid as u64, sig, 0, 0, 0, 0])
}

/// A read at the description's offset of `text` (what a message queue's descriptor reads).
fn read_text(p: &Locked<'_>, file: &OpenFile, text: &[u8], addr: u64, len: u64) -> SysResult<u64> {
    let mut offset = file.offset.lock_unpoisoned();
    let rest = text.get(*offset as usize..).unwrap_or_default();
    let n = rest.len().min(usize::try_from(len).unwrap_or(usize::MAX));
    p.mm.write_user(addr, &rest[..n])?;
    *offset += n as u64;
    Ok(n as u64)
}
