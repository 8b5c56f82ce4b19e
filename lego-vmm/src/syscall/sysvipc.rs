//! System V shared memory: `shmget`, `shmat`, `shmdt` and `shmctl` over the run's table of
//! segments ([`crate::sysv::shm`]), whose pages are shared memory ([`crate::memory::shared`]).

use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::layout::{page_ceil, PAGE_SIZE};
use crate::memory::mm::flags::{MAP_FIXED, MAP_SHARED};
use crate::memory::paging::Prot;
use crate::memory::shared::{SharedFile, WINDOW_SIZE};
use crate::process::Process;
use crate::sysv::shm::{self, SHMMNI};
use crate::sysv::{now, seq, Get, IPC_64, IPC_INFO, IPC_RMID, IPC_SET, IPC_STAT};
use lego_proto::vma::VmaKind;

const SHM_LOCK: u64 = 11;
const SHM_UNLOCK: u64 = 12;
const SHM_STAT: u64 = 13;
const SHM_INFO: u64 = 14;
const SHM_STAT_ANY: u64 = 15;
const SHM_RDONLY: u64 = 0o10000;
const SHM_RND: u64 = 0o20000;
const SHM_REMAP: u64 = 0o40000;
const SHM_EXEC: u64 = 0o100000;
/// `shmat` rounds addresses down to this with `SHM_RND`.
const SHMLBA: u64 = PAGE_SIZE;

/// `shmget(key, size, flags)`.
pub fn shmget(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [key, size, flags, ..] = a;
    let make = || {
        SharedFile::new(p.mm.window()).map_err(|e| {
            tracing::info!("a System V shared memory segment: {e}");
            Errno::ENOMEM
        })
    };
    p.ipc.shm.get(&Get::new(key, flags), size, &p.creds, p.pid, make).map(|id| id as u64)
}

/// `shmat(id, addr, flags)`: maps segment `id` (at `addr`, or where the process has room) and
/// returns where.
pub fn shmat(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [id, addr, flags, ..] = a;
    let id = i32::try_from(id as i64).map_err(|_| Errno::EINVAL)?;
    let write = flags & SHM_RDONLY == 0;
    let (obj, size, key) = p.ipc.shm.with(id, |e| {
        if !e.perm.grants(&p.creds, shm::access(write)) {
            return Err(Errno::EACCES);
        }
        Ok((e.obj.obj.clone(), e.obj.size, e.perm.key))
    })?;
    let addr = match addr % SHMLBA {
        0 => addr,
        _ if flags & SHM_RND != 0 => addr - addr % SHMLBA,
        _ => return Err(Errno::EINVAL),
    };
    let len = page_ceil(size).ok_or(Errno::EINVAL)?;
    let mut prot = if write { Prot::RW } else { Prot::READ };
    if flags & SHM_EXEC != 0 {
        prot = prot.union(Prot::EXEC);
    }
    let mut map = MAP_SHARED;
    if addr != 0 {
        let end = addr.checked_add(len).ok_or(Errno::EINVAL)?;
        if flags & SHM_REMAP == 0 && !p.mm.vmas().is_free(addr, end) {
            return Err(Errno::EINVAL);
        }
        super::mapping::unmapping(p, addr, end);
        map |= MAP_FIXED;
    }
    // What Linux names the mapping (the segment's file on its internal shm mount).
    let name = format!("/SYSV{:08x} (deleted)", key as u32).into_bytes();
    let start = p.mm.mmap_object(addr, len, prot, map, VmaKind::File(name), &obj, 0)?;
    let (view, _) = p.mm.view_at(start).ok_or(Errno::EFAULT)?;
    p.ipc.shm.attached(id, &view, p.pid);
    super::mapping::mapped(p, start, len, None);
    Ok(start)
}

/// `shmdt(addr)`: unmaps the segment mapped at `addr` by `shmat`.
pub fn shmdt(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let addr = a[0];
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    let (view, len) = p.mm.view_at(addr).ok_or(Errno::EINVAL)?;
    let id = p.ipc.shm.segment_of(&view).ok_or(Errno::EINVAL)?;
    drop(view);
    super::mapping::unmapping(p, addr, addr + len);
    p.mm.munmap(addr, len)?;
    p.ipc.shm.detached(id, p.pid);
    Ok(0)
}

/// `shmctl(id, cmd, buf)`.
pub fn shmctl(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [id, cmd, buf, ..] = a;
    let cmd = cmd & !IPC_64;
    let index = id as u32 as usize;
    let id = id as i32;
    match cmd {
        IPC_INFO => {
            // struct shminfo: shmmax, shmmin, shmmni, shmseg, shmall, and four unused words.
            let mut b = [0u8; 72];
            for (i, v) in [WINDOW_SIZE, 1, SHMMNI as u64, SHMMNI as u64, WINDOW_SIZE / PAGE_SIZE].iter().enumerate() {
                b[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
            }
            p.mm.write_user(buf, &b)?;
            Ok(p.ipc.shm.usage().2 as u64)
        }
        SHM_INFO => {
            // struct shm_info: used_ids, then shm_tot and shm_rss in pages, the rest zero.
            let (n, bytes, highest) = p.ipc.shm.usage();
            let mut b = [0u8; 48];
            b[..4].copy_from_slice(&(n as i32).to_le_bytes());
            let pages = bytes.div_ceil(PAGE_SIZE);
            b[8..16].copy_from_slice(&pages.to_le_bytes());
            b[16..24].copy_from_slice(&pages.to_le_bytes());
            p.mm.write_user(buf, &b)?;
            Ok(highest as u64)
        }
        IPC_STAT | SHM_STAT | SHM_STAT_ANY => ipc_stat(p, cmd != IPC_STAT, id, index, buf, |i| p.ipc.shm.id_at(i), |id| {
            p.ipc.shm.with(id, |e| {
                permitted(cmd == SHM_STAT_ANY || e.perm.grants(&p.creds, shm::access(false)))?;
                Ok(shm::shmid_ds(e, seq(id, SHMMNI)))
            })
        }),
        IPC_SET => {
            let mut b = [0u8; 112];
            p.mm.read_user(buf, &mut b)?;
            p.ipc.shm.with(id, |e| {
                e.perm.may_change(&p.creds)?;
                e.perm.set(&b);
                e.obj.ctime = now();
                Ok(0)
            })
        }
        IPC_RMID => p.ipc.shm.with(id, |e| {
            e.perm.may_change(&p.creds)?;
            shm::remove(e);
            e.obj.ctime = now();
            Ok(0)
        }),
        SHM_LOCK | SHM_UNLOCK => p.ipc.shm.with(id, |e| {
            e.perm.may_change(&p.creds)?;
            shm::set_locked(e, cmd == SHM_LOCK);
            Ok(0)
        }),
        _ => Err(Errno::EINVAL),
    }
}

/// `IPC_STAT` of object `id`, or (`by_index`) a `*_STAT` of the object at index `index`, whose
/// id `id_at` finds: what `ds_of` gives for the object goes to `buf`. Returns 0, or the id.
pub(super) fn ipc_stat<const N: usize>(
    p: &Process,
    by_index: bool,
    id: i32,
    index: usize,
    buf: u64,
    id_at: impl FnOnce(usize) -> SysResult<i32>,
    ds_of: impl FnOnce(i32) -> SysResult<[u8; N]>,
) -> SysResult<u64> {
    let id = if by_index { id_at(index)? } else { id };
    p.mm.write_user(buf, &ds_of(id)?)?;
    Ok(if by_index { id as u64 } else { 0 })
}

/// `EACCES` unless the access asked of an object is `allowed`.
pub(super) fn permitted(allowed: bool) -> SysResult<()> {
    if allowed {
        Ok(())
    } else {
        Err(Errno::EACCES)
    }
}
