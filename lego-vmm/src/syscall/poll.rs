//! `poll` and `ppoll` over the descriptor kinds a vNode process has.
//!
//! Files are always ready; pipe readiness is computed from the pipe; the host's stdio
//! descriptors are asked with the host's `poll`. A call that has to wait does so without the
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
    let timeout = if tsp == 0 {
        None
    } else {
        let (sec, nsec) = (p.mm.read_u64(tsp)? as i64, p.mm.read_u64(tsp + 8)? as i64);
        if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
            return Err(Errno::EINVAL);
        }
        Some(Duration::new(sec as u64, nsec as u32))
    };
    if sigmask != 0 {
        let mask = p.mm.read_u64(sigmask)?;
        crate::signal::wait_with_mask(p, cpu.tid, mask)?;
    }
    do_poll(p, cpu.tid, fds, nfds, timeout)
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
                e.revents = if a.readable(p, tid) { e.events & libc::POLLIN } else { 0 };
            }
            Backing::Host(_) => {
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
    let deadline = timeout.map(|t| Instant::now() + t);
    let group = p.group.clone();
    loop {
        let (host, pipes) = scan(p, tid, &mut entries);
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
    let mut out = Vec::with_capacity(raw.len());
    for e in &entries {
        out.extend_from_slice(&e.fd.to_le_bytes());
        out.extend_from_slice(&e.events.to_le_bytes());
        out.extend_from_slice(&e.revents.to_le_bytes());
    }
    p.mm.write_user(addr, &out)?;
    Ok(entries.iter().filter(|e| e.revents != 0).count() as u64)
}
