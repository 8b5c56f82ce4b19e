//! Mapping state calls: `msync`, `mincore`, and `mlock` with its friends, and the bookkeeping
//! of writable shared file mappings ([`crate::mapstate`]) that `mmap`, `munmap`, `mremap`,
//! `execve` and the end of a process call.

use std::sync::Arc;

use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::fdtable::{Backing, OpenFile};
use crate::layout::PAGE_SIZE;
use crate::mapstate::{dirty_pages, SharedMap};
use crate::process::Process;

const MS_ASYNC: u64 = 1;
const MS_INVALIDATE: u64 = 2;
const MS_SYNC: u64 = 4;
const MCL_CURRENT: u64 = 1;
const MCL_FUTURE: u64 = 2;
const MCL_ONFAULT: u64 = 4;
const MLOCK_ONFAULT: u64 = 1;

fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE_SIZE - 1).map(|v| v & !(PAGE_SIZE - 1))
}

/// `[start, end)` of a page-aligned call's range: `EINVAL` if `addr` is not aligned or the range
/// wraps, `ENOMEM` if any of it is not mapped.
fn mapped_range(p: &Process, addr: u64, len: u64) -> SysResult<(u64, u64)> {
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    let end = addr
        .checked_add(len)
        .and_then(page_up)
        .ok_or(Errno::ENOMEM)?;
    if !p.mm.vmas().covered(addr, end, |_| true) {
        return Err(Errno::ENOMEM);
    }
    Ok((addr, end))
}

/// A new mapping `[start, start + len)` was made: `MCL_FUTURE` locks it, and a writable shared
/// file mapping of `file` at `offset`, whose bytes within the file are `clean`, is tracked for
/// write-back (its pages that hold file bytes).
pub fn mapped(
    p: &mut Process,
    start: u64,
    len: u64,
    shared: Option<(Arc<OpenFile>, u64, Vec<u8>)>,
) {
    let end = start + page_up(len).unwrap_or(len);
    if p.maps.lock_all as u64 & MCL_FUTURE != 0 {
        p.maps.set_locked(start, end, true);
        count_locked(p);
    }
    if let Some((file, offset, mut clean)) = shared {
        // Only what lies within the file is ever written back: the rest is not tracked.
        let len = page_up(clean.len() as u64).unwrap_or(0).min(end - start);
        clean.resize(len as usize, 0);
        if len > 0 {
            p.maps.shared.push(SharedMap { start, len, file, offset, clean });
        }
    }
}

/// Writes the changed pages of the shared mappings in `[start, end)` back to their files (only
/// what lies within each file's size: a mapping never makes its file longer). `sync` also syncs
/// the files.
pub fn write_back(p: &mut Process, start: u64, end: u64, sync: bool) -> SysResult<()> {
    let mut first_error = None;
    let mut maps = std::mem::take(&mut p.maps.shared);
    for m in maps.iter_mut().filter(|m| m.start < end && start < m.end()) {
        let (from, to) = (m.start.max(start), m.end().min(end));
        let at = (from - m.start) as usize;
        let mut now = vec![0u8; (to - from) as usize];
        // Memory the program made unreadable keeps its last written-back bytes.
        if p.mm.read_user(from, &mut now).is_err() {
            continue;
        }
        let Backing::File(f) = &m.file.backing else {
            continue;
        };
        let size = match f.stat() {
            Ok(st) => st.size,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        for (off, len) in dirty_pages(&m.clean[at..at + now.len()], &now) {
            let file_at = m.offset + (at + off) as u64;
            let keep = size.saturating_sub(file_at).min(len as u64) as usize;
            if keep > 0 {
                if let Err(e) = f.write_at(&now[off..off + keep], file_at) {
                    first_error.get_or_insert(e);
                    continue;
                }
            }
            m.clean[at + off..at + off + len].copy_from_slice(&now[off..off + len]);
        }
        if sync {
            if let Err(e) = f.sync(true) {
                first_error.get_or_insert(e);
            }
        }
    }
    maps.append(&mut p.maps.shared);
    p.maps.shared = maps;
    first_error.map_or(Ok(()), Err)
}

/// `[start, end)` is going away (`munmap`, `mmap` with `MAP_FIXED`, `mremap`): its shared
/// mappings are written back, and it is forgotten.
pub fn unmapping(p: &mut Process, start: u64, end: u64) {
    if let Err(e) = write_back(p, start, end, false) {
        tracing::warn!(start, end, "writing back a shared mapping: {e}");
    }
    p.maps.unmapped(start, end);
}

/// The process ends or execs: every shared mapping is written back, and locks go.
pub fn unmapping_all(p: &mut Process) {
    unmapping(p, 0, u64::MAX);
    p.maps.unlock_all();
}

/// `msync(addr, len, flags)`: the shared file mappings of the range go to their files.
pub fn msync(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [addr, len, flags, ..] = a;
    if flags & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0
        || flags & (MS_ASYNC | MS_SYNC) == MS_ASYNC | MS_SYNC
    {
        return Err(Errno::EINVAL);
    }
    let (start, end) = mapped_range(p, addr, len)?;
    write_back(p, start, end, flags & MS_SYNC != 0).map(|()| 0)
}

/// `mincore(addr, len, vec)`: every mapped page reads as resident. Pages live in the ExCache
/// or on a memory server, which serves any page on demand; the ExCache keeps no per-page
/// residency that could be asked cheaply.
pub fn mincore(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [addr, len, vec, ..] = a;
    let (start, end) = mapped_range(p, addr, len)?;
    let pages = ((end - start) / PAGE_SIZE) as usize;
    p.mm.write_user(vec, &vec![1u8; pages]).map(|()| 0)
}

/// Locks or unlocks a range: checked against `RLIMIT_MEMLOCK` for an unprivileged caller.
fn lock_range(p: &mut Process, addr: u64, len: u64, on: bool) -> SysResult<u64> {
    let start = addr & !(PAGE_SIZE - 1);
    let end = addr
        .checked_add(len)
        .and_then(page_up)
        .ok_or(Errno::ENOMEM)?;
    if !p.mm.vmas().covered(start, end, |_| true) {
        return Err(Errno::ENOMEM);
    }
    let before = p.maps.locked_bytes();
    p.maps.set_locked(start, end, on);
    let limit = p.rlimits[libc::RLIMIT_MEMLOCK as usize].0;
    if on && !p.creds.capable(crate::identity::cap::IPC_LOCK) && p.maps.locked_bytes() > limit && p.maps.locked_bytes() > before {
        p.maps.set_locked(start, end, false);
        return Err(if limit == 0 {
            Errno::EPERM
        } else {
            Errno::ENOMEM
        });
    }
    count_locked(p);
    Ok(0)
}

/// Keeps the most memory locked at once for `--stats`.
fn count_locked(p: &mut Process) {
    p.stats.peak_locked = p.stats.peak_locked.max(p.maps.locked_bytes());
}

/// `mlock(addr, len)`: accepted and accounted; every page of a vNode is served on demand, so
/// locking changes where nothing lives.
pub fn mlock(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    lock_range(p, a[0], a[1], true)
}

/// `mlock2(addr, len, flags)`.
pub fn mlock2(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if a[2] & !MLOCK_ONFAULT != 0 {
        return Err(Errno::EINVAL);
    }
    lock_range(p, a[0], a[1], true)
}

pub fn munlock(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    lock_range(p, a[0], a[1], false)
}

/// `mlockall(flags)`: `MCL_CURRENT` locks what is mapped, `MCL_FUTURE` what will be.
pub fn mlockall(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let flags = a[0];
    if flags == 0 || flags & !(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0 || flags == MCL_ONFAULT
    {
        return Err(Errno::EINVAL);
    }
    if flags & MCL_CURRENT != 0 {
        let ranges: Vec<(u64, u64)> = p.mm.vmas().iter().map(|v| (v.start, v.end)).collect();
        for (s, e) in ranges {
            p.maps.set_locked(s, e, true);
        }
    }
    p.maps.lock_all = flags as i32;
    count_locked(p);
    Ok(0)
}

pub fn munlockall(p: &mut Process, _: &mut Cpu<'_>, _: Args) -> SysResult<u64> {
    p.maps.unlock_all();
    Ok(0)
}
