//! Guest paths: reading them, and joining them with the working directory or a directory
//! descriptor into vNode paths.


use super::common::{AT_FDCWD, PATH_MAX, is_dir};
use crate::errno::{Errno, SysResult};
use crate::fdtable::Backing;
use crate::process::Process;

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

/// Reads a path argument: `EFAULT`, or `ENAMETOOLONG` beyond `PATH_MAX`.
pub(in crate::syscall) fn read_path(p: &Process, addr: u64) -> SysResult<Vec<u8>> {
    p.mm.read_cstr(addr, PATH_MAX)
}

/// `base` + `/` + `rel`.
fn join(base: &[u8], rel: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(base.len() + rel.len() + 1);
    out.extend_from_slice(base);
    if !out.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(rel);
    out
}

/// The vNode path of the directory relative paths of an `*at` call start from: the working
/// directory for `AT_FDCWD`, else the path `dirfd` was opened by (`EBADF`, or `ENOTDIR` if it
/// is not a directory).
fn dir_path(p: &Process, dirfd: u64) -> SysResult<Vec<u8>> {
    let dirfd = dirfd as i32;
    if dirfd == AT_FDCWD {
        return Ok(p.cwd.clone());
    }
    if dirfd < 0 {
        return Err(Errno::EBADF);
    }
    let file = p.fds.get(dirfd as u64)?;
    match &file.backing {
        Backing::File(f) if is_dir(f.stat()?.mode) => Ok(file.path.clone()),
        _ => Err(Errno::ENOTDIR),
    }
}

/// Joins guest path `path` with the directory `dirfd` names (ignored for absolute paths).
/// Empty paths are `ENOENT` (callers handling `AT_EMPTY_PATH` check before).
pub(in crate::syscall) fn resolve(p: &Process, dirfd: u64, path: &[u8]) -> SysResult<Vec<u8>> {
    match path.first() {
        None => Err(Errno::ENOENT),
        Some(b'/') => Ok(path.to_vec()),
        Some(_) => Ok(join(&dir_path(p, dirfd)?, path)),
    }
}

/// Reads the path at `addr` and resolves it against `dirfd`.
pub(in crate::syscall) fn at_path(p: &Process, dirfd: u64, addr: u64) -> SysResult<Vec<u8>> {
    let path = read_path(p, addr)?;
    resolve(p, dirfd, &path)
}

/// What the last component of a path is, for the calls Linux refuses on `.`, `..` and `/`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(in crate::syscall) enum Last {
    Normal,
    Dot,
    DotDot,
    Root,
}

pub(in crate::syscall) fn last_kind(path: &[u8]) -> Last {
    let end = path.iter().rposition(|&c| c != b'/').map_or(0, |i| i + 1);
    let trimmed = &path[..end];
    if trimmed.is_empty() {
        return Last::Root;
    }
    let name = match trimmed.iter().rposition(|&c| c == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    match name {
        b"." => Last::Dot,
        b".." => Last::DotDot,
        _ => Last::Normal,
    }
}
