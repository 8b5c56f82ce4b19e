//! The processes of one vNode run (a `lego run` and everything it forks): process ids, parent
//! links, process groups and sessions, exit statuses kept until a parent waits for them, and
//! the way one process signals another.
//!
//! Every process of the run lives in the same VMM host process, each in a KVM VM of its own
//! (gVisor's sentry is the model: one host process, many address spaces). Thread ids come from
//! the same counter as process ids, as in a Linux pid namespace.

use lego_proto::sync::{CondvarExt, LockExt};
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::errno::{Errno, SysResult};
use crate::hostcpu::CpuTime;
use crate::signal::{SigInfo, CONTINUED_STATUS, SI_KERNEL};

/// What a wait asks for (`WEXITED`, `WUNTRACED`/`WSTOPPED`, `WCONTINUED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitWhat {
    pub exited: bool,
    pub stopped: bool,
    pub continued: bool,
}

impl WaitWhat {
    /// Children that ended only.
    pub const EXITED: WaitWhat = WaitWhat { exited: true, stopped: false, continued: false };
}

/// Id of the first process of a run.
pub const FIRST_PID: i32 = 1;

/// A running process another one can signal (its timers reach it as a
/// [`crate::timers::TimerOwner`]).
pub trait Signalable: crate::timers::TimerOwner {
    /// Posts `info` to the process ([`crate::delivery::post_process`]): a thread that can take it
    /// is woken, and its run loop delivers it (a default action may end the process).
    fn signal(&self, info: SigInfo);

    /// Runs `record` (which makes a child of the process a zombie, or records that it stopped
    /// or continued) and posts the child's `SIGCHLD` `info`, both under the process's lock: the
    /// signal is pending before a wait can take the change, and a handler that waits finds it,
    /// as with Linux's `exit_notify`.
    fn child_ended(&self, info: SigInfo, record: &mut dyn FnMut());

    /// Posts a signal queued with its `siginfo` to the process or one of its threads, under the
    /// process's lock ([`crate::delivery::post_queued`]).
    fn post_queued(&self, tid: Option<i32>, info: Option<SigInfo>) -> SysResult<()>;
    /// Runs `f` on the process (a [`crate::process::Process`], which `f` downcasts: the table
    /// does not know processes' insides) under its lock; `false` if the lock cannot be had now
    /// (the caller holds its own process's lock, and two processes reaching each other must
    /// not wait for ever).
    fn with_process(&self, _f: &mut dyn FnMut(&mut dyn std::any::Any)) -> bool {
        false
    }

    /// A snapshot of the process for `/proc` (`None` if it cannot be had now).
    fn view(&self) -> Option<crate::pseudo::view::ProcView> {
        None
    }
}

/// A process `kill` reaches: its pid, and how to signal it (`None` once it ended).
pub type KillTarget = (i32, Option<Arc<dyn Signalable>>);

/// Sends the kernel's signals `sigs` (`SI_KERNEL`), in order, to `targets` from a thread of
/// its own, so that the caller may hold any lock: a description closed for good (a pty
/// master's hang-up) may be dropped under a process lock, even the target's.
pub fn signal_in_background(targets: Vec<KillTarget>, sigs: &'static [i32]) {
    let targets: Vec<Arc<dyn Signalable>> = targets.into_iter().filter_map(|(_, t)| t).collect();
    if targets.is_empty() {
        return;
    }
    let sender = std::thread::Builder::new().name("signal".into()).spawn(move || {
        for t in &targets {
            for &sig in sigs {
                t.signal(SigInfo::kernel(sig));
            }
        }
    });
    if let Err(e) = sender {
        tracing::warn!("no thread to send {sigs:?} with: {e}");
    }
}

/// One process of the run.
struct Entry {
    ppid: i32,
    pgid: i32,
    sid: i32,
    /// The wait status (as `wait4` encodes it) once the process has ended: a zombie until its
    /// parent waits for it.
    status: Option<i32>,
    /// How to signal it while it runs.
    target: Option<Weak<dyn Signalable>>,
    /// `SIGCHLD` is ignored (`SIG_IGN` or `SA_NOCLDWAIT`): children are reaped when they end.
    nocldwait: bool,
    /// How many times the process has exec'd: once it has, a parent waiting on its `vfork`
    /// goes on, and its reporter reads its new command line.
    execs: u32,
    /// The signal its parent gets when it ends (`SIGCHLD` for a fork; a `clone` names it, 0 for
    /// none).
    exit_signal: i32,
    /// Its last stop or continue (as `wait4` reports it), until a parent's wait takes it.
    job: Option<i32>,
}

struct Table {
    next: i32,
    procs: BTreeMap<i32, Entry>,
    /// The foreground process group of the run's terminal, once a `tcsetpgrp` set it.
    foreground: Option<i32>,
}

/// Which children a `wait4`/`waitid` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// The child with this pid.
    Pid(i32),
    /// Any child.
    Any,
    /// Any child in this process group.
    Group(i32),
}

/// The process table of a run.
pub struct ProcTable {
    table: Mutex<Table>,
    /// Notified when a process ends.
    changed: Condvar,
    /// Host threads running processes other than the first, until they are joined.
    hosts: Mutex<Vec<JoinHandle<()>>>,
    /// CPU time of ended processes (with their reaped children), until their parent reaps them.
    usage: Mutex<BTreeMap<i32, CpuTime>>,
    /// When the run (the vNode, as its processes see it) started.
    started: Instant,
    /// The clock behind the vDSO data pages of the run's processes.
    clock: crate::vdso::Clock,
}

/// Encodes how a process ended as `wait4` reports it: the exit code, or the signal.
pub fn wait_status(exit: Option<i32>, signal: Option<i32>) -> i32 {
    match (exit, signal) {
        (_, Some(sig)) => sig & 0x7f,
        (Some(code), None) => (code & 0xff) << 8,
        (None, None) => 0,
    }
}

impl Default for ProcTable {
    fn default() -> Self {
        ProcTable::new()
    }
}

impl ProcTable {
    /// A table holding the first process, leader of its own group and session.
    pub fn new() -> ProcTable {
        let first = Entry { ppid: 0, pgid: FIRST_PID, sid: FIRST_PID, status: None, target: None, nocldwait: false, execs: 0, exit_signal: 0, job: None };
        ProcTable {
            table: Mutex::new(Table { next: FIRST_PID + 1, procs: BTreeMap::from([(FIRST_PID, first)]), foreground: None }),
            changed: Condvar::new(),
            hosts: Mutex::new(Vec::new()),
            usage: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
            clock: crate::vdso::Clock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock_unpoisoned()
    }

    /// A fresh id for a thread or a process; `EAGAIN` when they ran out.
    pub fn alloc_id(&self) -> SysResult<i32> {
        let mut t = self.lock();
        let id = t.next;
        t.next = id.checked_add(1).ok_or(Errno::EAGAIN)?;
        Ok(id)
    }

    /// Records `pid` as a new child of `parent`, in its parent's group and session.
    pub fn add_child(&self, parent: i32, pid: i32, exit_signal: i32) {
        let mut t = self.lock();
        let (pgid, sid) = t.procs.get(&parent).map_or((parent, parent), |e| (e.pgid, e.sid));
        t.procs.insert(pid, Entry { ppid: parent, pgid, sid, status: None, target: None, nocldwait: false, execs: 0, exit_signal, job: None });
    }

    /// Forgets `pid`, a child that could not be started.
    pub fn forget(&self, pid: i32) {
        self.lock().procs.remove(&pid);
    }

    /// How to signal `pid` while it runs.
    pub fn set_target(&self, pid: i32, target: Weak<dyn Signalable>) {
        if let Some(e) = self.lock().procs.get_mut(&pid) {
            e.target = Some(target);
        }
    }

    /// Process `pid` ended with wait status `status`: its children go to the first process,
    /// and it stays a zombie until its parent waits for it (unless the parent ignores
    /// `SIGCHLD`, or is gone).
    pub fn exited(&self, pid: i32, status: i32) {
        let mut t = self.lock();
        for e in t.procs.values_mut().filter(|e| e.ppid == pid) {
            e.ppid = FIRST_PID;
        }
        let ppid = t.procs.get(&pid).map_or(0, |e| e.ppid);
        let reap = t.procs.get(&ppid).is_none_or(|p| p.nocldwait || p.status.is_some());
        if reap && pid != FIRST_PID {
            t.procs.remove(&pid);
            self.usage.lock_unpoisoned().remove(&pid);
        } else if let Some(e) = t.procs.get_mut(&pid) {
            e.status = Some(status);
            e.target = None;
        }
        // Zombies whose new parent is gone or ignores them go too.
        let first_reaps = t.procs.get(&FIRST_PID).is_none_or(|p| p.nocldwait || p.status.is_some());
        if first_reaps {
            t.procs.retain(|&p, e| !(p != FIRST_PID && e.ppid == FIRST_PID && e.status.is_some()));
        }
        drop(t);
        self.changed.notify_all();
    }

    /// Process `pid` stopped or continued (wait status `status`): a parent waiting with
    /// `WUNTRACED` or `WCONTINUED` can take it.
    pub fn job_changed(&self, pid: i32, status: i32) {
        if let Some(e) = self.lock().procs.get_mut(&pid) {
            e.job = Some(status);
        }
        self.changed.notify_all();
    }

    /// Whether the process group of `pid` is orphaned: no live member has its parent in
    /// another group of the same session. The first process counts as having one (it runs as
    /// a job of the shell that started `lego run`). Job-control stops from `SIGTSTP`,
    /// `SIGTTIN` and `SIGTTOU` do not stop an orphaned group, as on Linux: nobody would
    /// continue it.
    pub fn orphaned_group_of(&self, pid: i32) -> bool {
        let t = self.lock();
        let Some(pgid) = t.procs.get(&pid).map(|e| e.pgid) else { return true };
        !t.procs.iter().filter(|(_, e)| e.pgid == pgid && e.status.is_none()).any(|(&m, e)| {
            m == FIRST_PID || t.procs.get(&e.ppid).is_some_and(|p| p.status.is_none() && p.pgid != pgid && p.sid == e.sid)
        })
    }

    /// The parent of `pid`, if it runs.
    pub fn parent_of(&self, pid: i32) -> Option<Arc<dyn Signalable>> {
        let t = self.lock();
        t.procs.get(&t.procs.get(&pid)?.ppid)?.target.as_ref()?.upgrade()
    }

    /// The parent of `pid` if it runs and is to hear of `pid`'s end, with the signal to send.
    pub fn to_notify(&self, pid: i32) -> Option<(Arc<dyn Signalable>, i32)> {
        let t = self.lock();
        let e = t.procs.get(&pid)?;
        let parent = t.procs.get(&e.ppid)?.target.as_ref()?.upgrade()?;
        (e.exit_signal != 0).then_some((parent, e.exit_signal))
    }

    /// Process `pid`, ending, spent `usage` (with its reaped children's).
    pub fn set_usage(&self, pid: i32, usage: CpuTime) {
        self.usage.lock_unpoisoned().insert(pid, usage);
    }

    /// What the child `pid` that was just reaped spent, for its parent's `RUSAGE_CHILDREN`.
    pub fn take_usage(&self, pid: i32) -> CpuTime {
        self.usage.lock_unpoisoned().remove(&pid).unwrap_or_default()
    }

    /// Process `pid` has exec'd: its `vfork` parent goes on.
    pub fn released(&self, pid: i32) {
        if let Some(e) = self.lock().procs.get_mut(&pid) {
            e.execs += 1;
        }
        self.changed.notify_all();
    }

    /// Waits until the `vfork` child `pid` has exec'd or ended, or `abort` says to stop.
    pub fn wait_vfork(&self, pid: i32, abort: impl Fn() -> bool) {
        let mut t = self.lock();
        while t.procs.get(&pid).is_some_and(|e| e.execs == 0 && e.status.is_none()) && !abort() {
            t = self.changed.wait_timeout_unpoisoned(t, Duration::from_millis(10)).0;
        }
    }

    /// Whether `pid` ignores `SIGCHLD` (its children are reaped when they end).
    pub fn set_nocldwait(&self, pid: i32, on: bool) {
        if let Some(e) = self.lock().procs.get_mut(&pid) {
            e.nocldwait = on;
        }
    }

    /// A child of `parent` that `which` selects and that has changed as `what` asks (ended,
    /// reaped; or stopped or continued, the report taken): `(pid, wait status)`. `Ok(None)` if
    /// such children exist but none has, `ECHILD` if there is none. With `reap == false` the
    /// zombie or the report stays (`waitid` with `WNOWAIT`).
    pub fn try_wait(&self, parent: i32, which: WaitFor, what: WaitWhat, reap: bool) -> SysResult<Option<(i32, i32)>> {
        let mut t = self.lock();
        let selected = |pid: i32, e: &Entry| {
            e.ppid == parent
                && match which {
                    WaitFor::Pid(p) => pid == p,
                    WaitFor::Any => true,
                    WaitFor::Group(g) => e.pgid == g,
                }
        };
        let mut any = false;
        let mut found = None;
        for (&pid, e) in &t.procs {
            if selected(pid, e) {
                any = true;
                let job = e.job.filter(|&s| if s == CONTINUED_STATUS { what.continued } else { what.stopped });
                match (e.status, job) {
                    (Some(status), _) if what.exited => found = Some((pid, status, true)),
                    (None, Some(status)) => found = Some((pid, status, false)),
                    _ => continue,
                }
                break;
            }
        }
        match found {
            Some((pid, status, ended)) => {
                if reap && ended {
                    t.procs.remove(&pid);
                } else if let Some(e) = t.procs.get_mut(&pid).filter(|_| reap) {
                    e.job = None;
                }
                Ok(Some((pid, status)))
            }
            None if any => Ok(None),
            None => Err(Errno::ECHILD),
        }
    }

    /// Waits up to `limit` for some process to end.
    pub fn wait_change(&self, limit: Duration) {
        let t = self.lock();
        drop(self.changed.wait_timeout_unpoisoned(t, limit));
    }

    /// The parent of `pid` (0 for the first process).
    pub fn ppid(&self, pid: i32) -> i32 {
        self.lock().procs.get(&pid).map_or(0, |e| e.ppid)
    }

    /// The process group of `pid`; `ESRCH` if there is no such process.
    pub fn pgid(&self, pid: i32) -> SysResult<i32> {
        self.lock().procs.get(&pid).map(|e| e.pgid).ok_or(Errno::ESRCH)
    }

    /// The session of `pid`; `ESRCH` if there is no such process.
    pub fn sid(&self, pid: i32) -> SysResult<i32> {
        self.lock().procs.get(&pid).map(|e| e.sid).ok_or(Errno::ESRCH)
    }

    /// Whether `pid` is in the first process's session, whose controlling terminal is the
    /// run's (the one `lego run` was started on).
    pub fn on_run_terminal(&self, pid: i32) -> bool {
        let t = self.lock();
        let first = t.procs.get(&FIRST_PID).map_or(FIRST_PID, |e| e.sid);
        t.procs.get(&pid).is_some_and(|e| e.sid == first)
    }

    /// The foreground process group of the run's terminal (`tcgetpgrp`): the one `tcsetpgrp`
    /// last set, or else the first process's group. Terminal signals (`^C`) go to it.
    pub fn foreground(&self) -> i32 {
        let t = self.lock();
        t.foreground.unwrap_or_else(|| t.procs.get(&FIRST_PID).map_or(FIRST_PID, |e| e.pgid))
    }

    /// `tcsetpgrp` of the run's terminal by `caller`, as [`ProcTable::foreground_session`]
    /// checks it.
    pub fn set_foreground(&self, caller: i32, pgid: i32) -> SysResult<()> {
        self.foreground_session(caller, pgid)?;
        self.lock().foreground = Some(pgid);
        Ok(())
    }

    /// The session of `caller`, whose terminal's foreground group `tcsetpgrp` by it may make
    /// `pgid`: a group of that session with a process in it (`EPERM`; `EINVAL` if negative).
    pub fn foreground_session(&self, caller: i32, pgid: i32) -> SysResult<i32> {
        if pgid < 0 {
            return Err(Errno::EINVAL);
        }
        let t = self.lock();
        let sid = t.procs.get(&caller).map(|e| e.sid).ok_or(Errno::ESRCH)?;
        if !t.procs.values().any(|e| e.pgid == pgid && e.sid == sid && e.status.is_none()) {
            return Err(Errno::EPERM);
        }
        Ok(sid)
    }

    /// `setpgid(pid, pgid)` called by `caller` (`pid` and `pgid` already made non-zero): `pid`
    /// must be the caller or a child of it in its session, not a session leader, and `pgid`
    /// must be its own id or an existing group of the same session.
    pub fn setpgid(&self, caller: i32, pid: i32, pgid: i32) -> SysResult<()> {
        let mut t = self.lock();
        let caller_sid = t.procs.get(&caller).map(|e| e.sid).ok_or(Errno::ESRCH)?;
        let target = t.procs.get(&pid).filter(|e| pid == caller || e.ppid == caller).ok_or(Errno::ESRCH)?;
        if target.sid != caller_sid {
            return Err(Errno::EPERM);
        }
        if target.sid == pid {
            return Err(Errno::EPERM);
        }
        if pgid != pid && !t.procs.values().any(|e| e.pgid == pgid && e.sid == caller_sid && e.status.is_none()) {
            return Err(Errno::EPERM);
        }
        if let Some(e) = t.procs.get_mut(&pid) {
            e.pgid = pgid;
        }
        Ok(())
    }

    /// `setsid` by `caller`: `EPERM` if it leads a process group already.
    pub fn setsid(&self, caller: i32) -> SysResult<i32> {
        let mut t = self.lock();
        if t.procs.iter().any(|(_, e)| e.pgid == caller) {
            return Err(Errno::EPERM);
        }
        let e = t.procs.get_mut(&caller).ok_or(Errno::ESRCH)?;
        (e.pgid, e.sid) = (caller, caller);
        Ok(caller)
    }

    /// The processes `kill(pid, ...)` by `caller` reaches, as Linux selects them: `pid > 0` that
    /// process, 0 the caller's group, -1 every process but the first and the caller, `< -1` the
    /// group `-pid`. Zombies count (a signal to one does nothing), so an empty answer is `ESRCH`.
    /// Each comes with how to signal it, `None` once it ended.
    pub fn kill_targets(&self, caller: i32, pid: i32) -> SysResult<Vec<KillTarget>> {
        let caller_pgid = self.lock().procs.get(&caller).map_or(caller, |e| e.pgid);
        let selected = self.targets(|p, e| match pid {
            0 => e.pgid == caller_pgid,
            -1 => p != FIRST_PID && p != caller,
            p2 if p2 > 0 => p == p2,
            g => e.pgid == -g,
        });
        if selected.is_empty() {
            return Err(Errno::ESRCH);
        }
        Ok(selected)
    }

    /// The processes of process group `pgid` (what a terminal signals), none if it has none.
    pub fn group_targets(&self, pgid: i32) -> Vec<KillTarget> {
        self.targets(|_, e| e.pgid == pgid)
    }

    /// The processes `select` picks (by pid and entry), with how to signal each.
    fn targets(&self, select: impl Fn(i32, &Entry) -> bool) -> Vec<KillTarget> {
        let t = self.lock();
        t.procs.iter().filter(|(&p, e)| select(p, e)).map(|(&p, e)| (p, e.target.as_ref().and_then(Weak::upgrade))).collect()
    }

    /// Every process still running, for ending the run.
    pub fn running(&self) -> Vec<Arc<dyn Signalable>> {
        self.lock().procs.values().filter_map(|e| e.target.as_ref().and_then(Weak::upgrade)).collect()
    }

    /// When the run started (the vNode's boot time, for `/proc`).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The clock that keeps the vDSO data pages of the run's processes current.
    pub fn vdso_clock(&self) -> &crate::vdso::Clock {
        &self.clock
    }

    /// The last id handed out.
    pub fn last_id(&self) -> i32 {
        self.lock().next - 1
    }

    /// The ids of the processes still running, `caller` among them, ascending.
    pub fn running_pids(&self, caller: i32) -> Vec<i32> {
        let t = self.lock();
        t.procs.iter().filter(|(&p, e)| p == caller || e.target.as_ref().is_some_and(|w| w.strong_count() > 0)).map(|(&p, _)| p).collect()
    }

    /// How many times process `pid` has exec'd (`None` if there is no such process): cheaper
    /// than [`ProcTable::view`], which waits for the process's lock, to tell whether its command
    /// line changed.
    pub fn execs(&self, pid: i32) -> Option<u32> {
        self.lock().procs.get(&pid).map(|e| e.execs)
    }

    /// Running process `pid`, to act on it.
    pub fn process(&self, pid: i32) -> Option<Arc<dyn Signalable>> {
        self.lock().procs.get(&pid)?.target.as_ref()?.upgrade()
    }

    /// A snapshot of running process `pid` for `/proc`.
    pub fn view(&self, pid: i32) -> Option<crate::pseudo::view::ProcView> {
        self.process(pid)?.view()
    }

    /// Keeps the host thread running a process, to be joined at the end of the run.
    pub fn add_host(&self, handle: JoinHandle<()>) {
        self.hosts.lock_unpoisoned().push(handle);
    }

    /// Ends every process still running with `SIGKILL` and joins their host threads, until none
    /// is left (one may have been forking meanwhile).
    pub fn end_all(&self) {
        loop {
            for p in self.running() {
                p.signal(SigInfo::sent(libc::SIGKILL, SI_KERNEL, 0, 0));
            }
            let hosts = std::mem::take(&mut *self.hosts.lock_unpoisoned());
            if hosts.is_empty() {
                return;
            }
            for h in hosts {
                // A host thread that panicked has already reported it.
                let _ = h.join();
            }
        }
    }
}

impl crate::anonfd::Exits for ProcTable {
    fn ended(&self, pid: i32) -> bool {
        self.lock().procs.get(&pid).is_none_or(|e| e.status.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombies_wait_for_their_parent_and_orphans_go_to_the_first() {
        let t = ProcTable::new();
        let (a, b) = (t.alloc_id().unwrap(), t.alloc_id().unwrap());
        t.add_child(FIRST_PID, a, libc::SIGCHLD);
        t.add_child(a, b, libc::SIGCHLD);
        assert_eq!(t.try_wait(FIRST_PID, WaitFor::Any, WaitWhat::EXITED, true), Ok(None), "a child, still running");
        assert_eq!(t.try_wait(a, WaitFor::Pid(FIRST_PID), WaitWhat::EXITED, true), Err(Errno::ECHILD));
        t.exited(a, wait_status(Some(3), None));
        assert_eq!(t.ppid(b), FIRST_PID, "reparented");
        assert_eq!(t.try_wait(FIRST_PID, WaitFor::Pid(a), WaitWhat::EXITED, true), Ok(Some((a, 3 << 8))));
        assert_eq!(t.try_wait(FIRST_PID, WaitFor::Pid(a), WaitWhat::EXITED, true), Err(Errno::ECHILD), "reaped once");
        t.set_nocldwait(FIRST_PID, true);
        t.exited(b, wait_status(None, Some(libc::SIGKILL)));
        assert_eq!(t.try_wait(FIRST_PID, WaitFor::Any, WaitWhat::EXITED, true), Err(Errno::ECHILD), "SIGCHLD ignored: reaped at exit");
    }

    #[test]
    fn stops_and_continues_are_waited_for_when_asked() {
        use crate::signal::{stopped_status, CONTINUED_STATUS};
        let t = ProcTable::new();
        let a = t.alloc_id().unwrap();
        t.add_child(FIRST_PID, a, libc::SIGCHLD);
        t.job_changed(a, stopped_status(libc::SIGTSTP));
        assert_eq!(t.try_wait(FIRST_PID, WaitFor::Any, WaitWhat::EXITED, true), Ok(None), "not asked for");
        let all = WaitWhat { exited: true, stopped: true, continued: true };
        let stopped = WaitWhat { continued: false, ..all };
        assert_eq!(t.try_wait(FIRST_PID, WaitFor::Pid(a), stopped, false), Ok(Some((a, stopped_status(libc::SIGTSTP)))));
        assert_eq!(t.try_wait(FIRST_PID, WaitFor::Pid(a), stopped, true), Ok(Some((a, stopped_status(libc::SIGTSTP)))), "WNOWAIT left it");
        assert_eq!(t.try_wait(FIRST_PID, WaitFor::Pid(a), all, true), Ok(None), "taken once");
        t.job_changed(a, CONTINUED_STATUS);
        assert_eq!(t.try_wait(FIRST_PID, WaitFor::Pid(a), stopped, true), Ok(None), "WCONTINUED not asked for");
        assert_eq!(t.try_wait(FIRST_PID, WaitFor::Pid(a), all, true), Ok(Some((a, CONTINUED_STATUS))));
        // An end is reported before a change nobody took, and reaps the child.
        t.job_changed(a, stopped_status(libc::SIGSTOP));
        t.exited(a, wait_status(None, Some(libc::SIGKILL)));
        assert_eq!(t.try_wait(FIRST_PID, WaitFor::Pid(a), all, true), Ok(Some((a, wait_status(None, Some(libc::SIGKILL))))));
        assert_eq!(t.try_wait(FIRST_PID, WaitFor::Pid(a), all, true), Err(Errno::ECHILD));
    }

    #[test]
    fn groups_and_sessions() {
        let t = ProcTable::new();
        let a = t.alloc_id().unwrap();
        t.add_child(FIRST_PID, a, libc::SIGCHLD);
        assert_eq!(t.setsid(FIRST_PID), Err(Errno::EPERM), "a group leader");
        t.setpgid(FIRST_PID, a, a).unwrap();
        assert_eq!(t.pgid(a), Ok(a));
        assert_eq!(t.kill_targets(FIRST_PID, -a).unwrap().len(), 1);
        assert_eq!(t.kill_targets(FIRST_PID, -77).err(), Some(Errno::ESRCH));
        assert_eq!(t.setpgid(FIRST_PID, a, 99), Err(Errno::EPERM), "no such group");
        assert_eq!(t.setsid(a), Err(Errno::EPERM), "it leads its group now");
    }

    /// A parent that takes what it is told and does nothing with it.
    struct Quiet;
    impl Signalable for Quiet {
        fn signal(&self, _: SigInfo) {}
        fn child_ended(&self, _: SigInfo, record: &mut dyn FnMut()) {
            record();
        }
        fn post_queued(&self, _: Option<i32>, _: Option<SigInfo>) -> SysResult<()> {
            Ok(())
        }
    }
    impl crate::timers::TimerOwner for Quiet {
        fn reading(&self, _: crate::timers::Clock) -> std::time::Duration {
            std::time::Duration::ZERO
        }
        fn expire(&self, _: u64, _: u64, _: &mut dyn FnMut() -> bool) {}
    }

    #[test]
    fn a_child_tells_a_running_parent_with_its_exit_signal() {
        let t = ProcTable::new();
        let parent: Arc<dyn Signalable> = Arc::new(Quiet);
        t.set_target(FIRST_PID, Arc::downgrade(&parent));
        let (a, b) = (t.alloc_id().unwrap(), t.alloc_id().unwrap());
        t.add_child(FIRST_PID, a, libc::SIGCHLD);
        t.add_child(FIRST_PID, b, 0);
        assert_eq!(t.to_notify(a).map(|(_, sig)| sig), Some(libc::SIGCHLD));
        assert!(t.to_notify(b).is_none(), "a clone with no exit signal");
        drop(parent);
        assert!(t.to_notify(a).is_none(), "the parent is gone");
    }
}
