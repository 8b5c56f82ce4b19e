//! Attribute changes: `chmod`/`fchmod`/`fchmodat`/`fchmodat2`, the `chown` family, `utime`/`utimes`/
//! `futimesat`/`utimensat`, and `truncate`; the extended-attribute calls.
//!
//! Owners are stored and reported, not enforced: every process of a vNode may change any file
//! of it (they all run as the VMM's host user on the host directory).
//!
//! The vNode's files keep no extended attributes, as a file system mounted without them: once
//! the file is found, `getxattr`, `setxattr` and `removexattr` (and their `l` and `f` forms)
//! fail with `EOPNOTSUPP`, and `listxattr` lists none. Programs that copy or show attributes
//! (`ls -l`, `cp -a`, Python's `shutil.copystat`) take that as "nothing to copy".

use std::os::fd::AsFd;

use super::fs::common::{fdarg, not_opath, AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW};
use super::fs::paths::{read_path, resolve};
use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::fs::{SetAttr, TimeSet, Timespec};
use crate::process::Process;

/// `tv_nsec` values of `utimensat(2)`.
const UTIME_NOW: i64 = (1 << 30) - 1;
const UTIME_OMIT: i64 = (1 << 30) - 2;

/// What an attribute call acts on.
enum Object {
    /// A vNode path (through `/proc` and `/dev` first).
    Path(Vec<u8>),
    /// An open file.
    Open(std::sync::Arc<OpenFile>),
}

/// The object of an `*at` call: `path` (at `addr`) relative to `dirfd`, or with
/// `AT_EMPTY_PATH` and an empty (or NULL) path, `dirfd` itself.
fn object(p: &Process, dirfd: u64, addr: u64, flags: u64) -> SysResult<Object> {
    let empty_ok = flags & AT_EMPTY_PATH != 0;
    let path = if empty_ok && addr == 0 { Vec::new() } else { read_path(p, addr)? };
    if !path.is_empty() {
        return Ok(Object::Path(resolve(p, dirfd, &path)?));
    }
    if !empty_ok {
        return Err(Errno::ENOENT);
    }
    if dirfd as i32 == AT_FDCWD {
        return Ok(Object::Path(p.cwd.clone()));
    }
    Ok(Object::Open(p.fds.get(fdarg(dirfd))?))
}

/// Applies `attr` to an open file: its file system's, or a host descriptor's (the run's
/// redirected standard streams); pipes, sockets and the VMM's own descriptors keep no
/// attributes (`EPERM`).
fn set_open(file: &OpenFile, attr: SetAttr) -> SysResult<()> {
    match &file.backing {
        Backing::File(f) => f.set_attr(attr),
        Backing::Host(h) => crate::fs::hostdir::set_attr_fd(h.as_fd(), attr),
        _ => Err(Errno::EPERM),
    }
}

fn apply(p: &Process, obj: Object, follow: bool, attr: SetAttr) -> SysResult<u64> {
    match obj {
        Object::Path(path) => crate::pseudo::set_attr(p, &path, follow, attr)?,
        Object::Open(file) => set_open(&file, attr)?,
    }
    Ok(0)
}

/// `fchmod`, `fchown`, `futimens`-style calls on a descriptor: `EBADF` for `O_PATH`.
fn apply_fd(p: &Process, fd: u64, attr: SetAttr) -> SysResult<u64> {
    let file = p.fds.get(fdarg(fd))?;
    not_opath(&file)?;
    set_open(&file, attr)?;
    Ok(0)
}

pub fn chmod(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    fchmodat(p, cpu, [AT_FDCWD as u64, a[0], a[1], 0, 0, 0])
}

pub fn fchmod(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    apply_fd(p, a[0], SetAttr::Mode(a[1] as u32 & 0o7777))
}

/// `fchmodat(dirfd, path, mode)`: the system call has no flags.
pub fn fchmodat(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    fchmodat2(p, cpu, [a[0], a[1], a[2], 0, 0, 0])
}

/// `fchmodat2(dirfd, path, mode, flags)`: `AT_SYMLINK_NOFOLLOW` (a symlink's own mode cannot
/// change: `EOPNOTSUPP`, as on Linux) and `AT_EMPTY_PATH`.
pub fn fchmodat2(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[3] as u32 as u64;
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let obj = object(p, a[0], a[1], flags)?;
    apply(p, obj, flags & AT_SYMLINK_NOFOLLOW == 0, SetAttr::Mode(a[2] as u32 & 0o7777))
}

/// An owner argument: `-1` (as a 32-bit id) leaves it.
fn owner(uid: u64, gid: u64) -> SetAttr {
    let id = |v: u64| Some(v as u32).filter(|&v| v != u32::MAX);
    SetAttr::Owner { uid: id(uid), gid: id(gid) }
}

pub fn chown(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    fchownat(p, cpu, [AT_FDCWD as u64, a[0], a[1], a[2], 0, 0])
}

pub fn lchown(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    fchownat(p, cpu, [AT_FDCWD as u64, a[0], a[1], a[2], AT_SYMLINK_NOFOLLOW, 0])
}

pub fn fchown(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    apply_fd(p, a[0], owner(a[1], a[2]))
}

/// `fchownat(dirfd, path, uid, gid, flags)`: `AT_SYMLINK_NOFOLLOW`, `AT_EMPTY_PATH`.
pub fn fchownat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[4] as u32 as u64;
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let obj = object(p, a[0], a[1], flags)?;
    apply(p, obj, flags & AT_SYMLINK_NOFOLLOW == 0, owner(a[2], a[3]))
}

/// A `struct timespec` of `utimensat`: `UTIME_NOW`, `UTIME_OMIT`, or a time whose nanoseconds
/// are below a second (`EINVAL` otherwise).
fn time_set(sec: i64, nsec: i64) -> SysResult<TimeSet> {
    match nsec {
        UTIME_NOW => Ok(TimeSet::Now),
        UTIME_OMIT => Ok(TimeSet::Omit),
        0..=999_999_999 => Ok(TimeSet::At(Timespec { sec, nsec })),
        _ => Err(Errno::EINVAL),
    }
}

/// Two `{i64, i64}` pairs at `addr` (timespecs or timevals).
fn read_pairs(p: &Process, addr: u64) -> SysResult<[(i64, i64); 2]> {
    let mut b = [0u8; 32];
    p.mm.read_user(addr, &mut b)?;
    let word = |i: usize| i64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]));
    Ok([(word(0), word(1)), (word(2), word(3))])
}

/// `utimensat(dirfd, path, times, flags)`: a NULL `path` is `dirfd` itself (`futimens`); NULL
/// `times` is now for both; both `UTIME_OMIT` succeeds at once, as Linux does.
pub fn utimensat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[3] as u32 as u64;
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let (atime, mtime) = if a[2] == 0 {
        (TimeSet::Now, TimeSet::Now)
    } else {
        let [at, mt] = read_pairs(p, a[2])?;
        (time_set(at.0, at.1)?, time_set(mt.0, mt.1)?)
    };
    if (atime, mtime) == (TimeSet::Omit, TimeSet::Omit) {
        return Ok(0);
    }
    let attr = SetAttr::Times { atime, mtime };
    if a[1] == 0 {
        if flags & AT_SYMLINK_NOFOLLOW != 0 {
            return Err(Errno::EINVAL);
        }
        if a[0] as i32 == AT_FDCWD {
            return Err(Errno::EFAULT);
        }
        let file = p.fds.get(fdarg(a[0]))?;
        set_open(&file, attr)?;
        return Ok(0);
    }
    let obj = object(p, a[0], a[1], flags)?;
    apply(p, obj, flags & AT_SYMLINK_NOFOLLOW == 0, attr)
}

/// `futimesat(dirfd, path, times)`: `times` are two `struct timeval`s (NULL: now); a NULL path
/// is `dirfd` itself.
pub fn futimesat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let attr = if a[2] == 0 {
        SetAttr::Times { atime: TimeSet::Now, mtime: TimeSet::Now }
    } else {
        let mut t = [TimeSet::Omit; 2];
        for (slot, (sec, usec)) in t.iter_mut().zip(read_pairs(p, a[2])?) {
            if !(0..1_000_000).contains(&usec) {
                return Err(Errno::EINVAL);
            }
            *slot = TimeSet::At(Timespec { sec, nsec: usec * 1000 });
        }
        SetAttr::Times { atime: t[0], mtime: t[1] }
    };
    if a[1] == 0 {
        if a[0] as i32 == AT_FDCWD {
            return Err(Errno::EFAULT);
        }
        set_open(&*p.fds.get(fdarg(a[0]))?, attr)?;
        return Ok(0);
    }
    let obj = object(p, a[0], a[1], 0)?;
    apply(p, obj, true, attr)
}

pub fn utimes(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if a[0] == 0 {
        return Err(Errno::EFAULT);
    }
    futimesat(p, cpu, [AT_FDCWD as u64, a[0], a[1], 0, 0, 0])
}

/// `utime(path, times)`: `times` is a `struct utimbuf` of whole seconds (NULL: now).
pub fn utime(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let attr = if a[1] == 0 {
        SetAttr::Times { atime: TimeSet::Now, mtime: TimeSet::Now }
    } else {
        let mut b = [0u8; 16];
        p.mm.read_user(a[1], &mut b)?;
        let sec = |i: usize| i64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]));
        let at = |s: i64| TimeSet::At(Timespec { sec: s, nsec: 0 });
        SetAttr::Times { atime: at(sec(0)), mtime: at(sec(1)) }
    };
    let obj = object(p, AT_FDCWD as u64, a[0], 0)?;
    apply(p, obj, true, attr)
}

/// `truncate(path, length)`: as `ftruncate` of the file opened for writing, with Linux's
/// errors for a negative length (`EINVAL`), a directory (`EISDIR`) and anything that is not
/// a regular file (`EINVAL`).
pub fn truncate(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let len = a[1] as i64;
    let path = resolve(p, AT_FDCWD as u64, &read_path(p, a[0])?)?;
    if len < 0 {
        return Err(Errno::EINVAL);
    }
    let st = crate::pseudo::stat(p, &path, true, |_, f| match &f.backing {
        Backing::File(f) => f.stat(),
        _ => Err(Errno::EINVAL),
    })?;
    match st.mode & libc::S_IFMT {
        libc::S_IFDIR => return Err(Errno::EISDIR),
        libc::S_IFREG => {}
        _ => return Err(Errno::EINVAL),
    }
    let backing = match crate::pseudo::open(p, path, libc::O_WRONLY, 0)? {
        crate::pseudo::Opened::New(backing, _) => backing,
        crate::pseudo::Opened::Shared(file) => return shared_truncate(&file, len as u64),
        crate::pseudo::Opened::Fifo(..) | crate::pseudo::Opened::Master(..) => return Err(Errno::EINVAL),
    };
    match backing {
        Backing::File(f) => f.set_len(len as u64)?,
        _ => return Err(Errno::EINVAL),
    }
    Ok(0)
}

/// `truncate` through `/proc/PID/fd/N`: the open file's length.
fn shared_truncate(file: &OpenFile, len: u64) -> SysResult<u64> {
    match &file.backing {
        Backing::File(f) => f.set_len(len).map(|()| 0),
        _ => Err(Errno::EINVAL),
    }
}

/// How an extended-attribute call names its file (the const parameter of [`xattr_one`] and
/// [`xattr_list`]): a path whose last symlink is followed (`getxattr`), one whose is not
/// (`lgetxattr`), or a descriptor (`fgetxattr`).
pub const XATTR_PATH: u8 = 0;
/// See [`XATTR_PATH`].
pub const XATTR_LPATH: u8 = 1;
/// See [`XATTR_PATH`].
pub const XATTR_FD: u8 = 2;

/// Finds the file an extended-attribute call names as `ON` says (its first argument); the
/// errors are those of finding it (`EBADF` for an `O_PATH` descriptor, as on Linux).
fn xattr_file<const ON: u8>(p: &Process, target: u64) -> SysResult<()> {
    if ON == XATTR_FD {
        return not_opath(&*p.fds.get(fdarg(target))?);
    }
    let path = resolve(p, AT_FDCWD as u64, &read_path(p, target)?)?;
    crate::pseudo::stat(p, &path, ON == XATTR_PATH, super::fs::file_stat).map(drop)
}

/// `getxattr`, `setxattr` and `removexattr`, in their three forms (`ON`): once the file is
/// found and the name checked (`ERANGE` when empty or past Linux's 255 bytes), `EOPNOTSUPP`.
pub fn xattr_one<const ON: u8>(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    xattr_file::<ON>(p, a[0])?;
    let name = p.mm.read_cstr(a[1], 256).map_err(|e| if e == Errno::ENAMETOOLONG { Errno::ERANGE } else { e })?;
    if name.is_empty() || name.len() > 255 {
        return Err(Errno::ERANGE);
    }
    Err(Errno::EOPNOTSUPP)
}

/// `listxattr(target, list, size)` in its three forms (`ON`): an empty list (0 bytes) once the
/// file is found.
pub fn xattr_list<const ON: u8>(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    xattr_file::<ON>(p, a[0]).map(|()| 0)
}
