//! System V shared memory segments (`shmget`, `shmat`, `shmdt`, `shmctl`).
//!
//! A segment is a shared object ([`crate::memory::shared::SharedFile`]); each `shmat` maps a
//! view of it, which a fork passes on. A segment counts as attached once for each process
//! piece that maps one of its views ([`Segment::attached`]), so `nattch` follows `shmat`,
//! `shmdt`, `fork`, `munmap`, `execve` and exit without any of them telling the table. A
//! segment removed with `IPC_RMID` is found by no key any more, and goes once nothing maps it.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use lego_proto::sync::LockExt;

use super::{now, Entry, Get, Ids, IPC_PRIVATE};
use crate::errno::{Errno, SysResult};
use crate::memory::shared::{SharedFile, View, WINDOW_SIZE};

/// Mode bit of a segment removed while attached (`SHM_DEST`).
const SHM_DEST: u32 = 0o1000;
/// Mode bit of a segment `SHM_LOCK`ed.
const SHM_LOCKED: u32 = 0o2000;
/// Most segments at once (Linux's `SHMMNI`).
pub const SHMMNI: usize = 4096;

/// One segment.
pub struct Segment {
    /// Its pages.
    pub obj: Arc<SharedFile>,
    /// Bytes asked for (`shm_segsz`).
    pub size: u64,
    /// Creator, and last process to attach or detach.
    pub cpid: i32,
    pub lpid: i32,
    /// Last attach, detach and change, in seconds.
    pub atime: i64,
    pub dtime: i64,
    pub ctime: i64,
    /// The views `shmat` made of it.
    views: Vec<Weak<View>>,
}

impl Segment {
    /// How many process pieces map one of its views (`shm_nattch`).
    pub fn attached(&self) -> u64 {
        // Each holder of a view is a piece of some process's shared mappings.
        self.views.iter().map(|v| v.strong_count() as u64).sum()
    }
}

/// The segments of a run, by id.
pub struct Segments {
    table: Mutex<Ids<Segment>>,
}

impl Default for Segments {
    fn default() -> Segments {
        Segments { table: Mutex::new(Ids::new(SHMMNI)) }
    }
}

/// Read access, and write access with `write` (`shmat`'s `SHM_RDONLY` or not).
pub fn access(write: bool) -> u32 {
    if write {
        0o666
    } else {
        0o444
    }
}

/// Forgets the removed segments nothing maps any more.
fn purge(t: &mut Ids<Segment>) {
    t.retain(|e| e.perm.mode & SHM_DEST == 0 || e.obj.attached() > 0);
}

impl Segments {
    /// The table, without the removed segments nothing maps any more.
    fn lock(&self) -> MutexGuard<'_, Ids<Segment>> {
        let mut t = self.table.lock_unpoisoned();
        purge(&mut t);
        t
    }

    /// `shmget`: the id of the segment of `get.key` of at least `size` bytes, made (with
    /// `make`) if asked and there is none.
    pub fn get(&self, get: &Get, size: u64, creds: &crate::identity::Creds, pid: i32, make: impl FnOnce() -> SysResult<Arc<SharedFile>>) -> SysResult<i32> {
        let existing = |s: &Segment| if size > s.size { Err(Errno::EINVAL) } else { Ok(()) };
        let new = || {
            if size == 0 || size > WINDOW_SIZE {
                return Err(Errno::EINVAL);
            }
            Ok(Segment { obj: make()?, size, cpid: pid, lpid: 0, atime: 0, dtime: 0, ctime: now(), views: Vec::new() })
        };
        self.lock().get(get, creds, existing, new)
    }

    /// `shmat` mapped `view` of segment `id` in process `pid`.
    pub fn attached(&self, id: i32, view: &Arc<View>, pid: i32) {
        if let Ok(e) = self.lock().entry(id) {
            let s = &mut e.obj;
            s.views.retain(|v| v.strong_count() > 0);
            s.views.push(Arc::downgrade(view));
            (s.lpid, s.atime) = (pid, now());
        }
    }

    /// The segment `view` is a view of, if it is one `shmat` made.
    pub fn segment_of(&self, view: &Arc<View>) -> Option<i32> {
        let t = self.lock();
        let found = t.iter().find(|(_, e)| e.obj.views.iter().any(|v| std::ptr::eq(v.as_ptr(), Arc::as_ptr(view)))).map(|(id, _)| id);
        found
    }

    /// `shmdt` of a view of segment `id` by process `pid` (the caller unmaps it).
    pub fn detached(&self, id: i32, pid: i32) {
        if let Ok(e) = self.lock().entry(id) {
            (e.obj.lpid, e.obj.dtime) = (pid, now());
        }
    }

    /// Runs `f` on segment `id` (`IPC_STAT`, `IPC_SET`, `IPC_RMID`, `SHM_LOCK`).
    pub fn with<R>(&self, id: i32, f: impl FnOnce(&mut Entry<Segment>) -> SysResult<R>) -> SysResult<R> {
        let mut t = self.lock();
        let r = f(t.entry(id)?);
        purge(&mut t);
        r
    }

    /// The id of the segment at index `index` of the table (`SHM_STAT`).
    pub fn id_at(&self, index: usize) -> SysResult<i32> {
        self.lock().id_at(index)
    }

    /// (segments, bytes of them, the highest index in use) for `SHM_INFO` and `IPC_INFO`.
    pub fn usage(&self) -> (usize, u64, usize) {
        let t = self.lock();
        (t.len(), t.iter().map(|(_, e)| e.obj.size).sum(), t.highest_index())
    }
}

/// Marks `e` removed: no key finds it any more, and it goes once nothing maps it.
pub fn remove(e: &mut Entry<Segment>) {
    e.perm.mode |= SHM_DEST;
    e.perm.key = IPC_PRIVATE;
}

/// Sets or clears `SHM_LOCKED` (the segment is accounted, never swapped anyway).
pub fn set_locked(e: &mut Entry<Segment>, on: bool) {
    if on {
        e.perm.mode |= SHM_LOCKED;
    } else {
        e.perm.mode &= !SHM_LOCKED;
    }
}

/// `struct shmid64_ds` of `e` with id sequence `seq`, as x86-64 lays it out (112 bytes).
pub fn shmid_ds(e: &Entry<Segment>, seq: u16) -> [u8; 112] {
    let mut b = [0u8; 112];
    b[..super::PERM_SIZE].copy_from_slice(&e.perm.bytes(seq));
    let s = &e.obj;
    let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(48, &s.size.to_le_bytes());
    put(56, &s.atime.to_le_bytes());
    put(64, &s.dtime.to_le_bytes());
    put(72, &s.ctime.to_le_bytes());
    put(80, &s.cpid.to_le_bytes());
    put(84, &s.lpid.to_le_bytes());
    put(88, &s.attached().to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Creds;
    use crate::layout::PAGE_SIZE;
    use crate::memory::shared::Window;

    fn creds(uid: u32) -> Creds {
        Creds::new((uid, uid), (uid, uid))
    }

    #[test]
    fn keys_errors_attachments_and_removal() {
        let w = Window::new().unwrap();
        let segs = Segments::default();
        let me = creds(1000);
        let make = || SharedFile::new(&w).map_err(|_| Errno::ENOMEM);
        let get = |key, create, exclusive, mode| Get { key, create, exclusive, mode };
        assert_eq!(segs.get(&get(7, false, false, 0), 100, &me, 1, make), Err(Errno::ENOENT));
        let id = segs.get(&get(7, true, true, 0o600), 100, &me, 1, make).unwrap();
        assert_eq!(segs.get(&get(7, true, false, 0o600), 50, &me, 1, make), Ok(id));
        assert_eq!(segs.get(&get(7, true, true, 0o600), 50, &me, 1, make), Err(Errno::EEXIST));
        assert_eq!(segs.get(&get(7, false, false, 0), 200, &me, 1, make), Err(Errno::EINVAL));
        assert_eq!(segs.get(&get(8, true, false, 0o600), 0, &me, 1, make), Err(Errno::EINVAL));
        assert_ne!(segs.get(&get(IPC_PRIVATE, false, false, 0o600), 10, &me, 1, make).unwrap(), id);
        // Another user may not touch a 0600 segment.
        assert_eq!(segs.with(id, |e| Ok(e.perm.grants(&creds(1001), access(false)))), Ok(false));
        assert_eq!(segs.get(&get(7, false, false, 0o400), 50, &creds(1001), 2, make), Err(Errno::EACCES));
        let (obj, size) = segs.with(id, |e| Ok((e.obj.obj.clone(), e.obj.size))).unwrap();
        assert_eq!(size, 100);
        let view = View::new(&w, &obj, 0, PAGE_SIZE).unwrap();
        segs.attached(id, &view, 1);
        let forked = view.clone();
        assert_eq!(segs.segment_of(&view), Some(id));
        assert_eq!(segs.with(id, |e| Ok(e.obj.attached())), Ok(2));
        // Removed while attached: no key finds it, it is still there by id.
        segs.with(id, |e| {
            e.perm.may_change(&me)?;
            remove(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(segs.get(&get(7, false, false, 0), 50, &me, 1, make), Err(Errno::ENOENT));
        assert!(segs.with(id, |e| Ok(shmid_ds(e, 0)[88])).unwrap() == 2);
        drop((view, forked));
        assert_eq!(segs.with(id, |_| Ok(())), Err(Errno::EINVAL), "gone with its last attachment");
        assert_eq!(segs.usage().0, 1);
    }
}
