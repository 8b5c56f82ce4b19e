//! Metadata: the `stat` family, `statx`, the `access` family, `readlink*`, and `statfs`.

use std::os::fd::AsRawFd;

use super::common::{AT_EACCESS, AT_EMPTY_PATH, AT_FDCWD, AT_NO_AUTOMOUNT, AT_STATX_SYNC_TYPE, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, STATX_RESERVED, STATX_SIZE, STAT_SIZE, S_IFIFO, S_IFLNK, S_IFMT, fdarg, host_stat, put};
use super::paths::{at_path, read_path, resolve};
use crate::syscall::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::fs::{Stat, Timespec};
use crate::process::Process;

// ---------------------------------------------------------------------------------------------
// Stat conversions
// ---------------------------------------------------------------------------------------------

/// Metadata of whatever an open file description refers to.
pub(in crate::syscall) fn file_stat(p: &Process, file: &OpenFile) -> SysResult<Stat> {
    match &file.backing {
        Backing::File(f) => f.stat(),
        Backing::Host(h) => host_stat(h.as_raw_fd()),
        Backing::Socket(s) => host_stat(s.fd()),
        Backing::Epoll(e) => host_stat(e.host_fd()),
        Backing::Anon(a) => Ok(a.stat(&p.creds)),
        Backing::Pipe(end) => Ok(Stat {
            // pipefs: an anonymous device, one inode shared by both ends, owned by the creator.
            dev: 0xc,
            ino: end.id() >> 4,
            mode: S_IFIFO | 0o600,
            nlink: 1,
            uid: p.creds.euid,
            gid: p.creds.egid,
            blksize: 4096,
            ..Stat::default()
        }),
    }
}

/// Linux x86-64 `struct stat` (144 bytes) of `st`.
fn linux_stat(st: &Stat) -> [u8; STAT_SIZE] {
    let mut b = [0u8; STAT_SIZE];
    put(&mut b, 0, &st.dev.to_le_bytes());
    put(&mut b, 8, &st.ino.to_le_bytes());
    put(&mut b, 16, &st.nlink.to_le_bytes());
    put(&mut b, 24, &st.mode.to_le_bytes());
    put(&mut b, 28, &st.uid.to_le_bytes());
    put(&mut b, 32, &st.gid.to_le_bytes());
    put(&mut b, 40, &st.rdev.to_le_bytes());
    put(&mut b, 48, &st.size.to_le_bytes());
    put(&mut b, 56, &st.blksize.to_le_bytes());
    put(&mut b, 64, &st.blocks.to_le_bytes());
    for (i, t) in [st.atime, st.mtime, st.ctime].iter().enumerate() {
        put(&mut b, 72 + 16 * i, &t.sec.to_le_bytes());
        put(&mut b, 80 + 16 * i, &t.nsec.to_le_bytes());
    }
    b
}

/// Linux `struct statx` (256 bytes) of `st`, reporting `STATX_BASIC_STATS`.
fn linux_statx(st: &Stat) -> [u8; STATX_SIZE] {
    let mut b = [0u8; STATX_SIZE];
    let nsec = |t: &Timespec| t.nsec.clamp(0, 999_999_999) as u32;
    put(&mut b, 0, &STATX_BASIC_STATS.to_le_bytes());
    put(&mut b, 4, &u32::try_from(st.blksize).unwrap_or(u32::MAX).to_le_bytes());
    // 8: stx_attributes = 0
    put(&mut b, 16, &u32::try_from(st.nlink).unwrap_or(u32::MAX).to_le_bytes());
    put(&mut b, 20, &st.uid.to_le_bytes());
    put(&mut b, 24, &st.gid.to_le_bytes());
    put(&mut b, 28, &((st.mode & 0xffff) as u16).to_le_bytes());
    put(&mut b, 32, &st.ino.to_le_bytes());
    put(&mut b, 40, &st.size.to_le_bytes());
    put(&mut b, 48, &st.blocks.to_le_bytes());
    // 56: stx_attributes_mask = 0; 80: stx_btime left zero (not in the mask).
    for (at, t) in [(64, &st.atime), (96, &st.ctime), (112, &st.mtime)] {
        put(&mut b, at, &t.sec.to_le_bytes());
        put(&mut b, at + 8, &nsec(t).to_le_bytes());
    }
    put(&mut b, 128, &libc::major(st.rdev).to_le_bytes());
    put(&mut b, 132, &libc::minor(st.rdev).to_le_bytes());
    put(&mut b, 136, &libc::major(st.dev).to_le_bytes());
    put(&mut b, 140, &libc::minor(st.dev).to_le_bytes());
    b
}

/// The metadata a `newfstatat`/`statx` call asks for: `path` (at `path_addr`) relative to
/// `dirfd`, or with `AT_EMPTY_PATH` and an empty (or NULL) path, `dirfd` itself.
fn stat_at(p: &Process, dirfd: u64, path_addr: u64, flags: u64) -> SysResult<Stat> {
    let empty_ok = flags & AT_EMPTY_PATH != 0;
    let path = if empty_ok && path_addr == 0 { Vec::new() } else { read_path(p, path_addr)? };
    if path.is_empty() {
        if !empty_ok {
            return Err(Errno::ENOENT);
        }
        if dirfd as i32 == AT_FDCWD {
            return crate::pseudo::stat(p, &p.cwd, true, file_stat);
        }
        if (dirfd as i32) < 0 {
            return Err(Errno::EBADF);
        }
        return file_stat(p, &*p.fds.get(fdarg(dirfd))?);
    }
    let path = resolve(p, dirfd, &path)?;
    crate::pseudo::stat(p, &path, flags & AT_SYMLINK_NOFOLLOW == 0, file_stat)
}

/// Linux x86-64 `struct statfs` (120 bytes) of `st`.
fn linux_statfs(st: &crate::fs::FsStat) -> [u8; 120] {
    let mut b = [0u8; 120];
    for (i, v) in [st.fs_type, st.block_size, st.blocks, st.free, st.available, st.files, st.free_files].iter().enumerate() {
        put(&mut b, 8 * i, &v.to_le_bytes());
    }
    put(&mut b, 64, &st.name_max.to_le_bytes());
    put(&mut b, 72, &st.block_size.to_le_bytes());
    put(&mut b, 80, &st.flags.to_le_bytes());
    b
}

/// `statfs(path, buf)`: the space of the vNode's file system, which holds every path that
/// exists (`/proc` and `/dev` report it too).
pub fn statfs(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    stat_at(p, AT_FDCWD as u64, a[0], 0)?;
    let st = p.fs.stat_fs()?;
    p.mm.write_user(a[1], &linux_statfs(&st))?;
    Ok(0)
}

/// `fstatfs(fd, buf)`: as `statfs`, for an open descriptor.
pub fn fstatfs(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    p.fds.get(fdarg(a[0]))?;
    let st = p.fs.stat_fs()?;
    p.mm.write_user(a[1], &linux_statfs(&st))?;
    Ok(0)
}

/// `syncfs(2)`: every descriptor is on the vNode's one file system (or on none that keeps data).
pub fn syncfs(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    p.fds.get(fdarg(a[0]))?;
    p.fs.sync_all().map(|()| 0)
}

// ---------------------------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------------------------

pub fn stat(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    newfstatat(p, cpu, [AT_FDCWD as u64, a[0], a[1], 0, 0, 0])
}

pub fn lstat(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    newfstatat(p, cpu, [AT_FDCWD as u64, a[0], a[1], AT_SYMLINK_NOFOLLOW, 0, 0])
}

pub fn fstat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let file = p.fds.get(fdarg(a[0]))?;
    let st = file_stat(p, &file)?;
    p.mm.write_user(a[1], &linux_stat(&st))?;
    Ok(0)
}

/// `newfstatat(dirfd, path, buf, flags)`: `AT_SYMLINK_NOFOLLOW`, `AT_EMPTY_PATH`.
pub fn newfstatat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[3];
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT) != 0 {
        return Err(Errno::EINVAL);
    }
    let st = stat_at(p, a[0], a[1], flags)?;
    p.mm.write_user(a[2], &linux_stat(&st))?;
    Ok(0)
}

/// `statx(dirfd, path, flags, mask, buf)`: always reports `STATX_BASIC_STATS` whatever `mask`
/// asks (Linux may return more or less than asked); no birth time.
pub fn statx(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (flags, mask) = (a[2] & 0xffff_ffff, a[3] & 0xffff_ffff);
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE) != 0
        || flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE
        || mask & STATX_RESERVED != 0
    {
        return Err(Errno::EINVAL);
    }
    let st = stat_at(p, a[0], a[1], flags)?;
    p.mm.write_user(a[4], &linux_statx(&st))?;
    Ok(0)
}

pub fn access(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    faccessat2(p, cpu, [AT_FDCWD as u64, a[0], a[1], 0, 0, 0])
}

pub fn faccessat(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    faccessat2(p, cpu, [a[0], a[1], a[2], 0, 0, 0])
}

/// `faccessat2(dirfd, path, mode, flags)`. `AT_EACCESS` changes nothing (real and effective ids
/// are checked alike by the file system); with `AT_SYMLINK_NOFOLLOW` a symlink itself is
/// always accessible, as its permission bits are.
pub fn faccessat2(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let (mode, flags) = (a[2] as i32, a[3]);
    if flags & !(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    if mode & !0o7 != 0 {
        return Err(Errno::EINVAL);
    }
    let raw = read_path(p, a[1])?;
    let path = if raw.is_empty() && flags & AT_EMPTY_PATH != 0 {
        if a[0] as i32 == AT_FDCWD {
            p.cwd.clone()
        } else {
            let file = p.fds.get(fdarg(a[0]))?;
            match &file.backing {
                Backing::File(_) => file.path.clone(),
                // Pipes and host descriptors: their permissions are the creator's.
                _ => return Ok(0),
            }
        }
    } else {
        resolve(p, a[0], &raw)?
    };
    if flags & AT_SYMLINK_NOFOLLOW != 0 && crate::pseudo::stat(p, &path, false, file_stat)?.mode & S_IFMT == S_IFLNK {
        return Ok(0);
    }
    crate::pseudo::access(p, &path, mode)?;
    Ok(0)
}

pub fn readlink(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    readlinkat(p, cpu, [AT_FDCWD as u64, a[0], a[1], a[2], 0, 0])
}

/// `readlinkat(dirfd, path, buf, bufsiz)`: the target, truncated to `bufsiz`, without a NUL.
pub fn readlinkat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let bufsiz = a[3] as i32;
    if bufsiz <= 0 {
        return Err(Errno::EINVAL);
    }
    let path = at_path(p, a[0], a[1])?;
    let target = crate::pseudo::readlink(p, &path)?;
    let n = target.len().min(bufsiz as usize);
    p.mm.write_user(a[2], &target[..n])?;
    Ok(n as u64)
}
