//! `poll` and `ppoll` over the descriptor kinds a vNode process has.
//!
//! Files are always ready; pipe readiness is computed from the pipe; the host's stdio
//! descriptors are asked with the host's `poll`, and only they can make the call wait (a
//! single-threaded process cannot change its own pipes while it waits).

use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::Backing;
use crate::process::Process;

const MAX_FDS: u64 = 1 << 16;

pub fn poll(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let timeout_ms = a[2] as i32;
    do_poll(p, a[0], a[1], if timeout_ms < 0 { -1 } else { timeout_ms })
}

pub fn ppoll(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [fds, nfds, tsp, sigmask, sigsetsize, _] = a;
    if sigmask != 0 && sigsetsize != 8 {
        return Err(Errno::EINVAL);
    }
    let timeout_ms = if tsp == 0 {
        -1
    } else {
        let (sec, nsec) = (p.mm.read_u64(tsp)? as i64, p.mm.read_u64(tsp + 8)? as i64);
        if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
            return Err(Errno::EINVAL);
        }
        sec.saturating_mul(1000).saturating_add((nsec + 999_999) / 1_000_000).min(i32::MAX as i64) as i32
    };
    do_poll(p, fds, nfds, timeout_ms)
}

fn do_poll(p: &mut Process, addr: u64, nfds: u64, timeout_ms: i32) -> SysResult<u64> {
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
    // Host descriptors to ask, with the index of their entry.
    let mut host: Vec<(usize, libc::pollfd)> = Vec::new();
    let always = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
    for (i, e) in entries.iter_mut().enumerate() {
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
                e.revents = if end.peer_closed() { libc::POLLERR } else if end.has_room() { e.events & libc::POLLOUT } else { 0 };
            }
            Backing::Pipe(end) => {
                let mut r = if end.available() > 0 { e.events & libc::POLLIN } else { 0 };
                if end.peer_closed() {
                    r |= libc::POLLHUP;
                }
                e.revents = r;
            }
            Backing::Host(_) => {
                if let Some(fd) = file.host_fd() {
                    host.push((i, libc::pollfd { fd, events: e.events, revents: 0 }));
                }
            }
        }
        e.revents &= e.events | always;
    }
    let ready_now = entries.iter().any(|e| e.revents != 0);
    if !host.is_empty() {
        let mut fds: Vec<libc::pollfd> = host.iter().map(|(_, f)| *f).collect();
        let wait = if ready_now { 0 } else { timeout_ms };
        loop {
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
            if n >= 0 {
                break;
            }
            let e = Errno::last();
            if e != Errno::EINTR {
                return Err(e);
            }
        }
        for ((i, _), f) in host.iter().zip(&fds) {
            entries[*i].revents = f.revents;
        }
    } else if !ready_now && timeout_ms != 0 {
        if timeout_ms < 0 {
            tracing::warn!("poll with no timeout on descriptors nothing can make ready: the process waits forever");
            loop {
                std::thread::park();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(timeout_ms as u64));
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
