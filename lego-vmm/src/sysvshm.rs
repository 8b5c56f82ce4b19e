//! System V shared memory segments (`shmget`, `shmat`, `shmdt`, `shmctl`): one table per run,
//! as every process of a vNode is in the same VMM process (the vNode's IPC namespace).
//!
//! A segment is a shared object ([`crate::memory::shared::SharedFile`]); each `shmat` maps a
//! view of it, which a fork passes on. A segment counts as attached once for each process
//! piece that maps one of its views ([`Segment::attached`]), so `nattch` follows `shmat`,
//! `shmdt`, `fork`, `munmap`, `execve` and exit without any of them telling the table. A
//! segment removed with `IPC_RMID` is found by no key any more, and goes once nothing maps it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use lego_proto::sync::LockExt;

use crate::errno::{Errno, SysResult};
use crate::identity::{cap, Creds};
use crate::memory::shared::{SharedFile, View, WINDOW_SIZE};

/// `IPC_PRIVATE`: a key no other `shmget` finds.
pub const IPC_PRIVATE: i32 = 0;
/// Mode bit of a segment removed while attached (`SHM_DEST`).
const SHM_DEST: u32 = 0o1000;
/// Mode bit of a segment `SHM_LOCK`ed.
const SHM_LOCKED: u32 = 0o2000;
/// Most segments at once (Linux's `SHMMNI`).
pub const SHMMNI: usize = 4096;

/// The seconds of the wall clock.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// One segment.
pub struct Segment {
    /// Its key (`IPC_PRIVATE` once removed).
    pub key: i32,
    /// Its pages.
    pub obj: Arc<SharedFile>,
    /// Bytes asked for (`shm_segsz`).
    pub size: u64,
    /// Owner and group (`IPC_SET` changes them), creator and creator's group.
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    /// Permission bits, with `SHM_DEST` and `SHM_LOCKED`.
    pub mode: u32,
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

    /// Whether `creds` may access it for reading (and writing, with `write`), as Linux's
    /// `ipcperms` says.
    pub fn permits(&self, creds: &Creds, write: bool) -> bool {
        if creds.capable(cap::IPC_OWNER) {
            return true;
        }
        let bits = if creds.euid == self.uid || creds.euid == self.cuid {
            self.mode >> 6
        } else if creds.egid == self.gid || creds.egid == self.cgid {
            self.mode >> 3
        } else {
            self.mode
        };
        bits & 4 != 0 && (!write || bits & 2 != 0)
    }
}

/// The segments of a run, by id.
#[derive(Default)]
pub struct Segments {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_id: BTreeMap<i32, Segment>,
    next_id: i32,
}

impl Table {
    /// Forgets the removed segments nothing maps any more.
    fn purge(&mut self) {
        self.by_id.retain(|_, s| s.mode & SHM_DEST == 0 || s.attached() > 0);
    }
}

/// What `shmget` asks.
pub struct Get {
    pub key: i32,
    pub size: u64,
    pub create: bool,
    pub exclusive: bool,
    /// Permission bits for a new segment, and asked of an existing one.
    pub mode: u32,
}

impl Segments {
    fn lock(&self) -> MutexGuard<'_, Table> {
        let mut t = self.table.lock_unpoisoned();
        t.purge();
        t
    }

    /// `shmget`: the id of the segment of `get.key`, made (with `make`) if asked and there is
    /// none.
    pub fn get(&self, get: &Get, creds: &Creds, pid: i32, make: impl FnOnce() -> SysResult<Arc<SharedFile>>) -> SysResult<i32> {
        let mut t = self.lock();
        if get.key != IPC_PRIVATE {
            if let Some((&id, s)) = t.by_id.iter().find(|(_, s)| s.key == get.key) {
                if get.create && get.exclusive {
                    return Err(Errno::EEXIST);
                }
                if get.size > s.size {
                    return Err(Errno::EINVAL);
                }
                if !s.permits(creds, get.mode & 0o222 != 0) && get.mode & 0o777 != 0 {
                    return Err(Errno::EACCES);
                }
                return Ok(id);
            }
            if !get.create {
                return Err(Errno::ENOENT);
            }
        }
        if get.size == 0 || get.size > WINDOW_SIZE {
            return Err(Errno::EINVAL);
        }
        if t.by_id.len() >= SHMMNI {
            return Err(Errno(libc::ENOSPC));
        }
        let obj = make()?;
        let id = t.next_id;
        t.next_id = t.next_id.checked_add(1).unwrap_or(0);
        let at = now();
        t.by_id.insert(
            id,
            Segment {
                key: get.key,
                obj,
                size: get.size,
                uid: creds.euid,
                gid: creds.egid,
                cuid: creds.euid,
                cgid: creds.egid,
                mode: get.mode & 0o777,
                cpid: pid,
                lpid: 0,
                atime: 0,
                dtime: 0,
                ctime: at,
                views: Vec::new(),
            },
        );
        Ok(id)
    }

    /// `shmat` mapped `view` of segment `id` in process `pid`.
    pub fn attached(&self, id: i32, view: &Arc<View>, pid: i32) {
        let mut t = self.lock();
        if let Some(s) = t.by_id.get_mut(&id) {
            s.views.retain(|v| v.strong_count() > 0);
            s.views.push(Arc::downgrade(view));
            (s.lpid, s.atime) = (pid, now());
        }
    }

    /// The segment `view` is a view of, if it is one `shmat` made.
    pub fn segment_of(&self, view: &Arc<View>) -> Option<i32> {
        let t = self.lock();
        t.by_id.iter().find(|(_, s)| s.views.iter().any(|v| std::ptr::eq(v.as_ptr(), Arc::as_ptr(view)))).map(|(&id, _)| id)
    }

    /// `shmdt` of a view of segment `id` by process `pid` (the caller unmaps it).
    pub fn detached(&self, id: i32, pid: i32) {
        if let Some(s) = self.lock().by_id.get_mut(&id) {
            (s.lpid, s.dtime) = (pid, now());
        }
    }

    /// Runs `f` on segment `id` (`IPC_STAT`, `IPC_SET`, `IPC_RMID`, `SHM_LOCK`).
    pub fn with<R>(&self, id: i32, f: impl FnOnce(&mut Segment) -> SysResult<R>) -> SysResult<R> {
        let mut t = self.lock();
        let r = f(t.by_id.get_mut(&id).ok_or(Errno::EINVAL)?);
        t.purge();
        r
    }

    /// The id of the segment at index `index` of the table (`SHM_STAT`).
    pub fn id_at(&self, index: usize) -> SysResult<i32> {
        self.lock().by_id.keys().nth(index).copied().ok_or(Errno::EINVAL)
    }

    /// (segments, bytes of them, the highest index in use) for `SHM_INFO` and `IPC_INFO`.
    pub fn usage(&self) -> (usize, u64, usize) {
        let t = self.lock();
        (t.by_id.len(), t.by_id.values().map(|s| s.size).sum(), t.by_id.len().saturating_sub(1))
    }
}

/// The `ipc_perm` changes `IPC_SET` makes, and `IPC_RMID`: only the owner, the creator or
/// a process with `CAP_SYS_ADMIN` may.
pub fn may_change(s: &Segment, creds: &Creds) -> SysResult<()> {
    if creds.capable(cap::SYS_ADMIN) || creds.euid == s.uid || creds.euid == s.cuid {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}

/// Marks `s` removed: no key finds it any more, and it goes once nothing maps it.
pub fn remove(s: &mut Segment) {
    s.mode |= SHM_DEST;
    s.key = IPC_PRIVATE;
}

/// Sets or clears `SHM_LOCKED` (the segment is accounted, never swapped anyway).
pub fn set_locked(s: &mut Segment, on: bool) {
    if on {
        s.mode |= SHM_LOCKED;
    } else {
        s.mode &= !SHM_LOCKED;
    }
}

/// `struct shmid64_ds` of `s` with id sequence `seq`, as x86-64 lays it out (112 bytes).
pub fn shmid_ds(s: &Segment, seq: u16) -> [u8; 112] {
    let mut b = [0u8; 112];
    let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(0, &s.key.to_le_bytes());
    put(4, &s.uid.to_le_bytes());
    put(8, &s.gid.to_le_bytes());
    put(12, &s.cuid.to_le_bytes());
    put(16, &s.cgid.to_le_bytes());
    put(20, &(s.mode as u16).to_le_bytes());
    put(24, &seq.to_le_bytes());
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
        let get = |key, size, create, exclusive, mode| Get { key, size, create, exclusive, mode };
        assert_eq!(segs.get(&get(7, 100, false, false, 0), &me, 1, make), Err(Errno::ENOENT));
        let id = segs.get(&get(7, 100, true, true, 0o600), &me, 1, make).unwrap();
        assert_eq!(segs.get(&get(7, 50, true, false, 0o600), &me, 1, make), Ok(id));
        assert_eq!(segs.get(&get(7, 50, true, true, 0o600), &me, 1, make), Err(Errno::EEXIST));
        assert_eq!(segs.get(&get(7, 200, false, false, 0), &me, 1, make), Err(Errno::EINVAL));
        assert_eq!(segs.get(&get(8, 0, true, false, 0o600), &me, 1, make), Err(Errno::EINVAL));
        assert_ne!(segs.get(&get(IPC_PRIVATE, 10, false, false, 0o600), &me, 1, make).unwrap(), id);
        // Another user may not touch a 0600 segment.
        assert_eq!(segs.with(id, |s| Ok(s.permits(&creds(1001), false))), Ok(false));
        assert_eq!(segs.get(&get(7, 50, false, false, 0o400), &creds(1001), 2, make), Err(Errno::EACCES));
        let (obj, size) = segs.with(id, |s| Ok((s.obj.clone(), s.size))).unwrap();
        assert_eq!(size, 100);
        let view = View::new(&w, &obj, 0, PAGE_SIZE).unwrap();
        segs.attached(id, &view, 1);
        let forked = view.clone();
        assert_eq!(segs.segment_of(&view), Some(id));
        assert_eq!(segs.with(id, |s| Ok(s.attached())), Ok(2));
        // Removed while attached: no key finds it, it is still there by id.
        segs.with(id, |s| {
            may_change(s, &me)?;
            remove(s);
            Ok(())
        })
        .unwrap();
        assert_eq!(segs.get(&get(7, 50, false, false, 0), &me, 1, make), Err(Errno::ENOENT));
        assert!(segs.with(id, |s| Ok(shmid_ds(s, 0)[88])).unwrap() == 2);
        drop((view, forked));
        assert_eq!(segs.with(id, |_| Ok(())), Err(Errno::EINVAL), "gone with its last attachment");
        assert_eq!(segs.usage().0, 1);
    }
}
