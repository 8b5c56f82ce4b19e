//! Threads: `clone` of a thread, thread ids, `exit` and `exit_group`, futexes, and what a
//! thread leaves behind when it ends (its `clear_child_tid` word and robust futex list).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::clone::{check_flags, CloneArgs, CloneKind, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID, CLONE_PARENT_SETTID, CLONE_SETTLS, CSIGNAL};
use super::{Args, Control, Cpu, NewThread};
use crate::errno::{Errno, SysResult};
use crate::futex::{Futexes, MATCH_ANY};
use crate::process::{Locked, Process, Termination, ThreadState};
use crate::threads::ThreadGroup;

/// `clone(flags, stack, parent_tid, child_tid, tls)` (the x86-64 argument order).
pub fn clone(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<Control> {
    let [flags, stack, parent_tid, child_tid, tls, _] = a;
    start_thread(p, cpu, CloneArgs { flags, stack, parent_tid, child_tid, tls })
}

/// `clone3(args, size)`: the same from a `struct clone_args`.
pub fn clone3(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<Control> {
    const VER0: u64 = 64;
    let [addr, size, ..] = a;
    if !(VER0..=4096).contains(&size) {
        return Err(Errno::EINVAL);
    }
    let mut raw = vec![0u8; size as usize];
    p.mm.read_user(addr, &mut raw)?;
    let field = |i: usize| raw.get(i * 8..i * 8 + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    // flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
    // set_tid_size, cgroup; anything past what lego knows must be zero.
    if raw.get(88..).is_some_and(|rest| rest.iter().any(|&b| b != 0)) {
        return Err(Errno::E2BIG);
    }
    if field(9) != 0 {
        return Err(Errno::EINVAL);
    }
    let (stack, stack_size) = (field(5), field(6));
    if (stack == 0) != (stack_size == 0) || field(4) & !CSIGNAL != 0 {
        return Err(Errno::EINVAL);
    }
    let args = CloneArgs {
        flags: field(0) | field(4),
        stack: stack.checked_add(stack_size).ok_or(Errno::EINVAL)?,
        parent_tid: field(3),
        child_tid: field(2),
        tls: field(7),
    };
    start_thread(p, cpu, args)
}

/// Creates thread state for a clone and asks the run loop to start its vCPU.
fn start_thread(p: &mut Process, cpu: &mut Cpu<'_>, c: CloneArgs) -> SysResult<Control> {
    if check_flags(c.flags)? == CloneKind::Process {
        return super::procs::fork_process(p, cpu, c.flags, c.stack, c.parent_tid, c.child_tid, c.tls);
    }
    if c.flags & CLONE_SETTLS != 0 && c.tls >= 1 << 47 {
        return Err(Errno::EPERM);
    }
    let tid = p.procs.alloc_id()?;
    let id = (tid as u32).to_le_bytes();
    if c.flags & CLONE_PARENT_SETTID != 0 {
        p.mm.write_user(c.parent_tid, &id)?;
    }
    if c.flags & CLONE_CHILD_SETTID != 0 {
        p.mm.write_user(c.child_tid, &id)?;
    }
    let state = ThreadState {
        clear_child_tid: if c.flags & CLONE_CHILD_CLEARTID != 0 { c.child_tid } else { 0 },
        ..p.thread(cpu.tid).child()
    };
    p.threads.insert(tid, state);
    p.stats.threads_created += 1;
    // The new thread returns from the same call, with 0, on its own stack.
    let (mut regs, mut sregs) = (*cpu.regs, *cpu.sregs);
    regs.rax = 0;
    if c.stack != 0 {
        regs.rsp = c.stack;
    }
    crate::cpu::emulate_sysret(&mut regs, &mut sregs);
    let fs_base = if c.flags & CLONE_SETTLS != 0 { c.tls } else { cpu.sregs.fs.base };
    Ok(Control::Clone(NewThread { tid, regs, fs_base, gs_base: cpu.sregs.gs.base }))
}

pub fn gettid(_: &mut Process, cpu: &mut Cpu<'_>, _: Args) -> SysResult<u64> {
    Ok(cpu.tid as u64)
}

/// `exit`: ends the calling thread only; the process ends with its last thread.
pub fn exit(_: &mut Locked<'_>, _: &mut Cpu<'_>, a: Args) -> SysResult<Control> {
    Ok(Control::ExitThread((a[0] & 0xff) as i32))
}

/// `exit_group`: ends every thread.
pub fn exit_group(_: &mut Locked<'_>, _: &mut Cpu<'_>, a: Args) -> SysResult<Control> {
    Ok(Control::ExitGroup(Termination::Exited((a[0] & 0xff) as i32)))
}

pub fn set_tid_address(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    p.thread(cpu.tid).clear_child_tid = a[0];
    Ok(cpu.tid as u64)
}

/// Size of `struct robust_list_head`.
const ROBUST_HEAD_SIZE: u64 = 24;

pub fn set_robust_list(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    if a[1] != ROBUST_HEAD_SIZE {
        return Err(Errno::EINVAL);
    }
    p.thread(cpu.tid).robust_list = (a[0], a[1]);
    Ok(0)
}

/// `get_robust_list(tid, head_ptr, len_ptr)`; tid 0 is the caller (musl asks so to learn whether
/// robust mutexes work).
pub fn get_robust_list(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [tid, head_ptr, len_ptr, ..] = a;
    let tid = if tid == 0 { cpu.tid } else { tid as i32 };
    let head = p.threads.get(&tid).ok_or(Errno::ESRCH)?.robust_list.0;
    p.mm.write_u64(head_ptr, head)?;
    p.mm.write_u64(len_ptr, ROBUST_HEAD_SIZE)?;
    Ok(0)
}

/// What thread `tid` leaves behind when it ends (`exit`, not `exit_group`): its robust futexes
/// are marked `FUTEX_OWNER_DIED` (waking a waiter each), its `clear_child_tid` word is zeroed and
/// woken (how `pthread_join` learns of the end), and its state goes.
pub fn exit_thread(p: &mut Process, tid: i32) {
    let Some(state) = p.threads.remove(&tid) else { return };
    // The thread ends on its own host thread: what that spent is counted now, before a join
    // can see the end.
    if let Some(host) = state.host {
        p.usage += host.spent();
    }
    crate::delivery::thread_gone(p, tid);
    if state.robust_list.0 != 0 {
        release_robust_list(p, tid, state.robust_list.0);
    }
    let addr = state.clear_child_tid;
    if addr != 0 && p.mm.with_futex_word(addr, true, |word| word.store(0, Ordering::SeqCst)).is_ok() {
        let (table, key) = futex_of(p, &p.group, addr, false);
        let _ = table.wake(key, 1, MATCH_ANY);
    }
}

/// The table and key of the futex word at `addr`: a word in memory shared between processes
/// is known by its object and offset in the run's table, unless the operation is private
/// (`FUTEX_PRIVATE_FLAG`), which keys it by address in the process's own, as Linux does.
fn futex_of<'g>(p: &Process, group: &'g ThreadGroup, addr: u64, private: bool) -> (&'g Futexes, u64) {
    match p.mm.shared_futex_key(addr) {
        Some(key) if !private => (&group.shared_futexes, key),
        _ => (&group.futexes, addr),
    }
}

const FUTEX_WAITERS: u32 = 0x8000_0000;
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
/// Longest robust list walked (Linux's `ROBUST_LIST_LIMIT`), against cycles.
const ROBUST_LIST_LIMIT: usize = 2048;

/// Walks the robust list at `head` as Linux's `exit_robust_list` does. Bad pointers end the
/// walk; they only hurt the program that made them.
fn release_robust_list(p: &Process, tid: i32, head: u64) {
    let (Ok(mut entry), Ok(offset), Ok(pending)) = (p.mm.read_u64(head), p.mm.read_u64(head + 8), p.mm.read_u64(head + 16))
    else {
        return;
    };
    let pending = pending & !1;
    for _ in 0..ROBUST_LIST_LIMIT {
        entry &= !1;
        if entry == head || entry == 0 {
            break;
        }
        let next = p.mm.read_u64(entry);
        if entry != pending {
            owner_died(p, tid, entry.wrapping_add(offset));
        }
        match next {
            Ok(n) => entry = n,
            Err(_) => break,
        }
    }
    if pending != 0 {
        owner_died(p, tid, pending.wrapping_add(offset));
    }
}

/// Marks the robust futex at `addr`, if `tid` holds it, as held by a dead owner, and wakes a
/// waiter.
fn owner_died(p: &Process, tid: i32, addr: u64) {
    let mark = |word: &std::sync::atomic::AtomicU32| {
        let mut old = word.load(Ordering::SeqCst);
        loop {
            if old & FUTEX_TID_MASK != tid as u32 {
                return None;
            }
            let new = (old & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
            match word.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(old),
                Err(cur) => old = cur,
            }
        }
    };
    let Ok(Some(old)) = p.mm.with_futex_word(addr, true, mark) else { return };
    if old & FUTEX_WAITERS != 0 {
        let (table, key) = futex_of(p, &p.group, addr, false);
        let _ = table.wake(key, 1, MATCH_ANY);
    }
}

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAKE_OP: u64 = 5;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;

/// A count argument of a futex operation (Linux reads them as `int`).
fn count(v: u64) -> SysResult<usize> {
    usize::try_from(v as i32).map_err(|_| Errno::EINVAL)
}

/// `futex(uaddr, op, val, timeout | val2, uaddr2, val3)`: the wait, wake, requeue and wake-op
/// operations, private or not (every futex of a vNode process is in its one address space).
/// Priority-inheritance operations are `ENOSYS`.
pub fn futex(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [uaddr, op, val, timeout, uaddr2, val3] = a;
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let realtime = op & FUTEX_CLOCK_REALTIME != 0;
    if realtime && !matches!(cmd, FUTEX_WAIT | FUTEX_WAIT_BITSET) {
        return Err(Errno::ENOSYS);
    }
    let group = p.group.clone();
    let private = op & FUTEX_PRIVATE_FLAG != 0;
    let (futexes, key) = futex_of(p, &group, uaddr, private);
    // The word as it is now, compared with what the caller expects.
    let expect = |p: &Process, addr: u64, want: u64| -> SysResult<()> {
        let now = p.mm.with_futex_word(addr, false, |word| word.load(Ordering::SeqCst))?;
        if now == want as u32 {
            Ok(())
        } else {
            Err(Errno::EAGAIN)
        }
    };
    match cmd {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let bitset = if cmd == FUTEX_WAIT { MATCH_ANY } else { val3 as u32 };
            let deadline = if timeout == 0 {
                None
            } else {
                let ts = super::time::read_timespec(p, timeout)?;
                let d = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
                Some(if cmd == FUTEX_WAIT {
                    Instant::now() + d
                } else {
                    let clock = if realtime { libc::CLOCK_REALTIME } else { libc::CLOCK_MONOTONIC };
                    let now = super::time::now(clock)?;
                    Instant::now() + d.saturating_sub(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
                })
            };
            let waiter = futexes.enqueue(key, bitset, || expect(p, uaddr, val))?;
            // A wait in the run's table is not closed when the process ends: it looks.
            p.unlocked(|| futexes.wait(&waiter, deadline, || group.ending() || group.interrupted(cpu.tid))).map(|()| 0)
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET => {
            if uaddr % 4 != 0 {
                return Err(Errno::EINVAL);
            }
            let bitset = if cmd == FUTEX_WAKE { MATCH_ANY } else { val3 as u32 };
            // Linux wakes at least one waiter whatever the count.
            let n = count(val).unwrap_or(0).max(1);
            futexes.wake(key, n, bitset).map(|n| n as u64)
        }
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            let (n, moved) = (count(val)?, count(timeout)?);
            if uaddr % 4 != 0 || uaddr2 % 4 != 0 {
                return Err(Errno::EINVAL);
            }
            let check = || if cmd == FUTEX_CMP_REQUEUE { expect(p, uaddr, val3) } else { Ok(()) };
            let (to_table, to) = futex_of(p, &group, uaddr2, private);
            if !std::ptr::eq(futexes, to_table) {
                // Between a word in shared memory and a private one: not provided.
                return Err(Errno::EINVAL);
            }
            futexes.requeue(key, n, moved, to, check).map(|n| n as u64)
        }
        FUTEX_WAKE_OP => {
            let (n, n2) = (count(val).unwrap_or(0).max(1), count(timeout).unwrap_or(0));
            if uaddr % 4 != 0 {
                return Err(Errno::EINVAL);
            }
            let op = || p.mm.with_futex_word(uaddr2, true, |word| wake_op(word, val3 as u32))?;
            let (table2, key2) = futex_of(p, &group, uaddr2, private);
            if std::ptr::eq(futexes, table2) {
                return futexes.wake_op(key, n, key2, n2, op).map(|n| n as u64);
            }
            // The words are in different tables: the operation and the second wake under the
            // second word's table lock, then the first wake.
            let second = table2.wake_op(key2, 0, key2, n2, op)?;
            Ok((second + futexes.wake(key, n, MATCH_ANY)?) as u64)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Applies the `FUTEX_WAKE_OP` operation encoded in `encoded` to `word` atomically and says
/// whether the old value met its comparison.
fn wake_op(word: &std::sync::atomic::AtomicU32, encoded: u32) -> SysResult<bool> {
    let sign_extend_12 = |v: u32| ((v << 20) as i32) >> 20;
    let op = (encoded >> 28) & 0xf;
    let cmp = (encoded >> 24) & 0xf;
    let mut oparg = sign_extend_12((encoded >> 12) & 0xfff);
    let cmparg = sign_extend_12(encoded & 0xfff);
    if op & 8 != 0 {
        // FUTEX_OP_OPARG_SHIFT
        oparg = 1i32.checked_shl(oparg as u32).unwrap_or(0);
    }
    let oparg = oparg as u32;
    let apply = |old: u32| match op & 7 {
        0 => Some(oparg),
        1 => Some(old.wrapping_add(oparg)),
        2 => Some(old | oparg),
        3 => Some(old & !oparg),
        4 => Some(old ^ oparg),
        _ => None,
    };
    if apply(0).is_none() || cmp > 5 {
        return Err(Errno::ENOSYS);
    }
    let old = word
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, apply)
        .map_err(|_| Errno::ENOSYS)? as i32;
    Ok(match cmp {
        0 => old == cmparg,
        1 => old != cmparg,
        2 => old < cmparg,
        3 => old <= cmparg,
        4 => old > cmparg,
        _ => old >= cmparg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn wake_op_applies_and_compares() {
        // FUTEX_OP(FUTEX_OP_ADD, 1, FUTEX_OP_CMP_GT, 0): glibc's pthread_cond_signal of old.
        let w = AtomicU32::new(0);
        let add1_gt0 = (1 << 28) | (4 << 24) | (1 << 12);
        assert_eq!(wake_op(&w, add1_gt0), Ok(false));
        assert_eq!(wake_op(&w, add1_gt0), Ok(true));
        assert_eq!(w.load(Ordering::SeqCst), 2);
        // SET with OPARG_SHIFT: 1 << 4; CMP_EQ against -1 (sign-extended).
        let set_shift = ((8) << 28) | (4 << 12) | 0xfff;
        assert_eq!(wake_op(&w, set_shift), Ok(false));
        assert_eq!(w.load(Ordering::SeqCst), 16);
        assert_eq!(wake_op(&w, (7 << 28) | (1 << 12)), Err(Errno::ENOSYS));
    }
}
