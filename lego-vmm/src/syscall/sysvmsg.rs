//! System V message queues: `msgget`, `msgsnd`, `msgrcv` and `msgctl` over the run's table of
//! queues ([`crate::sysv::msg`]). A send to a full queue and a receive from a queue without a
//! fitting message wait without the process lock until the queue changes, it is removed
//! (`EIDRM`) or a signal comes (`EINTR`).

use super::ipcwait::{block_on, wait_key, wake_all};
use super::sysvipc::{ipc_stat, permitted};
use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::identity::cap;
use crate::process::{Locked, Process};
use crate::sysv::msg::{self, Pick, MSGMAX, MSGMNB, MSGMNI};
use crate::sysv::{now, seq, Entry, Get, IPC_64, IPC_INFO, IPC_NOWAIT, IPC_RMID, IPC_SET, IPC_STAT};

const MSG_STAT: u64 = 11;
const MSG_INFO: u64 = 12;
const MSG_STAT_ANY: u64 = 13;
const MSG_NOERROR: u64 = 0o10000;
const MSG_EXCEPT: u64 = 0o20000;
const MSG_COPY: u64 = 0o40000;
/// The kind of a message queue's wait queue keys ([`wait_key`]).
const WAITS: u64 = 2;
const READ: u32 = 0o444;
const WRITE: u32 = 0o222;

/// `msgget(key, flags)`.
pub fn msgget(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    p.ipc.msg.get(&Get::new(a[0], a[1]), &p.creds).map(|id| id as u64)
}

/// Fails with `EACCES` unless the caller has access `need` to queue `id`.
fn check_access(p: &Process, id: i32, need: u32) -> SysResult<()> {
    p.ipc.msg.with(id, |e| permitted(e.perm.grants(&p.creds, need)))
}

/// `msgsnd(id, msgp, size, flags)`: `msgp` holds the type (a `long`, at least 1), then the
/// bytes.
pub fn msgsnd(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [id, msgp, size, flags, ..] = a;
    let id = id as i32;
    let mtype = p.mm.read_u64(msgp)? as i64;
    if size as usize > MSGMAX || id < 0 {
        return Err(Errno::EINVAL);
    }
    if mtype < 1 {
        return Err(Errno::EINVAL);
    }
    let mut text = vec![0u8; size as usize];
    p.mm.read_user(msgp + 8, &mut text)?;
    check_access(p, id, WRITE)?;
    let (ipc, pid, key) = (p.ipc.clone(), p.pid, wait_key(WAITS, id));
    let nowait = (flags & IPC_NOWAIT != 0).then_some(Errno::EAGAIN);
    block_on(p, cpu.tid, key, None, nowait, || ipc.msg.try_send(id, mtype, &text, pid))?;
    wake_all(p, key);
    Ok(0)
}

/// `msgrcv(id, msgp, size, type, flags)`: the message's type and up to `size` of its bytes
/// go to `msgp`; returns how many bytes.
pub fn msgrcv(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [id, msgp, size, typ, flags, ..] = a;
    let (id, typ) = (id as i32, typ as i64);
    if id < 0 || (size as i64) < 0 {
        return Err(Errno::EINVAL);
    }
    let pick = if flags & MSG_COPY != 0 {
        if flags & IPC_NOWAIT == 0 || flags & MSG_EXCEPT != 0 {
            return Err(Errno::EINVAL);
        }
        Pick::Copy(typ as u64)
    } else {
        match typ {
            0 => Pick::First,
            t if t > 0 && flags & MSG_EXCEPT != 0 => Pick::NotType(t),
            t if t > 0 => Pick::Type(t),
            t => Pick::UpTo(t.unsigned_abs()),
        }
    };
    check_access(p, id, READ)?;
    let (ipc, pid, key) = (p.ipc.clone(), p.pid, wait_key(WAITS, id));
    let max = usize::try_from(size).unwrap_or(usize::MAX);
    let nowait = (flags & IPC_NOWAIT != 0).then_some(Errno::ENOMSG);
    let (mtype, text) = block_on(p, cpu.tid, key, None, nowait, || ipc.msg.try_receive(id, pick, max, flags & MSG_NOERROR != 0, pid))?;
    if pick != Pick::Copy(typ as u64) {
        // Room for a sender.
        wake_all(p, key);
    }
    p.mm.write_u64(msgp, mtype as u64)?;
    p.mm.write_user(msgp + 8, &text)?;
    Ok(text.len() as u64)
}

/// `msgctl(id, cmd, buf)`.
pub fn msgctl(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [id, cmd, buf, ..] = a;
    let cmd = cmd & !IPC_64;
    let (index, id) = (id as u32 as usize, id as i32);
    let creds = p.creds;
    match cmd {
        IPC_INFO | MSG_INFO => {
            let (queues, msgs, bytes, highest) = p.ipc.msg.usage();
            // struct msginfo: msgpool, msgmap, msgmax, msgmnb, msgmni, msgssz, msgtql (ints),
            // msgseg (a short); MSG_INFO puts what is in use in msgpool, msgmap and msgtql.
            let (pool, map, tql) = if cmd == MSG_INFO {
                (queues as i32, msgs as i32, bytes as i32)
            } else {
                ((MSGMNI * MSGMNB / 1024) as i32, MSGMNB as i32, MSGMNB as i32)
            };
            let mut b = [0u8; 32];
            for (i, v) in [pool, map, MSGMAX as i32, MSGMNB as i32, MSGMNI as i32, 16, tql].iter().enumerate() {
                b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
            }
            b[28..30].copy_from_slice(&u16::MAX.to_le_bytes());
            p.mm.write_user(buf, &b)?;
            Ok(highest as u64)
        }
        IPC_STAT | MSG_STAT | MSG_STAT_ANY => ipc_stat(p, cmd != IPC_STAT, id, index, buf, |i| p.ipc.msg.id_at(i), |id| {
            p.ipc.msg.with(id, |e| {
                permitted(cmd == MSG_STAT_ANY || e.perm.grants(&creds, READ))?;
                Ok(msg::msqid_ds(e, seq(id, MSGMNI)))
            })
        }),
        IPC_SET => {
            let mut b = [0u8; 120];
            p.mm.read_user(buf, &mut b)?;
            let qbytes = u64::from_le_bytes(b[88..96].try_into().expect("8 bytes"));
            p.ipc.msg.with(id, |e: &mut Entry<msg::Queue>| {
                e.perm.may_change(&creds)?;
                if qbytes > MSGMNB as u64 && !creds.capable(cap::SYS_RESOURCE) {
                    return Err(Errno::EPERM);
                }
                e.perm.set(&b);
                e.obj.qbytes = usize::try_from(qbytes).unwrap_or(usize::MAX);
                e.obj.ctime = now();
                Ok(())
            })?;
            // A larger queue has room for senders.
            wake_all(p, wait_key(WAITS, id));
            Ok(0)
        }
        IPC_RMID => {
            p.ipc.msg.with(id, |e| e.perm.may_change(&creds))?;
            p.ipc.msg.remove(id);
            wake_all(p, wait_key(WAITS, id));
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}
