//! The Linux system-call interface of a vNode process.
//!
//! [`handle`] decodes the call from the guest registers, runs its handler against the
//! [`Process`] state and puts the result in RAX. Handlers are plain functions of the process,
//! the CPU registers and six argument words, so they can be tested without KVM.

mod fs;
mod info;
mod mem;
pub mod names;
mod poll;
mod proc;
mod time;

use std::fmt::Write as _;

use kvm_bindings::{kvm_regs, kvm_sregs};

use crate::errno::{Errno, SysResult};
use crate::process::Process;

/// The registers of the calling vCPU, for the calls that read or change them.
pub struct Cpu<'a> {
    pub regs: &'a mut kvm_regs,
    pub sregs: &'a mut kvm_sregs,
}

/// The six argument registers.
pub type Args = [u64; 6];

type Handler = fn(&mut Process, &mut Cpu<'_>, Args) -> SysResult<u64>;

/// How to print each argument in a trace: `d` signed, `u` unsigned, `x` hex, `o` octal,
/// `f` fd (AT_FDCWD by name), `s` C string, `b` buffer whose length is the next argument,
/// `B` buffer filled by the call (length = result).
type Signature = &'static str;

/// The system calls lego implements.
fn lookup(nr: u64) -> Option<(Signature, Handler)> {
    use fs::*;
    use info::*;
    use mem::*;
    use poll::*;
    use proc::*;
    use time::*;
    Some(match nr {
        0 => ("fBu", read),
        1 => ("fbu", write),
        2 => ("sxo", open),
        3 => ("f", close),
        4 => ("sx", stat),
        5 => ("fx", fstat),
        6 => ("sx", lstat),
        7 => ("xud", poll),
        8 => ("fdd", lseek),
        9 => ("xuxxfd", mmap),
        10 => ("xux", mprotect),
        11 => ("xu", munmap),
        12 => ("x", brk),
        13 => ("dxxu", rt_sigaction),
        14 => ("dxxu", rt_sigprocmask),
        16 => ("fxx", ioctl),
        17 => ("fBud", pread64),
        18 => ("fbud", pwrite64),
        19 => ("fxd", readv),
        20 => ("fxd", writev),
        21 => ("sd", access),
        22 => ("x", pipe),
        24 => ("", sched_yield),
        25 => ("xuuxx", mremap),
        28 => ("xud", madvise),
        32 => ("f", dup),
        33 => ("ff", dup2),
        35 => ("xx", nanosleep),
        39 => ("", getpid),
        60 => ("d", exit),
        62 => ("dd", kill),
        63 => ("x", uname),
        72 => ("fdx", fcntl),
        74 => ("f", fsync),
        75 => ("f", fdatasync),
        77 => ("fd", ftruncate),
        79 => ("xu", getcwd),
        80 => ("s", chdir),
        81 => ("f", fchdir),
        82 => ("ss", rename),
        83 => ("so", mkdir),
        84 => ("s", rmdir),
        87 => ("s", unlink),
        89 => ("sxu", readlink),
        95 => ("o", umask),
        96 => ("xx", gettimeofday),
        97 => ("dx", getrlimit),
        99 => ("x", sysinfo),
        102 => ("", getuid),
        104 => ("", getgid),
        105 => ("d", setuid),
        106 => ("d", setgid),
        107 => ("", geteuid),
        108 => ("", getegid),
        109 => ("dd", setpgid),
        110 => ("", getppid),
        111 => ("", getpgrp),
        112 => ("", setsid),
        113 => ("dd", setreuid),
        114 => ("dd", setregid),
        115 => ("dx", getgroups),
        116 => ("dx", setgroups),
        117 => ("ddd", setresuid),
        118 => ("xxx", getresuid),
        119 => ("ddd", setresgid),
        120 => ("xxx", getresgid),
        121 => ("d", getpgid),
        124 => ("d", getsid),
        131 => ("xx", sigaltstack),
        157 => ("dxxxx", prctl),
        158 => ("dx", arch_prctl),
        160 => ("dx", setrlimit),
        186 => ("", gettid),
        201 => ("x", time),
        200 => ("dd", tkill),
        204 => ("dux", sched_getaffinity),
        217 => ("fxu", getdents64),
        218 => ("x", set_tid_address),
        228 => ("dx", clock_gettime),
        229 => ("dx", clock_getres),
        230 => ("ddxx", clock_nanosleep),
        231 => ("d", exit_group),
        234 => ("ddd", tgkill),
        257 => ("fsxo", openat),
        258 => ("fso", mkdirat),
        262 => ("fsxx", newfstatat),
        263 => ("fsx", unlinkat),
        264 => ("fsfs", renameat),
        267 => ("fsxu", readlinkat),
        269 => ("fsd", faccessat),
        271 => ("xuxxu", ppoll),
        273 => ("xu", set_robust_list),
        292 => ("ffx", dup3),
        293 => ("xx", pipe2),
        302 => ("ddxx", prlimit64),
        316 => ("fsfsx", renameat2),
        318 => ("xux", getrandom),
        332 => ("fsxxx", statx),
        334 => ("xudx", rseq),
        439 => ("fsdx", faccessat2),
        _ => return None,
    })
}

/// Handles the system call the vCPU stopped on; the result is in RAX afterwards. `trace` gets
/// one strace-style line per call.
pub fn handle(p: &mut Process, cpu: &mut Cpu<'_>, trace: Option<&mut dyn std::io::Write>) {
    let nr = cpu.regs.rax;
    let args: Args = [cpu.regs.rdi, cpu.regs.rsi, cpu.regs.rdx, cpu.regs.r10, cpu.regs.r8, cpu.regs.r9];
    p.stats.calls += 1;
    *p.stats.by_nr.entry(nr).or_default() += 1;
    let (sig, result) = match lookup(nr) {
        Some((sig, handler)) => (sig, handler(p, cpu, args)),
        None => {
            *p.stats.unimplemented.entry(nr).or_default() += 1;
            tracing::debug!(nr, name = names::name(nr).unwrap_or("?"), "unimplemented system call");
            ("xxxxxx", Err(Errno::ENOSYS))
        }
    };
    let ret = match result {
        Ok(v) => v,
        Err(e) => (-(e.0 as i64)) as u64,
    };
    cpu.regs.rax = ret;
    if let Some(out) = trace {
        let line = format_call(p, nr, sig, &args, ret);
        // A failing trace sink must not change what the program sees.
        let _ = writeln!(out, "[{}] {}", p.pid, line);
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
        p: Process,
        _server: mem_server::Handle,
    }

    fn process(root: &std::path::Path) -> Fuzzed {
        let fs = Arc::new(HostDir::new(root).unwrap());
        let crate::testing::TestMm { mm, server } = crate::testing::mm(64 << 20);
        let mut p = Process::new(mm, fs, "fuzz".into(), b"fuzz");
        let heap = p.mm.mmap(0, 1 << 16, crate::paging::Prot::RW, 0x22, lego_proto::vma::VmaKind::Anon).unwrap();
        p.mm.write_user(heap, b"/tmp\0x\0").unwrap();
        Fuzzed { p, _server: server }
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

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        /// No syscall number or argument can panic the VMM or touch anything outside the
        /// process; every result is a value or a Linux errno.
        #[test]
        fn any_call_with_any_arguments_is_handled(calls in proptest::collection::vec(
            (prop_oneof![0u64..335, 400u64..460, any::<u64>()], proptest::array::uniform6(arg())), 1..8)) {
            let dir = tempfile::tempdir().unwrap();
            let mut f = process(dir.path());
            let p = &mut f.p;
            for (nr, args) in calls {
                // Calls that would sleep or wait on the host are not fuzzed.
                if matches!(nr, 7 | 35 | 230 | 271) {
                    continue;
                }
                let mut regs = kvm_regs { rax: nr, rdi: args[0], rsi: args[1], rdx: args[2], r10: args[3], r8: args[4], r9: args[5], ..Default::default() };
                let mut sregs = kvm_sregs::default();
                handle(p, &mut Cpu { regs: &mut regs, sregs: &mut sregs }, None);
                let r = regs.rax as i64;
                prop_assert!(r >= -4095, "syscall {} returned {}", nr, r);
                if p.exit.is_some() {
                    break;
                }
            }
        }
    }
}
