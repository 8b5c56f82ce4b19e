//! Pseudo-files: `/proc`, `/dev` and the CPU lists of `/sys`, generated from the VMM's state
//! (the vNode's processes, memory and ExCache), never read from the host's.
//!
//! The layer sits in front of both file backends ([`crate::fs::hostdir`], [`crate::fs::remote`]):
//! the state layer hands every path-based open, stat, readlink and access to [`open`], [`stat`],
//! [`readlink`] and [`access`], which answer for pseudo paths and pass every other path on to
//! the process's file system unchanged. A symlink of the pseudo tree that leads back into the
//! vNode's files (`/proc/PID/cwd`, `exe`, `fd/N` of a file) is followed there. Open pseudo
//! files are [`crate::fs::File`]s, so `read`, `fstat`, `getdents64` and `lseek` need nothing
//! of their own; their contents are generated when they are opened.
//!
//! `/dev/shm` (Linux's tmpfs for POSIX shared memory and named semaphores) is a directory of
//! the vNode's files instead, made on first use ([`SHM_DIR`]): its files are mapped shared
//! between processes as any file is ([`crate::memory::shared`]).

mod clock;
mod dev;
mod node;
mod procfs;
pub mod view;

use std::sync::Arc;

use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::fs::Stat;
use crate::process::Process;


use node::{Kind, Node};

/// Most symlinks one path may go through (Linux's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// What an open of a path gives.
pub enum Opened {
    /// A new open file description over this backing, recorded under this path.
    New(Backing, Vec<u8>),
    /// An existing description (`/proc/PID/fd/N` of a pipe or a host descriptor, or
    /// `/dev/stdin` and friends), shared as `dup` would.
    Shared(Arc<OpenFile>),
    /// A FIFO of the vNode's files, at this path: the caller opens its pipe
    /// ([`crate::fifo`]), which may wait.
    Fifo(crate::fs::NodeId, Vec<u8>),
    /// A new pseudo-terminal master (`/dev/ptmx`) and its number: the caller makes its
    /// description and adopts it into the run's [`crate::pty::Ptys`].
    Master(std::os::fd::OwnedFd, u32),
}

/// Where a path leads once the pseudo tree has had its say.
enum Route {
    /// Not a pseudo path, or a pseudo symlink led back into the vNode's files: this path of the
    /// file system.
    Backend(Vec<u8>),
    /// A pseudo node.
    Pseudo(Node),
    /// A descriptor of a process (`/proc/PID/fd/N` followed to a pipe or host descriptor).
    Fd(Arc<OpenFile>),
}

/// The directory of the vNode's files that `/dev/shm` is.
pub const SHM_DIR: &[u8] = b"/dev/shm";

/// Makes [`SHM_DIR`] in the vNode's files if it is not there: world-writable and sticky, as
/// a tmpfs mounted there is.
fn ensure_shm_dir(p: &Process) -> SysResult<()> {
    if p.fs.stat(SHM_DIR, true).is_ok() {
        return Ok(());
    }
    for dir in [&b"/dev"[..], SHM_DIR] {
        match p.fs.mkdir(dir, 0o755, crate::fs::Owner::ROOT) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    p.fs.set_attr(SHM_DIR, true, crate::fs::SetAttr::Mode(0o1777))
}

/// The roots the layer answers for.
fn pseudo_root(first: &[u8]) -> bool {
    matches!(first, b"proc" | b"dev" | b"sys")
}

/// Walks `path` through the pseudo tree, following its symlinks (the last one only if
/// `follow`).
fn route(p: &Process, path: &[u8], follow: bool) -> SysResult<Route> {
    // A trailing slash follows the last link, as in Linux's path walk.
    let follow = follow || path.ends_with(b"/");
    let comps: Vec<&[u8]> = path
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    // Cheap exit for every ordinary path: only a first component naming a pseudo root (after
    // `.` and `..`) enters the tree.
    let first = comps.iter().find(|c| **c != b"." && **c != b"..");
    if !first.is_some_and(|c| pseudo_root(c)) {
        return Ok(Route::Backend(path.to_vec()));
    }
    if comps.len() >= 2 && comps[0] == b"dev" && comps[1] == b"shm" {
        ensure_shm_dir(p)?;
        return Ok(Route::Backend(path.to_vec()));
    }
    let ctx = node::Ctx::new(p);
    let mut todo: std::collections::VecDeque<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
    let mut at: Vec<Vec<u8>> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_slice() {
            b"." => continue,
            b".." => {
                at.pop();
                continue;
            }
            _ => at.push(c),
        }
        if !pseudo_root(&at[0]) {
            // `..` led out of the pseudo tree: the rest is the file system's.
            let mut rest = node::join(&at);
            for t in todo {
                rest.push(b'/');
                rest.extend_from_slice(&t);
            }
            return Ok(Route::Backend(rest));
        }
        let last = todo.is_empty();
        let here = ctx.lookup(&at)?;
        let target = match &here.kind {
            Kind::Link(t) if !last || follow => t.clone(),
            _ if last => return Ok(Route::Pseudo(here)),
            Kind::Dir(_) => continue,
            _ => return Err(Errno::ENOTDIR),
        };
        links += 1;
        if links > MAX_LINKS {
            return Err(Errno::ELOOP);
        }
        match target {
            node::Target::Path(t) => {
                at.pop();
                if t.first() == Some(&b'/') {
                    at.clear();
                }
                let split: Vec<Vec<u8>> = t
                    .split(|&c| c == b'/')
                    .filter(|c| !c.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                if split.first().is_some_and(|c| pseudo_root(c))
                    || (t.first() != Some(&b'/') && !at.is_empty())
                {
                    for s in split.into_iter().rev() {
                        todo.push_front(s);
                    }
                    continue;
                }
                // Back into the vNode's files, where the file system resolves the rest.
                let mut out = if t.first() == Some(&b'/') {
                    t
                } else {
                    node::join(&split)
                };
                for rest in todo {
                    out.push(b'/');
                    out.extend_from_slice(&rest);
                }
                return Ok(Route::Backend(out));
            }
            node::Target::Fd(file, _) => {
                if !last {
                    return Err(Errno::ENOTDIR);
                }
                return Ok(Route::Fd(file));
            }
        }
    }
    // The path named `/` after `..`s: not pseudo.
    Ok(Route::Backend(path.to_vec()))
}

/// `open(path, flags, mode)` for the state layer: a pseudo file, or the file system's.
pub fn open(p: &Process, path: Vec<u8>, flags: i32, mode: u32) -> SysResult<Opened> {
    let follow = flags & libc::O_NOFOLLOW == 0;
    match route(p, &path, follow)? {
        Route::Backend(real) => {
            let f = p.fs.open(&real, flags, mode, p.creds.creator())?;
            if let Some(node) = f.fifo().filter(|_| flags & libc::O_PATH == 0) {
                return Ok(Opened::Fifo(node, real));
            }
            Ok(Opened::New(
                Backing::File(f),
                if real == path { path } else { real },
            ))
        }
        // A file no name leads to is opened anew, as Linux opens it: a description of its own.
        Route::Fd(file) => match &file.backing {
            Backing::File(f) => Ok(Opened::New(Backing::File(f.reopen(flags)?), file.path.clone())),
            _ => Ok(Opened::Shared(file)),
        },
        Route::Pseudo(node) => {
            if flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0 {
                return Err(Errno::EEXIST);
            }
            node.open(p, flags, path)
        }
    }
}

/// `stat` (`follow`) or `lstat` of `path`; `of_file` gives the metadata of a descriptor a
/// `/proc/PID/fd/N` link leads to.
pub fn stat(
    p: &Process,
    path: &[u8],
    follow: bool,
    of_file: impl Fn(&Process, &OpenFile) -> SysResult<Stat>,
) -> SysResult<Stat> {
    match route(p, path, follow)? {
        Route::Backend(real) => p.fs.stat(&real, follow),
        Route::Fd(file) => of_file(p, &file),
        Route::Pseudo(node) => Ok(node.stat()),
    }
}

/// Target of the symlink at `path`.
pub fn readlink(p: &Process, path: &[u8]) -> SysResult<Vec<u8>> {
    match route(p, path, false)? {
        Route::Backend(real) => p.fs.readlink(&real),
        Route::Fd(_) => Err(Errno::EINVAL),
        Route::Pseudo(Node {
            kind: Kind::Link(t),
            ..
        }) => Ok(t.text()),
        Route::Pseudo(_) => Err(Errno::EINVAL),
    }
}

/// The path of the vNode's files `path` leads to (through `/proc/PID/exe` and the like), for
/// `execve`; `EACCES` for a pseudo file, which is never a program.
pub fn file_path(p: &Process, path: &[u8]) -> SysResult<Vec<u8>> {
    match route(p, path, true)? {
        Route::Backend(real) => Ok(real),
        Route::Fd(_) | Route::Pseudo(_) => Err(Errno::EACCES),
    }
}

/// Linux's `struct sysinfo` with the figures `/proc` shows: the vNode's uptime, memory and
/// processes, the pComponent's load averages.
pub fn sysinfo(p: &Process) -> [u8; 112] {
    let (total, free, _, _) = procfs::memory(p);
    let mut b = [0u8; 112];
    b[..8].copy_from_slice(&p.procs.started().elapsed().as_secs().to_le_bytes());
    for (i, load) in procfs::load_averages().iter().enumerate() {
        b[8 + 8 * i..16 + 8 * i].copy_from_slice(&((load * 65536.0) as u64).to_le_bytes());
    }
    b[32..40].copy_from_slice(&total.to_le_bytes());
    b[40..48].copy_from_slice(&free.to_le_bytes());
    let procs = u16::try_from(p.procs.running_pids(p.pid).len()).unwrap_or(u16::MAX);
    b[80..82].copy_from_slice(&procs.to_le_bytes());
    b[104..108].copy_from_slice(&1u32.to_le_bytes());
    b
}

/// `access(path, mode)`.
pub fn access(p: &Process, path: &[u8], mode: i32) -> SysResult<()> {
    match route(p, path, true)? {
        Route::Backend(real) => p.fs.access(&real, mode),
        Route::Fd(_) => Ok(()),
        Route::Pseudo(node) => {
            let perm = node.stat().mode;
            let denied = (mode & libc::W_OK != 0 && perm & 0o222 == 0)
                || (mode & libc::X_OK != 0 && perm & 0o111 == 0);
            if denied {
                Err(Errno::EACCES)
            } else {
                Ok(())
            }
        }
    }
}

/// `chmod`, `chown`, `utimensat` of `path`: the file system's, an open file's through
/// `/proc/PID/fd/N`, and `EPERM` for a generated file (it keeps no attributes).
pub fn set_attr(p: &Process, path: &[u8], follow: bool, attr: crate::fs::SetAttr) -> SysResult<()> {
    match route(p, path, follow)? {
        Route::Backend(real) => p.fs.set_attr(&real, follow, attr),
        Route::Fd(file) => match &file.backing {
            Backing::File(f) => f.set_attr(attr),
            _ => Err(Errno::EPERM),
        },
        Route::Pseudo(_) => Err(Errno::EPERM),
    }
}

/// The file-system path where `symlink` or `link` may make the new name `path`: `EEXIST` if it
/// names a pseudo file, `EPERM` for a new name in a pseudo directory (they take no new names).
pub fn new_name(p: &Process, path: &[u8]) -> SysResult<Vec<u8>> {
    match route(p, path, false) {
        Ok(Route::Backend(real)) => Ok(real),
        Ok(Route::Fd(_) | Route::Pseudo(_)) => Err(Errno::EEXIST),
        Err(Errno::ENOENT) => {
            let end = path.iter().rposition(|&c| c != b'/').map_or(0, |i| i + 1);
            let parent = match path[..end].iter().rposition(|&c| c == b'/') {
                Some(0) => &b"/"[..],
                Some(i) => &path[..i],
                None => &b"."[..],
            };
            match route(p, parent, true) {
                Ok(Route::Pseudo(_)) => Err(Errno::EPERM),
                _ => Err(Errno::ENOENT),
            }
        }
        Err(e) => Err(e),
    }
}

/// The file-system path of the existing file `path` for `link` (`follow`: as
/// `AT_SYMLINK_FOLLOW`), and whether to follow it there: an open file through
/// `/proc/PID/fd/N` is linked by the path it was opened by; a pseudo file is on another file
/// system (`EXDEV`).
pub fn link_source(p: &Process, path: &[u8], follow: bool) -> SysResult<(Vec<u8>, bool)> {
    match route(p, path, follow)? {
        Route::Backend(real) => Ok((real, follow)),
        Route::Fd(file) => match &file.backing {
            Backing::File(_) => Ok((file.path.clone(), false)),
            _ => Err(Errno::EXDEV),
        },
        Route::Pseudo(_) => Err(Errno::EXDEV),
    }
}
