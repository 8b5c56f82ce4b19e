//! The Linux system-call interface of a vNode process.
//!
//! [`handle`] runs the handler of a [`Call`] against the [`Process`] state and returns a
//! [`Control`]: the value to put in RAX, or what only the run loop can do (start a thread or a
//! process, restart at a new image, end the thread or the process, restore a signal frame).
//! Handlers are plain functions of the process, the calling vCPU's registers and thread, and
//! six argument words, so they can be tested without KVM. They run with the process lock held;
//! the few that may block ([`Handler::Blocking`]) get the lock itself and release it while they
//! wait, and the few that ask more of the run loop ([`Handler::Controls`]) return a [`Control`].

mod anon;
mod attrs;
mod caps;
mod clone;
mod epoll;
mod fileops;
mod fs;
mod info;
mod ipcwait;
mod links;
mod locks;
mod mapping;
mod mem;
mod mqueue;
pub mod names;
mod net;
mod poll;
mod proc;
mod procs;
mod sched;
mod signal;
mod sysvipc;
mod sysvmsg;
pub mod sysvsem;
mod thread;
pub mod time;
pub mod timers;
mod usage;

use std::fmt::Write as _;

use kvm_bindings::{kvm_regs, kvm_sregs};

use crate::errno::{Errno, SysResult};
use crate::process::{Locked, Process, Termination};
pub use mapping::unmapping_all;
pub use clone::CloneArgs;
pub use thread::exit_thread;
pub(crate) use fs::canonical;

/// The calling vCPU: its registers and its thread.
pub struct Cpu<'a> {
    pub regs: &'a mut kvm_regs,
    pub sregs: &'a mut kvm_sregs,
    /// The calling thread's id.
    pub tid: i32,
}

impl<'a> Cpu<'a> {
    /// Thread `tid` making a call with these registers.
    pub fn new(regs: &'a mut kvm_regs, sregs: &'a mut kvm_sregs, tid: i32) -> Cpu<'a> {
        Cpu { regs, sregs, tid }
    }
}

/// What the run loop does once a system call's handler has run, in the spirit of gVisor's
/// `SyscallControl`: most calls return a value; the others ask for something only the run loop
/// can do.
pub enum Control {
    /// Back to the caller, with this value in RAX.
    Return(u64),
    /// `clone` of a thread: start a vCPU for it. Its state is already in the process; the
    /// call returns its id.
    Clone(NewThread),
    /// A fork: start the child process (already in the process table) in a VM of its own; the
    /// call returns its pid.
    Fork(Box<Forked>),
    /// `execve` replaced the image: the calling vCPU starts over at `entry` with stack `rsp`.
    Exec { entry: u64, rsp: u64 },
    /// `exit`: the calling thread ends with this status (its state is still in the process).
    ExitThread(i32),
    /// `exit_group`, or an `execve` that failed after the old image was gone: the process ends.
    ExitGroup(Termination),
    /// `rt_sigreturn`: the registers, FPU state and mask come back from the signal frame on the
    /// stack, which the run loop reads through the vCPU (`crate::delivery::sigreturn`).
    SignalReturn,
    /// The process's memory failed during the call: nothing computed since can be trusted, and
    /// the run ends with this error.
    MemoryFailed(String),
}

impl Control {
    /// A handler's result: its value, or `-errno`, returned to the caller.
    fn of(result: SysResult<Control>) -> Control {
        result.unwrap_or_else(|e| Control::Return((-(e.0 as i64)) as u64))
    }
}

/// A child process a fork made, for the run loop to start.
pub struct Forked {
    pub process: Process,
    /// Its first thread (whose id is the child's pid).
    pub thread: NewThread,
    /// A `vfork`: the parent waits until the child has exec'd or ended.
    pub vfork: bool,
}

/// A thread `clone` created, for the run loop to start.
#[derive(Debug, Clone, PartialEq)]
pub struct NewThread {
    pub tid: i32,
    /// Its user registers, as it returns from `clone` (RAX 0, its own stack).
    pub regs: kvm_regs,
    /// Its FS base (TLS) and GS base.
    pub fs_base: u64,
    pub gs_base: u64,
}

/// The six argument registers.
pub type Args = [u64; 6];

/// A system call's implementation.
#[derive(Clone, Copy)]
enum Handler {
    /// Runs under the process lock from start to end.
    Plain(fn(&mut Process, &mut Cpu<'_>, Args) -> SysResult<u64>),
    /// May wait (for another thread, a timer, the host): holds the lock, and releases it while
    /// it waits.
    Blocking(fn(&mut Locked<'_>, &mut Cpu<'_>, Args) -> SysResult<u64>),
    /// Asks the run loop for more than a return value (see [`Control`]); may release the lock.
    Controls(fn(&mut Locked<'_>, &mut Cpu<'_>, Args) -> SysResult<Control>),
}
use Handler::{Blocking, Controls, Plain};

/// How to print each argument in a trace: `d` signed, `u` unsigned, `x` hex, `o` octal,
/// `f` fd (AT_FDCWD by name), `s` C string, `b` buffer whose length is the next argument,
/// `B` buffer filled by the call (length = result).
type Signature = &'static str;

/// The system calls lego implements.
fn lookup(nr: u64) -> Option<(Signature, Handler)> {
    use anon::*;
    use attrs::*;
    use caps::{capget, capset};
    use fileops::*;
    use fs::*;
    use info::*;
    use links::*;
    use locks::{fcntl, flock};
    use mapping::*;
    use mem::*;
    use mqueue::*;
    use poll::*;
    use proc::*;
    use procs::*;
    use sched::*;
    use signal::*;
    use sysvipc::*;
    use sysvmsg::*;
    use sysvsem::{semctl, semget, semop, semtimedop};
    use thread::*;
    use time::*;
    use timers::*;
    use usage::*;
    if let Some(call) = net::lookup(nr) {
        return Some(call);
    }
    Some(match nr {
        0 => ("fBu", Blocking(read)),
        1 => ("fbu", Blocking(write)),
        2 => ("sxo", Blocking(open)),
        3 => ("f", Plain(close)),
        4 => ("sx", Plain(stat)),
        5 => ("fx", Plain(fstat)),
        6 => ("sx", Plain(lstat)),
        7 => ("xud", Blocking(poll)),
        8 => ("fdd", Plain(lseek)),
        9 => ("xuxxfd", Plain(mmap)),
        10 => ("xux", Plain(mprotect)),
        11 => ("xu", Plain(munmap)),
        12 => ("x", Plain(brk)),
        13 => ("dxxu", Plain(rt_sigaction)),
        14 => ("dxxu", Plain(rt_sigprocmask)),
        15 => ("", Controls(rt_sigreturn)),
        16 => ("fxx", Blocking(ioctl)),
        17 => ("fBud", Plain(pread64)),
        18 => ("fbud", Plain(pwrite64)),
        19 => ("fxd", Blocking(readv)),
        20 => ("fxd", Blocking(writev)),
        21 => ("sd", Plain(access)),
        22 => ("x", Plain(pipe)),
        24 => ("", Plain(sched_yield)),
        25 => ("xuuxx", Plain(mremap)),
        26 => ("xux", Plain(msync)),
        27 => ("xux", Plain(mincore)),
        28 => ("xud", Plain(madvise)),
        29 => ("xux", Plain(shmget)),
        30 => ("dxx", Plain(shmat)),
        31 => ("ddx", Plain(shmctl)),
        32 => ("f", Plain(dup)),
        33 => ("ff", Plain(dup2)),
        34 => ("", Blocking(pause)),
        35 => ("xx", Blocking(nanosleep)),
        36 => ("dx", Plain(getitimer)),
        37 => ("u", Plain(alarm)),
        38 => ("dxx", Plain(setitimer)),
        39 => ("", Plain(getpid)),
        40 => ("ffxu", Plain(sendfile)),
        56 => ("xxxxx", Controls(clone)),
        57 => ("", Controls(fork)),
        58 => ("", Controls(vfork)),
        59 => ("sxx", Controls(execve)),
        60 => ("d", Controls(exit)),
        61 => ("dxxx", Blocking(wait4)),
        64 => ("xdx", Plain(semget)),
        65 => ("dxu", Blocking(semop)),
        66 => ("dddx", Plain(semctl)),
        67 => ("x", Plain(shmdt)),
        68 => ("xx", Plain(msgget)),
        69 => ("dxux", Blocking(msgsnd)),
        70 => ("dxudx", Blocking(msgrcv)),
        71 => ("ddx", Plain(msgctl)),
        62 => ("dd", Blocking(kill)),
        63 => ("x", Plain(uname)),
        72 => ("fdx", Blocking(fcntl)),
        73 => ("fx", Blocking(flock)),
        74 => ("f", Plain(fsync)),
        75 => ("f", Plain(fdatasync)),
        187 => ("fxu", Plain(readahead)),
        220 => ("dxux", Blocking(semtimedop)),
        221 => ("fxud", Plain(fadvise64)),
        277 => ("fxxx", Plain(sync_file_range)),
        137 => ("sx", Plain(statfs)),
        138 => ("fx", Plain(fstatfs)),
        162 => ("", Plain(sync_fs)),
        306 => ("f", Plain(syncfs)),
        76 => ("sd", Plain(truncate)),
        77 => ("fd", Plain(ftruncate)),
        79 => ("xu", Plain(getcwd)),
        80 => ("s", Plain(chdir)),
        81 => ("f", Plain(fchdir)),
        82 => ("ss", Plain(rename)),
        83 => ("so", Plain(mkdir)),
        84 => ("s", Plain(rmdir)),
        85 => ("so", Blocking(creat)),
        86 => ("ss", Plain(link)),
        87 => ("s", Plain(unlink)),
        88 => ("ss", Plain(symlink)),
        89 => ("sxu", Plain(readlink)),
        90 => ("so", Plain(chmod)),
        91 => ("fo", Plain(fchmod)),
        92 => ("sdd", Plain(chown)),
        93 => ("fdd", Plain(fchown)),
        94 => ("sdd", Plain(lchown)),
        95 => ("o", Plain(umask)),
        96 => ("xx", Plain(gettimeofday)),
        97 => ("dx", Plain(getrlimit)),
        98 => ("dx", Plain(getrusage)),
        99 => ("x", Plain(sysinfo)),
        100 => ("x", Plain(times)),
        102 => ("", Plain(getuid)),
        104 => ("", Plain(getgid)),
        105 => ("d", Plain(setuid)),
        106 => ("d", Plain(setgid)),
        107 => ("", Plain(geteuid)),
        108 => ("", Plain(getegid)),
        109 => ("dd", Plain(setpgid)),
        110 => ("", Plain(getppid)),
        111 => ("", Plain(getpgrp)),
        112 => ("", Plain(setsid)),
        113 => ("dd", Plain(setreuid)),
        114 => ("dd", Plain(setregid)),
        115 => ("dx", Plain(getgroups)),
        116 => ("dx", Plain(setgroups)),
        117 => ("ddd", Plain(setresuid)),
        118 => ("xxx", Plain(getresuid)),
        119 => ("ddd", Plain(setresgid)),
        120 => ("xxx", Plain(getresgid)),
        121 => ("d", Plain(getpgid)),
        122 => ("d", Plain(setfsuid)),
        123 => ("d", Plain(setfsgid)),
        124 => ("d", Plain(getsid)),
        125 => ("xx", Plain(capget)),
        126 => ("xx", Plain(capset)),
        127 => ("xu", Plain(rt_sigpending)),
        128 => ("xxxu", Blocking(rt_sigtimedwait)),
        129 => ("ddx", Blocking(rt_sigqueueinfo)),
        130 => ("xu", Blocking(rt_sigsuspend)),
        131 => ("xx", Plain(sigaltstack)),
        132 => ("sx", Plain(utime)),
        133 => ("sox", Plain(mknod)),
        135 => ("x", Plain(personality)),
        142 => ("dx", Plain(sched_setparam)),
        143 => ("dx", Plain(sched_getparam)),
        144 => ("ddx", Plain(sched_setscheduler)),
        145 => ("d", Plain(sched_getscheduler)),
        146 => ("d", Plain(sched_get_priority_max)),
        147 => ("d", Plain(sched_get_priority_min)),
        148 => ("dx", Plain(sched_rr_get_interval)),
        149 => ("xu", Plain(mlock)),
        150 => ("xu", Plain(munlock)),
        151 => ("x", Plain(mlockall)),
        152 => ("", Plain(munlockall)),
        157 => ("dxxxx", Plain(prctl)),
        158 => ("dx", Plain(arch_prctl)),
        160 => ("dx", Plain(setrlimit)),
        186 => ("", Plain(gettid)),
        188 => ("ssxux", Plain(xattr_one::<XATTR_PATH>)),
        189 => ("ssxux", Plain(xattr_one::<XATTR_LPATH>)),
        190 => ("fsxux", Plain(xattr_one::<XATTR_FD>)),
        191 => ("ssxu", Plain(xattr_one::<XATTR_PATH>)),
        192 => ("ssxu", Plain(xattr_one::<XATTR_LPATH>)),
        193 => ("fsxu", Plain(xattr_one::<XATTR_FD>)),
        194 => ("sxu", Plain(xattr_list::<XATTR_PATH>)),
        195 => ("sxu", Plain(xattr_list::<XATTR_LPATH>)),
        196 => ("fxu", Plain(xattr_list::<XATTR_FD>)),
        197 => ("ss", Plain(xattr_one::<XATTR_PATH>)),
        198 => ("ss", Plain(xattr_one::<XATTR_LPATH>)),
        199 => ("fs", Plain(xattr_one::<XATTR_FD>)),
        200 => ("dd", Plain(tkill)),
        201 => ("x", Plain(time)),
        202 => ("xdux", Blocking(futex)),
        203 => ("dux", Plain(sched_setaffinity)),
        204 => ("dux", Plain(sched_getaffinity)),
        140 => ("dd", Plain(getpriority)),
        141 => ("ddd", Plain(setpriority)),
        251 => ("ddx", Plain(ioprio_set)),
        252 => ("dd", Plain(ioprio_get)),
        217 => ("fxu", Plain(getdents64)),
        218 => ("x", Plain(set_tid_address)),
        222 => ("dxx", Plain(timer_create)),
        223 => ("ddxx", Plain(timer_settime)),
        224 => ("dx", Plain(timer_gettime)),
        225 => ("d", Plain(timer_getoverrun)),
        226 => ("d", Plain(timer_delete)),
        228 => ("dx", Plain(clock_gettime)),
        229 => ("dx", Plain(clock_getres)),
        230 => ("ddxx", Blocking(clock_nanosleep)),
        231 => ("d", Controls(exit_group)),
        234 => ("ddd", Plain(tgkill)),
        235 => ("sx", Plain(utimes)),
        240 => ("sxxx", Plain(mq_open)),
        241 => ("s", Plain(mq_unlink)),
        242 => ("dxuux", Blocking(mq_timedsend)),
        243 => ("dxuxx", Blocking(mq_timedreceive)),
        244 => ("dx", Plain(mq_notify)),
        245 => ("dxx", Plain(mq_getsetattr)),
        247 => ("ddxxx", Blocking(waitid)),
        257 => ("fsxo", Blocking(openat)),
        258 => ("fso", Plain(mkdirat)),
        259 => ("fsox", Plain(mknodat)),
        260 => ("fsddx", Plain(fchownat)),
        261 => ("fsx", Plain(futimesat)),
        262 => ("fsxx", Plain(newfstatat)),
        263 => ("fsx", Plain(unlinkat)),
        264 => ("fsfs", Plain(renameat)),
        265 => ("fsfsx", Plain(linkat)),
        266 => ("sfs", Plain(symlinkat)),
        267 => ("fsxu", Plain(readlinkat)),
        268 => ("fso", Plain(fchmodat)),
        269 => ("fsd", Plain(faccessat)),
        271 => ("xuxxu", Blocking(ppoll)),
        273 => ("xu", Plain(set_robust_list)),
        274 => ("dxx", Plain(get_robust_list)),
        282 => ("fxu", Plain(signalfd)),
        280 => ("fsxx", Plain(utimensat)),
        283 => ("dx", Plain(timerfd_create)),
        285 => ("fddd", Plain(fallocate)),
        286 => ("fdxx", Plain(timerfd_settime)),
        287 => ("fx", Plain(timerfd_gettime)),
        289 => ("fxux", Plain(signalfd4)),
        292 => ("ffx", Plain(dup3)),
        293 => ("xx", Plain(pipe2)),
        295 => ("fxdd", Plain(preadv)),
        296 => ("fxdd", Plain(pwritev)),
        297 => ("dddx", Blocking(rt_tgsigqueueinfo)),
        302 => ("ddxx", Plain(prlimit64)),
        309 => ("xxx", Plain(getcpu)),
        316 => ("fsfsx", Plain(renameat2)),
        318 => ("xux", Plain(getrandom)),
        319 => ("sx", Plain(memfd_create)),
        322 => ("fsxxx", Controls(execveat)),
        325 => ("xux", Plain(mlock2)),
        326 => ("fxfxux", Plain(copy_file_range)),
        327 => ("fxddxx", Plain(preadv2)),
        328 => ("fxddxx", Plain(pwritev2)),
        332 => ("fsxxx", Plain(statx)),
        334 => ("xudx", Plain(rseq)),
        424 => ("fdxu", Blocking(pidfd_send_signal)),
        434 => ("dx", Plain(pidfd_open)),
        435 => ("xu", Controls(clone3)),
        436 => ("uux", Plain(close_range)),
        439 => ("fsdx", Plain(faccessat2)),
        452 => ("fsox", Plain(fchmodat2)),
        _ => return None,
    })
}

/// The system calls lego implements, by number (`lego run --stats` counts them).
pub fn implemented() -> Vec<u64> {
    (0..names::NAMES.len() as u64).filter(|&nr| lookup(nr).is_some()).collect()
}

/// A system call as the vCPU made it: its number and six argument words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub nr: u64,
    pub args: Args,
}

impl Call {
    /// The call in these registers (RAX, then RDI, RSI, RDX, R10, R8, R9).
    pub fn of(regs: &kvm_regs) -> Call {
        Call { nr: regs.rax, args: [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9] }
    }

    /// The strace-style line of the call, which returned `ret` (a `-errno` shows as an error).
    pub fn trace(&self, p: &Process, ret: u64) -> String {
        let sig = lookup(self.nr).map_or("xxxxxx", |(sig, _)| sig);
        format_call(p, self.nr, sig, &self.args, ret)
    }
}

/// Runs the handler of `call`, which the vCPU `cpu` made, and says what the run loop does next.
/// Every call is counted; one lego does not implement returns `ENOSYS`.
pub fn handle(p: &mut Locked<'_>, cpu: &mut Cpu<'_>, call: &Call) -> Control {
    let (nr, args) = (call.nr, call.args);
    p.stats.calls += 1;
    *p.stats.by_nr.entry(nr).or_default() += 1;
    let control = Control::of(match lookup(nr) {
        Some((_, Plain(handler))) => handler(p, cpu, args).map(Control::Return),
        Some((_, Blocking(handler))) => handler(p, cpu, args).map(Control::Return),
        Some((_, Controls(handler))) => handler(p, cpu, args),
        None => {
            *p.stats.unimplemented.entry(nr).or_default() += 1;
            tracing::debug!(nr, name = names::name(nr).unwrap_or("?"), "unimplemented system call");
            Err(Errno::ENOSYS)
        }
    });
    match p.mm.failure() {
        Some(msg) => Control::MemoryFailed(msg),
        None => control,
    }
}

fn format_call(p: &Process, nr: u64, sig: Signature, args: &Args, ret: u64) -> String {
    let mut s = String::new();
    let name = names::name(nr).map(str::to_string).unwrap_or_else(|| format!("syscall_{nr}"));
    s.push_str(&name);
    s.push('(');
    let kinds: Vec<char> = sig.chars().collect();
    for (i, k) in kinds.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let a = args[i];
        match k {
            'd' => { let _ = write!(s, "{}", a as i64); }
            'u' => { let _ = write!(s, "{a}"); }
            'o' => { let _ = write!(s, "0{a:o}"); }
            'f' if a as i32 == libc::AT_FDCWD => s.push_str("AT_FDCWD"),
            'f' => { let _ = write!(s, "{}", a as i32); }
            's' => match p.mm.read_cstr(a, 4096) {
                Ok(b) => quote(&mut s, &b, 64),
                Err(_) => { let _ = write!(s, "{a:#x}"); }
            },
            'b' | 'B' => {
                let len = if *k == 'b' { args.get(i + 1).copied().unwrap_or(0) } else { ret };
                let mut buf = vec![0u8; len.min(32) as usize];
                if (ret as i64) >= 0 && p.mm.read_user(a, &mut buf).is_ok() {
                    quote(&mut s, &buf, 32);
                    if len > 32 {
                        s.push_str("...");
                    }
                } else {
                    let _ = write!(s, "{a:#x}");
                }
            }
            _ => { let _ = write!(s, "{a:#x}"); }
        }
    }
    s.push_str(") = ");
    let r = ret as i64;
    if (-4095..0).contains(&r) {
        let e = Errno(-r as i32);
        let _ = write!(s, "-1 {} ({})", e.name(), std::io::Error::from_raw_os_error(e.0));
    } else if matches!(nr, 9 | 12 | 25) {
        let _ = write!(s, "{ret:#x}");
    } else {
        let _ = write!(s, "{r}");
    }
    s
}

fn quote(s: &mut String, b: &[u8], max: usize) {
    s.push('"');
    for &c in b.iter().take(max) {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(c as char),
            _ => { let _ = write!(s, "\\x{c:02x}"); }
        }
    }
    s.push('"');
    if b.len() > max {
        s.push_str("...");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::hostdir::HostDir;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// A process and the mem-server its memory lives on (dropped in this order).
    struct Fuzzed {
        p: std::sync::Mutex<Process>,
        _server: mem_server::Handle,
    }

    fn process(root: &std::path::Path) -> Fuzzed {
        let fs = Arc::new(HostDir::new(root).unwrap());
        let crate::testing::TestMm { mm, server } = crate::testing::mm(64 << 20);
        let mut p = Process::new(mm, fs, "fuzz".into(), b"fuzz").unwrap();
        let heap = p.mm.mmap(0, 1 << 16, crate::memory::paging::Prot::RW, 0x22, lego_proto::vma::VmaKind::Anon).unwrap();
        p.mm.write_user(heap, b"/tmp\0x\0").unwrap();
        Fuzzed { p: std::sync::Mutex::new(p), _server: server }
    }

    /// Interesting argument values: small numbers, fds, flags, wild and kernel addresses, and
    /// a pointer to valid memory.
    fn arg() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..8,
            Just(u64::MAX),
            Just(-100i64 as u64),
            any::<u64>(),
            Just(crate::layout::SYS_BASE),
            Just(crate::layout::STUB_PAGE),
            (0u64..0x1_0000).prop_map(|o| (64 << 20) - crate::layout::STACK_MAX - (1 << 20) - (1 << 16) + o),
        ]
    }

    #[test]
    fn the_implemented_calls_have_names_and_are_counted() {
        let all = implemented();
        assert!(all.len() >= 150, "{} calls", all.len());
        assert!(all.iter().all(|&nr| names::name(nr).is_some_and(|n| !n.is_empty())));
        assert!(all.contains(&203) && all.contains(&15) && all.contains(&23) && !all.contains(&101), "ptrace is not there");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        /// No syscall number or argument can panic the VMM or touch anything outside the
        /// process; every result is a value or a Linux errno.
        #[test]
        fn any_call_with_any_arguments_is_handled(calls in proptest::collection::vec(
            (prop_oneof![0u64..335, 400u64..460, any::<u64>()], proptest::array::uniform6(arg())), 1..8)) {
            let dir = tempfile::tempdir().unwrap();
            let f = process(dir.path());
            let p = &mut Locked::lock(&f.p);
            for (nr, args) in calls {
                // Calls that would sleep or wait on the host are not fuzzed.
                // wait4 and waitid would wait for children the fuzzer's forks never start.
                // flock waits for a lock another description of the process may hold.
                if matches!(nr, 7 | 23 | 34 | 35 | 42 | 43 | 44 | 45 | 46 | 47 | 61 | 73 | 128 | 130 | 202 | 230 | 232 | 247 | 270 | 271 | 281 | 288 | 299 | 307 | 441) {
                    continue;
                }
                let mut regs = kvm_regs { rax: nr, rdi: args[0], rsi: args[1], rdx: args[2], r10: args[3], r8: args[4], r9: args[5], ..Default::default() };
                let mut sregs = kvm_sregs::default();
                let call = Call::of(&regs);
                match handle(p, &mut Cpu::new(&mut regs, &mut sregs, 1), &call) {
                    Control::Return(r) => prop_assert!(r as i64 >= -4095, "syscall {} returned {}", nr, r as i64),
                    Control::ExitGroup(_) | Control::MemoryFailed(_) => break,
                    _ => {}
                }
            }
        }
    }
}
