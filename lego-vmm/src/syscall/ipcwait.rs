//! The waits of the IPC calls that block (`semop`, `semtimedop`, `msgsnd`, `msgrcv`,
//! `mq_timedsend`, `mq_timedreceive`): on the run's shared futex table, keyed by object, so
//! that a change in any process of the run wakes the waiters in every other.

use std::time::Instant;

use crate::errno::{Errno, SysResult};
use crate::futex::MATCH_ANY;
use crate::process::{Locked, Process};

/// The key of the wait queue of object `id` of kind `kind` in the run's shared futex table.
/// Bit 63 keeps it apart from guest addresses, bit 62 from the keys of shared pages (whose
/// object ids stay below 2^22 in any run short of four million shared objects; past that, a
/// shared key only wakes a waiter spuriously, which futex and IPC waiters alike survive).
pub fn wait_key(kind: u64, id: i32) -> u64 {
    3 << 62 | kind << 32 | u64::from(id as u32)
}

/// Wakes every thread of the run waiting on `key` (an object changed: each looks again).
pub fn wake_all(p: &Process, key: u64) {
    // The bitset matches every waiter, which cannot fail.
    let _ = p.group.shared_futexes.wake(key, usize::MAX, MATCH_ANY);
}

/// A call that may block, made by thread `tid` on the object whose wait queue is `key`.
/// `attempt` runs under the wait table's lock of `key`, so that a change made (and woken)
/// after it looked finds the thread queued. It ends the call (`Ok`) or says the call waits
/// (`Err`, with a guard that counts the wait while it lives). The call then fails with
/// `nowait` if given (`IPC_NOWAIT`); else the thread waits without the process lock until a
/// wake on `key` (and tries again), `deadline` (`ETIMEDOUT`), or a signal or the process's end
/// (`EINTR`). An object gone (`EINVAL`) once the thread has waited was removed meanwhile:
/// `EIDRM`.
pub fn block_on<R, G>(p: &mut Locked<'_>, tid: i32, key: u64, deadline: Option<Instant>, nowait: Option<Errno>, mut attempt: impl FnMut() -> Result<SysResult<R>, G>) -> SysResult<R> {
    let group = p.group.clone();
    let mut waited = false;
    loop {
        let (mut outcome, mut waiting) = (None, None);
        let queued = group.shared_futexes.enqueue(key, MATCH_ANY, || match (attempt(), nowait) {
            (Ok(r), _) => {
                outcome = Some(match r {
                    Err(Errno::EINVAL) if waited => Err(Errno::EIDRM),
                    r => r,
                });
                // Not queued: the call is over.
                Err(Errno::EAGAIN)
            }
            (Err(_), Some(e)) => {
                outcome = Some(Err(e));
                Err(Errno::EAGAIN)
            }
            (Err(g), None) => {
                waiting = Some(g);
                Ok(())
            }
        });
        if let Some(r) = outcome {
            return r;
        }
        let w = queued?;
        let woken = p.unlocked(|| group.shared_futexes.wait(&w, deadline, || group.ending() || group.interrupted(tid)));
        drop(waiting);
        woken?;
        waited = true;
    }
}
