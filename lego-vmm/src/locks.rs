//! File locks of a vNode: POSIX record locks (`fcntl` `F_SETLK`, owned by a process), open
//! file description locks (`F_OFD_SETLK`, owned by the description) and `flock` locks (owned by
//! the description too), in one table shared by every process of the vNode run: they all run in
//! this VMM process (see [`crate::proctable`]), forked from the first, which made the table.
//!
//! Files are told apart by `(st_dev, st_ino)`, so two paths to one file, or two opens of it,
//! find the same locks. A waiter (`F_SETLKW`, `flock` without `LOCK_NB`) sleeps on an eventfd of
//! its own beside its thread's interrupt eventfd ([`crate::threads::ThreadGroup::poll_host`]):
//! a release wakes it, so does a signal (`EINTR`), and nothing spins. Before a POSIX lock waits,
//! the chain of owners waiting on each other is followed: one that leads back to the caller is
//! `EDEADLK`, as Linux detects it.

use lego_proto::sync::LockExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::EventFd;

use crate::errno::{Errno, SysResult};

/// A file, as the locks know it: `(st_dev, st_ino)`.
pub type FileKey = (u64, u64);

/// Who holds a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    /// A process (POSIX record locks).
    Process(i32),
    /// An open file description (OFD locks, `flock`), by its address.
    Description(usize),
}

/// A lock's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

/// A byte-range lock: bytes `start..=end` (`end == u64::MAX`: to the end of any file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeLock {
    pub owner: Owner,
    pub kind: Kind,
    pub start: u64,
    pub end: u64,
}

impl RangeLock {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }

    fn conflicts(&self, other: &RangeLock) -> bool {
        self.owner != other.owner
            && self.overlaps(other.start, other.end)
            && (self.kind == Kind::Write || other.kind == Kind::Write)
    }
}

#[derive(Default)]
struct State {
    /// Record locks (POSIX and OFD alike: they conflict with each other) by file.
    ranges: BTreeMap<FileKey, Vec<RangeLock>>,
    /// `flock` locks by file: (owner, kind).
    flocks: BTreeMap<FileKey, Vec<(Owner, Kind)>>,
    /// Owners waiting for a record lock, and the owner they wait on (deadlock detection).
    waiting: BTreeMap<Owner, Owner>,
    /// Eventfds of the waiters, each written when a lock goes.
    waiters: Vec<Arc<EventFd>>,
}

/// The lock table of a vNode run.
#[derive(Default)]
pub struct LockTable {
    state: Mutex<State>,
}

/// How a lock request goes on when it cannot be had at once.
pub trait Wait {
    /// Sleeps until `wake` is readable; `EINTR` if a signal came or the process is ending.
    fn wait(&mut self, wake: &EventFd) -> SysResult<()>;
}

impl LockTable {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock_unpoisoned()
    }

    /// The first lock on `file` that would stop `want`, if any (`F_GETLK`).
    pub fn conflict(&self, file: FileKey, want: &RangeLock) -> Option<RangeLock> {
        self.lock()
            .ranges
            .get(&file)
            .and_then(|l| l.iter().find(|l| l.conflicts(want)).copied())
    }

    /// Sets (or with `None` as kind, removes) `owner`'s record lock on bytes `start..=end` of
    /// `file`. Without `wait`, a conflict is `EAGAIN`; with it, the call waits for the
    /// conflicting locks to go (`EDEADLK` if their owners wait, through a chain, on this one).
    pub fn set(
        &self,
        file: FileKey,
        owner: Owner,
        kind: Option<Kind>,
        start: u64,
        end: u64,
        mut wait: Option<&mut dyn Wait>,
    ) -> SysResult<()> {
        let mut st = self.lock();
        loop {
            let Some(kind) = kind else {
                carve(st.ranges.entry(file).or_default(), owner, start, end);
                drop(st);
                self.released();
                return Ok(());
            };
            let want = RangeLock {
                owner,
                kind,
                start,
                end,
            };
            let blocker = st
                .ranges
                .get(&file)
                .and_then(|l| l.iter().find(|l| l.conflicts(&want)).map(|l| l.owner));
            let Some(blocker) = blocker else {
                let list = st.ranges.entry(file).or_default();
                let downgrade = list
                    .iter()
                    .any(|l| l.owner == owner && l.kind == Kind::Write && l.overlaps(start, end));
                carve(list, owner, start, end);
                list.push(want);
                merge(list, owner);
                drop(st);
                if downgrade {
                    self.released();
                }
                return Ok(());
            };
            let Some(w) = wait.as_deref_mut() else {
                return Err(Errno::EAGAIN);
            };
            if matches!(owner, Owner::Process(_)) && leads_back(&st.waiting, blocker, owner) {
                return Err(Errno(libc::EDEADLK));
            }
            st = self.wait_once(st, owner, Some(blocker), w)?;
        }
    }

    /// Waits once for a release, with `owner` recorded as waiting on `blocker`.
    fn wait_once<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        owner: Owner,
        blocker: Option<Owner>,
        w: &mut dyn Wait,
    ) -> SysResult<MutexGuard<'a, State>> {
        let wake = Arc::new(
            EventFd::new(libc::EFD_CLOEXEC | libc::EFD_NONBLOCK).map_err(|_| Errno::ENOMEM)?,
        );
        st.waiters.push(wake.clone());
        if let Some(b) = blocker {
            st.waiting.insert(owner, b);
        }
        drop(st);
        let r = w.wait(&wake);
        let mut st = self.lock();
        st.waiters.retain(|x| !Arc::ptr_eq(x, &wake));
        if blocker.is_some() {
            st.waiting.remove(&owner);
        }
        r.map(|()| st)
    }

    /// Wakes every waiter to look again.
    fn released(&self) {
        for w in &self.lock().waiters {
            // A counter that is already non-zero wakes its waiter just as well.
            let _ = w.write(1);
        }
    }

    /// `flock(file, kind)` by description `owner`; `None` unlocks. A conversion drops the old
    /// lock first, as Linux does.
    pub fn flock(
        &self,
        file: FileKey,
        owner: Owner,
        kind: Option<Kind>,
        mut wait: Option<&mut dyn Wait>,
    ) -> SysResult<()> {
        let mut st = self.lock();
        let list = st.flocks.entry(file).or_default();
        let had = list
            .iter()
            .position(|(o, _)| *o == owner)
            .map(|i| list.remove(i));
        if had.is_some() {
            drop(st);
            self.released();
            st = self.lock();
        }
        let Some(kind) = kind else { return Ok(()) };
        loop {
            let list = st.flocks.entry(file).or_default();
            let busy = list
                .iter()
                .any(|(o, k)| *o != owner && (*k == Kind::Write || kind == Kind::Write));
            if !busy {
                list.push((owner, kind));
                return Ok(());
            }
            let Some(w) = wait.as_deref_mut() else {
                return Err(Errno::EAGAIN);
            };
            st = self.wait_once(st, owner, None, w)?;
        }
    }

    /// Whether process `pid` holds a record lock anywhere (a cheap test before the work of
    /// [`LockTable::close_posix`]).
    pub fn holds_posix(&self, pid: i32) -> bool {
        self.lock()
            .ranges
            .values()
            .any(|l| l.iter().any(|l| l.owner == Owner::Process(pid)))
    }

    /// Process `pid` closed a descriptor of `file`: its POSIX locks on the file go (POSIX).
    pub fn close_posix(&self, file: FileKey, pid: i32) {
        let mut st = self.lock();
        if let Some(l) = st.ranges.get_mut(&file) {
            l.retain(|l| l.owner != Owner::Process(pid));
        }
        drop(st);
        self.released();
    }

    /// Every lock of `owner` goes (a process ended, a description was closed for good).
    pub fn release_owner(&self, owner: Owner) {
        let mut st = self.lock();
        for l in st.ranges.values_mut() {
            l.retain(|l| l.owner != owner);
        }
        for l in st.flocks.values_mut() {
            l.retain(|(o, _)| *o != owner);
        }
        st.ranges.retain(|_, l| !l.is_empty());
        st.flocks.retain(|_, l| !l.is_empty());
        drop(st);
        self.released();
    }
}

/// Whether following who waits on whom from `from` reaches `me`.
fn leads_back(waiting: &BTreeMap<Owner, Owner>, from: Owner, me: Owner) -> bool {
    let mut at = from;
    for _ in 0..=waiting.len() {
        if at == me {
            return true;
        }
        match waiting.get(&at) {
            Some(&next) => at = next,
            None => return false,
        }
    }
    false
}

/// Removes `owner`'s locks from bytes `start..=end`, splitting those that reach beyond.
fn carve(list: &mut Vec<RangeLock>, owner: Owner, start: u64, end: u64) {
    let mut out = Vec::with_capacity(list.len() + 1);
    for l in list.drain(..) {
        if l.owner != owner || !l.overlaps(start, end) {
            out.push(l);
            continue;
        }
        if l.start < start {
            out.push(RangeLock {
                end: start - 1,
                ..l
            });
        }
        if l.end > end {
            out.push(RangeLock {
                start: end + 1,
                ..l
            });
        }
    }
    *list = out;
}

/// Joins `owner`'s locks of one kind that touch or overlap, as Linux keeps them.
fn merge(list: &mut Vec<RangeLock>, owner: Owner) {
    let (mut mine, others): (Vec<_>, Vec<_>) = list.drain(..).partition(|l| l.owner == owner);
    mine.sort_by_key(|l| l.start);
    let mut merged: Vec<RangeLock> = Vec::with_capacity(mine.len());
    for l in mine {
        match merged.last_mut() {
            Some(m) if m.kind == l.kind && l.start <= m.end.saturating_add(1) => {
                m.end = m.end.max(l.end)
            }
            _ => merged.push(l),
        }
    }
    *list = others;
    list.extend(merged);
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: FileKey = (1, 2);
    const A: Owner = Owner::Process(10);
    const B: Owner = Owner::Process(11);

    /// A wait that gives up at once, as a signal would make it.
    struct Interrupted;
    impl Wait for Interrupted {
        fn wait(&mut self, _: &EventFd) -> SysResult<()> {
            Err(Errno::EINTR)
        }
    }

    #[test]
    fn ranges_conflict_split_merge_and_go() {
        let t = LockTable::default();
        t.set(F, A, Some(Kind::Write), 0, 99, None).unwrap();
        let want = RangeLock {
            owner: B,
            kind: Kind::Read,
            start: 50,
            end: 60,
        };
        assert_eq!(
            t.conflict(F, &want).map(|l| (l.owner, l.start, l.end)),
            Some((A, 0, 99))
        );
        assert_eq!(
            t.set(F, B, Some(Kind::Read), 50, 60, None),
            Err(Errno::EAGAIN)
        );
        // Unlocking the middle splits the lock: B may have the middle then.
        t.set(F, A, None, 40, 69, None).unwrap();
        t.set(F, B, Some(Kind::Read), 50, 60, None).unwrap();
        assert_eq!(
            t.conflict(
                F,
                &RangeLock {
                    owner: B,
                    kind: Kind::Write,
                    start: 0,
                    end: 39
                }
            )
            .map(|l| l.end),
            Some(39)
        );
        // Adjacent locks of one kind merge.
        t.set(F, A, Some(Kind::Write), 40, 45, None).unwrap();
        assert_eq!(
            t.conflict(
                F,
                &RangeLock {
                    owner: B,
                    kind: Kind::Read,
                    start: 0,
                    end: 0
                }
            )
            .map(|l| (l.start, l.end)),
            Some((0, 45))
        );
        assert_eq!(
            t.set(F, B, Some(Kind::Write), 0, 10, Some(&mut Interrupted)),
            Err(Errno::EINTR)
        );
        assert!(t.holds_posix(10));
        t.release_owner(A);
        assert!(!t.holds_posix(10));
        t.set(F, B, Some(Kind::Write), 0, 10, None).unwrap();
    }

    #[test]
    fn a_wait_that_closes_a_cycle_is_a_deadlock() {
        let t = LockTable::default();
        t.set(F, A, Some(Kind::Write), 0, 0, None).unwrap();
        t.set(F, B, Some(Kind::Write), 1, 1, None).unwrap();
        // B waits on A (recorded as a waiting edge), then A asks for B's byte.
        t.lock().waiting.insert(B, A);
        assert_eq!(
            t.set(F, A, Some(Kind::Write), 1, 1, Some(&mut Interrupted)),
            Err(Errno(libc::EDEADLK))
        );
    }

    #[test]
    fn flocks_share_or_exclude() {
        let t = LockTable::default();
        let (d1, d2) = (Owner::Description(1), Owner::Description(2));
        t.flock(F, d1, Some(Kind::Read), None).unwrap();
        t.flock(F, d2, Some(Kind::Read), None).unwrap();
        assert_eq!(t.flock(F, d2, Some(Kind::Write), None), Err(Errno::EAGAIN));
        t.flock(F, d1, None, None).unwrap();
        t.flock(F, d2, Some(Kind::Write), None).unwrap();
        assert_eq!(
            t.flock(F, d1, Some(Kind::Read), Some(&mut Interrupted)),
            Err(Errno::EINTR)
        );
        // Record locks are another table: flock does not stop them.
        t.set(F, A, Some(Kind::Write), 0, 9, None).unwrap();
    }
}
