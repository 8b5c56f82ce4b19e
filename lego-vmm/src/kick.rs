//! Stopping every vCPU of a process for good: when the process ends (`exit_group`, a fatal
//! fault in any thread, a failed memory), each vCPU thread is kicked out of `KVM_RUN` and kept
//! out. One vCPU is kicked alone when a signal waits for its thread ([`Kicker::kick`]): its run
//! loop takes the signal and goes back in.
//!
//! A kick sets `immediate_exit` in the vCPU's `kvm_run` page, then signals its thread with
//! [`kick_signal`], whose handler does nothing. A vCPU in `KVM_RUN` returns `EINTR` because of
//! the signal; one about to enter returns `EINTR` at once because of the flag, so no kick is
//! ever lost between a thread's last check and its next entry.

use lego_proto::sync::LockExt;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuFd;

use crate::error::VmmError;

/// The signal that interrupts `KVM_RUN`.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 1
}

/// Installs the (empty) handler of [`kick_signal`] for the whole VMM process.
pub fn install_handler() -> Result<(), VmmError> {
    extern "C" fn kicked(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    vmm_sys_util::signal::register_signal_handler(kick_signal(), kicked)
        .map_err(|e| VmmError::Config(format!("installing the vCPU kick handler: {e}")))
}

struct Target {
    thread: libc::pthread_t,
    run: *mut kvm_run,
}

// SAFETY: `run` points at the vCPU's kvm_run mapping, which stays mapped while the target is
// registered (the vCPU thread unregisters before dropping its VcpuFd, and unregistering waits
// for the registry lock a kick holds); it is only written with a volatile one-byte store.
unsafe impl Send for Target {}

/// The vCPU threads of one process.
#[derive(Default)]
pub struct Kicker {
    targets: Mutex<HashMap<i32, Target>>,
}

impl Kicker {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Target>> {
        self.targets.lock_unpoisoned()
    }

    /// Registers the calling thread as the one running `vcpu` (guest thread `tid`). It must call
    /// [`Kicker::unregister`] before dropping `vcpu`.
    ///
    /// The thread unblocks [`kick_signal`] first: a signal mask is inherited across `execve`
    /// and by new threads, and a VMM started with the kick blocked could never interrupt a
    /// `KVM_RUN` (a spinning guest thread would hang the exit of its process).
    pub fn register(&self, tid: i32, vcpu: &mut VcpuFd) {
        if let Err(e) = vmm_sys_util::signal::unblock_signal(kick_signal()) {
            tracing::warn!(tid, "unblocking the vCPU kick signal: {e}");
        }
        let run: *mut kvm_run = vcpu.get_kvm_run();
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        self.lock().insert(tid, Target { thread, run });
    }

    /// Forgets guest thread `tid`'s vCPU.
    pub fn unregister(&self, tid: i32) {
        self.lock().remove(&tid);
    }

    /// Stops every registered vCPU and keeps it from running again.
    pub fn kick_all(&self) {
        self.kick_which(|_| true);
    }

    /// Stops every registered vCPU but guest thread `keep`'s (`execve` ending the other threads).
    pub fn kick_all_but(&self, keep: i32) {
        self.kick_which(|tid| tid != keep);
    }

    /// Waits until no vCPU but guest thread `keep`'s is registered: the others have left
    /// `KVM_RUN` for good.
    pub fn wait_alone(&self, keep: i32) {
        while self.lock().keys().any(|&tid| tid != keep) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Stops guest thread `tid`'s vCPU (if it runs one): its next or current `KVM_RUN` returns
    /// `EINTR` until the thread clears `immediate_exit`.
    pub fn kick(&self, tid: i32) {
        if let Some(t) = self.lock().get(&tid) {
            t.kick();
        }
    }

    fn kick_which(&self, which: impl Fn(i32) -> bool) {
        for t in self.lock().iter().filter(|(tid, _)| which(**tid)).map(|(_, t)| t) {
            t.kick();
        }
    }
}

impl Target {
    /// Called with the registry lock held.
    fn kick(&self) {
        // SAFETY: see `Target`: the mapping is alive while registered, and the caller holds the
        // registry lock; `immediate_exit` is a byte KVM reads on entry.
        unsafe { std::ptr::addr_of_mut!((*self.run).immediate_exit).write_volatile(1) };
        // SAFETY: the thread is alive while registered (it unregisters before it ends); the
        // signal has a no-op handler (`install_handler`).
        unsafe { libc::pthread_kill(self.thread, kick_signal()) };
    }
}
