//! Host signals a `lego run` passes on to its vNode, as `docker run` passes them to its
//! container: `^C` at the terminal interrupts the program, not the VMM running it.
//!
//! The VMM's threads all block the signals passed on ([`block`], called before any thread
//! starts, so that every thread inherits the mask), and one thread takes them
//! ([`start`]) and posts each to the vNode's processes: a signal the terminal sent (`^C`,
//! `^\`, a window change, a hang-up; `si_code` `SI_KERNEL`) to the terminal's foreground
//! process group ([`ProcTable::foreground`]: the first process's, until a shell with job
//! control gives the terminal to a job), as the terminal sends it; one a host process sent (`kill`,
//! `timeout`; `SI_USER`) to the first process alone. A signal the caller ignored is passed on
//! too (the VMM takes it back to the default action, blocked): the program starts with it
//! ignored, and a program that sets a handler anyway, as Python does for `SIGINT`, gets it, as
//! natively.

use lego_proto::sync::LockExt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::proctable::{ProcTable, FIRST_PID};
use crate::signal::{SigInfo, SI_KERNEL, SI_USER};

/// The signals passed on: what a terminal sends its foreground job, and what is commonly sent
/// to a program to end or nudge it.
pub const PASSED: [i32; 7] = [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP, libc::SIGWINCH, libc::SIGUSR1, libc::SIGUSR2];

/// The set of signals blocked by [`block`], for [`start`].
pub struct Passed {
    set: libc::sigset_t,
}

/// Blocks the signals of [`PASSED`] in the calling thread, whose threads started later
/// inherit the mask, and gives this process their default actions (an ignored signal would
/// never reach [`start`]'s thread; a blocked one waits for it). Read the caller's ignored and
/// blocked signals first, for the program, and call this before any other thread starts;
/// nothing is passed on until [`start`].
pub fn block() -> std::io::Result<Passed> {
    // SAFETY: `sigset_t` is plain data; `sigemptyset` initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for sig in PASSED {
        // SAFETY: as above; `sig` is a valid signal number.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    // SAFETY: `set` is initialised; the old mask is not asked for.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(std::io::Error::from_raw_os_error(r));
    }
    for sig in PASSED {
        // SAFETY: the default action for a valid, catchable signal, now blocked in this thread
        // (the VMM installs no handler of its own for these).
        if unsafe { libc::signal(sig, libc::SIG_DFL) } == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(Passed { set })
}

/// The thread [`start`] made.
pub struct Passing {
    /// Held while a signal is being passed on.
    busy: Arc<Mutex<()>>,
}

impl Passing {
    /// Stops passing signals on, once the run is over: waits for a signal being passed on (its
    /// thread may hold the last reference to a process that has just ended, whose memory goes
    /// back to its mem-servers when it lets go) and keeps any other from being passed while the
    /// guard lives.
    pub fn stop(&self) -> MutexGuard<'_, ()> {
        self.busy.lock_unpoisoned()
    }
}

/// Starts the thread that takes the signals [`block`] blocked and posts them to the processes
/// of `procs`, until the VMM process ends or [`Passing::stop`].
pub fn start(procs: Arc<ProcTable>, passed: Passed) -> std::io::Result<Passing> {
    let busy = Arc::new(Mutex::new(()));
    let held = busy.clone();
    std::thread::Builder::new().name("host signals".into()).spawn(move || loop {
        // SAFETY: `siginfo_t` is plain data, filled in by the call.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `passed.set` is an initialised sigset_t blocked in this thread (inherited),
        // and `info` is writable.
        let sig = unsafe { libc::sigwaitinfo(&passed.set, &mut info) };
        if sig < 0 {
            continue;
        }
        let _busy = held.lock_unpoisoned();
        pass(&procs, sig, info.si_code);
    })?;
    Ok(Passing { busy })
}

/// Posts host signal `sig`, sent with `si_code` `code`, to the vNode's processes.
fn pass(procs: &ProcTable, sig: i32, code: i32) {
    let (targets, info) = if code == SI_KERNEL {
        // The terminal's foreground job, as the program set it; the first process's group
        // if that job has ended.
        let mut targets = procs.group_targets(procs.foreground());
        if targets.is_empty() {
            let Ok(pgid) = procs.pgid(FIRST_PID) else { return };
            targets = procs.group_targets(pgid);
        }
        (targets, SigInfo::kernel(sig))
    } else {
        // Sent from outside the vNode: no process of it is the sender.
        (procs.kill_targets(FIRST_PID, FIRST_PID).unwrap_or_default(), SigInfo::sent(sig, SI_USER, 0, 0))
    };
    tracing::debug!(signal = sig, processes = targets.len(), "passing a host signal on");
    for (_, process) in targets {
        if let Some(process) = process {
            process.signal(info);
        }
    }
}
