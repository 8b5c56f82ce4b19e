//! System V semaphore sets (`semget`, `semop`, `semtimedop`, `semctl`).
//!
//! A `semop` applies all its operations or none (Linux's `perform_atomic_semop`): they run in
//! order on the set's values, and the first that would block or overflow decides. A caller
//! that blocks is counted (`semncnt`, `semzcnt`) on the semaphore whose operation blocked it
//! while it waits ([`Waiting`]). `SEM_UNDO` adjustments are kept per process and applied when
//! it ends ([`Semaphores::exit`]); a fork starts without any, `execve` keeps them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use lego_proto::sync::LockExt;

use super::{now, Entry, Get, Ids, Ipc};
use crate::errno::{Errno, SysResult};
use crate::identity::Creds;

/// Most semaphores in a set (`SEMMSL`), sets (`SEMMNI`), operations in one `semop`
/// (`SEMOPM`), and the largest value and adjustment (`SEMVMX`, `SEMAEM`): Linux's defaults.
pub const SEMMSL: usize = 32000;
pub const SEMMNI: usize = 32000;
pub const SEMOPM: usize = 500;
pub const SEMVMX: i32 = 32767;
const SEMAEM: i32 = SEMVMX;
/// Most semaphores in all sets (`SEMMNS`).
pub const SEMMNS: usize = SEMMNI * SEMMSL;
/// `sem_flg` bits.
pub const SEM_UNDO: i16 = 0x1000;
pub const SEM_NOWAIT: i16 = super::IPC_NOWAIT as i16;

/// One semaphore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sem {
    pub val: u16,
    /// The last process to change it (`GETPID`).
    pub pid: i32,
    /// Callers waiting for it to grow, and to be zero (`GETNCNT`, `GETZCNT`).
    pub ncnt: u32,
    pub zcnt: u32,
}

/// One set.
pub struct Set {
    pub sems: Vec<Sem>,
    /// Last `semop`, and last change, in seconds.
    pub otime: i64,
    pub ctime: i64,
}

/// One operation of a `semop` (`struct sembuf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub num: u16,
    pub op: i16,
    pub flags: i16,
}

/// Why a `semop` cannot go on now: the operation on semaphore `num` would block, waiting for
/// it to be zero (`zero`) or to grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub num: u16,
    pub zero: bool,
}

/// The semaphore sets of a run, with the processes' `SEM_UNDO` adjustments.
pub struct Semaphores {
    inner: Mutex<Inner>,
}

struct Inner {
    sets: Ids<Set>,
    /// Adjustments by process, then by set (one per semaphore).
    undo: HashMap<i32, HashMap<i32, Vec<i16>>>,
}

impl Default for Semaphores {
    fn default() -> Semaphores {
        Semaphores { inner: Mutex::new(Inner { sets: Ids::new(SEMMNI), undo: HashMap::new() }) }
    }
}

/// What `SETVAL` and `SETALL` set.
pub enum Values<'a> {
    One(usize, i32),
    All(&'a [u16]),
}

impl Semaphores {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock_unpoisoned()
    }

    /// `semget`: the id of the set of `get.key` of at least `nsems` semaphores, made if asked
    /// and there is none.
    pub fn get(&self, get: &Get, nsems: usize, creds: &Creds) -> SysResult<i32> {
        if nsems > SEMMSL {
            return Err(Errno::EINVAL);
        }
        let mut inner = self.lock();
        let used: usize = inner.sets.iter().map(|(_, e)| e.obj.sems.len()).sum();
        let existing = |s: &Set| if nsems > s.sems.len() { Err(Errno::EINVAL) } else { Ok(()) };
        let new = || match nsems {
            0 => Err(Errno::EINVAL),
            n if used + n > SEMMNS => Err(Errno(libc::ENOSPC)),
            n => Ok(Set { sems: vec![Sem::default(); n], otime: 0, ctime: now() }),
        };
        inner.sets.get(get, creds, existing, new)
    }

    /// Runs `f` on set `id` (`EINVAL` if there is none).
    pub fn with<R>(&self, id: i32, f: impl FnOnce(&mut Entry<Set>) -> SysResult<R>) -> SysResult<R> {
        f(self.lock().sets.entry(id)?)
    }

    /// One try of `semop(id, ops)` by process `pid`: `Ok` once done, `Err` if it must wait.
    /// Fails with `EINVAL` if the set is gone, `EFBIG` for a semaphore past its end, `ERANGE`
    /// for a value or adjustment out of range, `EAGAIN` where an operation that would block
    /// has `IPC_NOWAIT`.
    pub fn try_op(&self, id: i32, ops: &[Op], pid: i32) -> Result<SysResult<()>, Blocked> {
        let mut inner = self.lock();
        let Inner { sets, undo } = &mut *inner;
        let set = match sets.entry(id) {
            Ok(e) => &mut e.obj,
            Err(e) => return Ok(Err(e)),
        };
        let n = set.sems.len();
        if ops.iter().any(|o| usize::from(o.num) >= n) {
            return Ok(Err(Errno::EFBIG));
        }
        let adj = undo.get(&pid).and_then(|u| u.get(&id));
        let mut vals: Vec<i32> = set.sems.iter().map(|s| i32::from(s.val)).collect();
        let mut adjs: Vec<i32> = (0..n).map(|i| adj.map_or(0, |a| i32::from(a[i]))).collect();
        for o in ops {
            let (i, op) = (usize::from(o.num), i32::from(o.op));
            let result = vals[i] + op;
            if (op == 0 && vals[i] != 0) || result < 0 {
                if o.flags & SEM_NOWAIT != 0 {
                    return Ok(Err(Errno::EAGAIN));
                }
                return Err(Blocked { num: o.num, zero: op == 0 });
            }
            if result > SEMVMX {
                return Ok(Err(Errno::ERANGE));
            }
            if o.flags & SEM_UNDO != 0 {
                let a = adjs[i] - op;
                if !(-SEMAEM - 1..=SEMAEM).contains(&a) {
                    return Ok(Err(Errno::ERANGE));
                }
                adjs[i] = a;
            }
            vals[i] = result;
        }
        for o in ops {
            set.sems[usize::from(o.num)].pid = pid;
        }
        for (s, v) in set.sems.iter_mut().zip(&vals) {
            // In 0..=SEMVMX, checked above.
            s.val = *v as u16;
        }
        if ops.iter().any(|o| o.flags & SEM_UNDO != 0) {
            // In i16's range, checked above.
            undo.entry(pid).or_default().insert(id, adjs.iter().map(|&a| a as i16).collect());
        }
        set.otime = now();
        Ok(Ok(()))
    }

    /// `SETVAL`/`SETALL` on set `id` by process `pid`: every process's adjustments of the
    /// semaphores set are cleared.
    pub fn set_values(&self, id: i32, values: Values<'_>, pid: i32) -> SysResult<()> {
        let mut inner = self.lock();
        let Inner { sets, undo } = &mut *inner;
        let e = sets.entry(id)?;
        let set = &mut e.obj;
        let which: Vec<usize> = match values {
            Values::One(num, v) => {
                if num >= set.sems.len() {
                    return Err(Errno::EINVAL);
                }
                if !(0..=SEMVMX).contains(&v) {
                    return Err(Errno::ERANGE);
                }
                set.sems[num].val = v as u16;
                vec![num]
            }
            Values::All(vals) => {
                if vals.iter().any(|&v| i32::from(v) > SEMVMX) {
                    return Err(Errno::ERANGE);
                }
                for (s, &v) in set.sems.iter_mut().zip(vals) {
                    s.val = v;
                }
                (0..set.sems.len()).collect()
            }
        };
        for &i in &which {
            set.sems[i].pid = pid;
        }
        for adj in undo.values_mut().filter_map(|u| u.get_mut(&id)) {
            for &i in &which {
                adj[i] = 0;
            }
        }
        set.ctime = now();
        Ok(())
    }

    /// `IPC_RMID` of set `id`, with every adjustment of it.
    pub fn remove(&self, id: i32) {
        let mut inner = self.lock();
        inner.sets.remove(id);
        for u in inner.undo.values_mut() {
            u.remove(&id);
        }
    }

    /// Process `pid` ended: its adjustments are applied (each value clamped to its range) and
    /// forgotten. Returns the sets changed, whose waiters are to look again.
    pub fn exit(&self, pid: i32) -> Vec<i32> {
        let mut inner = self.lock();
        let Some(adjs) = inner.undo.remove(&pid) else { return Vec::new() };
        let mut changed = Vec::new();
        for (id, adj) in adjs {
            let Ok(e) = inner.sets.entry(id) else { continue };
            for (s, &a) in e.obj.sems.iter_mut().zip(&adj).filter(|(_, &a)| a != 0) {
                s.val = (i32::from(s.val) + i32::from(a)).clamp(0, SEMVMX) as u16;
                s.pid = pid;
            }
            e.obj.otime = now();
            changed.push(id);
        }
        changed
    }

    /// One more (`more`) or one fewer caller blocked as `b` on set `id` ([`Waiting`]).
    fn count(&self, id: i32, b: Blocked, more: bool) {
        let mut inner = self.lock();
        let Ok(e) = inner.sets.entry(id) else { return };
        let Some(s) = e.obj.sems.get_mut(usize::from(b.num)) else { return };
        let c = if b.zero { &mut s.zcnt } else { &mut s.ncnt };
        *c = if more { c.saturating_add(1) } else { c.saturating_sub(1) };
    }

    /// The id of the set at index `index` of the table (`SEM_STAT`).
    pub fn id_at(&self, index: usize) -> SysResult<i32> {
        self.lock().sets.id_at(index)
    }

    /// (sets, semaphores in them, the highest index in use) for `SEM_INFO` and `IPC_INFO`.
    pub fn usage(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        (inner.sets.len(), inner.sets.iter().map(|(_, e)| e.obj.sems.len()).sum(), inner.sets.highest_index())
    }
}

/// A caller blocked on semaphore `blocked.num` of set `id`, counted in its `semncnt` or
/// `semzcnt` while this lives.
pub struct Waiting {
    ipc: Arc<Ipc>,
    id: i32,
    blocked: Blocked,
}

impl Waiting {
    /// Counts the wait (if the set is still there).
    pub fn new(ipc: Arc<Ipc>, id: i32, blocked: Blocked) -> Waiting {
        ipc.sem.count(id, blocked, true);
        Waiting { ipc, id, blocked }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.ipc.sem.count(self.id, self.blocked, false);
    }
}

/// `struct semid64_ds` of `e` with id sequence `seq`, as x86-64 lays it out (104 bytes).
pub fn semid_ds(e: &Entry<Set>, seq: u16) -> [u8; 104] {
    let mut b = [0u8; 104];
    b[..super::PERM_SIZE].copy_from_slice(&e.perm.bytes(seq));
    b[48..56].copy_from_slice(&e.obj.otime.to_le_bytes());
    b[64..72].copy_from_slice(&e.obj.ctime.to_le_bytes());
    b[80..88].copy_from_slice(&(e.obj.sems.len() as u64).to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Creds {
        Creds::new((1000, 1000), (1000, 1000))
    }

    fn op(num: u16, op: i16, flags: i16) -> Op {
        Op { num, op, flags }
    }

    fn vals(s: &Semaphores, id: i32) -> Vec<u16> {
        s.with(id, |e| Ok(e.obj.sems.iter().map(|s| s.val).collect())).unwrap()
    }

    #[test]
    fn operations_are_all_or_nothing() {
        let s = Semaphores::default();
        let id = s.get(&Get::new(5, 0o1600), 3, &me()).unwrap();
        assert_eq!(s.get(&Get::new(5, 0), 4, &me()), Err(Errno::EINVAL), "more than the set has");
        assert_eq!(s.get(&Get::new(6, 0o1600), 0, &me()), Err(Errno::EINVAL));
        assert_eq!(s.try_op(id, &[op(0, 2, 0), op(1, 1, 0)], 7), Ok(Ok(())));
        assert_eq!(vals(&s, id), [2, 1, 0]);
        // The second operation would block: the first is not applied either.
        assert_eq!(s.try_op(id, &[op(0, -1, 0), op(2, -1, 0)], 7), Err(Blocked { num: 2, zero: false }));
        assert_eq!(s.try_op(id, &[op(0, -1, 0), op(1, 0, 0)], 7), Err(Blocked { num: 1, zero: true }));
        assert_eq!(s.try_op(id, &[op(0, -1, 0), op(2, -1, SEM_NOWAIT)], 7), Ok(Err(Errno::EAGAIN)));
        assert_eq!(vals(&s, id), [2, 1, 0]);
        assert_eq!(s.try_op(id, &[op(3, 1, 0)], 7), Ok(Err(Errno::EFBIG)));
        assert_eq!(s.try_op(id, &[op(0, i16::MAX, 0)], 7), Ok(Err(Errno::ERANGE)));
        // Operations see the ones before them.
        assert_eq!(s.try_op(id, &[op(2, 1, 0), op(2, -1, 0), op(2, 0, 0)], 8), Ok(Ok(())));
        assert_eq!(s.with(id, |e| Ok(e.obj.sems[2].pid)), Ok(8));
        s.remove(id);
        assert_eq!(s.try_op(id, &[op(0, 1, 0)], 7), Ok(Err(Errno::EINVAL)));
    }

    #[test]
    fn undo_is_applied_at_exit_and_cleared_by_setval() {
        let s = Semaphores::default();
        let id = s.get(&Get::new(0, 0o600), 2, &me()).unwrap();
        s.set_values(id, Values::All(&[5, 5]), 1).unwrap();
        assert_eq!(s.try_op(id, &[op(0, -2, SEM_UNDO), op(1, 3, SEM_UNDO)], 9), Ok(Ok(())));
        assert_eq!(vals(&s, id), [3, 8]);
        assert_eq!(s.exit(9), vec![id]);
        assert_eq!(vals(&s, id), [5, 5]);
        assert_eq!(s.exit(9), Vec::<i32>::new(), "applied once");
        // SETVAL clears the adjustment of its semaphore only.
        assert_eq!(s.try_op(id, &[op(0, 4, SEM_UNDO), op(1, 4, SEM_UNDO)], 9), Ok(Ok(())));
        s.set_values(id, Values::One(0, 1), 1).unwrap();
        s.exit(9);
        assert_eq!(vals(&s, id), [1, 5]);
        // An adjustment that would take a value below 0 leaves it at 0.
        assert_eq!(s.try_op(id, &[op(0, 4, SEM_UNDO)], 9), Ok(Ok(())));
        assert_eq!(s.try_op(id, &[op(0, -5, 0)], 1), Ok(Ok(())));
        s.exit(9);
        assert_eq!(vals(&s, id), [0, 5]);
        assert_eq!(s.set_values(id, Values::One(0, SEMVMX + 1), 1), Err(Errno::ERANGE));
        assert_eq!(s.set_values(id, Values::One(2, 0), 1), Err(Errno::EINVAL));
    }
}
