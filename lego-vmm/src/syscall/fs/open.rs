//! Opening and closing: `open`, `creat`, `openat`, `close`, `dup*`, `pipe*`.

use lego_proto::sync::LockExt;

use super::common::{AT_FDCWD, O_LARGEFILE, O_TMPFILE_BIT, fdarg, is_dir, put};
use super::dirs::canonical;
use super::paths::at_path;
use super::rw::PIPE_SLICE;
use crate::syscall::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::pipe::{Pipe, PipeEnd};
use crate::process::{Locked, Process};

// ---------------------------------------------------------------------------------------------
// Opening and closing
// ---------------------------------------------------------------------------------------------

pub fn open(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    openat(p, cpu, [AT_FDCWD as u64, a[0], a[1], a[2], 0, 0])
}

/// `creat(path, mode)`: `open(path, O_CREAT | O_WRONLY | O_TRUNC, mode)`.
pub fn creat(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64;
    openat(p, cpu, [AT_FDCWD as u64, a[0], flags, a[1], 0, 0])
}

/// `openat(dirfd, path, flags, mode)`. `O_PATH` descriptors refuse I/O as Linux's do;
/// `O_TMPFILE` is not supported (`EOPNOTSUPP`, which makes libc fall back to a named file).
pub fn openat(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[2] as i32;
    let path = at_path(p, a[0], a[1])?;
    if flags & O_TMPFILE_BIT != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let mode = (a[3] as u32) & 0o7777 & !p.umask;
    // What `F_GETFL` reports: `O_PATH` keeps only `O_DIRECTORY` and `O_NOFOLLOW`; otherwise the
    // flags minus those that only act at open time.
    let status = if flags & libc::O_PATH != 0 {
        flags & (libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
    } else {
        flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC | libc::O_CLOEXEC)
    } | O_LARGEFILE;
    let file = match crate::pseudo::open(p, path, flags, mode)? {
        crate::pseudo::Opened::New(backing, path) => {
            let path = kept_path(p, &backing, path);
            OpenFile::new(backing, path, status)
        }
        crate::pseudo::Opened::Shared(file) => file,
        crate::pseudo::Opened::Master(master, n) => {
            let file = OpenFile::new(Backing::Host(master), b"/dev/ptmx".to_vec(), status);
            p.ptys.adopt(n, &file);
            let (ptys, procs) = (p.ptys.clone(), p.procs.clone());
            *file.on_close.lock_unpoisoned() = Some(Box::new(move || {
                if let Some(sid) = ptys.hang_up(n) {
                    crate::proctable::signal_in_background(procs.kill_targets(sid, sid).unwrap_or_default(), &[libc::SIGHUP, libc::SIGCONT]);
                }
            }));
            file
        }
        crate::pseudo::Opened::Fifo(node, path) => {
            OpenFile::new(Backing::Pipe(open_fifo(p, cpu.tid, node, flags)?), path, status)
        }
    };
    p.fds.alloc(file, 0, flags & libc::O_CLOEXEC != 0)
}

/// The path a new descriptor keeps, which `*at` calls relative to it start from. A directory
/// reached through `.` or `..` keeps its physical path (as `getcwd` would report it), so that
/// it still names the directory itself when the path it was reached by no longer leads there,
/// as a Linux descriptor does: `rm -rf` opens `dir/sub/..`, removes `sub`, then removes the
/// rest of `dir` through that descriptor.
fn kept_path(p: &Process, backing: &Backing, path: Vec<u8>) -> Vec<u8> {
    let dotted = path.split(|&c| c == b'/').any(|c| c == b"." || c == b"..");
    match backing {
        Backing::File(f) if dotted && f.stat().is_ok_and(|st| is_dir(st.mode)) => canonical(p, &path).unwrap_or(path),
        _ => path,
    }
}

/// Opens an end of FIFO `node`'s pipe as [`crate::fifo`] says, waiting without the process
/// lock for the other side (`EINTR` when the process ends or a signal comes for thread `tid`).
/// A FIFO is opened for reading or for writing: `O_RDWR` (which Linux allows, and which never
/// waits) is refused with `EINVAL`, as a pipe end here carries one direction.
fn open_fifo(p: &mut Locked<'_>, tid: i32, node: crate::fs::NodeId, flags: i32) -> SysResult<PipeEnd> {
    let write = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => false,
        libc::O_WRONLY => true,
        _ => return Err(Errno::EINVAL),
    };
    let pipe = p.fifos.pipe(node);
    let (end, wait) = crate::fifo::take_end(&pipe, write, flags & libc::O_NONBLOCK != 0)?;
    let Some(before) = wait else { return Ok(end) };
    let group = p.group.clone();
    loop {
        if crate::fifo::rendezvous(write, before, pipe.ends().1) {
            return Ok(end);
        }
        p.unlocked(|| pipe.wait_changed(PIPE_SLICE));
        if group.ending() || group.interrupted(tid) {
            return Err(Errno::EINTR);
        }
    }
}

pub fn close(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = p.fds.get(fdarg(a[0]))?;
    crate::syscall::locks::closing(p, &file);
    p.fds.close(fdarg(a[0]))?;
    Ok(0)
}

pub fn dup(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = p.fds.get(fdarg(a[0]))?;
    p.fds.alloc(file, 0, false)
}

pub fn dup2(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (old, new) = (fdarg(a[0]), fdarg(a[1]));
    if old == new {
        p.fds.get(old)?;
        return Ok(new);
    }
    dup3(p, cpu, [old, new, 0, 0, 0, 0])
}

pub fn dup3(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (old, new, flags) = (fdarg(a[0]), fdarg(a[1]), a[2] as i32);
    if flags & !libc::O_CLOEXEC != 0 || old == new {
        return Err(Errno::EINVAL);
    }
    if new >= p.fds.limit as u64 {
        return Err(Errno::EBADF);
    }
    let file = p.fds.get(old)?;
    p.fds.install(new, file, flags & libc::O_CLOEXEC != 0)?;
    Ok(new)
}

pub fn pipe(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    pipe2(p, cpu, [a[0], 0, 0, 0, 0, 0])
}

/// `pipe2(fds, flags)`: `O_CLOEXEC` and `O_NONBLOCK`; packet mode (`O_DIRECT`) is not
/// supported (`EINVAL`, as kernels without it answer).
pub fn pipe2(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[1] as i32;
    if flags & !(libc::O_CLOEXEC | libc::O_NONBLOCK) != 0 {
        return Err(Errno::EINVAL);
    }
    if !p.mm.user_accessible(a[0], 8, true) {
        return Err(Errno::EFAULT);
    }
    let cloexec = flags & libc::O_CLOEXEC != 0;
    let nonblock = flags & libc::O_NONBLOCK;
    let (r, w) = Pipe::create();
    let rfd = p.fds.alloc(OpenFile::new(Backing::Pipe(r), b"pipe:".to_vec(), libc::O_RDONLY | nonblock), 0, cloexec)?;
    let wfd = match p.fds.alloc(OpenFile::new(Backing::Pipe(w), b"pipe:".to_vec(), libc::O_WRONLY | nonblock), 0, cloexec) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = p.fds.close(rfd);
            return Err(e);
        }
    };
    let mut out = [0u8; 8];
    put(&mut out, 0, &(rfd as i32).to_le_bytes());
    put(&mut out, 4, &(wfd as i32).to_le_bytes());
    if let Err(e) = p.mm.write_user(a[0], &out) {
        let _ = p.fds.close(rfd);
        let _ = p.fds.close(wfd);
        return Err(e);
    }
    Ok(0)
}
