//! `clone` flags: what they make (a thread or a process), and which combinations lego takes.

use crate::errno::{Errno, SysResult};

pub(super) const CLONE_VM: u64 = 0x100;
pub(super) const CLONE_FS: u64 = 0x200;
pub(super) const CLONE_FILES: u64 = 0x400;
pub(super) const CLONE_SIGHAND: u64 = 0x800;
pub(super) const CLONE_THREAD: u64 = 0x1_0000;
pub(super) const CLONE_SYSVSEM: u64 = 0x4_0000;
pub(super) const CLONE_SETTLS: u64 = 0x8_0000;
pub(super) const CLONE_PARENT_SETTID: u64 = 0x10_0000;
pub(super) const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
pub(super) const CLONE_DETACHED: u64 = 0x40_0000;
pub(super) const CLONE_CHILD_SETTID: u64 = 0x100_0000;
/// The low byte: the signal sent to the parent when a child process ends (threads send none).
pub(super) const CSIGNAL: u64 = 0xff;

/// What makes a clone a thread sharing everything with its creator: the set glibc's and musl's
/// `pthread_create` pass, with `CLONE_SYSVSEM`.
pub(super) const THREAD: u64 = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD;
/// Flags a thread clone may carry besides [`THREAD`].
pub(super) const THREAD_OPTIONS: u64 =
    CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID | CLONE_DETACHED | CLONE_CHILD_SETTID | CSIGNAL;

/// The arguments of `clone` and `clone3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloneArgs {
    pub flags: u64,
    /// Stack pointer of the new thread (0: the caller's).
    pub stack: u64,
    pub parent_tid: u64,
    pub child_tid: u64,
    pub tls: u64,
}

pub(super) const CLONE_VFORK: u64 = 0x4000;
/// Flags a clone making a process may carry: its own copy of everything (`CLONE_VM` only with
/// `CLONE_VFORK`, whose child only execs or exits), the exit signal and the id words.
pub(super) const PROCESS_OPTIONS: u64 = CLONE_VM | CLONE_VFORK | CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID | CLONE_DETACHED | CLONE_CHILD_SETTID | CSIGNAL;

/// What a `clone` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneKind {
    /// A thread of the caller's process.
    Thread,
    /// A new process (a fork).
    Process,
}

/// Checks `clone` flags: `EINVAL` for combinations Linux refuses, `ENOSYS` for clones lego
/// does not make yet (partly shared processes, namespaces, pidfds).
pub fn check_flags(flags: u64) -> SysResult<CloneKind> {
    if flags & CLONE_THREAD != 0 && flags & CLONE_SIGHAND == 0 {
        return Err(Errno::EINVAL);
    }
    if flags & CLONE_SIGHAND != 0 && flags & CLONE_VM == 0 {
        return Err(Errno::EINVAL);
    }
    if flags & CLONE_THREAD == 0 && (flags & CLONE_VM == 0 || flags & CLONE_VFORK != 0) {
        if flags & !PROCESS_OPTIONS != 0 {
            return Err(Errno::ENOSYS);
        }
        return Ok(CloneKind::Process);
    }
    if flags & THREAD != THREAD || flags & !(THREAD | THREAD_OPTIONS) != 0 {
        return Err(Errno::ENOSYS);
    }
    Ok(CloneKind::Thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLIBC: u64 = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS
        | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;

    #[test]
    fn pthread_create_flags_make_a_thread() {
        assert_eq!(check_flags(GLIBC), Ok(CloneKind::Thread));
        // musl adds CLONE_DETACHED.
        assert_eq!(check_flags(GLIBC | CLONE_DETACHED), Ok(CloneKind::Thread));
        assert_eq!(check_flags(THREAD), Ok(CloneKind::Thread));
    }

    #[test]
    fn flags_linux_refuses_are_invalid() {
        assert_eq!(check_flags(CLONE_THREAD | CLONE_VM), Err(Errno::EINVAL));
        assert_eq!(check_flags(CLONE_SIGHAND), Err(Errno::EINVAL));
    }

    #[test]
    fn forks_make_processes() {
        // glibc's fork, posix_spawn's vfork-style clone.
        let glibc_fork = CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | libc::SIGCHLD as u64;
        assert_eq!(check_flags(glibc_fork), Ok(CloneKind::Process));
        assert_eq!(check_flags(CLONE_VM | CLONE_VFORK | libc::SIGCHLD as u64), Ok(CloneKind::Process));
    }

    #[test]
    fn other_clones_are_not_there_yet() {
        // A process sharing its files, a thread with its own files, a namespace flag.
        assert_eq!(check_flags(CLONE_FILES | libc::SIGCHLD as u64), Err(Errno::ENOSYS));
        assert_eq!(check_flags(THREAD & !CLONE_FILES), Err(Errno::ENOSYS));
        assert_eq!(check_flags(GLIBC | 0x2_0000), Err(Errno::ENOSYS));
    }
}
