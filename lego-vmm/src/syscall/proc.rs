//! Process identity, exit, limits and per-thread registrations.

use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::identity::cap;
use crate::process::Process;

pub fn getpid(p: &mut Process, _: &mut Cpu<'_>, _: Args) -> SysResult<u64> {
    Ok(p.pid as u64)
}
/// `getppid`: the parent may have changed since the fork (orphans go to the first process).
pub fn getppid(p: &mut Process, _: &mut Cpu<'_>, _: Args) -> SysResult<u64> {
    Ok(p.procs.ppid(p.pid) as u64)
}

/// `rseq`: registration is accepted and the CPU id fields are kept at 0, or at the one core a
/// thread pinned itself to (`sched_setaffinity`). A vNode thread is never preempted, migrated or
/// interrupted by a signal inside a critical section, so no abort is ever owed.
pub fn rseq(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [addr, len, flags, _sig, ..] = a;
    if flags & !1 != 0 || len < 32 || addr % 32 != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & 1 == 0 {
        // cpu_id_start, cpu_id; node_id and mm_cid when the area has them.
        p.mm.write_user(addr, &[0u8; 8])?;
        if len >= 32 {
            p.mm.write_user(addr + 24, &[0u8; 8])?;
        }
    }
    p.thread(cpu.tid).rseq = if flags & 1 == 0 { addr } else { 0 };
    super::sched::pinned_cpu_to_rseq(p, cpu.tid);
    Ok(0)
}

/// `sched_yield`: the vCPU's host thread yields its core (other threads of the process may be
/// waiting for it).
pub fn sched_yield(_: &mut Process, _: &mut Cpu<'_>, _: Args) -> SysResult<u64> {
    std::thread::yield_now();
    Ok(0)
}

/// `arch_prctl`: FS/GS bases live in the segment registers the VMM writes back on return.
pub fn arch_prctl(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    const ARCH_SET_GS: u64 = 0x1001;
    const ARCH_SET_FS: u64 = 0x1002;
    const ARCH_GET_FS: u64 = 0x1003;
    const ARCH_GET_GS: u64 = 0x1004;
    const ARCH_GET_CPUID: u64 = 0x1011;
    let canonical = |v: u64| v < (1 << 47);
    match a[0] {
        ARCH_SET_FS | ARCH_SET_GS if !canonical(a[1]) => Err(Errno::EPERM),
        ARCH_SET_FS => {
            cpu.sregs.fs.base = a[1];
            Ok(0)
        }
        ARCH_SET_GS => {
            cpu.sregs.gs.base = a[1];
            Ok(0)
        }
        ARCH_GET_FS => p.mm.write_u64(a[1], cpu.sregs.fs.base).map(|()| 0),
        ARCH_GET_GS => p.mm.write_u64(a[1], cpu.sregs.gs.base).map(|()| 0),
        ARCH_GET_CPUID => Ok(1),
        _ => Err(Errno::EINVAL),
    }
}

pub fn prctl(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    match a[0] as i32 {
        libc::PR_SET_NAME => {
            let mut name = [0u8; 16];
            let s = p.mm.read_cstr(a[1], 4096).or_else(|e| if e == Errno::ENAMETOOLONG { Ok(Vec::new()) } else { Err(e) })?;
            let n = s.len().min(15);
            name[..n].copy_from_slice(&s[..n]);
            p.comm = name;
            Ok(0)
        }
        libc::PR_GET_NAME => p.mm.write_user(a[1], &p.comm).map(|()| 0),
        libc::PR_GET_DUMPABLE => Ok(1),
        libc::PR_SET_DUMPABLE | libc::PR_SET_PDEATHSIG | libc::PR_SET_THP_DISABLE | libc::PR_SET_TIMERSLACK => Ok(0),
        libc::PR_GET_THP_DISABLE => Ok(0),
        libc::PR_GET_PDEATHSIG => p.mm.write_user(a[1], &0i32.to_le_bytes()).map(|()| 0),
        libc::PR_SET_NO_NEW_PRIVS
        | libc::PR_GET_NO_NEW_PRIVS
        | libc::PR_CAPBSET_READ
        | libc::PR_CAPBSET_DROP
        | libc::PR_GET_KEEPCAPS
        | libc::PR_SET_KEEPCAPS
        | libc::PR_GET_SECUREBITS
        | libc::PR_SET_SECUREBITS
        | libc::PR_CAP_AMBIENT => super::caps::prctl(&mut p.creds.caps, a),
        // PR_SET_VMA (naming anonymous regions) is advisory.
        0x5356_4d41 => Ok(0),
        _ => Err(Errno::EINVAL),
    }
}

fn check_resource(r: u64) -> SysResult<usize> {
    if r < 16 {
        Ok(r as usize)
    } else {
        Err(Errno::EINVAL)
    }
}

fn set_limit(p: &mut Process, r: usize, cur: u64, max: u64) -> SysResult<()> {
    if cur > max {
        return Err(Errno::EINVAL);
    }
    if max > p.rlimits[r].1 && !p.creds.capable(cap::SYS_RESOURCE) {
        return Err(Errno::EPERM);
    }
    if r == libc::RLIMIT_NOFILE as usize {
        if cur > 1 << 20 {
            return Err(Errno::EPERM);
        }
        p.fds.limit = cur as usize;
    }
    p.rlimits[r] = (cur, max);
    Ok(())
}

pub fn prlimit64(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [pid, res, new, old, ..] = a;
    if pid != 0 && pid as i32 != p.pid {
        return Err(Errno::ESRCH);
    }
    let r = check_resource(res)?;
    let before = p.rlimits[r];
    if new != 0 {
        let (cur, max) = (p.mm.read_u64(new)?, p.mm.read_u64(new + 8)?);
        set_limit(p, r, cur, max)?;
    }
    if old != 0 {
        p.mm.write_u64(old, before.0)?;
        p.mm.write_u64(old + 8, before.1)?;
    }
    Ok(0)
}

pub fn getrlimit(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    prlimit64(p, cpu, [0, a[0], 0, a[1], 0, 0])
}

pub fn setrlimit(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    prlimit64(p, cpu, [0, a[0], a[1], 0, 0, 0])
}

pub fn getuid(p: &mut Process, _: &mut Cpu<'_>, _: Args) -> SysResult<u64> {
    Ok(u64::from(p.creds.uid))
}
pub fn geteuid(p: &mut Process, _: &mut Cpu<'_>, _: Args) -> SysResult<u64> {
    Ok(u64::from(p.creds.euid))
}
pub fn getgid(p: &mut Process, _: &mut Cpu<'_>, _: Args) -> SysResult<u64> {
    Ok(u64::from(p.creds.gid))
}
pub fn getegid(p: &mut Process, _: &mut Cpu<'_>, _: Args) -> SysResult<u64> {
    Ok(u64::from(p.creds.egid))
}

/// Applies `setres[ug]id` rules: -1 keeps a value; unprivileged callers may only pick among the
/// current real, effective and saved ids.
fn set_ids(privileged: bool, ids: &mut (u32, u32, u32), new: [u64; 3]) -> SysResult<()> {
    let allowed = [ids.0, ids.1, ids.2];
    let mut out = [ids.0, ids.1, ids.2];
    for (slot, v) in out.iter_mut().zip(new) {
        if v as i32 == -1 {
            continue;
        }
        let v = v as u32;
        if !privileged && !allowed.contains(&v) {
            return Err(Errno::EPERM);
        }
        *slot = v;
    }
    *ids = (out[0], out[1], out[2]);
    Ok(())
}

/// Sets the user ids; the file-system user id follows the effective one, as on Linux.
fn set_uids(p: &mut Process, new: [u64; 3]) -> SysResult<u64> {
    let c = &mut p.creds;
    let mut ids = (c.uid, c.euid, c.suid);
    set_ids(c.capable(cap::SETUID), &mut ids, new)?;
    c.set_uids(ids);
    Ok(0)
}

/// Sets the group ids; the file-system group id follows the effective one.
fn set_gids(p: &mut Process, new: [u64; 3]) -> SysResult<u64> {
    let c = &mut p.creds;
    let mut ids = (c.gid, c.egid, c.sgid);
    set_ids(c.capable(cap::SETGID), &mut ids, new)?;
    (c.gid, c.egid, c.sgid) = ids;
    c.fsgid = c.egid;
    Ok(0)
}

/// `setfs[ug]id` rules: `id` replaces `*fs` if it is valid (not -1) and the caller is
/// privileged or `id` is one of `ids` (real, effective, saved); the old value is the answer
/// either way (the call never fails).
fn set_fs_id(privileged: bool, ids: [u32; 3], fs: &mut u32, id: u64) -> u64 {
    let (old, id) = (*fs, id as u32);
    if id != u32::MAX && (privileged || ids.contains(&id)) {
        *fs = id;
    }
    u64::from(old)
}

/// `setfsuid(uid)`: who owns the files the process creates from now on.
pub fn setfsuid(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let c = &mut p.creds;
    let mut fsuid = c.fsuid;
    let old = set_fs_id(c.capable(cap::SETUID), [c.uid, c.euid, c.suid], &mut fsuid, a[0]);
    c.set_fsuid(fsuid);
    Ok(old)
}

/// `setfsgid(gid)`: the group of the files the process creates from now on.
pub fn setfsgid(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let c = &mut p.creds;
    Ok(set_fs_id(c.capable(cap::SETGID), [c.gid, c.egid, c.sgid], &mut c.fsgid, a[0]))
}

const KEEP: u64 = u32::MAX as u64;

pub fn setuid(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if p.creds.capable(cap::SETUID) {
        set_uids(p, [a[0], a[0], a[0]])
    } else {
        set_uids(p, [KEEP, a[0], KEEP])
    }
}
pub fn setgid(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if p.creds.capable(cap::SETGID) {
        set_gids(p, [a[0], a[0], a[0]])
    } else {
        set_gids(p, [KEEP, a[0], KEEP])
    }
}
pub fn setreuid(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    set_uids(p, [a[0], a[1], KEEP])
}
pub fn setregid(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    set_gids(p, [a[0], a[1], KEEP])
}
pub fn setresuid(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    set_uids(p, [a[0], a[1], a[2]])
}
pub fn setresgid(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    set_gids(p, [a[0], a[1], a[2]])
}

fn write_three(p: &Process, addrs: [u64; 3], vals: [u32; 3]) -> SysResult<u64> {
    for (a, v) in addrs.into_iter().zip(vals) {
        p.mm.write_user(a, &v.to_le_bytes())?;
    }
    Ok(0)
}

pub fn getresuid(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    write_three(p, [a[0], a[1], a[2]], [p.creds.uid, p.creds.euid, p.creds.suid])
}
pub fn getresgid(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    write_three(p, [a[0], a[1], a[2]], [p.creds.gid, p.creds.egid, p.creds.sgid])
}

pub fn getgroups(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let size = a[0] as i32;
    if size < 0 {
        return Err(Errno::EINVAL);
    }
    let n = p.groups.len();
    if size == 0 {
        return Ok(n as u64);
    }
    if (size as usize) < n {
        return Err(Errno::EINVAL);
    }
    let bytes: Vec<u8> = p.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
    p.mm.write_user(a[1], &bytes).map(|()| n as u64)
}

pub fn setgroups(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if !p.creds.capable(cap::SETGID) {
        return Err(Errno::EPERM);
    }
    let n = a[0] as usize;
    if n > 65536 {
        return Err(Errno::EINVAL);
    }
    let mut buf = vec![0u8; n * 4];
    p.mm.read_user(a[1], &mut buf)?;
    p.groups = buf.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(0)
}

/// `getpgrp`: the caller's process group.
pub fn getpgrp(p: &mut Process, _: &mut Cpu<'_>, _: Args) -> SysResult<u64> {
    Ok(p.procs.pgid(p.pid)? as u64)
}
/// A pid argument: 0 is the caller.
fn pid_arg(p: &Process, a: u64) -> SysResult<i32> {
    match a as i32 {
        0 => Ok(p.pid),
        pid if pid > 0 => Ok(pid),
        _ => Err(Errno::EINVAL),
    }
}
pub fn getpgid(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    Ok(p.procs.pgid(pid_arg(p, a[0]).map_err(|_| Errno::ESRCH)?)? as u64)
}
pub fn getsid(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    Ok(p.procs.sid(pid_arg(p, a[0]).map_err(|_| Errno::ESRCH)?)? as u64)
}
pub fn setpgid(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let pid = pid_arg(p, a[0])?;
    let pgid = match a[1] as i32 {
        0 => pid,
        g if g > 0 => g,
        _ => return Err(Errno::EINVAL),
    };
    p.procs.setpgid(p.pid, pid, pgid)?;
    Ok(0)
}
pub fn setsid(p: &mut Process, _: &mut Cpu<'_>, _: Args) -> SysResult<u64> {
    Ok(p.procs.setsid(p.pid)? as u64)
}
