//! An epoll instance of a vNode process.
//!
//! Descriptors with a host descriptor underneath (sockets, eventfds, the terminal, other epoll
//! instances) are watched by a host epoll instance, which gives level- and edge-triggered and
//! one-shot semantics exactly; pipes, signalfds and pidfds, which live in the VMM, are looked at
//! on each wait, level triggered (an edge-triggered program, which reads until `EAGAIN`, sees no
//! difference), with `EPOLLONESHOT` kept here. The host epoll descriptor also makes the instance
//! pollable itself for its host members.

use lego_proto::sync::LockExt;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::anonfd::AnonFile;
use crate::errno::{Errno, SysResult};
use crate::pipe::PipeEnd;

/// A description an epoll instance watches (an open file description).
pub trait Watched: Send + Sync {
    /// The host descriptor a host epoll instance watches it by, if it has one.
    fn host_fd(&self) -> Option<RawFd>;
    /// The pipe end it is, if it is one (watched in the VMM).
    fn pipe(&self) -> Option<&PipeEnd>;
    /// The signalfd or pidfd it is, if it is one (watched in the VMM).
    fn anon(&self) -> Option<&AnonFile>;
}

/// `EPOLLONESHOT` and `EPOLLEXCLUSIVE` as the kernel's `u32`.
const ONESHOT: u32 = libc::EPOLLONESHOT as u32;
const EXCLUSIVE: u32 = libc::EPOLLEXCLUSIVE as u32;
/// Events always reported.
const ALWAYS: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

/// One watched descriptor.
struct Member {
    fd: i32,
    file: Weak<dyn Watched>,
    events: u32,
    data: u64,
    /// Watched by the host epoll instance.
    on_host: bool,
    /// Not yet disabled by `EPOLLONESHOT`.
    armed: bool,
}

#[derive(Default)]
struct Members {
    by_key: BTreeMap<u64, Member>,
    next: u64,
}

/// An epoll instance.
pub struct Epoll {
    host: OwnedFd,
    members: Mutex<Members>,
}

/// One reported event: the events and the program's data.
pub type Event = (u32, u64);

fn same<F: Watched>(file: &Weak<dyn Watched>, other: &Arc<F>) -> bool {
    std::ptr::eq(file.as_ptr().cast::<()>(), Arc::as_ptr(other).cast::<()>())
}

impl Epoll {
    /// A new instance.
    pub fn new() -> SysResult<Epoll> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: just created, owned by nothing else.
        Ok(Epoll { host: unsafe { OwnedFd::from_raw_fd(fd) }, members: Mutex::default() })
    }

    /// The host epoll descriptor.
    pub fn host_fd(&self) -> RawFd {
        self.host.as_raw_fd()
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        self.members.lock_unpoisoned()
    }

    fn host_ctl(&self, op: i32, fd: RawFd, events: u32, key: u64) -> SysResult<()> {
        let mut ev = libc::epoll_event { events, u64: key };
        // SAFETY: `ev` is valid during the call.
        if unsafe { libc::epoll_ctl(self.host.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(Errno::last());
        }
        Ok(())
    }

    /// `epoll_ctl(op, fd, {events, data})` for `file`, the description behind `fd`.
    pub fn ctl<F: Watched + 'static>(&self, op: i32, fd: i32, file: &Arc<F>, events: u32, data: u64) -> SysResult<()> {
        let mut m = self.members();
        m.by_key.retain(|_, v| v.file.strong_count() > 0);
        let found = m.by_key.iter().find(|(_, v)| v.fd == fd && same(&v.file, file)).map(|(k, _)| *k);
        let host = file.host_fd();
        if host.is_none() && file.pipe().is_none() && file.anon().is_none() {
            // Regular files and directories cannot be watched.
            return Err(Errno::EPERM);
        }
        match op {
            libc::EPOLL_CTL_ADD => {
                if found.is_some() {
                    return Err(Errno::EEXIST);
                }
                let key = m.next;
                if let Some(h) = host {
                    self.host_ctl(libc::EPOLL_CTL_ADD, h, events, key)?;
                }
                m.next += 1;
                let file = Arc::downgrade(file) as Weak<dyn Watched>;
                m.by_key.insert(key, Member { fd, file, events, data, on_host: host.is_some(), armed: true });
                Ok(())
            }
            libc::EPOLL_CTL_MOD => {
                let key = found.ok_or(Errno::ENOENT)?;
                if events & EXCLUSIVE != 0 {
                    return Err(Errno::EINVAL);
                }
                if let Some(h) = host {
                    self.host_ctl(libc::EPOLL_CTL_MOD, h, events, key)?;
                }
                if let Some(v) = m.by_key.get_mut(&key) {
                    (v.events, v.data, v.armed) = (events, data, true);
                }
                Ok(())
            }
            libc::EPOLL_CTL_DEL => {
                let key = found.ok_or(Errno::ENOENT)?;
                if let Some(h) = host {
                    // Gone from the host instance already if the host descriptor was closed.
                    let _ = self.host_ctl(libc::EPOLL_CTL_DEL, h, 0, key);
                }
                m.by_key.remove(&key);
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// Whether descriptors of the VMM (pipes, signalfds, pidfds) are watched: a wait then has
    /// to look at them again now and then.
    pub fn watches_vmm_files(&self) -> bool {
        self.members().by_key.values().any(|v| !v.on_host && v.armed)
    }

    /// The events ready now, at most `max`, for a waiting thread with signals `pending` (its
    /// own and its process's: what a signalfd would read).
    pub fn ready(&self, max: usize, pending: u64) -> SysResult<Vec<Event>> {
        let mut m = self.members();
        let mut out = Vec::new();
        for v in m.by_key.values_mut().filter(|v| !v.on_host && v.armed) {
            if out.len() == max {
                break;
            }
            let Some(file) = v.file.upgrade() else { continue };
            let r = vmm_events(&*file, pending) & (v.events | ALWAYS);
            if r != 0 {
                out.push((r, v.data));
                if v.events & ONESHOT != 0 {
                    v.armed = false;
                }
            }
        }
        let room = max - out.len();
        if room == 0 {
            return Ok(out);
        }
        let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; room];
        let n = loop {
            // SAFETY: `evs` has room for `room` events.
            let n = unsafe { libc::epoll_wait(self.host.as_raw_fd(), evs.as_mut_ptr(), room as i32, 0) };
            if n >= 0 {
                break n as usize;
            }
            let e = Errno::last();
            if e != Errno::EINTR {
                return Err(e);
            }
        };
        for ev in &evs[..n] {
            let (events, key) = (ev.events, ev.u64);
            match m.by_key.get(&key) {
                Some(v) if v.file.strong_count() > 0 => out.push((events, v.data)),
                _ => {
                    m.by_key.remove(&key);
                }
            }
        }
        Ok(out)
    }
}

/// The epoll events now of a descriptor of the VMM, for a thread with signals `pending`.
fn vmm_events(file: &dyn Watched, pending: u64) -> u32 {
    match (file.pipe(), file.anon()) {
        (Some(end), _) => pipe_events(end),
        (None, Some(anon)) => {
            let readable = if anon.readable(pending) { libc::EPOLLIN | libc::EPOLLRDNORM } else { 0 };
            (readable | if anon.writable() { libc::EPOLLOUT | libc::EPOLLWRNORM } else { 0 }) as u32
        }
        _ => 0,
    }
}

/// The epoll events of a pipe end now.
fn pipe_events(end: &PipeEnd) -> u32 {
    let mut r = 0;
    if end.is_write_end() {
        if end.peer_closed() {
            r |= libc::EPOLLERR as u32;
        } else if end.has_room() {
            r |= (libc::EPOLLOUT | libc::EPOLLWRNORM) as u32;
        }
    } else {
        if end.available() > 0 {
            r |= (libc::EPOLLIN | libc::EPOLLRDNORM) as u32;
        }
        if end.peer_closed() {
            r |= libc::EPOLLHUP as u32;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdtable::{Backing, OpenFile};
    use crate::pipe::Pipe;

    const ET: u32 = libc::EPOLLET as u32;

    #[test]
    fn pipes_level_triggered_and_oneshot() {
        let ep = Epoll::new().unwrap();
        let (r, w) = Pipe::create();
        let rf = OpenFile::new(Backing::Pipe(r), b"pipe:".to_vec(), libc::O_RDONLY);
        ep.ctl(libc::EPOLL_CTL_ADD, 3, &rf, libc::EPOLLIN as u32 | ONESHOT, 7).unwrap();
        assert_eq!(ep.ctl(libc::EPOLL_CTL_ADD, 3, &rf, libc::EPOLLIN as u32, 7), Err(Errno::EEXIST));
        assert_eq!(ep.ready(8, 0).unwrap(), vec![]);
        w.write(b"x", false).unwrap();
        assert_eq!(ep.ready(8, 0).unwrap(), vec![(libc::EPOLLIN as u32, 7)], "only the events asked for");
        assert_eq!(ep.ready(8, 0).unwrap(), vec![], "one shot");
        ep.ctl(libc::EPOLL_CTL_MOD, 3, &rf, libc::EPOLLIN as u32, 9).unwrap();
        assert_eq!(ep.ready(8, 0).unwrap().len(), 1);
        assert_eq!(ep.ready(8, 0).unwrap().len(), 1, "level triggered");
        ep.ctl(libc::EPOLL_CTL_DEL, 3, &rf, 0, 0).unwrap();
        assert_eq!(ep.ctl(libc::EPOLL_CTL_DEL, 3, &rf, 0, 0), Err(Errno::ENOENT));
    }

    #[test]
    fn signalfds_are_watched_in_the_vmm() {
        let ep = Epoll::new().unwrap();
        let usr1 = 1u64 << (libc::SIGUSR1 - 1);
        let f = OpenFile::new(Backing::Anon(AnonFile::Signal(Mutex::new(usr1))), b"anon_inode:[signalfd]".to_vec(), libc::O_RDWR);
        ep.ctl(libc::EPOLL_CTL_ADD, 5, &f, libc::EPOLLIN as u32, 3).unwrap();
        assert!(ep.watches_vmm_files());
        assert_eq!(ep.ready(8, 0).unwrap(), vec![]);
        assert_eq!(ep.ready(8, 1 << (libc::SIGUSR2 - 1)).unwrap(), vec![], "not a signal of its mask");
        assert_eq!(ep.ready(8, usr1).unwrap(), vec![(libc::EPOLLIN as u32, 3)], "only the events asked for");
    }

    #[test]
    fn host_members_edge_triggered() {
        let ep = Epoll::new().unwrap();
        // SAFETY: plain syscall; the result is owned below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(efd >= 0);
        // SAFETY: just created.
        let f = OpenFile::new(Backing::Host(unsafe { OwnedFd::from_raw_fd(efd) }), b"anon_inode:[eventfd]".to_vec(), libc::O_RDWR);
        ep.ctl(libc::EPOLL_CTL_ADD, 4, &f, (libc::EPOLLIN as u32) | ET, 1).unwrap();
        assert_eq!(ep.ready(8, 0).unwrap(), vec![]);
        // SAFETY: writes 8 bytes from a valid u64.
        assert_eq!(unsafe { libc::write(efd, (&1u64 as *const u64).cast(), 8) }, 8);
        assert_eq!(ep.ready(8, 0).unwrap(), vec![(libc::EPOLLIN as u32, 1)]);
        assert_eq!(ep.ready(8, 0).unwrap(), vec![], "edge triggered: no new edge");
    }
}
