//! File-lock system calls: `fcntl`'s record-lock commands (`F_GETLK`, `F_SETLK`, `F_SETLKW` and
//! their `F_OFD_*` twins) and `flock`, over the vNode's [`crate::locks::LockTable`]. Every other
//! `fcntl` command is [`super::fs::control::fcntl`]'s.

use lego_proto::sync::LockExt;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::locks::{FileKey, Kind, Owner, RangeLock, Wait};
use crate::process::{Locked, Process};
use crate::threads::ThreadGroup;

const F_GETLK: i32 = 5;
const F_SETLK: i32 = 6;
const F_SETLKW: i32 = 7;
const F_OFD_GETLK: i32 = 36;
const F_OFD_SETLK: i32 = 37;
const F_OFD_SETLKW: i32 = 38;
const F_RDLCK: i16 = 0;
const F_WRLCK: i16 = 1;
const F_UNLCK: i16 = 2;
/// Size of `struct flock`.
const FLOCK_SIZE: usize = 32;

const LOCK_SH: u64 = 1;
const LOCK_EX: u64 = 2;
const LOCK_NB: u64 = 4;
const LOCK_UN: u64 = 8;

/// The identity of the file behind a description.
fn key(file: &OpenFile) -> SysResult<FileKey> {
    match &file.backing {
        Backing::File(f) => f.stat().map(|st| (st.dev, st.ino)),
        Backing::Host(h) => {
            // SAFETY: an all-zero stat is valid; fstat fills it.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: `st` is a valid, writable stat and the descriptor is open.
            if unsafe { libc::fstat(h.as_raw_fd(), &mut st) } != 0 {
                return Err(Errno::last());
            }
            Ok((st.st_dev, st.st_ino))
        }
        Backing::Pipe(end) => Ok((0xc, end.id() >> 4)),
        Backing::Anon(_) | Backing::Socket(_) | Backing::Epoll(_) => Ok((0xd, file as *const OpenFile as u64)),
    }
}

/// A wait of thread `tid` for a lock: on the waker's eventfd and the thread's interrupt.
struct HostWait {
    group: Arc<ThreadGroup>,
    tid: i32,
}

impl Wait for HostWait {
    fn wait(&mut self, wake: &EventFd) -> SysResult<()> {
        let fds = [libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        self.group.poll_host(self.tid, &fds, None).map(drop)
    }
}

/// `fcntl`: record locks here, every other command in [`super::fs::control::fcntl`].
pub fn fcntl(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let cmd = a[1] as i32;
    if !matches!(
        cmd,
        F_GETLK | F_SETLK | F_SETLKW | F_OFD_GETLK | F_OFD_SETLK | F_OFD_SETLKW
    ) {
        return super::fs::control::fcntl(p, cpu, a);
    }
    let file = p.fds.get(u64::from(a[0] as u32))?;
    if file.status() & libc::O_PATH != 0 {
        return Err(Errno::EBADF);
    }
    let arg = a[2];
    let mut fl = [0u8; FLOCK_SIZE];
    p.mm.read_user(arg, &mut fl)?;
    let l_type = i16::from_le_bytes([fl[0], fl[1]]);
    let kind = match l_type {
        F_RDLCK => Some(Kind::Read),
        F_WRLCK => Some(Kind::Write),
        F_UNLCK => None,
        _ => return Err(Errno::EINVAL),
    };
    let ofd = matches!(cmd, F_OFD_GETLK | F_OFD_SETLK | F_OFD_SETLKW);
    // OFD locks need l_pid 0.
    if ofd && fl[24..28] != [0; 4] {
        return Err(Errno::EINVAL);
    }
    let (start, end) = range(&file, &fl)?;
    let owner = if ofd {
        file.lock_owner()
    } else {
        Owner::Process(p.pid)
    };
    let fkey = key(&file)?;
    let table = p.locks.clone();
    if matches!(cmd, F_GETLK | F_OFD_GETLK) {
        let kind = kind.ok_or(Errno::EINVAL)?;
        let found = table.conflict(
            fkey,
            &RangeLock {
                owner,
                kind,
                start,
                end,
            },
        );
        let mut out = fl;
        match found {
            None => out[0..2].copy_from_slice(&F_UNLCK.to_le_bytes()),
            Some(l) => {
                let t = if l.kind == Kind::Write {
                    F_WRLCK
                } else {
                    F_RDLCK
                };
                let len = if l.end == u64::MAX {
                    0
                } else {
                    l.end - l.start + 1
                };
                let pid = match l.owner {
                    Owner::Process(pid) => pid,
                    Owner::Description(_) => -1,
                };
                out[0..2].copy_from_slice(&t.to_le_bytes());
                out[2..4].copy_from_slice(&0i16.to_le_bytes());
                out[8..16].copy_from_slice(&l.start.to_le_bytes());
                out[16..24].copy_from_slice(&len.to_le_bytes());
                out[24..28].copy_from_slice(&pid.to_le_bytes());
            }
        }
        p.mm.write_user(arg, &out)?;
        return Ok(0);
    }
    match kind {
        Some(Kind::Read) if !file.readable() => return Err(Errno::EBADF),
        Some(Kind::Write) if !file.writable() => return Err(Errno::EBADF),
        _ => {}
    }
    if ofd {
        *file.locks.lock_unpoisoned() = Some(table.clone());
    }
    if matches!(cmd, F_SETLKW | F_OFD_SETLKW) && kind.is_some() {
        let mut wait = HostWait {
            group: p.group.clone(),
            tid: cpu.tid,
        };
        p.unlocked(|| table.set(fkey, owner, kind, start, end, Some(&mut wait)))?;
    } else {
        table.set(fkey, owner, kind, start, end, None)?;
    }
    Ok(0)
}

/// Bytes `start..=end` a `struct flock` names (`l_whence`, `l_start`, `l_len`).
fn range(file: &OpenFile, fl: &[u8; FLOCK_SIZE]) -> SysResult<(u64, u64)> {
    let whence = i16::from_le_bytes([fl[2], fl[3]]);
    let start = i64::from_le_bytes(fl[8..16].try_into().unwrap_or_default());
    let len = i64::from_le_bytes(fl[16..24].try_into().unwrap_or_default());
    let base: i64 = match whence as i32 {
        libc::SEEK_SET => 0,
        libc::SEEK_CUR => *file.offset.lock_unpoisoned() as i64,
        libc::SEEK_END => match &file.backing {
            Backing::File(f) => f.stat()?.size as i64,
            _ => 0,
        },
        _ => return Err(Errno::EINVAL),
    };
    let start = base.checked_add(start).ok_or(Errno::EOVERFLOW)?;
    let (s, e) = match len {
        0 => (start, i64::MAX),
        l if l > 0 => (start, start.checked_add(l - 1).ok_or(Errno::EOVERFLOW)?),
        l => (start.checked_add(l).ok_or(Errno::EINVAL)?, start - 1),
    };
    if s < 0 {
        return Err(Errno::EINVAL);
    }
    Ok((s as u64, if e == i64::MAX { u64::MAX } else { e as u64 }))
}

/// `flock(fd, op)`.
pub fn flock(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = p.fds.get(u64::from(a[0] as u32))?;
    if file.status() & libc::O_PATH != 0 {
        return Err(Errno::EBADF);
    }
    let op = a[1];
    let kind = match op & !LOCK_NB {
        LOCK_SH => Some(Kind::Read),
        LOCK_EX => Some(Kind::Write),
        LOCK_UN => None,
        _ => return Err(Errno::EINVAL),
    };
    let (fkey, owner, table) = (key(&file)?, file.lock_owner(), p.locks.clone());
    *file.locks.lock_unpoisoned() = Some(table.clone());
    if op & LOCK_NB == 0 && kind.is_some() {
        let mut wait = HostWait {
            group: p.group.clone(),
            tid: cpu.tid,
        };
        p.unlocked(|| table.flock(fkey, owner, kind, Some(&mut wait)))?;
    } else {
        table.flock(fkey, owner, kind, None)?;
    }
    Ok(0)
}

/// Process `p` is closing a descriptor of `file`: its POSIX record locks on the file go, as
/// POSIX has it (whatever descriptor took them).
pub fn closing(p: &Process, file: &OpenFile) {
    if p.locks.holds_posix(p.pid) {
        if let Ok(k) = key(file) {
            p.locks.close_posix(k, p.pid);
        }
    }
}
