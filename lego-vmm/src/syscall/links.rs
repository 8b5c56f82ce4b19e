//! New names for files: `symlink`/`symlinkat` and `link`/`linkat`.
//!
//! The new name goes to the vNode's file system ([`crate::pseudo::new_name`] refuses one in
//! `/proc` or `/dev`); a symlink's text is stored as given and resolved, when followed, inside
//! the vNode root like any guest path.

use super::fs::common::{fdarg, AT_EMPTY_PATH, AT_FDCWD};
use super::fs::paths::{last_kind, read_path, resolve, Last};
use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::Backing;
use crate::process::Process;

/// `AT_SYMLINK_FOLLOW`: `linkat` follows a symlink source.
const AT_SYMLINK_FOLLOW: u64 = 0x400;

pub fn symlink(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    symlinkat(p, cpu, [a[0], AT_FDCWD as u64, a[1], 0, 0, 0])
}

/// `symlinkat(target, newdirfd, linkpath)`: an empty target is `ENOENT`; `.`, `..` and `/`
/// as the new name exist (`EEXIST`), as on Linux.
pub fn symlinkat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let target = read_path(p, a[0])?;
    let raw = read_path(p, a[2])?;
    let path = resolve(p, a[1], &raw)?;
    if target.is_empty() {
        return Err(Errno::ENOENT);
    }
    if last_kind(&raw) != Last::Normal {
        p.fs.stat(&path, true)?;
        return Err(Errno::EEXIST);
    }
    let real = crate::pseudo::new_name(p, &path)?;
    p.fs.symlink(&target, &real, p.creds.creator())?;
    Ok(0)
}

pub fn link(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    linkat(p, cpu, [AT_FDCWD as u64, a[0], AT_FDCWD as u64, a[1], 0, 0])
}

/// `linkat(olddirfd, old, newdirfd, new, flags)`: `AT_SYMLINK_FOLLOW` and `AT_EMPTY_PATH` (the
/// open file `olddirfd` itself, by the path it was opened by). A directory source is `EPERM`.
pub fn linkat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[4] as u32 as u64;
    if flags & !(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let old_raw = read_path(p, a[1])?;
    let new_raw = read_path(p, a[3])?;
    let (from, follow) = if old_raw.is_empty() && flags & AT_EMPTY_PATH != 0 {
        if a[0] as i32 == AT_FDCWD {
            return Err(Errno::EPERM);
        }
        let file = p.fds.get(fdarg(a[0]))?;
        match &file.backing {
            Backing::File(_) => (file.path.clone(), false),
            _ => return Err(Errno::EXDEV),
        }
    } else {
        let old = resolve(p, a[0], &old_raw)?;
        crate::pseudo::link_source(p, &old, flags & AT_SYMLINK_FOLLOW != 0)?
    };
    let new = resolve(p, a[2], &new_raw)?;
    if last_kind(&old_raw) != Last::Normal && !old_raw.is_empty() {
        // `.`, `..` and `/` are directories.
        p.fs.stat(&from, true)?;
        return Err(Errno::EPERM);
    }
    if last_kind(&new_raw) != Last::Normal {
        return Err(Errno::EEXIST);
    }
    let to = crate::pseudo::new_name(p, &new)?;
    p.fs.link(&from, &to, follow)?;
    Ok(0)
}
