//! POSIX message queues: `mq_open`, `mq_unlink`, `mq_timedsend`, `mq_timedreceive`,
//! `mq_notify` and `mq_getsetattr` over the run's table of queues ([`crate::mqueue`]). A send
//! to a full queue and a receive from an empty one wait as the System V calls do (without the
//! process lock, `EINTR` on a signal) until the queue changes or the absolute
//! `CLOCK_REALTIME` timeout passes (`ETIMEDOUT`); with `O_NONBLOCK` they fail with `EAGAIN`.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lego_proto::sync::LockExt;

use super::ipcwait::{block_on, wait_key, wake_all};
use super::{Args, Cpu};
use crate::anonfd::AnonFile;
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::mqueue::{Mq, Notify, Open, Receiving, MQ_PRIO_MAX};
use crate::process::{Locked, Process};
use crate::signal::{SigInfo, SI_MESGQ};

/// The kind of a message queue's wait queue keys ([`wait_key`]).
const WAITS: u64 = 3;
const SIGEV_SIGNAL: i32 = 0;
const SIGEV_NONE: i32 = 1;

/// `mq_open(name, flags, mode, attr)`: a descriptor of the queue (close-on-exec, as Linux's).
pub fn mq_open(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [name, flags, mode, attr, ..] = a;
    let name = p.mm.read_cstr(name, 4096)?;
    let flags = flags as i32;
    let create = flags & libc::O_CREAT != 0;
    let attr = if create && attr != 0 {
        // struct mq_attr: mq_flags, mq_maxmsg, mq_msgsize, mq_curmsgs (longs).
        Some((p.mm.read_u64(attr + 8)? as i64, p.mm.read_u64(attr + 16)? as i64))
    } else {
        None
    };
    let mode = (mode as u32) & !p.umask & 0o777;
    let open = Open { name: &name, create, exclusive: flags & libc::O_EXCL != 0, mode, attr };
    let (q, made) = p.mqueues.open(&open, &p.creds)?;
    let access = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => 0o444,
        libc::O_WRONLY => 0o222,
        libc::O_RDWR => 0o666,
        _ => return Err(Errno::EINVAL),
    };
    if !made && !q.perm.grants(&p.creds, access) {
        return Err(Errno::EACCES);
    }
    let status = flags & (libc::O_ACCMODE | libc::O_NONBLOCK);
    let file = OpenFile::new(Backing::Anon(AnonFile::Mqueue(q)), b"/dev/mqueue".to_vec(), status);
    p.fds.alloc(file, 0, true)
}

/// `mq_unlink(name)`.
pub fn mq_unlink(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let name = p.mm.read_cstr(a[0], 4096)?;
    p.mqueues.unlink(&name, &p.creds).map(|()| 0)
}

/// The queue descriptor `fd` stands for, with its description.
fn queue_of(p: &Process, fd: u64) -> SysResult<(Arc<OpenFile>, Arc<Mq>)> {
    let file = p.fds.get(u64::from(fd as u32))?;
    let Backing::Anon(AnonFile::Mqueue(q)) = &file.backing else { return Err(Errno::EBADF) };
    let q = q.clone();
    Ok((file, q))
}

/// The instant of the absolute `CLOCK_REALTIME` time at `at` (null: none).
fn deadline(p: &Process, at: u64) -> SysResult<Option<Instant>> {
    let Some(abs) = super::poll::read_timespec(p, at)? else { return Ok(None) };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(Some(Instant::now() + abs.saturating_sub(now)))
}

/// `mq_timedsend(fd, msg, len, prio, timeout)`.
pub fn mq_timedsend(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [fd, msg, len, prio, timeout, ..] = a;
    // In Linux's order: the priority, the timeout, the descriptor, the length.
    if prio >= u64::from(MQ_PRIO_MAX) {
        return Err(Errno::EINVAL);
    }
    let until = deadline(p, timeout)?;
    let (file, q) = queue_of(p, fd)?;
    if file.status() & libc::O_ACCMODE == libc::O_RDONLY {
        return Err(Errno::EBADF);
    }
    if len > q.msgsize as u64 {
        return Err(Errno(libc::EMSGSIZE));
    }
    let mut text = vec![0u8; len as usize];
    p.mm.read_user(msg, &mut text)?;
    let key = wait_key(WAITS, q.id as i32);
    let nowait = (file.status() & libc::O_NONBLOCK != 0).then_some(Errno::EAGAIN);
    let notify = block_on(p, cpu.tid, key, until, nowait, || q.try_send(&text, prio as u32).map(Ok))?;
    wake_all(p, key);
    if let Some(n) = notify.filter(|n| n.signo != 0) {
        // The one who asked hears of it once; a process gone meanwhile hears nothing.
        if let Ok(targets) = p.procs.kill_targets(p.pid, n.pid) {
            let info = SigInfo { value: n.value, ..SigInfo::sent(n.signo, SI_MESGQ, p.pid, p.creds.uid) };
            super::signal::send(p, cpu.tid, targets, info);
        }
    }
    Ok(0)
}

/// `mq_timedreceive(fd, msg, len, prio, timeout)`: the first message of the highest priority;
/// returns its length.
pub fn mq_timedreceive(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [fd, msg, len, prio_at, timeout, ..] = a;
    let until = deadline(p, timeout)?;
    let (file, q) = queue_of(p, fd)?;
    if file.status() & libc::O_ACCMODE == libc::O_WRONLY {
        return Err(Errno::EBADF);
    }
    if len < q.msgsize as u64 {
        return Err(Errno(libc::EMSGSIZE));
    }
    let key = wait_key(WAITS, q.id as i32);
    let nowait = (file.status() & libc::O_NONBLOCK != 0).then_some(Errno::EAGAIN);
    let (text, prio) = block_on(p, cpu.tid, key, until, nowait, || q.try_receive().map(Ok).map_err(|_| Receiving::new(q.clone())))?;
    wake_all(p, key);
    p.mm.write_user(msg, &text)?;
    if prio_at != 0 {
        p.mm.write_user(prio_at, &prio.to_le_bytes())?;
    }
    Ok(text.len() as u64)
}

/// `mq_notify(fd, sevp)`: registers the caller for a signal (or nothing) when a message comes
/// to the empty queue; a null `sevp` takes the registration back.
pub fn mq_notify(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [fd, sevp, ..] = a;
    let notify = if sevp == 0 {
        None
    } else {
        // struct sigevent: sigev_value (8 bytes), sigev_signo, sigev_notify.
        let value = p.mm.read_u64(sevp)?;
        let (signo, how) = (p.mm.read_u32(sevp + 8)? as i32, p.mm.read_u32(sevp + 12)? as i32);
        match how {
            SIGEV_NONE => Some(Notify { pid: p.pid, signo: 0, value }),
            SIGEV_SIGNAL if (1..=64).contains(&signo) => Some(Notify { pid: p.pid, signo, value }),
            _ => return Err(Errno::EINVAL),
        }
    };
    let (_, q) = queue_of(p, fd)?;
    // A registration goes with its process (Linux takes it back when the process closes the
    // descriptor it registered by).
    let procs = p.procs.clone();
    q.set_notify(p.pid, notify, |pid| crate::anonfd::Exits::ended(&*procs, pid)).map(|()| 0)
}

/// `mq_getsetattr(fd, new, old)`: the queue's attributes; only `O_NONBLOCK` of the
/// description changes.
pub fn mq_getsetattr(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [fd, new, old, ..] = a;
    let (file, q) = queue_of(p, fd)?;
    let flags = if new != 0 { Some(p.mm.read_u64(new)? as i64) } else { None };
    if flags.is_some_and(|f| f & !(libc::O_NONBLOCK as i64) != 0) {
        return Err(Errno::EINVAL);
    }
    if old != 0 {
        let now = (file.status() & libc::O_NONBLOCK) as u64;
        let mut b = [0u8; 64];
        for (i, v) in [now, q.maxmsg as u64, q.msgsize as u64, q.len() as u64].into_iter().enumerate() {
            b[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
        }
        p.mm.write_user(old, &b)?;
    }
    if let Some(f) = flags {
        let mut status = file.status.lock_unpoisoned();
        *status = (*status & !libc::O_NONBLOCK) | f as i32;
    }
    Ok(0)
}
