//! System V semaphores: `semget`, `semop`, `semtimedop` and `semctl` over the run's table of
//! sets ([`crate::sysv::sem`]). A `semop` that blocks waits without the process lock until
//! the set changes, its timeout passes (`EAGAIN`), the set is removed (`EIDRM`) or a signal
//! comes (`EINTR`).

use std::time::Instant;

use super::ipcwait::{block_on, wait_key, wake_all};
use super::sysvipc::{ipc_stat, permitted};
use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::process::{Locked, Process};
use crate::sysv::sem::{self, Op, Values, Waiting, SEMMNI, SEMMNS, SEMMSL, SEMOPM, SEMVMX};
use crate::sysv::{now, seq, Get, IPC_64, IPC_INFO, IPC_RMID, IPC_SET, IPC_STAT};

const GETPID: u64 = 11;
const GETVAL: u64 = 12;
const GETALL: u64 = 13;
const GETNCNT: u64 = 14;
const GETZCNT: u64 = 15;
const SETVAL: u64 = 16;
const SETALL: u64 = 17;
const SEM_STAT: u64 = 18;
const SEM_INFO: u64 = 19;
const SEM_STAT_ANY: u64 = 20;
/// The kind of a semaphore set's wait queue keys ([`wait_key`]).
const WAITS: u64 = 1;
/// Read and write ("alter") access.
const READ: u32 = 0o444;
const ALTER: u32 = 0o222;

/// `semget(key, nsems, flags)`.
pub fn semget(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let nsems = usize::try_from(a[1] as i32).map_err(|_| Errno::EINVAL)?;
    p.ipc.sem.get(&Get::new(a[0], a[2]), nsems, &p.creds).map(|id| id as u64)
}

/// `semop(id, sops, nsops)`.
pub fn semop(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    semtimedop(p, cpu, [a[0], a[1], a[2], 0, 0, 0])
}

/// `semtimedop(id, sops, nsops, timeout)`.
pub fn semtimedop(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [id, sops, nsops, timeout, ..] = a;
    let id = id as i32;
    let n = match nsops as usize {
        0 => return Err(Errno::EINVAL),
        n if n > SEMOPM => return Err(Errno::E2BIG),
        n => n,
    };
    let mut raw = vec![0u8; 6 * n];
    p.mm.read_user(sops, &mut raw)?;
    let ops: Vec<Op> = raw
        .chunks_exact(6)
        .map(|b| Op { num: u16::from_le_bytes([b[0], b[1]]), op: i16::from_le_bytes([b[2], b[3]]), flags: i16::from_le_bytes([b[4], b[5]]) })
        .collect();
    let deadline = super::poll::read_timespec(p, timeout)?.map(|t| Instant::now() + t);
    let need = if ops.iter().any(|o| o.op != 0) { ALTER } else { READ };
    p.ipc.sem.with(id, |e| {
        if ops.iter().any(|o| usize::from(o.num) >= e.obj.sems.len()) {
            return Err(Errno::EFBIG);
        }
        if !e.perm.grants(&p.creds, need) {
            return Err(Errno::EACCES);
        }
        Ok(())
    })?;
    let (ipc, pid, key) = (p.ipc.clone(), p.pid, wait_key(WAITS, id));
    // IPC_NOWAIT is each operation's own (`try_op` fails with EAGAIN).
    let done = block_on(p, cpu.tid, key, deadline, None, || ipc.sem.try_op(id, &ops, pid).map_err(|blocked| Waiting::new(ipc.clone(), id, blocked)));
    match done {
        Ok(()) => {
            if ops.iter().any(|o| o.op != 0) {
                wake_all(p, key);
            }
            Ok(0)
        }
        Err(Errno::ETIMEDOUT) => Err(Errno::EAGAIN),
        Err(e) => Err(e),
    }
}

/// `semctl(id, num, cmd, arg)`: `arg` is the value for `SETVAL`, a pointer for the others.
pub fn semctl(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [id, num, cmd, arg, ..] = a;
    let cmd = cmd & !IPC_64;
    let (index, id, num) = (id as u32 as usize, id as i32, num as i32);
    let creds = p.creds;
    let allowed = |e: &crate::sysv::Entry<sem::Set>, need: u32| permitted(e.perm.grants(&creds, need));
    let one = |e: &crate::sysv::Entry<sem::Set>| usize::try_from(num).ok().and_then(|n| e.obj.sems.get(n).copied()).ok_or(Errno::EINVAL);
    match cmd {
        IPC_INFO | SEM_INFO => {
            let (sets, sems, highest) = p.ipc.sem.usage();
            let total = i32::try_from(SEMMNS).unwrap_or(i32::MAX);
            // struct seminfo: semmap, semmni, semmns, semmnu, semmsl, semopm, semume, semusz,
            // semvmx, semaem; SEM_INFO puts what is in use in semusz and semaem.
            let (usz, aem) = if cmd == SEM_INFO { (sets as i32, sems as i32) } else { (20, SEMVMX) };
            let info = [total, SEMMNI as i32, total, total, SEMMSL as i32, SEMOPM as i32, SEMOPM as i32, usz, SEMVMX, aem];
            let bytes: Vec<u8> = info.iter().flat_map(|v| v.to_le_bytes()).collect();
            p.mm.write_user(arg, &bytes)?;
            Ok(highest as u64)
        }
        IPC_STAT | SEM_STAT | SEM_STAT_ANY => ipc_stat(p, cmd != IPC_STAT, id, index, arg, |i| p.ipc.sem.id_at(i), |id| {
            p.ipc.sem.with(id, |e| {
                permitted(cmd == SEM_STAT_ANY || e.perm.grants(&creds, READ))?;
                Ok(sem::semid_ds(e, seq(id, SEMMNI)))
            })
        }),
        IPC_SET => {
            let mut b = [0u8; 104];
            p.mm.read_user(arg, &mut b)?;
            p.ipc.sem.with(id, |e| {
                e.perm.may_change(&creds)?;
                e.perm.set(&b);
                e.obj.ctime = now();
                Ok(0)
            })
        }
        IPC_RMID => {
            p.ipc.sem.with(id, |e| e.perm.may_change(&creds))?;
            p.ipc.sem.remove(id);
            wake_all(p, wait_key(WAITS, id));
            Ok(0)
        }
        GETVAL | GETPID | GETNCNT | GETZCNT => p.ipc.sem.with(id, |e| {
            allowed(e, READ)?;
            let s = one(e)?;
            Ok(match cmd {
                GETVAL => u64::from(s.val),
                GETPID => s.pid as u64,
                GETNCNT => u64::from(s.ncnt),
                _ => u64::from(s.zcnt),
            })
        }),
        GETALL => {
            let vals: Vec<u8> = p.ipc.sem.with(id, |e| {
                allowed(e, READ)?;
                Ok(e.obj.sems.iter().flat_map(|s| s.val.to_le_bytes()).collect())
            })?;
            p.mm.write_user(arg, &vals)?;
            Ok(0)
        }
        SETVAL | SETALL => {
            let n = p.ipc.sem.with(id, |e| allowed(e, ALTER).map(|()| e.obj.sems.len()))?;
            let pid = p.pid;
            if cmd == SETVAL {
                let num = usize::try_from(num).map_err(|_| Errno::EINVAL)?;
                p.ipc.sem.set_values(id, Values::One(num, arg as i32), pid)?;
            } else {
                let mut raw = vec![0u8; 2 * n];
                p.mm.read_user(arg, &mut raw)?;
                let vals: Vec<u16> = raw.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
                p.ipc.sem.set_values(id, Values::All(&vals), pid)?;
            }
            wake_all(p, wait_key(WAITS, id));
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// Process `p` ended: its `SEM_UNDO` adjustments are applied, and the waiters of the sets they
/// change look again.
pub fn exit(p: &Process) {
    for id in p.ipc.sem.exit(p.pid) {
        wake_all(p, wait_key(WAITS, id));
    }
}
