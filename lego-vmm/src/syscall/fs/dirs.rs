//! Directories: `getdents64`, the name-space changes (`mkdir*`, `rmdir`, `unlink*`,
//! `rename*`), the working directory (`getcwd`, `chdir`, `fchdir`) and `umask`.

use lego_proto::sync::LockExt;
use std::collections::VecDeque;

use super::common::{AT_FDCWD, AT_REMOVEDIR, MAXSYMLINKS, RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT, S_IFLNK, S_IFMT, access_ok, fdarg, is_dir, not_opath, put};
use super::paths::{Last, at_path, last_kind, read_path, resolve};
use super::stat::file_stat;
use crate::syscall::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::Backing;
use crate::process::Process;

/// Non-empty components of `path` other than `.`.
fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&c| c == b'/').filter(|c| !c.is_empty() && *c != b".").map(<[u8]>::to_vec).collect()
}

fn from_components(c: &[Vec<u8>]) -> Vec<u8> {
    if c.is_empty() {
        return b"/".to_vec();
    }
    let mut out = Vec::new();
    for part in c {
        out.push(b'/');
        out.extend_from_slice(part);
    }
    out
}

/// The physical path of an existing directory, as Linux's `getcwd` reports it: `.`, `..`,
/// repeated and trailing slashes and symlinks resolved. `..` is applied lexically only after the
/// symlinks before it have been expanded, so it is the physical parent. (Used for the working
/// directory and the program's `/proc/PID/exe`; every other path goes to the file system
/// unnormalised.)
pub(crate) fn canonical(p: &Process, path: &[u8]) -> SysResult<Vec<u8>> {
    let mut todo: VecDeque<Vec<u8>> = components(path).into();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == b".." {
            out.pop();
            continue;
        }
        out.push(c);
        let cur = from_components(&out);
        if crate::pseudo::stat(p, &cur, false, file_stat)?.mode & S_IFMT == S_IFLNK {
            links += 1;
            if links > MAXSYMLINKS {
                return Err(Errno::ELOOP);
            }
            let target = crate::pseudo::readlink(p, &cur)?;
            out.pop();
            if target.first() == Some(&b'/') {
                out.clear();
            }
            for t in components(&target).into_iter().rev() {
                todo.push_front(t);
            }
        }
    }
    Ok(from_components(&out))
}

/// `getdents64(fd, buf, count)`: `struct linux_dirent64` records from the description's
/// position, as many as fit; `EINVAL` if not even one does.
pub fn getdents64(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = p.fds.get(fdarg(a[0]))?;
    not_opath(&file)?;
    let Backing::File(f) = &file.backing else { return Err(Errno::ENOTDIR) };
    let (addr, count) = (a[1], u64::from(a[2] as u32));
    if !access_ok(addr, count) {
        return Err(Errno::EFAULT);
    }
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    let mut off = file.offset.lock_unpoisoned();
    let mut pos = *off;
    let mut out: Vec<u8> = Vec::new();
    // Each record takes at least 24 bytes.
    let batch = (count / 24).clamp(1, 512);
    'fill: loop {
        let entries = match f.read_dir(pos, batch) {
            Ok(e) => e,
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        };
        if entries.is_empty() {
            break;
        }
        for e in entries {
            // d_ino 8, d_off 8, d_reclen 2, d_type 1, name, NUL; padded to 8.
            let reclen = (19 + e.name.len() + 1).next_multiple_of(8);
            if out.len().saturating_add(reclen) > count {
                if out.is_empty() {
                    return Err(Errno::EINVAL);
                }
                break 'fill;
            }
            let Ok(reclen16) = u16::try_from(reclen) else { return Err(Errno::EIO) };
            let start = out.len();
            out.resize(start + reclen, 0);
            let rec = &mut out[start..];
            put(rec, 0, &e.ino.to_le_bytes());
            put(rec, 8, &e.next.to_le_bytes());
            put(rec, 16, &reclen16.to_le_bytes());
            put(rec, 18, &[e.kind]);
            put(rec, 19, &e.name);
            pos = e.next;
        }
    }
    p.mm.write_user(addr, &out)?;
    *off = pos;
    Ok(out.len() as u64)
}

// ---------------------------------------------------------------------------------------------
// Name-space changes
// ---------------------------------------------------------------------------------------------

pub fn mkdir(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    mkdirat(p, cpu, [AT_FDCWD as u64, a[0], a[1], 0, 0, 0])
}

pub fn mkdirat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let raw = read_path(p, a[1])?;
    let path = resolve(p, a[0], &raw)?;
    if last_kind(&raw) != Last::Normal {
        // `.`, `..` and `/` exist by definition (once the path to them resolves).
        p.fs.stat(&path, true)?;
        return Err(Errno::EEXIST);
    }
    let mode = (a[2] as u32) & 0o1777 & !p.umask;
    p.fs.mkdir(&path, mode, p.creds.creator())?;
    Ok(0)
}

/// `rmdir` of the guest path `raw` relative to `dirfd`: `EINVAL` for `.`, `ENOTEMPTY` for
/// `..`, `EBUSY` for `/`, as Linux.
fn rmdir_at(p: &Process, dirfd: u64, raw: &[u8]) -> SysResult<u64> {
    let path = resolve(p, dirfd, raw)?;
    let special = match last_kind(raw) {
        Last::Normal => None,
        Last::Dot => Some(Errno::EINVAL),
        Last::DotDot => Some(Errno::ENOTEMPTY),
        Last::Root => Some(Errno(libc::EBUSY)),
    };
    if let Some(e) = special {
        p.fs.stat(&path, true)?;
        return Err(e);
    }
    p.fs.rmdir(&path)?;
    Ok(0)
}

/// `unlink` of the guest path `raw` relative to `dirfd`: `EISDIR` for `.`, `..` and `/`.
fn unlink_at(p: &Process, dirfd: u64, raw: &[u8]) -> SysResult<u64> {
    let path = resolve(p, dirfd, raw)?;
    if last_kind(raw) != Last::Normal {
        p.fs.stat(&path, true)?;
        return Err(Errno::EISDIR);
    }
    p.fs.unlink(&path)?;
    Ok(0)
}

pub fn rmdir(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let raw = read_path(p, a[0])?;
    rmdir_at(p, AT_FDCWD as u64, &raw)
}

pub fn unlink(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let raw = read_path(p, a[0])?;
    unlink_at(p, AT_FDCWD as u64, &raw)
}

/// `unlinkat(dirfd, path, flags)`: `AT_REMOVEDIR` makes it `rmdir`.
pub fn unlinkat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[2] as u32 as u64;
    if flags & !AT_REMOVEDIR != 0 {
        return Err(Errno::EINVAL);
    }
    let raw = read_path(p, a[1])?;
    if flags & AT_REMOVEDIR != 0 {
        rmdir_at(p, a[0], &raw)
    } else {
        unlink_at(p, a[0], &raw)
    }
}

pub fn rename(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    renameat2(p, cpu, [AT_FDCWD as u64, a[0], AT_FDCWD as u64, a[1], 0, 0])
}

pub fn renameat(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    renameat2(p, cpu, [a[0], a[1], a[2], a[3], 0, 0])
}

/// `renameat2(olddirfd, old, newdirfd, new, flags)`: `RENAME_NOREPLACE` is emulated by checking
/// the target first (a vNode has one process, so nothing can race in between);
/// `RENAME_EXCHANGE` and `RENAME_WHITEOUT` are not supported (`EINVAL`, as on file systems
/// without them).
pub fn renameat2(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[4] as u32 as u64;
    if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) != 0
        || (flags & (RENAME_NOREPLACE | RENAME_WHITEOUT) != 0 && flags & RENAME_EXCHANGE != 0)
    {
        return Err(Errno::EINVAL);
    }
    let old_raw = read_path(p, a[1])?;
    let new_raw = read_path(p, a[3])?;
    let old = resolve(p, a[0], &old_raw)?;
    let new = resolve(p, a[2], &new_raw)?;
    if last_kind(&old_raw) != Last::Normal {
        return Err(Errno(libc::EBUSY));
    }
    if last_kind(&new_raw) != Last::Normal {
        return Err(if flags & RENAME_NOREPLACE != 0 { Errno::EEXIST } else { Errno(libc::EBUSY) });
    }
    if flags & (RENAME_EXCHANGE | RENAME_WHITEOUT) != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & RENAME_NOREPLACE != 0 {
        // The source must exist (ENOENT first, as Linux), the target must not.
        p.fs.stat(&old, false)?;
        if p.fs.stat(&new, false).is_ok() {
            return Err(Errno::EEXIST);
        }
    }
    p.fs.rename(&old, &new)?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// Working directory and umask
// ---------------------------------------------------------------------------------------------

/// `getcwd(buf, size)`: the path and its NUL; returns the length including the NUL.
pub fn getcwd(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let mut out = p.cwd.clone();
    out.push(0);
    if a[1] < out.len() as u64 {
        return Err(Errno::ERANGE);
    }
    p.mm.write_user(a[0], &out)?;
    Ok(out.len() as u64)
}

/// Makes the directory at vNode path `path` the working directory: `ENOTDIR` unless it is a
/// directory, and search permission needed. The stored path is canonical (see [`canonical`]),
/// so `getcwd` never shows `.`, `..` or symlinks.
fn set_cwd(p: &mut Process, path: &[u8]) -> SysResult<u64> {
    if !is_dir(crate::pseudo::stat(p, path, true, file_stat)?.mode) {
        return Err(Errno::ENOTDIR);
    }
    crate::pseudo::access(p, path, libc::X_OK)?;
    p.cwd = canonical(p, path)?;
    Ok(0)
}

pub fn chdir(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let path = at_path(p, AT_FDCWD as u64, a[0])?;
    set_cwd(p, &path)
}

pub fn fchdir(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = p.fds.get(fdarg(a[0]))?;
    if !matches!(file.backing, Backing::File(_)) {
        return Err(Errno::ENOTDIR);
    }
    set_cwd(p, &file.path)
}

pub fn umask(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let old = p.umask;
    p.umask = (a[0] as u32) & 0o777;
    Ok(u64::from(old))
}
