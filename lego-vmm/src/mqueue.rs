//! POSIX message queues (`mq_open` and friends): one table of named queues per run, as every
//! process of a vNode is in the same VMM process (the vNode's `/dev/mqueue`). A queue lives
//! while its name or a descriptor of it does; its descriptors are [`crate::anonfd::AnonFile`]s.
//!
//! Messages leave a queue by priority, the highest first, and in order within a priority. A
//! process may ask to be told (`mq_notify`) when a message comes to the empty queue while no
//! receiver waits for one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lego_proto::sync::LockExt;

use crate::errno::{Errno, SysResult};
use crate::identity::{cap, Creds};
use crate::sysv::{IpcPerm, MustWait};

/// Priorities are below this (`MQ_PRIO_MAX`).
pub const MQ_PRIO_MAX: u32 = 32768;
/// A queue made without attributes (`/proc/sys/fs/mqueue/msg_default`, `msgsize_default`).
pub const DEFAULT_MAXMSG: usize = 10;
pub const DEFAULT_MSGSIZE: usize = 8192;
/// Most messages and bytes of one a caller without `CAP_SYS_RESOURCE` may ask for
/// (`msg_max`, `msgsize_max`), and anyone (`HARD_MSGMAX`, `HARD_MSGSIZEMAX`).
const MAXMSG: usize = 10;
const MSGSIZE: usize = 8192;
const HARD_MAXMSG: usize = 65536;
const HARD_MSGSIZE: usize = 16 << 20;
/// Longest name (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// Who `mq_notify` tells, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notify {
    /// The process that asked.
    pub pid: i32,
    /// The signal to send (`SIGEV_SIGNAL`), 0 for none (`SIGEV_NONE`).
    pub signo: i32,
    /// Its `si_value`.
    pub value: u64,
}

#[derive(Default)]
struct State {
    /// Messages by (priority, highest first; then arrival).
    msgs: BTreeMap<(std::cmp::Reverse<u32>, u64), Vec<u8>>,
    arrivals: u64,
    notify: Option<Notify>,
    /// Receivers waiting now (a notification is not sent while one is).
    receivers: usize,
}

/// One queue.
pub struct Mq {
    /// Its wait queue key's part ([`crate::syscall`] waits on it).
    pub id: u64,
    /// Most messages, and most bytes of one.
    pub maxmsg: usize,
    pub msgsize: usize,
    /// Owner and permission bits.
    pub perm: IpcPerm,
    state: Mutex<State>,
}

impl Mq {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock_unpoisoned()
    }

    /// Messages in it now (`mq_curmsgs`).
    pub fn len(&self) -> usize {
        self.state().msgs.len()
    }

    /// Whether it has no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a send would not wait.
    pub fn has_room(&self) -> bool {
        self.len() < self.maxmsg
    }

    /// One try of a send of `text` at `prio`: `Ok` with the notification to send now, if one
    /// is due; `Err` while the queue is full.
    pub fn try_send(&self, text: &[u8], prio: u32) -> Result<Option<Notify>, MustWait> {
        let mut s = self.state();
        if s.msgs.len() >= self.maxmsg {
            return Err(MustWait);
        }
        let was_empty = s.msgs.is_empty();
        let at = s.arrivals;
        s.arrivals += 1;
        s.msgs.insert((std::cmp::Reverse(prio), at), text.to_vec());
        Ok(if was_empty && s.receivers == 0 { s.notify.take() } else { None })
    }

    /// One try of a receive: `Ok` with the first message and its priority, `Err` while there
    /// is none.
    pub fn try_receive(&self) -> Result<(Vec<u8>, u32), MustWait> {
        let mut s = self.state();
        let ((std::cmp::Reverse(prio), _), text) = s.msgs.pop_first().ok_or(MustWait)?;
        Ok((text, prio))
    }

    /// `mq_notify` by process `pid`: registers `notify`, or (`None`) takes its registration
    /// back. `EBUSY` if another process that has not `ended` is registered.
    pub fn set_notify(&self, pid: i32, notify: Option<Notify>, ended: impl Fn(i32) -> bool) -> SysResult<()> {
        let mut s = self.state();
        match (s.notify, notify) {
            (Some(n), _) if n.pid != pid && !ended(n.pid) => Err(Errno::EBUSY),
            (_, n) => {
                s.notify = n;
                Ok(())
            }
        }
    }

    /// What a `read` of its descriptor says (Linux's `mqueue` file).
    pub fn describe(&self) -> Vec<u8> {
        let s = self.state();
        let bytes: usize = s.msgs.values().map(Vec::len).sum();
        // NOTIFY is the registration's `sigev_notify`: SIGEV_SIGNAL 0, SIGEV_NONE 1.
        let (notify, signo, pid) = match s.notify {
            None => (0, 0, 0),
            Some(n) if n.signo == 0 => (1, 0, n.pid),
            Some(n) => (0, n.signo, n.pid),
        };
        format!("QSIZE:{bytes:<10} NOTIFY:{notify:<5} SIGNO:{signo:<5} NOTIFY_PID:{pid:<6}\n").into_bytes()
    }
}

/// A receiver waiting on `mq`, counted while this lives.
pub struct Receiving(Arc<Mq>);

impl Receiving {
    /// Counts a waiting receiver.
    pub fn new(mq: Arc<Mq>) -> Receiving {
        mq.state().receivers += 1;
        Receiving(mq)
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0.state().receivers -= 1;
    }
}

/// What `mq_open` asks.
pub struct Open<'a> {
    pub name: &'a [u8],
    pub create: bool,
    pub exclusive: bool,
    /// Permission bits for a new queue.
    pub mode: u32,
    /// Its size (`None`: the defaults).
    pub attr: Option<(i64, i64)>,
}

/// The named queues of a run.
#[derive(Default)]
pub struct MqTable {
    names: Mutex<HashMap<Vec<u8>, Arc<Mq>>>,
    next_id: AtomicU64,
}

/// `name` as the kernel takes it (C libraries strip the leading slash of `mq_open(3)`'s):
/// `ENOENT` if empty, `EACCES` with a slash or for `.` and `..`, `ENAMETOOLONG` past
/// `NAME_MAX`.
fn checked(name: &[u8]) -> SysResult<&[u8]> {
    match name {
        [] => Err(Errno::ENOENT),
        n if n.len() > NAME_MAX => Err(Errno::ENAMETOOLONG),
        b"." | b".." => Err(Errno::EACCES),
        n if n.contains(&b'/') => Err(Errno::EACCES),
        n => Ok(n),
    }
}

impl MqTable {
    /// `mq_open`: the queue of `o.name`, made if asked and there is none. The caller checks
    /// its access to an existing one.
    pub fn open(&self, o: &Open<'_>, creds: &Creds) -> SysResult<(Arc<Mq>, bool)> {
        let name = checked(o.name)?;
        let mut names = self.names.lock_unpoisoned();
        if let Some(q) = names.get(name) {
            if o.create && o.exclusive {
                return Err(Errno::EEXIST);
            }
            return Ok((q.clone(), false));
        }
        if !o.create {
            return Err(Errno::ENOENT);
        }
        let (maxmsg, msgsize) = match o.attr {
            None => (DEFAULT_MAXMSG, DEFAULT_MSGSIZE),
            Some((m, s)) => {
                let (m, s) = (usize::try_from(m).map_err(|_| Errno::EINVAL)?, usize::try_from(s).map_err(|_| Errno::EINVAL)?);
                if m == 0 || s == 0 || m > HARD_MAXMSG || s > HARD_MSGSIZE {
                    return Err(Errno::EINVAL);
                }
                if (m > MAXMSG || s > MSGSIZE) && !creds.capable(cap::SYS_RESOURCE) {
                    return Err(Errno::EINVAL);
                }
                (m, s)
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let q = Arc::new(Mq { id, maxmsg, msgsize, perm: IpcPerm::new(0, creds, o.mode), state: Mutex::default() });
        names.insert(name.to_vec(), q.clone());
        Ok((q, true))
    }

    /// `mq_unlink`: the name goes (the queue with its last descriptor). Its owner or a process
    /// with `CAP_FOWNER` may (`/dev/mqueue` is sticky).
    pub fn unlink(&self, name: &[u8], creds: &Creds) -> SysResult<()> {
        let name = checked(name)?;
        let mut names = self.names.lock_unpoisoned();
        let q = names.get(name).ok_or(Errno::ENOENT)?;
        if q.perm.uid != creds.euid && !creds.capable(cap::FOWNER) {
            return Err(Errno::EACCES);
        }
        names.remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Creds {
        Creds::new((1000, 1000), (1000, 1000))
    }

    fn open<'a>(name: &'a [u8], create: bool, exclusive: bool, attr: Option<(i64, i64)>) -> Open<'a> {
        Open { name, create, exclusive, mode: 0o600, attr }
    }

    #[test]
    fn names_sizes_and_order() {
        let t = MqTable::default();
        assert_eq!(t.open(&open(b"q", false, false, None), &me()).err(), Some(Errno::ENOENT));
        assert_eq!(t.open(&open(b"", true, false, None), &me()).err(), Some(Errno::ENOENT));
        assert_eq!(t.open(&open(b"/q", true, false, None), &me()).err(), Some(Errno::EACCES));
        assert_eq!(t.open(&open(b"..", true, false, None), &me()).err(), Some(Errno::EACCES));
        assert_eq!(t.open(&open(b"q", true, false, Some((11, 100))), &me()).err(), Some(Errno::EINVAL), "past msg_max");
        let (q, made) = t.open(&open(b"q", true, true, Some((2, 16))), &me()).unwrap();
        assert!(made);
        assert_eq!(t.open(&open(b"q", true, true, None), &me()).err(), Some(Errno::EEXIST));
        assert!(Arc::ptr_eq(&t.open(&open(b"q", false, false, None), &me()).unwrap().0, &q));
        assert_eq!(q.try_send(b"low", 1), Ok(None));
        assert_eq!(q.try_send(b"high", 5), Ok(None));
        assert_eq!(q.try_send(b"full", 9), Err(MustWait));
        assert_eq!(q.try_receive(), Ok((b"high".to_vec(), 5)));
        assert_eq!(q.try_receive(), Ok((b"low".to_vec(), 1)));
        assert_eq!(q.try_receive(), Err(MustWait));
        assert_eq!(t.unlink(b"q", &Creds::new((1001, 1001), (1001, 1001))), Err(Errno::EACCES));
        t.unlink(b"q", &me()).unwrap();
        assert_eq!(t.unlink(b"q", &me()), Err(Errno::ENOENT));
    }

    #[test]
    fn a_notification_goes_once_for_an_empty_queue_without_receivers() {
        let t = MqTable::default();
        let (q, _) = t.open(&open(b"n", true, false, None), &me()).unwrap();
        let n = Notify { pid: 4, signo: 10, value: 7 };
        q.set_notify(4, Some(n), |_| false).unwrap();
        assert_eq!(q.set_notify(5, None, |_| false), Err(Errno::EBUSY));
        let waiting = Receiving::new(q.clone());
        assert_eq!(q.try_send(b"1", 0), Ok(None), "a receiver waits");
        drop(waiting);
        assert_eq!(q.try_receive().map(|m| m.1), Ok(0));
        assert_eq!(q.try_send(b"2", 0), Ok(Some(n)));
        assert_eq!(q.try_send(b"3", 0), Ok(None), "once");
        q.set_notify(4, Some(n), |_| false).unwrap();
        assert_eq!(q.set_notify(5, Some(Notify { pid: 5, ..n }), |pid| pid == 4), Ok(()), "4 has ended");
    }
}
