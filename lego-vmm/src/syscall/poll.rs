//! `poll`, `ppoll`, `select` and `pselect6` over the descriptor kinds a vNode process has.
//!
//! Files are always ready; pipe readiness is computed from the pipe; host-backed descriptors
//! (the host's stdio, sockets, eventfds, epoll instances) are asked with the host's `poll`. A call that has to wait does so without the
//! process lock: on the host descriptors, and, when pipes are polled too (another thread may fill
//! or drain them), in slices of [`PIPE_SLICE`] after which everything is looked at again.

use std::time::{Duration, Instant};

use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::Backing;
use crate::process::{Locked, Process};

const MAX_FDS: u64 = 1 << 16;
/// How often a wait that involves pipes looks at them again.
const PIPE_SLICE: Duration = Duration::from_millis(5);

pub fn poll(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let timeout_ms = a[2] as i32;
    let timeout = (timeout_ms >= 0).then(|| Duration::from_millis(timeout_ms as u64));
    do_poll(p, cpu.tid, a[0], a[1], timeout)
}

/// `ppoll`: [`poll`] with a timespec, and with `sigmask` as the thread's mask while it waits.
pub fn ppoll(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [fds, nfds, tsp, sigmask, sigsetsize, _] = a;
    if sigmask != 0 && sigsetsize != 8 {
        return Err(Errno::EINVAL);
    }
    let timeout = read_timespec(p, tsp)?;
    if sigmask != 0 {
        let mask = p.mm.read_u64(sigmask)?;
        crate::delivery::wait_with_mask(p, cpu.tid, mask)?;
    }
    do_poll(p, cpu.tid, fds, nfds, timeout)
}

/// A guest `struct timespec` timeout (`None` for a NULL pointer: no limit); `EINVAL` if it
/// is not a valid time.
pub(super) fn read_timespec(p: &Process, at: u64) -> SysResult<Option<Duration>> {
    if at == 0 {
        return Ok(None);
    }
    let (sec, nsec) = (p.mm.read_u64(at)? as i64, p.mm.read_u64(at + 8)? as i64);
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(Errno::EINVAL);
    }
    Ok(Some(Duration::new(sec as u64, nsec as u32)))
}

/// The readiness of every entry that can be known without the host; host descriptors to ask,
/// with the index of their entry; whether pipes are among the descriptors.
fn scan(p: &Process, tid: i32, entries: &mut [libc::pollfd]) -> (Vec<(usize, libc::pollfd)>, bool) {
    let mut host = Vec::new();
    let mut pipes = false;
    let always = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
    for (i, e) in entries.iter_mut().enumerate() {
        e.revents = 0;
        if e.fd < 0 {
            continue;
        }
        let Ok(file) = p.fds.get(e.fd as u64) else {
            e.revents = libc::POLLNVAL;
            continue;
        };
        match &file.backing {
            Backing::File(_) => e.revents = e.events & (libc::POLLIN | libc::POLLOUT | libc::POLLRDNORM | libc::POLLWRNORM),
            Backing::Pipe(end) if end.is_write_end() => {
                pipes = true;
                e.revents = if end.peer_closed() { libc::POLLERR } else if end.has_room() { e.events & libc::POLLOUT } else { 0 };
            }
            Backing::Pipe(end) => {
                pipes = true;
                let mut r = if end.available() > 0 { e.events & libc::POLLIN } else { 0 };
                if end.peer_closed() {
                    r |= libc::POLLHUP;
                }
                e.revents = r;
            }
            Backing::Anon(a) => {
                // Looked at again after each slice, as pipes are.
                pipes = true;
                let readable = if a.readable(crate::delivery::pending(p, tid)) { libc::POLLIN } else { 0 };
                e.revents = e.events & (readable | if a.writable() { libc::POLLOUT } else { 0 });
            }
            Backing::Host(_) | Backing::Socket(_) | Backing::Epoll(_) => {
                if let Some(fd) = file.host_fd() {
                    host.push((i, libc::pollfd { fd, events: e.events, revents: 0 }));
                }
            }
        }
        e.revents &= e.events | always;
    }
    (host, pipes)
}

/// `poll` by thread `tid`: `EINTR` if a signal comes for it while it waits.
fn do_poll(p: &mut Locked<'_>, tid: i32, addr: u64, nfds: u64, timeout: Option<Duration>) -> SysResult<u64> {
    if nfds > MAX_FDS.min(p.rlimits[libc::RLIMIT_NOFILE as usize].0) {
        return Err(Errno::EINVAL);
    }
    let mut raw = vec![0u8; nfds as usize * 8];
    p.mm.read_user(addr, &mut raw)?;
    let mut entries: Vec<libc::pollfd> = raw
        .chunks_exact(8)
        .map(|c| libc::pollfd {
            fd: i32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            events: i16::from_le_bytes([c[4], c[5]]),
            revents: 0,
        })
        .collect();
    let n = wait_entries(p, tid, &mut entries, timeout)?;
    let mut out = Vec::with_capacity(raw.len());
    for e in &entries {
        out.extend_from_slice(&e.fd.to_le_bytes());
        out.extend_from_slice(&e.events.to_le_bytes());
        out.extend_from_slice(&e.revents.to_le_bytes());
    }
    p.mm.write_user(addr, &out)?;
    Ok(n)
}

/// Waits until one of `entries` is ready or `timeout` passes; fills in their `revents` and
/// returns how many have some.
fn wait_entries(p: &mut Locked<'_>, tid: i32, entries: &mut [libc::pollfd], timeout: Option<Duration>) -> SysResult<u64> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let group = p.group.clone();
    loop {
        let (host, pipes) = scan(p, tid, entries);
        let fds: Vec<libc::pollfd> = host.iter().map(|(_, f)| *f).collect();
        let mut ready = entries.iter().any(|e| e.revents != 0);
        if !fds.is_empty() {
            // The host descriptors as they are now (this does not wait).
            let (n, polled) = group.poll_host(tid, &fds, Some(Duration::ZERO))?;
            for ((i, _), f) in host.iter().zip(&polled) {
                entries[*i].revents = f.revents;
            }
            ready |= n > 0;
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if ready || left == Some(Duration::ZERO) {
            break;
        }
        if fds.is_empty() && !pipes && left.is_none() {
            tracing::warn!("poll with no timeout on descriptors nothing can make ready: the thread waits until the process ends");
        }
        let slice = if pipes { Some(left.map_or(PIPE_SLICE, |l| l.min(PIPE_SLICE))) } else { left };
        p.unlocked(|| group.poll_host(tid, &fds, slice))?;
    }
    Ok(entries.iter().filter(|e| e.revents != 0).count() as u64)
}

/// `FD_SETSIZE`: the most descriptors `select` takes.
const FD_SETSIZE: u64 = 1024;

/// `select(nfds, readfds, writefds, exceptfds, timeout)` (a `struct timeval`, left as it is).
pub fn select(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let tv = a[4];
    let timeout = if tv == 0 {
        None
    } else {
        let (sec, usec) = (p.mm.read_u64(tv)? as i64, p.mm.read_u64(tv + 8)? as i64);
        if sec < 0 || usec < 0 {
            return Err(Errno::EINVAL);
        }
        Some(Duration::from_secs(sec as u64) + Duration::from_micros(usec as u64))
    };
    do_select(p, cpu.tid, [a[0], a[1], a[2], a[3]], timeout)
}

/// `pselect6(nfds, readfds, writefds, exceptfds, timespec, {sigmask, size})`.
pub fn pselect6(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let timeout = read_timespec(p, a[4])?;
    if a[5] != 0 {
        let (mask_at, size) = (p.mm.read_u64(a[5])?, p.mm.read_u64(a[5] + 8)?);
        if mask_at != 0 {
            if size != 8 {
                return Err(Errno::EINVAL);
            }
            let mask = p.mm.read_u64(mask_at)?;
            crate::delivery::wait_with_mask(p, cpu.tid, mask)?;
        }
    }
    do_select(p, cpu.tid, [a[0], a[1], a[2], a[3]], timeout)
}

/// `select` over the three sets as `poll` entries: `EBADF` for a descriptor that is not open.
fn do_select(p: &mut Locked<'_>, tid: i32, [nfds, r, w, x]: [u64; 4], timeout: Option<Duration>) -> SysResult<u64> {
    let nfds = nfds as i32;
    if nfds < 0 {
        return Err(Errno::EINVAL);
    }
    let nfds = (nfds as u64).min(FD_SETSIZE);
    let bytes = nfds.div_ceil(64) as usize * 8;
    let mut sets = [vec![0u8; bytes], vec![0u8; bytes], vec![0u8; bytes]];
    for (set, at) in sets.iter_mut().zip([r, w, x]) {
        if at != 0 {
            p.mm.read_user(at, set)?;
        }
    }
    let bit = |set: &[u8], fd: usize| set[fd / 8] & (1 << (fd % 8)) != 0;
    let mut entries = Vec::new();
    for fd in 0..nfds as usize {
        let mut events = 0;
        if bit(&sets[0], fd) {
            events |= libc::POLLIN;
        }
        if bit(&sets[1], fd) {
            events |= libc::POLLOUT;
        }
        if bit(&sets[2], fd) {
            events |= libc::POLLPRI;
        }
        if events != 0 {
            p.fds.get(fd as u64)?;
            entries.push(libc::pollfd { fd: fd as i32, events, revents: 0 });
        }
    }
    wait_entries(p, tid, &mut entries, timeout)?;
    let mut out = [vec![0u8; bytes], vec![0u8; bytes], vec![0u8; bytes]];
    let mut count = 0;
    for e in &entries {
        let fd = e.fd as usize;
        let hits = [
            e.events & libc::POLLIN != 0 && e.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0,
            e.events & libc::POLLOUT != 0 && e.revents & (libc::POLLOUT | libc::POLLERR) != 0,
            e.events & libc::POLLPRI != 0 && e.revents & libc::POLLPRI != 0,
        ];
        for (set, hit) in out.iter_mut().zip(hits) {
            if hit {
                set[fd / 8] |= 1 << (fd % 8);
                count += 1;
            }
        }
    }
    for (set, at) in out.iter().zip([r, w, x]) {
        if at != 0 {
            p.mm.write_user(at, set)?;
        }
    }
    Ok(count)
}
