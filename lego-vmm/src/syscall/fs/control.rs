//! Descriptor control: `ioctl`, and `fcntl` but for the record locks.

use lego_proto::sync::LockExt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::common::{FIOCLEX, FIONBIO, FIONCLEX, FIONREAD, F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_GETFL, F_GETOWN, F_GETPIPE_SZ, F_SETFD, F_SETFL, F_SETOWN, F_SETPIPE_SZ, KERNEL_TERMIOS_SIZE, O_LARGEFILE, S_IFMT, S_IFREG, TIOCGPGRP, TIOCSPGRP, WINSIZE_SIZE, fdarg, not_opath};
use crate::syscall::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::process::{Locked, Process};

/// How a terminal request passes its argument.
enum TermArg {
    /// The terminal fills a structure of this size for the guest.
    Out(usize),
    /// The guest gives a structure of this size.
    In(usize),
    /// The argument is a value.
    Value,
}

/// The terminal requests passed to a host terminal (the one `lego run` was started on, which
/// is the vNode's, or a pty of the run's): getting and setting the modes (`tcgetattr`,
/// `tcsetattr` in its three forms, which `stty`, editors, pagers and password prompts use), the
/// window size, flushing, flow control, breaks and the output queue, exclusive mode, and on a
/// pty master its number, lock and packet mode (`grantpt`, `unlockpt`, `ptsname`). Job control
/// requests are not among them: the vNode's process groups are not the host's.
fn terminal_request(cmd: u32) -> Option<TermArg> {
    Some(match u64::from(cmd) {
        libc::TCGETS => TermArg::Out(KERNEL_TERMIOS_SIZE),
        libc::TIOCGWINSZ => TermArg::Out(WINSIZE_SIZE),
        libc::TIOCOUTQ | libc::TIOCGPTN | libc::TIOCGPTLCK | libc::TIOCGPKT | libc::TIOCGEXCL => TermArg::Out(4),
        libc::TIOCSPTLCK | libc::TIOCPKT => TermArg::In(4),
        libc::TIOCEXCL | libc::TIOCNXCL => TermArg::Value,
        libc::TCSETS | libc::TCSETSW | libc::TCSETSF => TermArg::In(KERNEL_TERMIOS_SIZE),
        libc::TIOCSWINSZ => TermArg::In(WINSIZE_SIZE),
        libc::TCSBRK | libc::TCSBRKP | libc::TCXONC | libc::TCFLSH => TermArg::Value,
        _ => return None,
    })
}

/// `ioctl(fd, cmd, arg)`: terminal requests on a host terminal ([`terminal_request`];
/// `TIOCGPGRP` and `TIOCSPGRP` get and set the foreground process group that the VMM keeps
/// for the run's terminal, to which `lego run` passes `^C`, and for each pty of the run, to
/// which it raises the pty's signals), the controlling-terminal requests on a pty of the
/// run's ([`pty_request`]), `FIONREAD`, `FIONBIO`, `FIOCLEX`/`FIONCLEX`; everything else is
/// `ENOTTY`.
pub fn ioctl(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (fd, cmd, arg) = (fdarg(a[0]), a[1] as u32, a[2]);
    let file = p.fds.get(fd)?;
    not_opath(&file)?;
    // A pty of the run: the VMM keeps its foreground group and raises its signals.
    let pty = match &file.backing {
        Backing::Host(h) => p.ptys.master_number(&file).or_else(|| crate::pty::slave_number(h.as_fd()).filter(|&n| p.ptys.is_ours(n))),
        _ => None,
    };
    if let (Some(n), TIOCGPGRP | TIOCSPGRP) = (pty, cmd) {
        return pty_foreground(p, n, cmd == TIOCSPGRP, arg);
    }
    if let (Some(n), Backing::Host(h), libc::TIOCSWINSZ) = (pty, &file.backing, u64::from(cmd)) {
        // The kernel signals the foreground group when the size changes; the VMM does for it.
        let before = window_size(h.as_fd());
        let r = host_terminal_request(p, &file, cmd, arg).unwrap_or(Err(Errno::ENOTTY));
        if r.is_ok() && window_size(h.as_fd()) != before {
            if let Some(pgid) = p.ptys.foreground(n) {
                crate::syscall::signal::terminal_signal(p, cpu.tid, pgid, libc::SIGWINCH);
            }
        }
        return r;
    }
    match cmd {
        FIOCLEX | FIONCLEX => {
            p.fds.set_cloexec(fd, cmd == FIOCLEX)?;
            return Ok(0);
        }
        FIONBIO => {
            let mut v = [0u8; 4];
            p.mm.read_user(arg, &mut v)?;
            let mut st = file.status.lock_unpoisoned();
            if i32::from_le_bytes(v) != 0 {
                *st |= libc::O_NONBLOCK;
            } else {
                *st &= !libc::O_NONBLOCK;
            }
            return Ok(0);
        }
        _ => {}
    }
    if let Some(r) = host_terminal_request(p, &file, cmd, arg) {
        return r;
    }
    if let Backing::Host(h) = &file.backing {
        if let Some(r) = pty_request(p, h.as_fd(), cmd, arg) {
            return r;
        }
    }
    match (&file.backing, cmd) {
        (Backing::Host(h), TIOCGPGRP) => {
            // SAFETY: plain query on a descriptor `file` owns.
            if unsafe { libc::isatty(h.as_raw_fd()) } != 1 {
                return Err(Errno::ENOTTY);
            }
            // The run's terminal has the foreground group its session set; on any other the
            // caller is the foreground (nothing signals it from there).
            let pgrp = if run_terminal(p, &file, h.as_fd()) && p.procs.on_run_terminal(p.pid) { p.procs.foreground() } else { p.pid };
            p.mm.write_user(arg, &pgrp.to_le_bytes())?;
            Ok(0)
        }
        (Backing::Host(h), TIOCSPGRP) => {
            if !run_terminal(p, &file, h.as_fd()) || !p.procs.on_run_terminal(p.pid) {
                return Err(Errno::ENOTTY);
            }
            let mut v = [0u8; 4];
            p.mm.read_user(arg, &mut v)?;
            p.procs.set_foreground(p.pid, i32::from_le_bytes(v)).map(|()| 0)
        }
        (Backing::Host(_) | Backing::Socket(_), FIONREAD) => {
            let fd = file.host_fd().ok_or(Errno::ENOTTY)?;
            let mut n: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int into `n`; the fd is owned by `file`.
            if unsafe { libc::ioctl(fd, FIONREAD as _, &mut n) } < 0 {
                return Err(Errno::last());
            }
            p.mm.write_user(arg, &n.to_le_bytes())?;
            Ok(0)
        }
        (Backing::Pipe(end), FIONREAD) => {
            let n = i32::try_from(end.available()).unwrap_or(i32::MAX);
            p.mm.write_user(arg, &n.to_le_bytes())?;
            Ok(0)
        }
        (Backing::File(f), FIONREAD) => {
            let st = f.stat()?;
            if st.mode & S_IFMT != S_IFREG {
                return Err(Errno::ENOTTY);
            }
            let left = st.size.saturating_sub(*file.offset.lock_unpoisoned());
            p.mm.write_user(arg, &i32::try_from(left).unwrap_or(i32::MAX).to_le_bytes())?;
            Ok(0)
        }
        _ => Err(Errno::ENOTTY),
    }
}

/// The requests that concern a pty of the run's as a controlling terminal, or that open its
/// slave, on host descriptor `fd`; `None` for any other request or descriptor.
/// - `TIOCGPTPEER` on a master: a new descriptor of its slave, opened with the flags `arg`.
/// - `TIOCSCTTY` on a slave: it becomes the controlling terminal of the caller's session
///   (`EPERM` unless the caller leads it; see [`crate::pty::Ptys::set_ctty`]).
/// - `TIOCNOTTY` and `TIOCGSID` on the caller's controlling pty: a leader gives it up; the
///   session's id. Any other terminal is `ENOTTY` for them.
fn pty_request(p: &mut Process, fd: BorrowedFd<'_>, cmd: u32, arg: u64) -> Option<SysResult<u64>> {
    let cmd = u64::from(cmd);
    if cmd == libc::TIOCGPTPEER {
        return Some(open_peer(p, fd, arg as i32));
    }
    if ![libc::TIOCSCTTY, libc::TIOCNOTTY, libc::TIOCGSID].contains(&cmd) {
        return None;
    }
    let n = crate::pty::slave_number(fd).filter(|&n| p.ptys.is_ours(n))?;
    let sid = match p.procs.sid(p.pid) {
        Ok(sid) => sid,
        Err(e) => return Some(Err(e)),
    };
    let controls = p.ptys.ctty(sid) == Some(n);
    Some(match cmd {
        libc::TIOCSCTTY if sid != p.pid => Err(Errno::EPERM),
        libc::TIOCSCTTY => p.ptys.set_ctty(sid, n).map(|()| 0),
        _ if !controls => Err(Errno::ENOTTY),
        libc::TIOCNOTTY => {
            if sid == p.pid {
                p.ptys.drop_ctty(sid);
            }
            Ok(0)
        }
        _ => p.mm.write_user(arg, &sid.to_le_bytes()).map(|()| 0),
    })
}

/// A terminal request ([`terminal_request`]) on a host descriptor, passed to the host
/// terminal; `None` if it is not one.
fn host_terminal_request(p: &mut Process, file: &OpenFile, cmd: u32, arg: u64) -> Option<SysResult<u64>> {
    let (Backing::Host(h), Some(how)) = (&file.backing, terminal_request(cmd)) else { return None };
    let mut buf = [0u8; 64];
    if let TermArg::In(len) = how {
        if let Err(e) = p.mm.read_user(arg, &mut buf[..len]) {
            return Some(Err(e));
        }
    }
    let r = match how {
        // SAFETY: the request reads or writes at most the size `terminal_request` gives for
        // it (a kernel `struct termios`, 36 bytes, a `struct winsize` or an int) in `buf`,
        // which has 64; the fd is owned by `file`.
        TermArg::Out(_) | TermArg::In(_) => unsafe { libc::ioctl(h.as_raw_fd(), cmd as _, buf.as_mut_ptr()) },
        // SAFETY: the argument is a value, not an address; the fd is owned by `file`.
        TermArg::Value => unsafe { libc::ioctl(h.as_raw_fd(), cmd as _, arg as libc::c_ulong) },
    };
    if r < 0 {
        return Some(Err(Errno::last()));
    }
    if let TermArg::Out(len) = how {
        if let Err(e) = p.mm.write_user(arg, &buf[..len]) {
            return Some(Err(e));
        }
    }
    Some(Ok(0))
}

/// The window size of terminal `fd`, if it has one.
fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    // SAFETY: `winsize` is plain data, filled in by the call.
    let mut w: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: `TIOCGWINSZ` writes one `winsize` into `w`; the caller's description owns `fd`.
    (unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut w) } == 0).then_some((w.ws_row, w.ws_col))
}

/// `tcgetpgrp` (`set`: `tcsetpgrp`) of pty `n` of the run, by its master or its slave: the
/// foreground group the VMM keeps for it (see [`crate::pty`]). Setting it takes a group of the
/// caller's session (`EPERM`), whose terminal the pty is (`ENOTTY`).
fn pty_foreground(p: &mut Process, n: u32, set: bool, arg: u64) -> SysResult<u64> {
    if set {
        let mut v = [0u8; 4];
        p.mm.read_user(arg, &mut v)?;
        let pgid = i32::from_le_bytes(v);
        let sid = p.procs.foreground_session(p.pid, pgid)?;
        return p.ptys.set_foreground(n, sid, pgid).map(|()| 0);
    }
    // A pty that controls no session has no foreground group (Linux answers 0 on its master).
    let pgid = p.ptys.foreground(n).unwrap_or(0);
    p.mm.write_user(arg, &pgid.to_le_bytes()).map(|()| 0)
}

/// Whether host descriptor `fd` of `file` is the run's terminal (the one `lego run` was
/// started on, or `/dev/tty` of it): a terminal that is neither a pty master nor a slave of
/// the run's ptys.
fn run_terminal(p: &Process, file: &OpenFile, fd: BorrowedFd<'_>) -> bool {
    // SAFETY: plain query on a descriptor the caller's description owns.
    let tty = unsafe { libc::isatty(fd.as_raw_fd()) } == 1;
    tty && file.path.as_slice() != b"/dev/ptmx" && !crate::pty::slave_number(fd).is_some_and(|n| p.ptys.is_ours(n))
}

/// `TIOCGPTPEER`: the slave of the run's pty whose master is `master`, as a new descriptor
/// opened with `flags` (access mode, `O_NONBLOCK`, `O_CLOEXEC`).
fn open_peer(p: &mut Process, master: BorrowedFd<'_>, flags: i32) -> SysResult<u64> {
    let keep = libc::O_ACCMODE | libc::O_NONBLOCK;
    // SAFETY: `TIOCGPTPEER` takes open flags as a value and returns a new descriptor, owned
    // below; `master` is owned by the caller's description.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER as _, (flags & keep) | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let slave = unsafe { OwnedFd::from_raw_fd(fd) };
    let n = crate::pty::slave_number(slave.as_fd()).filter(|&n| p.ptys.is_ours(n)).ok_or(Errno::ENOTTY)?;
    let file = OpenFile::new(Backing::Host(slave), format!("/dev/pts/{n}").into_bytes(), (flags & keep) | O_LARGEFILE);
    p.fds.alloc(file, 0, flags & libc::O_CLOEXEC != 0)
}

/// `fcntl(fd, cmd, arg)`, but for the record locks ([`crate::syscall::locks::fcntl`]).
pub(in crate::syscall) fn fcntl(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (fd, cmd, arg) = (fdarg(a[0]), a[1] as i32, a[2]);
    let file = p.fds.get(fd)?;
    if file.status() & libc::O_PATH != 0 && !matches!(cmd, F_DUPFD | F_DUPFD_CLOEXEC | F_GETFD | F_SETFD | F_GETFL) {
        return Err(Errno::EBADF);
    }
    match cmd {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            let from = arg as i32;
            if from < 0 || from as usize >= p.fds.limit {
                return Err(Errno::EINVAL);
            }
            p.fds.alloc(file, from as usize, cmd == F_DUPFD_CLOEXEC)
        }
        F_GETFD => Ok(u64::from(p.fds.cloexec(fd)?)),
        F_SETFD => {
            p.fds.set_cloexec(fd, arg & libc::FD_CLOEXEC as u64 != 0)?;
            Ok(0)
        }
        F_GETFL => Ok(file.status() as u32 as u64),
        F_SETFL => {
            let changeable = libc::O_APPEND | libc::O_NONBLOCK;
            let mut st = file.status.lock_unpoisoned();
            *st = (*st & !changeable) | (arg as i32 & changeable);
            Ok(0)
        }
        F_GETOWN => Ok(0),
        F_SETOWN => Ok(0),
        F_GETPIPE_SZ | F_SETPIPE_SZ => {
            if !matches!(file.backing, Backing::Pipe(_)) {
                return Err(Errno::EBADF);
            }
            // The capacity is fixed: requests it already satisfies succeed.
            if cmd == F_SETPIPE_SZ && arg > crate::pipe::PIPE_CAPACITY as u64 {
                return Err(Errno::EPERM);
            }
            Ok(crate::pipe::PIPE_CAPACITY as u64)
        }
        _ => Err(Errno::EINVAL),
    }
}
