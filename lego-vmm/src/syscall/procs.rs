//! Processes: `fork`, `vfork`, `clone` of a process, `execve`, `wait4` and `waitid`.
//!
//! A fork builds the child's state here (its address space a copy made at the mem-servers, see
//! [`crate::memory::mm::Mm::fork`]) and asks the run loop to start it in a VM of its own; `execve`
//! replaces the image in place and asks the run loop to restart the calling vCPU at the new
//! entry point.

use super::{Args, Control, Cpu, Forked, NewThread};
use crate::elf;
use crate::errno::{Errno, SysResult};
use crate::process::{Locked, Process, Termination};
use crate::hostcpu::CpuTime;
use crate::proctable::{WaitFor, WaitWhat};
use crate::signal::{self, AltStack, SigAction, SigInfo, CONTINUED_STATUS, NSIG, SIGINFO_SIZE, SIG_DFL, SIG_IGN};
use crate::stack::{self, AuxInfo};
use crate::threads::ThreadGroup;

use super::clone::{CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID, CLONE_PARENT_SETTID, CLONE_SETTLS, CLONE_VFORK};

/// Longest argument or environment vector `execve` takes (Linux's `MAX_ARG_STRINGS` is larger;
/// the total size limit below is what bites first).
const MAX_ARG_STRINGS: usize = 0x7fff;
/// Most bytes of arguments and environment together (a quarter of an 8 MiB stack, as Linux).
const MAX_ARG_BYTES: usize = 2 << 20;
/// How long a waiting parent sleeps before it looks whether it is ending itself.
const WAIT_SLICE: std::time::Duration = std::time::Duration::from_millis(10);

/// `fork`.
pub fn fork(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, _: Args) -> SysResult<Control> {
    fork_process(p, cpu, libc::SIGCHLD as u64, 0, 0, 0, 0)
}

/// `vfork`: the parent waits until the child has exec'd or ended. The child has a copy of the
/// memory rather than the parent's own, which a program that only execs or exits in the child
/// cannot tell.
pub fn vfork(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, _: Args) -> SysResult<Control> {
    fork_process(p, cpu, CLONE_VFORK | libc::SIGCHLD as u64, 0, 0, 0, 0)
}

/// A `clone` without `CLONE_VM` (or with `CLONE_VM | CLONE_VFORK`, whose child only execs):
/// a fork honouring the stack, TLS and thread-id words.
pub(super) fn fork_process(
    p: &mut Process,
    cpu: &mut Cpu<'_>,
    flags: u64,
    stack: u64,
    parent_tid: u64,
    child_tid: u64,
    tls: u64,
) -> SysResult<Control> {
    // The low byte is the signal the parent gets when the child ends (0: none).
    let exit_signal = (flags & 0xff) as i32;
    if exit_signal > NSIG as i32 {
        return Err(Errno::EINVAL);
    }
    if flags & CLONE_SETTLS != 0 && tls >= 1 << 47 {
        return Err(Errno::EPERM);
    }
    let pid = p.procs.alloc_id()?;
    let mut child = p.fork(cpu.tid, pid).map_err(|e| {
        tracing::warn!("fork: {e}");
        Errno::ENOMEM
    })?;
    let id = (pid as u32).to_le_bytes();
    if flags & CLONE_CHILD_SETTID != 0 {
        child.mm.write_user(child_tid, &id)?;
    }
    if flags & CLONE_CHILD_CLEARTID != 0 {
        child.thread(pid).clear_child_tid = child_tid;
    }
    if flags & CLONE_PARENT_SETTID != 0 {
        p.mm.write_user(parent_tid, &id)?;
    }
    // The child returns from the same call, with 0.
    let (mut regs, mut sregs) = (*cpu.regs, *cpu.sregs);
    regs.rax = 0;
    if stack != 0 {
        regs.rsp = stack;
    }
    crate::cpu::emulate_sysret(&mut regs, &mut sregs);
    let fs_base = if flags & CLONE_SETTLS != 0 { tls } else { cpu.sregs.fs.base };
    let thread = NewThread { tid: pid, regs, fs_base, gs_base: cpu.sregs.gs.base };
    p.procs.add_child(p.pid, pid, exit_signal);
    let vfork = flags & CLONE_VFORK != 0;
    Ok(Control::Fork(Box::new(Forked { process: child, thread, vfork })))
}

/// Reads a NULL-terminated array of string pointers (`argv`, `envp`); a null array is empty.
fn read_strings(p: &Process, addr: u64, total: &mut usize) -> SysResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    if addr == 0 {
        return Ok(out);
    }
    loop {
        if out.len() >= MAX_ARG_STRINGS {
            return Err(Errno::E2BIG);
        }
        let ptr = p.mm.read_u64(addr.checked_add(out.len() as u64 * 8).ok_or(Errno::EFAULT)?)?;
        if ptr == 0 {
            return Ok(out);
        }
        let s = p.mm.read_cstr(ptr, MAX_ARG_BYTES).map_err(|e| if e == Errno::ENAMETOOLONG { Errno::E2BIG } else { e })?;
        *total += s.len() + 1;
        if *total > MAX_ARG_BYTES {
            return Err(Errno::E2BIG);
        }
        out.push(s);
    }
}

/// `execve(path, argv, envp)`: an ELF executable from the vNode's files (with its interpreter
/// from there too, when dynamically linked) replaces the program. Until the old image is gone
/// the errors are Linux's (`ENOENT`, also for a missing interpreter, `EACCES` for a directory
/// or a file without execute permission, `ENOEXEC` for what is not an x86-64 executable,
/// `ELIBBAD` for an interpreter that is none);
/// after that, a failure ends the process with `SIGKILL`, as in Linux.
pub fn execve(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<Control> {
    let [path_addr, argv_addr, envp_addr, ..] = a;
    let given = super::fs::paths::read_path(p, path_addr)?;
    let path = crate::pseudo::file_path(p, &super::fs::paths::resolve(p, libc::AT_FDCWD as u64, &given)?)?;
    exec(p, cpu, given, path, argv_addr, envp_addr)
}

/// `execveat(dirfd, path, argv, envp, flags)`: `path` relative to `dirfd`, or with
/// `AT_EMPTY_PATH` and an empty path the file `dirfd` is open on (named `/dev/fd/N`, as Linux
/// names it).
pub fn execveat(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<Control> {
    const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
    const AT_EMPTY_PATH: u64 = 0x1000;
    let [dirfd, path_addr, argv_addr, envp_addr, flags, _] = a;
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let raw = p.mm.read_cstr(path_addr, 4096)?;
    let (given, path) = if raw.is_empty() {
        if flags & AT_EMPTY_PATH == 0 {
            return Err(Errno::ENOENT);
        }
        let fd = u64::from(dirfd as u32);
        let file = p.fds.get(fd)?;
        (format!("/dev/fd/{fd}").into_bytes(), file.path.clone())
    } else {
        let path = crate::pseudo::file_path(p, &super::fs::paths::resolve(p, dirfd, &raw)?)?;
        if flags & AT_SYMLINK_NOFOLLOW != 0 && p.fs.stat(&path, false)?.mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(Errno::ELOOP);
        }
        (raw, path)
    };
    exec(p, cpu, given, path, argv_addr, envp_addr)
}

/// Replaces the program with the one at vNode path `path` (`given` as the program named it).
fn exec(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, given: Vec<u8>, path: Vec<u8>, argv_addr: u64, envp_addr: u64) -> SysResult<Control> {
    let mut total = 0;
    let argv = read_strings(p, argv_addr, &mut total)?;
    let envp = read_strings(p, envp_addr, &mut total)?;
    let stat = p.fs.stat(&path, true)?;
    if stat.mode & libc::S_IFMT != libc::S_IFREG || stat.mode & 0o111 == 0 {
        return Err(Errno::EACCES);
    }
    let bytes = crate::fs::read_all(p.fs.as_ref(), &path)?;
    let info = elf::parse(&bytes, p.mm.size()).map_err(|e| e.errno())?;
    let interp = crate::loader::interpreter(&info, p.fs.as_ref(), p.mm.size()).map_err(|e| e.errno())?;
    if p.threads.len() > 1 {
        end_other_threads(p, cpu.tid)?;
    }
    super::mapping::unmapping_all(p);
    p.timers.delete_all();
    let loaded = (|| {
        p.mm.reset().map_err(|e| format!("emptying the address space: {e}"))?;
        let start = crate::loader::load(&info, &bytes, interp.as_ref(), &mut p.mm).map_err(|e| e.to_string())?;
        let aux = AuxInfo::new(&p.creds).ok_or("no random bytes for AT_RANDOM")?;
        let rsp = stack::build(&p.mm, &info, start.interp_base, &argv, &envp, &given, &aux).map_err(|e| format!("the new stack: {e}"))?;
        Ok::<_, String>((start.entry, rsp))
    })();
    let (entry, rsp) = match loaded {
        Ok(started) => started,
        Err(why) => {
            let detail = format!("execve of {} failed after the old program was gone: {why}", String::from_utf8_lossy(&path));
            return Ok(Control::ExitGroup(Termination::Signaled { signal: libc::SIGKILL, detail: Some(detail) }));
        }
    };
    p.fds.close_on_exec();
    // Handled signals go back to their defaults, ignored ones stay ignored; the mask and what
    // is pending stay, the alternate stack was in the old image.
    for action in p.signals.actions.iter_mut() {
        let handler = if action.handler == SIG_IGN { SIG_IGN } else { SIG_DFL };
        *action = SigAction { handler, ..Default::default() };
    }
    let t = p.thread(cpu.tid);
    (t.altstack, t.saved_mask) = (AltStack::default(), None);
    p.procs.set_nocldwait(p.pid, signal::reaps_children(&p.signals.actions[libc::SIGCHLD as usize]));
    p.comm = crate::process::comm_of(&given);
    p.creds.exec();
    // `/proc/PID/exe` names the file itself, its symlinks resolved, as on Linux: `ld.so` takes
    // `$ORIGIN` from it (a program reached through `/usr/bin/java -> /etc/alternatives/java ->
    // /usr/lib/jvm/.../bin/java` finds its libraries beside the last).
    let exe = super::fs::canonical(p, &path).unwrap_or(path);
    p.image = crate::identity::ExecImage { exe, argv, envp };
    p.procs.released(p.pid);
    for t in p.threads.values_mut() {
        (t.clear_child_tid, t.robust_list) = (0, (0, 0));
    }
    Ok(Control::Exec { entry, rsp })
}

/// Ends every thread but `keep` before an `execve` (Linux's `de_thread`): the process gets a new
/// thread group, and ending the old one wakes the other threads from their waits; their vCPUs
/// are kicked out of `KVM_RUN`, and their run loops, seeing their group ended, leave without
/// running anything more. Returns once no other vCPU runs, so none touches the new image.
fn end_other_threads(p: &mut Locked<'_>, keep: i32) -> SysResult<()> {
    let fresh = ThreadGroup::new(p.group.shared_futexes.clone()).map_err(|_| Errno::ENOMEM)?;
    // A signal on its way to the caller stays on its way in the new group; the interrupt state
    // of the threads that end goes with the old one.
    if p.group.interrupted(keep) {
        fresh.interrupt(keep);
    }
    let old = std::mem::replace(&mut p.group, std::sync::Arc::new(fresh));
    old.end();
    p.threads.retain(|&tid, _| tid == keep);
    let kicker = p.mm.cache().kicker();
    kicker.kick_all_but(keep);
    p.unlocked(|| kicker.wait_alone(keep));
    Ok(())
}

/// Thread `tid` waits for a child `which` selects to end: `(pid, wait status)`, `None` at once
/// with `nohang` if none has ended, `ECHILD` without such children, `EINTR` if the caller's
/// process ends or a signal comes for the thread meanwhile (a handler with `SA_RESTART`
/// restarts the call, [`crate::delivery::restartable`]). With `reap == false` the child stays a
/// zombie.
fn wait_child(p: &mut Locked<'_>, tid: i32, which: WaitFor, what: WaitWhat, nohang: bool, reap: bool) -> SysResult<Option<(i32, i32, CpuTime)>> {
    let (procs, group, me) = (p.procs.clone(), p.group.clone(), p.pid);
    loop {
        if let Some((pid, status)) = procs.try_wait(me, which, what, reap)? {
            let ended = status & 0x7f != 0x7f && status != CONTINUED_STATUS;
            let spent = if reap && ended { procs.take_usage(pid) } else { CpuTime::default() };
            p.children_usage += spent;
            return Ok(Some((pid, status, spent)));
        }
        if nohang {
            return Ok(None);
        }
        if group.ending() || group.interrupted(tid) {
            return Err(Errno::EINTR);
        }
        p.unlocked(|| procs.wait_change(WAIT_SLICE));
    }
}

/// `wait4(pid, status, options, rusage)`: a child that ended, or with `WUNTRACED` one that
/// stopped and with `WCONTINUED` one that continued (job control); the resource usage is the
/// child's CPU time (with its reaped children's).
pub fn wait4(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [pid, status_addr, options, rusage, ..] = a;
    let (pid, options) = (pid as i32, options as i32);
    if options & !(libc::WNOHANG | libc::WUNTRACED | libc::WCONTINUED | libc::__WALL | libc::__WCLONE | libc::__WNOTHREAD) != 0 {
        return Err(Errno::EINVAL);
    }
    if pid == i32::MIN {
        return Err(Errno::ESRCH);
    }
    let which = match pid {
        -1 => WaitFor::Any,
        0 => WaitFor::Group(p.procs.pgid(p.pid)?),
        g if g < -1 => WaitFor::Group(-g),
        pid => WaitFor::Pid(pid),
    };
    let what = WaitWhat { exited: true, stopped: options & libc::WUNTRACED != 0, continued: options & libc::WCONTINUED != 0 };
    let Some((child, status, spent)) = wait_child(p, cpu.tid, which, what, options & libc::WNOHANG != 0, true)? else { return Ok(0) };
    if status_addr != 0 {
        p.mm.write_user(status_addr, &status.to_le_bytes())?;
    }
    if rusage != 0 {
        p.mm.write_user(rusage, &super::usage::rusage(spent, 0))?;
    }
    Ok(child as u64)
}

/// `waitid(idtype, id, infop, options, rusage)`: `WEXITED`, `WSTOPPED` and `WCONTINUED`, with
/// `WNOHANG` and `WNOWAIT`.
pub fn waitid(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [idtype, id, infop, options, rusage, ..] = a;
    let options = options as i32;
    let known = libc::WNOHANG | libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED | libc::WNOWAIT | libc::__WALL | libc::__WCLONE | libc::__WNOTHREAD;
    if options & !known != 0 || options & (libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED) == 0 {
        return Err(Errno::EINVAL);
    }
    let which = match idtype as u32 {
        libc::P_ALL => WaitFor::Any,
        libc::P_PID if (id as i32) > 0 => WaitFor::Pid(id as i32),
        libc::P_PGID if id == 0 => WaitFor::Group(p.procs.pgid(p.pid)?),
        libc::P_PGID if (id as i32) > 0 => WaitFor::Group(id as i32),
        _ => return Err(Errno::EINVAL),
    };
    let what = WaitWhat {
        exited: options & libc::WEXITED != 0,
        stopped: options & libc::WSTOPPED != 0,
        continued: options & libc::WCONTINUED != 0,
    };
    let found = wait_child(p, cpu.tid, which, what, options & libc::WNOHANG != 0, options & libc::WNOWAIT == 0)?;
    if infop != 0 {
        let info = found.map_or([0u8; SIGINFO_SIZE], |(child, status, _)| SigInfo::child(libc::SIGCHLD, child, p.creds.uid, status).bytes());
        p.mm.write_user(infop, &info)?;
    }
    if rusage != 0 {
        let spent = found.map(|(_, _, spent)| spent).unwrap_or_default();
        p.mm.write_user(rusage, &super::usage::rusage(spent, 0))?;
    }
    Ok(0)
}
