//! System V message queues (`msgget`, `msgsnd`, `msgrcv`, `msgctl`).
//!
//! A queue holds whole messages, each a type and its bytes, up to `msg_qbytes` bytes (and as
//! many messages). A receiver picks a message by type as Linux's `find_msg` does.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use lego_proto::sync::LockExt;

use super::{now, Entry, Get, Ids, MustWait};
use crate::errno::{Errno, SysResult};
use crate::identity::Creds;

/// Largest message (`MSGMAX`), default bytes of a queue (`MSGMNB`), most queues (`MSGMNI`):
/// Linux's defaults.
pub const MSGMAX: usize = 8192;
pub const MSGMNB: usize = 16384;
pub const MSGMNI: usize = 32000;

/// One queue.
pub struct Queue {
    /// Its messages, oldest first: (type, bytes).
    pub msgs: VecDeque<(i64, Vec<u8>)>,
    /// Bytes in it, and most bytes it may hold (`msg_cbytes`, `msg_qbytes`).
    pub cbytes: usize,
    pub qbytes: usize,
    /// Last send, receive and change, in seconds.
    pub stime: i64,
    pub rtime: i64,
    pub ctime: i64,
    /// Last sender and receiver.
    pub lspid: i32,
    pub lrpid: i32,
}

/// Which message a `msgrcv` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The first (`msgtyp` 0).
    First,
    /// The first of this type (`msgtyp` > 0).
    Type(i64),
    /// The first of another type (`msgtyp` > 0 with `MSG_EXCEPT`).
    NotType(i64),
    /// The first of the lowest type up to this one (`msgtyp` < 0).
    UpTo(u64),
    /// The one at this position, left in the queue (`MSG_COPY`).
    Copy(u64),
}

impl Pick {
    /// Where the message to take is in `msgs`, if there is one.
    fn find(self, msgs: &VecDeque<(i64, Vec<u8>)>) -> Option<usize> {
        match self {
            Pick::First => (!msgs.is_empty()).then_some(0),
            Pick::Type(t) => msgs.iter().position(|m| m.0 == t),
            Pick::NotType(t) => msgs.iter().position(|m| m.0 != t),
            // The first of the lowest type: `min_by_key` keeps the first of equals.
            Pick::UpTo(max) => msgs.iter().enumerate().filter(|(_, m)| m.0 as u64 <= max).min_by_key(|(_, m)| m.0).map(|(i, _)| i),
            Pick::Copy(n) => usize::try_from(n).ok().filter(|&n| n < msgs.len()),
        }
    }
}

/// The message queues of a run.
pub struct Queues {
    table: Mutex<Ids<Queue>>,
}

impl Default for Queues {
    fn default() -> Queues {
        Queues { table: Mutex::new(Ids::new(MSGMNI)) }
    }
}

impl Queues {
    fn lock(&self) -> MutexGuard<'_, Ids<Queue>> {
        self.table.lock_unpoisoned()
    }

    /// `msgget`: the id of the queue of `get.key`, made if asked and there is none.
    pub fn get(&self, get: &Get, creds: &Creds) -> SysResult<i32> {
        let new = || {
            let q = Queue { msgs: VecDeque::new(), cbytes: 0, qbytes: MSGMNB, stime: 0, rtime: 0, ctime: now(), lspid: 0, lrpid: 0 };
            Ok(q)
        };
        self.lock().get(get, creds, |_| Ok(()), new)
    }

    /// Runs `f` on queue `id` (`EINVAL` if there is none).
    pub fn with<R>(&self, id: i32, f: impl FnOnce(&mut Entry<Queue>) -> SysResult<R>) -> SysResult<R> {
        f(self.lock().entry(id)?)
    }

    /// One try of `msgsnd` by process `pid`: `Ok` once queued (or failed: `EINVAL` if the
    /// queue is gone), `Err` while the queue is full.
    pub fn try_send(&self, id: i32, mtype: i64, text: &[u8], pid: i32) -> Result<SysResult<()>, MustWait> {
        let mut t = self.lock();
        let q = match t.entry(id) {
            Ok(e) => &mut e.obj,
            Err(e) => return Ok(Err(e)),
        };
        if q.cbytes + text.len() > q.qbytes || q.msgs.len() + 1 > q.qbytes {
            return Err(MustWait);
        }
        q.msgs.push_back((mtype, text.to_vec()));
        q.cbytes += text.len();
        (q.lspid, q.stime) = (pid, now());
        Ok(Ok(()))
    }

    /// One try of `msgrcv` by process `pid` of a message of at most `max` bytes (`truncate`:
    /// cut longer ones, else `E2BIG`): `Ok` with its type and bytes (or failed: `EINVAL` if the
    /// queue is gone), `Err` while there is none to take.
    pub fn try_receive(&self, id: i32, pick: Pick, max: usize, truncate: bool, pid: i32) -> Result<SysResult<(i64, Vec<u8>)>, MustWait> {
        let mut t = self.lock();
        let q = match t.entry(id) {
            Ok(e) => &mut e.obj,
            Err(e) => return Ok(Err(e)),
        };
        let Some(at) = pick.find(&q.msgs) else { return Err(MustWait) };
        if q.msgs[at].1.len() > max && !truncate {
            return Ok(Err(Errno::E2BIG));
        }
        let (mtype, mut text) = if let Pick::Copy(_) = pick {
            q.msgs[at].clone()
        } else {
            let m = q.msgs.remove(at).expect("found above");
            q.cbytes -= m.1.len();
            (q.lrpid, q.rtime) = (pid, now());
            m
        };
        text.truncate(max);
        Ok(Ok((mtype, text)))
    }

    /// `IPC_RMID` of queue `id`.
    pub fn remove(&self, id: i32) {
        self.lock().remove(id);
    }

    /// The id of the queue at index `index` of the table (`MSG_STAT`).
    pub fn id_at(&self, index: usize) -> SysResult<i32> {
        self.lock().id_at(index)
    }

    /// (queues, messages in them, bytes of those, the highest index in use) for `MSG_INFO`
    /// and `IPC_INFO`.
    pub fn usage(&self) -> (usize, usize, usize, usize) {
        let t = self.lock();
        let msgs = t.iter().map(|(_, e)| e.obj.msgs.len()).sum();
        let bytes = t.iter().map(|(_, e)| e.obj.cbytes).sum();
        (t.len(), msgs, bytes, t.highest_index())
    }
}

/// `struct msqid64_ds` of `e` with id sequence `seq`, as x86-64 lays it out (120 bytes).
pub fn msqid_ds(e: &Entry<Queue>, seq: u16) -> [u8; 120] {
    let mut b = [0u8; 120];
    b[..super::PERM_SIZE].copy_from_slice(&e.perm.bytes(seq));
    let q = &e.obj;
    let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(48, &q.stime.to_le_bytes());
    put(56, &q.rtime.to_le_bytes());
    put(64, &q.ctime.to_le_bytes());
    put(72, &(q.cbytes as u64).to_le_bytes());
    put(80, &(q.msgs.len() as u64).to_le_bytes());
    put(88, &(q.qbytes as u64).to_le_bytes());
    put(96, &q.lspid.to_le_bytes());
    put(100, &q.lrpid.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Creds {
        Creds::new((1000, 1000), (1000, 1000))
    }

    #[test]
    fn messages_are_picked_by_type() {
        let qs = Queues::default();
        let id = qs.get(&Get::new(0, 0o600), &me()).unwrap();
        for (t, text) in [(3, "c1"), (1, "a"), (2, "b"), (1, "a2"), (3, "c2")] {
            assert_eq!(qs.try_send(id, t, text.as_bytes(), 5), Ok(Ok(())));
        }
        let take = |pick| qs.try_receive(id, pick, 100, false, 6).map(|r| r.map(|(t, b)| (t, String::from_utf8(b).unwrap())));
        assert_eq!(take(Pick::Copy(1)), Ok(Ok((1, "a".into()))), "a copy stays");
        assert_eq!(take(Pick::UpTo(2)), Ok(Ok((1, "a".into()))));
        assert_eq!(take(Pick::Type(3)), Ok(Ok((3, "c1".into()))));
        assert_eq!(take(Pick::NotType(2)), Ok(Ok((1, "a2".into()))));
        assert_eq!(take(Pick::First), Ok(Ok((2, "b".into()))));
        assert_eq!(take(Pick::Type(9)), Err(MustWait));
        assert_eq!(qs.try_receive(id, Pick::First, 1, false, 6), Ok(Err(Errno::E2BIG)), "too long, and kept");
        assert_eq!(qs.try_receive(id, Pick::First, 1, true, 6), Ok(Ok((3, b"c".to_vec()))));
        assert_eq!(qs.usage().1, 0);
    }

    #[test]
    fn a_full_queue_blocks_senders() {
        let qs = Queues::default();
        let id = qs.get(&Get::new(9, 0o1600), &me()).unwrap();
        let big = vec![7u8; MSGMAX];
        assert_eq!(qs.try_send(id, 1, &big, 1), Ok(Ok(())));
        assert_eq!(qs.try_send(id, 1, &big, 1), Ok(Ok(())));
        assert_eq!(qs.try_send(id, 1, b"x", 1), Err(MustWait));
        assert!(qs.try_receive(id, Pick::First, MSGMAX, false, 2).is_ok());
        assert_eq!(qs.try_send(id, 1, b"x", 1), Ok(Ok(())));
        qs.remove(id);
        assert_eq!(qs.try_send(id, 1, b"x", 1), Ok(Err(Errno::EINVAL)));
    }
}
