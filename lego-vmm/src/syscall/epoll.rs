//! `epoll_create*`, `epoll_ctl`, `epoll_wait`, `epoll_pwait`, `epoll_pwait2` over
//! [`crate::epoll::Epoll`], and `eventfd`/`eventfd2` (a host eventfd).
//!
//! A wait with nothing ready polls the host epoll descriptor without the process lock; when
//! descriptors of the VMM (pipes, signalfds, pidfds) are watched too it looks at them again
//! every [`PIPE_SLICE`], as `poll` does.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::fs::common::fdarg;
use super::{Args, Cpu};
use crate::epoll::Epoll;
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::process::{Locked, Process};

/// How often a wait that watches descriptors of the VMM looks at them again.
const PIPE_SLICE: Duration = Duration::from_millis(5);
/// `sizeof(struct epoll_event)` (packed on x86-64).
const EVENT_LEN: usize = 12;
/// Most events one wait returns (Linux: `INT_MAX / sizeof(struct epoll_event)`).
const MAX_EVENTS: u64 = (i32::MAX as u64) / EVENT_LEN as u64;

pub fn epoll_create(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if a[0] as i32 <= 0 {
        return Err(Errno::EINVAL);
    }
    epoll_create1(p, cpu, [0; 6])
}

/// `epoll_create1(flags)`: `EPOLL_CLOEXEC` only.
pub fn epoll_create1(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[0] as i32;
    if flags & !libc::EPOLL_CLOEXEC != 0 {
        return Err(Errno::EINVAL);
    }
    let ep = Epoll::new()?;
    let file = OpenFile::new(Backing::Epoll(ep), b"anon_inode:[eventpoll]".to_vec(), libc::O_RDWR);
    p.fds.alloc(file, 0, flags & libc::EPOLL_CLOEXEC != 0)
}

/// `epoll_ctl(epfd, op, fd, event)`.
pub fn epoll_ctl(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (epfd, op, fd) = (fdarg(a[0]), a[1] as i32, fdarg(a[2]));
    let epfile = p.fds.get(epfd)?;
    let target = p.fds.get(fd)?;
    let Backing::Epoll(ep) = &epfile.backing else { return Err(Errno::EINVAL) };
    if epfd == fd {
        return Err(Errno::EINVAL);
    }
    let (events, data) = if op == libc::EPOLL_CTL_DEL {
        (0, 0)
    } else {
        let mut b = [0u8; EVENT_LEN];
        p.mm.read_user(a[3], &mut b)?;
        (u32::from_le_bytes([b[0], b[1], b[2], b[3]]), u64::from_le_bytes(b[4..12].try_into().unwrap_or_default()))
    };
    ep.ctl(op, fd as i32, &target, events, data)?;
    Ok(0)
}

/// `epoll_wait(epfd, events, maxevents, timeout_ms)`.
pub fn epoll_wait(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let ms = a[3] as i32;
    wait(p, cpu.tid, a[0], a[1], a[2], (ms >= 0).then(|| Duration::from_millis(ms as u64)))
}

/// `epoll_pwait(epfd, events, maxevents, timeout_ms, sigmask, sigsetsize)`.
pub fn epoll_pwait(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let ms = a[3] as i32;
    with_mask(p, cpu.tid, a[4], a[5])?;
    wait(p, cpu.tid, a[0], a[1], a[2], (ms >= 0).then(|| Duration::from_millis(ms as u64)))
}

/// `epoll_pwait2(epfd, events, maxevents, timeout_ts, sigmask, sigsetsize)`.
pub fn epoll_pwait2(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let timeout = super::poll::read_timespec(p, a[3])?;
    with_mask(p, cpu.tid, a[4], a[5])?;
    wait(p, cpu.tid, a[0], a[1], a[2], timeout)
}

/// Makes `sigmask` (if given) the thread's mask while it waits.
fn with_mask(p: &mut Process, tid: i32, sigmask: u64, size: u64) -> SysResult<()> {
    if sigmask == 0 {
        return Ok(());
    }
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    let mask = p.mm.read_u64(sigmask)?;
    crate::delivery::wait_with_mask(p, tid, mask)
}

fn wait(p: &mut Locked<'_>, tid: i32, epfd: u64, events: u64, max: u64, timeout: Option<Duration>) -> SysResult<u64> {
    if max == 0 || max > MAX_EVENTS {
        return Err(Errno::EINVAL);
    }
    let epfile = p.fds.get(fdarg(epfd))?;
    let Backing::Epoll(ep) = &epfile.backing else { return Err(Errno::EINVAL) };
    if !p.mm.user_accessible(events, max * EVENT_LEN as u64, true) {
        return Err(Errno::EFAULT);
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let group = p.group.clone();
    loop {
        let ready = ep.ready(max.min(1024) as usize, crate::delivery::pending(p, tid))?;
        if !ready.is_empty() {
            let mut out = Vec::with_capacity(ready.len() * EVENT_LEN);
            for (ev, data) in &ready {
                out.extend_from_slice(&ev.to_le_bytes());
                out.extend_from_slice(&data.to_le_bytes());
            }
            p.mm.write_user(events, &out)?;
            return Ok(ready.len() as u64);
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            return Ok(0);
        }
        let slice = if ep.watches_vmm_files() { Some(left.map_or(PIPE_SLICE, |l| l.min(PIPE_SLICE))) } else { left };
        let fds = [libc::pollfd { fd: ep.host_fd(), events: libc::POLLIN, revents: 0 }];
        p.unlocked(|| group.poll_host(tid, &fds, slice))?;
    }
}

pub fn eventfd(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    eventfd2(p, cpu, [a[0], 0, 0, 0, 0, 0])
}

/// `eventfd2(initval, flags)`: a host eventfd (`EFD_SEMAPHORE` is the host's; the guest's
/// `EFD_NONBLOCK` is the description's status, the host descriptor never blocks).
pub fn eventfd2(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (init, flags) = (a[0] as u32, a[1] as i32);
    if flags & !(libc::EFD_CLOEXEC | libc::EFD_NONBLOCK | libc::EFD_SEMAPHORE) != 0 {
        return Err(Errno::EINVAL);
    }
    // SAFETY: plain syscall.
    let fd = unsafe { libc::eventfd(init, (flags & libc::EFD_SEMAPHORE) | libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: just created, owned by nothing else.
    let host = unsafe { OwnedFd::from_raw_fd(fd) };
    let file = OpenFile::new(Backing::Host(host), b"anon_inode:[eventfd]".to_vec(), libc::O_RDWR | (flags & libc::O_NONBLOCK));
    p.fds.alloc(file, 0, flags & libc::EFD_CLOEXEC != 0)
}
