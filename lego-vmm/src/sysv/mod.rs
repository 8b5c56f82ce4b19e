//! System V IPC of a run: shared memory segments ([`shm`]), semaphore sets ([`sem`]) and
//! message queues ([`msg`]), one table of each for every process of it, as every process of a
//! vNode is in the same VMM process (the vNode's IPC namespace).
//!
//! What the three share is here: the owner and permissions of an object (`struct ipc_perm`)
//! and the table of objects by id with `*get`'s key rules. The calls that block (`semop`,
//! `msgsnd`, `msgrcv`) wait as [`crate::syscall`] has them wait.

pub mod msg;
pub mod sem;
pub mod shm;

use std::collections::BTreeMap;

use crate::errno::{Errno, SysResult};
use crate::identity::{cap, Creds};

/// `IPC_PRIVATE`: a key no other `*get` finds.
pub const IPC_PRIVATE: i32 = 0;
/// `*get` flags.
pub const IPC_CREAT: u64 = 0o1000;
pub const IPC_EXCL: u64 = 0o2000;
/// The "do not wait" flag of `semop`, `msgsnd` and `msgrcv`.
pub const IPC_NOWAIT: u64 = 0o4000;
/// `*ctl` commands every kind has.
pub const IPC_RMID: u64 = 0;
pub const IPC_SET: u64 = 1;
pub const IPC_STAT: u64 = 2;
pub const IPC_INFO: u64 = 3;
/// The flag of the 64-bit structures, which x86-64 always uses.
pub const IPC_64: u64 = 0x100;
/// Bytes of `struct ipc64_perm` on x86-64.
pub const PERM_SIZE: usize = 48;

/// The seconds of the wall clock.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Who owns an object and who may use it (`struct ipc_perm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpcPerm {
    /// Its key (`IPC_PRIVATE` for a private one, and for a removed segment).
    pub key: i32,
    /// Owner and group (`IPC_SET` changes them), creator and creator's group.
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    /// Permission bits (with a kind's own flags above them).
    pub mode: u32,
}

impl IpcPerm {
    /// The permissions of an object `creds` make with `key` and permission bits `mode`.
    pub fn new(key: i32, creds: &Creds, mode: u32) -> IpcPerm {
        IpcPerm { key, uid: creds.euid, gid: creds.egid, cuid: creds.euid, cgid: creds.egid, mode: mode & 0o777 }
    }

    /// Whether `creds` have every access `flag` asks for (read 0o444, write 0o222, in any of
    /// the three classes), as Linux's `ipcperms` decides (by the effective group; the
    /// supplementary groups are not asked).
    pub fn grants(&self, creds: &Creds, flag: u32) -> bool {
        let requested = (flag >> 6 | flag >> 3 | flag) & 0o7;
        let granted = if creds.euid == self.uid || creds.euid == self.cuid {
            self.mode >> 6
        } else if creds.egid == self.gid || creds.egid == self.cgid {
            self.mode >> 3
        } else {
            self.mode
        };
        requested & !granted & 0o7 == 0 || creds.capable(cap::IPC_OWNER)
    }

    /// `IPC_SET` and `IPC_RMID`: only the owner, the creator or a process with
    /// `CAP_SYS_ADMIN` may.
    pub fn may_change(&self, creds: &Creds) -> SysResult<()> {
        if creds.capable(cap::SYS_ADMIN) || creds.euid == self.uid || creds.euid == self.cuid {
            Ok(())
        } else {
            Err(Errno::EPERM)
        }
    }

    /// `IPC_SET`: owner, group and permission bits from the `struct ipc64_perm` at the start
    /// of `raw` (a kind's `*id64_ds`).
    pub fn set(&mut self, raw: &[u8]) {
        let word = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
        (self.uid, self.gid) = (word(4), word(8));
        self.mode = (self.mode & !0o777) | (word(20) & 0o777);
    }

    /// `struct ipc64_perm` as x86-64 lays it out, with id sequence number `seq`.
    pub fn bytes(&self, seq: u16) -> [u8; PERM_SIZE] {
        let mut b = [0u8; PERM_SIZE];
        for (i, v) in [self.key as u32, self.uid, self.gid, self.cuid, self.cgid].into_iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[20..22].copy_from_slice(&(self.mode as u16).to_le_bytes());
        b[24..26].copy_from_slice(&seq.to_le_bytes());
        b
    }
}

/// What a `*get` call asks.
pub struct Get {
    pub key: i32,
    pub create: bool,
    pub exclusive: bool,
    /// Permission bits for a new object, and the access asked of an existing one.
    pub mode: u32,
}

impl Get {
    /// The request of `key` and `flags` (`IPC_CREAT`, `IPC_EXCL`, permission bits).
    pub fn new(key: u64, flags: u64) -> Get {
        Get { key: key as i32, create: flags & IPC_CREAT != 0, exclusive: flags & IPC_EXCL != 0, mode: (flags & 0o777) as u32 }
    }
}

/// An object in an [`Ids`] table: its permissions and what it is.
pub struct Entry<T> {
    pub perm: IpcPerm,
    pub obj: T,
}

/// The objects of one kind, by id. Ids count up from 0, so a removed object's id is not
/// handed out again while the run lasts (up to 2^31 objects).
pub struct Ids<T> {
    by_id: BTreeMap<i32, Entry<T>>,
    next_id: i32,
    /// Most objects at once (`ENOSPC` beyond).
    max: usize,
}

impl<T> Ids<T> {
    /// An empty table for at most `max` objects.
    pub fn new(max: usize) -> Ids<T> {
        Ids { by_id: BTreeMap::new(), next_id: 0, max }
    }

    /// `*get`: the id of the object of `get.key`, after `existing` accepts it; or a new one
    /// from `make`, if asked and there is none (Linux's `ipcget`).
    pub fn get(&mut self, get: &Get, creds: &Creds, existing: impl FnOnce(&T) -> SysResult<()>, make: impl FnOnce() -> SysResult<T>) -> SysResult<i32> {
        if get.key != IPC_PRIVATE {
            if let Some((&id, e)) = self.by_id.iter().find(|(_, e)| e.perm.key == get.key) {
                if get.create && get.exclusive {
                    return Err(Errno::EEXIST);
                }
                if !e.perm.grants(creds, get.mode) {
                    return Err(Errno::EACCES);
                }
                existing(&e.obj)?;
                return Ok(id);
            }
            if !get.create {
                return Err(Errno::ENOENT);
            }
        }
        let obj = make()?;
        if self.by_id.len() >= self.max {
            return Err(Errno(libc::ENOSPC));
        }
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(0);
        self.by_id.insert(id, Entry { perm: IpcPerm::new(get.key, creds, get.mode), obj });
        Ok(id)
    }

    /// The object of id `id` (`EINVAL` if there is none).
    pub fn entry(&mut self, id: i32) -> SysResult<&mut Entry<T>> {
        self.by_id.get_mut(&id).ok_or(Errno::EINVAL)
    }

    /// Removes object `id`.
    pub fn remove(&mut self, id: i32) -> Option<Entry<T>> {
        self.by_id.remove(&id)
    }

    /// The id of the object at index `index` of the table (`*_STAT`).
    pub fn id_at(&self, index: usize) -> SysResult<i32> {
        self.by_id.keys().nth(index).copied().ok_or(Errno::EINVAL)
    }

    /// The highest index in use, as `IPC_INFO` returns it (0 if none).
    pub fn highest_index(&self) -> usize {
        self.by_id.len().saturating_sub(1)
    }

    /// Keeps the objects `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&Entry<T>) -> bool) {
        self.by_id.retain(|_, e| keep(e));
    }

    /// Every object, by id.
    pub fn iter(&self) -> impl Iterator<Item = (i32, &Entry<T>)> {
        self.by_id.iter().map(|(&id, e)| (id, e))
    }

    /// How many objects there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// The sequence number `*_STAT` reports for id `id` of a table of `max` objects.
pub fn seq(id: i32, max: usize) -> u16 {
    (id as u32 / max as u32) as u16
}

/// A call cannot go on until its object changes (a full queue for `msgsnd`, no fitting
/// message for `msgrcv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MustWait;

/// The System V IPC objects of a run.
#[derive(Default)]
pub struct Ipc {
    pub shm: shm::Segments,
    pub sem: sem::Semaphores,
    pub msg: msg::Queues,
}
