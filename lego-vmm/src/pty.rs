//! The pseudo-terminals of a run, and the controlling terminals of its sessions.
//!
//! A pseudo-terminal a process opens through `/dev/ptmx` is a host pseudo-terminal: the VMM
//! opens the host's `/dev/ptmx`, and the master and the slaves opened later are host
//! descriptors, so reads, writes, waits and the terminal modes are the host line discipline's.
//! The guest sees the host's pty numbers (`/dev/pts/N`, `TIOCGPTN`), as a container sharing
//! the host's devpts would, but only its own: `/dev/pts` lists, and opens, the ptys whose master
//! is still open in some process of the run, so a guest cannot reach a terminal of the host's.
//! Every host open carries `O_NOCTTY`: the VMM process never takes a terminal as its own.
//!
//! Sessions are the run's ([`crate::proctable`]), not the host's, so the controlling terminal of
//! a session is kept here: `TIOCSCTTY` by a session leader (or its first open of a slave without
//! `O_NOCTTY`) records it, `/dev/tty` then opens that pty's slave, and a session made by
//! `setsid` has none until then (`ENXIO`). The first session keeps the terminal `lego run` was
//! started on.
//!
//! Process groups are the run's too, so the host line discipline, which signals the host
//! foreground group of a pty, signals nobody. The VMM stands in for it ([`Ptys::foreground`],
//! [`typed`]): a session's `tcsetpgrp` on its pty is kept here, and when a program types the
//! interrupt, quit or suspend character into a master (`write`) of a slave with `ISIG` set, or
//! changes a pty's window size, the VMM sends `SIGINT`, `SIGQUIT`, `SIGTSTP` or `SIGWINCH` to
//! the pty's foreground group, as the kernel would. It hangs up as the kernel does too: when a
//! pty's master is closed for good, the leader of the session it controlled gets `SIGHUP` and
//! `SIGCONT` ([`Ptys::hang_up`]), and when a session leader ends, its pty's foreground group
//! gets `SIGHUP` ([`Ptys::leader_ended`]); the session has no controlling terminal then.

use lego_proto::sync::LockExt;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};

use crate::errno::{Errno, SysResult};
use crate::fdtable::OpenFile;
use crate::fs::Stat;

/// The first major number of Unix 98 pty slaves; their numbers run over 8 majors of 256 minors.
const SLAVE_MAJOR: u32 = 136;
const SLAVE_MAJORS: u32 = 8;

/// The run's pseudo-terminals and controlling terminals.
#[derive(Default)]
pub struct Ptys {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The masters opened through `/dev/ptmx`, by pty number, while some descriptor holds one.
    masters: BTreeMap<u32, Weak<OpenFile>>,
    /// The controlling terminal of each session that has a pty as one, by session id.
    ctty: HashMap<i32, u32>,
    /// The foreground process group of each pty whose session set one (`tcsetpgrp`).
    foreground: HashMap<u32, i32>,
}

impl Inner {
    /// Forgets the ptys whose master is closed, and the sessions they controlled.
    fn prune(&mut self) {
        self.masters.retain(|_, m| m.strong_count() > 0);
        let masters = &self.masters;
        self.ctty.retain(|_, n| masters.contains_key(n));
        let ctty = &self.ctty;
        self.foreground.retain(|n, _| ctty.values().any(|m| m == n));
    }
}

impl Ptys {
    /// Opens a new host pseudo-terminal master with `open(2)` `flags` (access mode and
    /// `O_NONBLOCK` are kept); returns it and its number. [`Ptys::adopt`] makes it the run's.
    pub fn open_master(flags: i32) -> SysResult<(OwnedFd, u32)> {
        let keep = libc::O_ACCMODE | libc::O_NONBLOCK;
        // SAFETY: `posix_openpt` takes flags only; the descriptor it returns is owned below.
        let fd = unsafe { libc::posix_openpt((flags & keep) | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        let master = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut n: libc::c_uint = 0;
        // SAFETY: `TIOCGPTN` writes one unsigned int into `n`; `master` is a pty master.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } < 0 {
            return Err(Errno::last());
        }
        Ok((master, n))
    }

    /// Records `master`, the description of pty `n`'s master, as the run's: its slave may be
    /// opened while `master` lives.
    pub fn adopt(&self, n: u32, master: &Arc<OpenFile>) {
        let mut inner = self.inner.lock_unpoisoned();
        inner.prune();
        inner.masters.insert(n, Arc::downgrade(master));
    }

    /// Pty `n`'s master was closed for good: the session it controlled, which now has no
    /// controlling terminal, and whose leader the caller is to send `SIGHUP` and `SIGCONT`.
    pub fn hang_up(&self, n: u32) -> Option<i32> {
        let mut inner = self.inner.lock_unpoisoned();
        let sid = inner.ctty.iter().find(|(_, &m)| m == n).map(|(&sid, _)| sid);
        inner.masters.remove(&n);
        inner.prune();
        sid
    }

    /// The leader of session `sid` ended: the foreground group of the pty it controlled, to
    /// which the caller is to send `SIGHUP`; the session gives the pty up.
    pub fn leader_ended(&self, sid: i32) -> Option<i32> {
        let n = self.ctty(sid)?;
        let group = self.foreground(n);
        self.drop_ctty(sid);
        group
    }

    /// The numbers of the run's ptys whose master is open, in ascending order.
    pub fn numbers(&self) -> Vec<u32> {
        let mut inner = self.inner.lock_unpoisoned();
        inner.prune();
        inner.masters.keys().copied().collect()
    }

    /// Whether pty `n` is the run's, its master still open.
    pub fn is_ours(&self, n: u32) -> bool {
        self.inner.lock_unpoisoned().masters.get(&n).is_some_and(|m| m.strong_count() > 0)
    }

    /// The host's metadata of pty `n`'s slave; `ENOENT` if `n` is not the run's.
    pub fn slave_stat(&self, n: u32) -> SysResult<Stat> {
        if !self.is_ours(n) {
            return Err(Errno::ENOENT);
        }
        let path = std::ffi::CString::new(slave_path(n)).map_err(|_| Errno::EINVAL)?;
        crate::fs::hostdir::stat_path(&path)
    }

    /// Opens pty `n`'s slave with `open(2)` `flags` (access mode and `O_NONBLOCK` kept);
    /// `ENOENT` if `n` is not the run's.
    pub fn open_slave(&self, n: u32, flags: i32) -> SysResult<OwnedFd> {
        if !self.is_ours(n) {
            return Err(Errno::ENOENT);
        }
        let path = std::ffi::CString::new(slave_path(n)).map_err(|_| Errno::EINVAL)?;
        let keep = libc::O_ACCMODE | libc::O_NONBLOCK;
        // SAFETY: a NUL-terminated path; the descriptor returned is owned below.
        let fd = unsafe { libc::open(path.as_ptr(), (flags & keep) | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The pty controlling session `sid`, if it has one of the run's.
    pub fn ctty(&self, sid: i32) -> Option<u32> {
        let mut inner = self.inner.lock_unpoisoned();
        inner.prune();
        inner.ctty.get(&sid).copied()
    }

    /// `TIOCSCTTY`: makes pty `n` the controlling terminal of session `sid`, whose leader asks.
    /// As on Linux, `EPERM` if the session has another one or the pty controls another session;
    /// asking again for the same pair succeeds.
    pub fn set_ctty(&self, sid: i32, n: u32) -> SysResult<()> {
        let mut inner = self.inner.lock_unpoisoned();
        inner.prune();
        if !inner.masters.contains_key(&n) {
            return Err(Errno::ENOTTY);
        }
        match inner.ctty.get(&sid) {
            Some(&have) if have == n => return Ok(()),
            Some(_) => return Err(Errno::EPERM),
            None => {}
        }
        if inner.ctty.values().any(|&m| m == n) {
            return Err(Errno::EPERM);
        }
        inner.ctty.insert(sid, n);
        inner.foreground.remove(&n);
        Ok(())
    }

    /// `TIOCNOTTY` by the leader of session `sid`: the session gives up its controlling pty.
    pub fn drop_ctty(&self, sid: i32) {
        let mut inner = self.inner.lock_unpoisoned();
        if let Some(n) = inner.ctty.remove(&sid) {
            inner.foreground.remove(&n);
        }
    }

    /// The number of the pty whose master is `file`, if it is one of the run's.
    pub fn master_number(&self, file: &OpenFile) -> Option<u32> {
        let inner = self.inner.lock_unpoisoned();
        inner.masters.iter().find(|(_, m)| std::ptr::eq(m.as_ptr(), file)).map(|(&n, _)| n)
    }

    /// The foreground process group of pty `n`: the one its session set, or else the group of
    /// the session leader whose controlling terminal it is (`None`: it controls no session).
    pub fn foreground(&self, n: u32) -> Option<i32> {
        let mut inner = self.inner.lock_unpoisoned();
        inner.prune();
        let sid = inner.ctty.iter().find(|(_, &m)| m == n).map(|(&sid, _)| sid)?;
        Some(inner.foreground.get(&n).copied().unwrap_or(sid))
    }

    /// `tcsetpgrp` of pty `n` by a process of session `sid` to group `pgid` (which
    /// [`crate::proctable::ProcTable::foreground_session`] has checked is a group of that
    /// session): `ENOTTY` unless `n` is the session's terminal.
    pub fn set_foreground(&self, n: u32, sid: i32, pgid: i32) -> SysResult<()> {
        let mut inner = self.inner.lock_unpoisoned();
        inner.prune();
        if inner.ctty.get(&sid) != Some(&n) {
            return Err(Errno::ENOTTY);
        }
        inner.foreground.insert(n, pgid);
        Ok(())
    }
}

/// The signals the line discipline of a slave with `ISIG` raises for `bytes` typed into its
/// master `master`: `SIGINT` for its interrupt character, `SIGQUIT` for its quit character,
/// `SIGTSTP` for its suspend character.
pub fn typed(master: BorrowedFd<'_>, bytes: &[u8]) -> Vec<i32> {
    // SAFETY: `termios` is plain data, filled in by the call.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios; on a master, the call reads its slave's modes.
    if unsafe { libc::tcgetattr(master.as_raw_fd(), &mut t) } != 0 || t.c_lflag & libc::ISIG == 0 {
        return Vec::new();
    }
    let (intr, quit, susp) = (t.c_cc[libc::VINTR], t.c_cc[libc::VQUIT], t.c_cc[libc::VSUSP]);
    bytes
        .iter()
        .filter_map(|&b| match b {
            // Linux's `_POSIX_VDISABLE`: a character set to it is off.
            0 => None,
            b if b == intr => Some(libc::SIGINT),
            b if b == quit => Some(libc::SIGQUIT),
            b if b == susp => Some(libc::SIGTSTP),
            _ => None,
        })
        .collect()
}

/// The host path of pty `n`'s slave.
fn slave_path(n: u32) -> String {
    format!("/dev/pts/{n}")
}

/// The pty number of the slave open at host descriptor `fd`, if it is one (from its device
/// number, as Linux numbers Unix 98 ptys).
pub fn slave_number(fd: BorrowedFd<'_>) -> Option<u32> {
    let st = crate::fs::hostdir::fstat(fd).ok()?;
    if st.mode & libc::S_IFMT != libc::S_IFCHR {
        return None;
    }
    let (major, minor) = (libc::major(st.rdev), libc::minor(st.rdev));
    (SLAVE_MAJOR..SLAVE_MAJOR + SLAVE_MAJORS)
        .contains(&major)
        .then(|| (major - SLAVE_MAJOR) * 256 + minor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdtable::Backing;
    use std::os::fd::AsFd;

    fn master(ptys: &Ptys) -> (Arc<OpenFile>, u32) {
        let (fd, n) = Ptys::open_master(libc::O_RDWR).expect("the host opens a pty");
        let file = OpenFile::new(Backing::Host(fd), b"/dev/ptmx".to_vec(), libc::O_RDWR);
        ptys.adopt(n, &file);
        (file, n)
    }

    #[test]
    fn a_slave_opens_while_its_master_lives_and_only_then() {
        let ptys = Ptys::default();
        let (m, n) = master(&ptys);
        assert_eq!(ptys.numbers(), vec![n]);
        // SAFETY: unlocking the slave of a master this test owns.
        assert_eq!(unsafe { libc::ioctl(m.host_fd().unwrap(), libc::TIOCSPTLCK, &0i32) }, 0);
        let slave = ptys.open_slave(n, libc::O_RDWR).expect("the slave opens");
        assert_eq!(slave_number(slave.as_fd()), Some(n));
        let Backing::Host(mfd) = &m.backing else { unreachable!() };
        assert_eq!(slave_number(mfd.as_fd()), None, "a master is no slave");
        assert_eq!(ptys.slave_stat(n).map(|s| s.mode & libc::S_IFMT), Ok(libc::S_IFCHR));
        // Bytes written to the slave come out of the master (the host's line discipline).
        // SAFETY: writing 3 bytes from a live buffer to a descriptor this test owns.
        assert_eq!(unsafe { libc::write(slave.as_raw_fd(), b"ok\n".as_ptr().cast(), 3) }, 3);
        let mut buf = [0u8; 16];
        let mut got = 0;
        while got < 4 {
            // SAFETY: reading into the live rest of `buf` from a descriptor this test owns.
            let r = unsafe { libc::read(m.host_fd().unwrap(), buf[got..].as_mut_ptr().cast(), 16 - got) };
            assert!(r > 0, "the master reads what the slave wrote");
            got += r as usize;
        }
        assert_eq!(&buf[..got], b"ok\r\n", "with the slave's default ONLCR");
        drop(m);
        assert!(ptys.numbers().is_empty(), "a closed master takes its pty away");
        assert_eq!(ptys.open_slave(n, libc::O_RDWR).err(), Some(Errno::ENOENT));
        assert_eq!(ptys.slave_stat(n).err(), Some(Errno::ENOENT));
    }

    #[test]
    fn a_pty_controls_one_session_and_a_session_has_one() {
        let ptys = Ptys::default();
        let (a, na) = master(&ptys);
        let (_b, nb) = master(&ptys);
        assert_eq!(ptys.ctty(7), None);
        assert_eq!(ptys.set_ctty(7, na), Ok(()));
        assert_eq!(ptys.set_ctty(7, na), Ok(()), "the same pair again");
        assert_eq!(ptys.set_ctty(7, nb), Err(Errno::EPERM), "the session has one");
        assert_eq!(ptys.set_ctty(8, na), Err(Errno::EPERM), "the pty controls session 7");
        assert_eq!(ptys.set_ctty(8, nb), Ok(()));
        assert_eq!(ptys.ctty(7), Some(na));
        ptys.drop_ctty(8);
        assert_eq!(ptys.ctty(8), None);
        drop(a);
        assert_eq!(ptys.ctty(7), None, "a closed master controls nothing");
        assert_eq!(ptys.set_ctty(9, na), Err(Errno::ENOTTY), "not one of the run's");
    }

    #[test]
    fn hang_ups_name_who_is_signalled() {
        let ptys = Ptys::default();
        let (_a, na) = master(&ptys);
        let (_b, nb) = master(&ptys);
        ptys.set_ctty(7, na).unwrap();
        ptys.set_ctty(8, nb).unwrap();
        ptys.set_foreground(nb, 8, 12).unwrap();
        assert_eq!(ptys.leader_ended(8), Some(12), "the foreground group of its pty");
        assert_eq!(ptys.ctty(8), None, "the session gave the pty up");
        assert_eq!(ptys.leader_ended(8), None);
        assert_eq!(ptys.hang_up(na), Some(7), "the session the pty controlled");
        assert_eq!(ptys.ctty(7), None);
        assert_eq!(ptys.set_ctty(9, na), Err(Errno::ENOTTY), "a hung-up pty is the run's no more");
        assert_eq!(ptys.hang_up(nb), None, "a pty that controls nothing");
    }
}
