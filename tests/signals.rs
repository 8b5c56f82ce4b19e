//! End-to-end tests of signal handlers: each case of `signals` (glibc and musl) prints in a
//! vNode what it prints natively and ends with the same status: `siginfo` fields, signals to a
//! thread running user code and to the process, fault handlers that `siglongjmp` out, system
//! calls interrupted and restarted (`SA_RESTART`) or not, `sigsuspend`, `sigwaitinfo`,
//! `sigtimedwait` and `sigwait`, the alternate stack,
//! handler masks, the FPU state of the interrupted code, `uc_mcontext` changes taking effect,
//! and a garbage frame given to `rt_sigreturn`; signals ignored by the caller of `lego run`
//! stay ignored.
//!
//! Without `/dev/kvm` these tests fail with a clear message, unless `LEGO_SKIP_KVM_TESTS=1`.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lego_testkit as common;
use common::{image, kvm, lego, native, run, Run};

/// `lego run OPTIONS signals CASE` (glibc).
fn signals_in_lego(options: &[&str], case: &str) -> Run {
    let prog = image("signals");
    let dir = prog.parent().unwrap().to_path_buf();
    run(lego(options, &prog, &[case], &dir), Duration::from_secs(30), &format!("signals {case} {options:?}"))
}

const CASES: &[&str] =
    &["info", "thread", "segv", "fpe", "restart", "suspend", "wait", "altstack", "masks", "sse", "context", "badframe"];

#[test]
fn every_case_matches_native() {
    if !kvm() {
        return;
    }
    let dir = image("signals").parent().unwrap().to_path_buf();
    for prog in ["signals", "signals.musl"] {
        let prog = image(prog);
        for case in CASES {
            let args = [*case];
            let want = native(&prog, &args, &dir);
            let what = format!("{} {case}", prog.display());
            let got = run(lego(&[], &prog, &args, &dir), Duration::from_secs(30), &what);
            assert_eq!(got.stdout, want.stdout, "{what}: output; stderr: {}", got.stderr);
            assert_eq!(got.status, want.status, "{what}: status; stderr: {}", got.stderr);
        }
    }
}

/// Signals ignored by whatever starts `lego run` stay ignored in its program, as they do across
/// `execve`: `SigIgn` in `/proc/self/status` is what it is natively, with `SIGINT` and
/// `SIGQUIT` in it. (A `make test` started as a background job ran every test so.)
#[test]
fn signals_the_caller_ignored_stay_ignored() {
    if !kvm() {
        return;
    }
    let busybox = image("busybox");
    let dir = busybox.parent().unwrap().to_path_buf();
    let args = ["grep", "SigIgn", "/proc/self/status"];
    let mut n = common::native_command(&busybox);
    n.args(args).current_dir(&dir);
    let mut l = lego(&[], &busybox, &args, &dir);
    for c in [&mut n, &mut l] {
        common::with_ignored(c, &[libc::SIGINT, libc::SIGQUIT]);
    }
    let want = run(n, Duration::from_secs(30), "native grep SigIgn");
    let got = run(l, Duration::from_secs(30), "grep SigIgn in a vNode");
    assert_eq!((&got.stdout, got.status), (&want.stdout, want.status), "stderr: {}", got.stderr);
    let mask = u64::from_str_radix(want.stdout.trim().rsplit('\t').next().unwrap(), 16).unwrap();
    assert_eq!(mask & 0b110, 0b110, "SIGINT and SIGQUIT ignored: {}", want.stdout);
}

/// Signals blocked by whatever starts `lego run` stay blocked in its program, as the mask does
/// across `execve`: `SigBlk` is what it is natively. The VMM's own kick signal is among them:
/// its vCPU threads unblock it for themselves, so an `execve` still stops a spinning thread
/// (`procs exec-threads`, which hung before).
#[test]
fn signals_the_caller_blocked_stay_blocked_and_vcpus_still_stop() {
    if !kvm() {
        return;
    }
    let blocked = [libc::SIGHUP, libc::SIGUSR1, lego_vmm::kick::kick_signal()];
    for (prog, args) in [("busybox", &["grep", "SigBlk", "/proc/self/status"][..]), ("procs", &["exec-threads", "/procs"])] {
        let prog = image(prog);
        let dir = prog.parent().unwrap().to_path_buf();
        let native_args: Vec<String> = args.iter().map(|a| if *a == "/procs" { prog.display().to_string() } else { a.to_string() }).collect();
        let mut n = common::native_command(&prog);
        n.args(&native_args).current_dir(&dir);
        let mut l = lego(&[], &prog, args, &dir);
        for c in [&mut n, &mut l] {
            common::with_blocked(c, &blocked);
        }
        let want = run(n, Duration::from_secs(30), &format!("native {args:?}"));
        let got = run(l, Duration::from_secs(30), &format!("{args:?} in a vNode"));
        assert_eq!((&got.stdout, got.status), (&want.stdout, want.status), "{args:?}: stderr: {}", got.stderr);
    }
}

/// A bad frame ends the program with SIGSEGV and says why; the VMM itself is fine (it reports
/// the death as a status, not an error of its own).
#[test]
fn a_garbage_frame_is_the_programs_sigsegv() {
    if !kvm() {
        return;
    }
    let got = signals_in_lego(&[], "badframe");
    assert_eq!(got.status, Some(139), "{}", got.stderr);
    assert!(got.stderr.contains("killed by SIGSEGV: bad signal frame at"), "{}", got.stderr);
    assert!(got.stderr.contains("in rt_sigreturn: non-canonical rip"), "{}", got.stderr);
}

/// `--trace-syscalls` shows each handler's way back, and `--stats` counts it.
#[test]
fn sigreturn_is_traced_and_counted() {
    if !kvm() {
        return;
    }
    let traced = signals_in_lego(&["--trace-syscalls"], "info");
    assert_eq!(traced.status, Some(0), "{}", traced.stderr);
    // raise, kill and tgkill each return 0 before their handler runs.
    assert_eq!(traced.stderr.matches("] rt_sigreturn() = 0").count(), 3, "{}", traced.stderr);
    let counted = signals_in_lego(&["--stats"], "info");
    assert_eq!(common::stat(&counted.stderr, "rt_sigreturn"), 3, "{}", counted.stderr);
}

/// What a test does to a program on its terminal.
enum Step {
    /// Sends it this signal with `kill`.
    Signal(i32),
    /// Types these bytes at its terminal.
    Type(&'static [u8]),
}

/// Starts `cmd` with a new pseudo-terminal as its standard input, output and error and as its
/// controlling terminal (its own session), waits until it printed the line `ready`, then
/// takes each step and waits for the output that follows it (`^C` discards what the
/// terminal has not delivered yet, so each step's output is read before the next step), and
/// returns all it printed (without CRs) and its status.
fn on_its_own_terminal(mut cmd: std::process::Command, steps: &[(Step, &str)]) -> (String, Option<i32>) {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let (mut master, slave) = common::openpty();
    cmd.stdin(slave.try_clone().unwrap()).stdout(slave.try_clone().unwrap()).stderr(slave);
    // SAFETY: the closure runs in the forked child before exec and makes two system calls,
    // which are async-signal-safe: a new session, whose controlling terminal is its stdin.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let what = format!("{:?}", cmd.get_program());
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let started = std::time::Instant::now();
    let mut wait_for = |master: &mut std::fs::File, out: &mut Vec<u8>, text: &str| {
        let want = text.replace('\n', "\r\n");
        while !String::from_utf8_lossy(out).contains(&want) {
            assert!(started.elapsed() < Duration::from_secs(120), "{what}: no {text:?} in {:?}", String::from_utf8_lossy(out));
            match master.read(&mut buf) {
                Ok(n @ 1..) => out.extend_from_slice(&buf[..n]),
                _ => panic!("{what}: the terminal closed before {text:?}: {:?}", String::from_utf8_lossy(out)),
            }
        }
    };
    wait_for(&mut master, &mut out, "ready\n");
    for (step, then) in steps {
        match step {
            // SAFETY: plain system call on the child's pid.
            Step::Signal(sig) => assert_eq!(unsafe { libc::kill(child.id() as i32, *sig) }, 0),
            Step::Type(bytes) => master.write_all(bytes).unwrap(),
        }
        wait_for(&mut master, &mut out, then);
    }
    // Reading the master fails with EIO once no descriptor of the terminal is open.
    while let Ok(n @ 1..) = master.read(&mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
    let status = child.wait().unwrap();
    (String::from_utf8_lossy(&out).replace('\r', ""), status.code())
}

/// Signals sent to `lego run` reach its program, as `docker run` passes them on (`sigreport`,
/// glibc and musl, against its native run): a window change, and `^C` at its terminal, which
/// the terminal sends to its foreground job, and which interrupts the program (its handler
/// runs), not the VMM; `^C` at an interactive shell, which reaches the job the shell gave the
/// terminal to; `kill -TERM` of `lego run`; and a program that does not catch `SIGTERM` ends
/// with the status a native run gives.
#[test]
fn signals_sent_to_lego_run_reach_its_program() {
    if !kvm() {
        return;
    }
    let steps = [(Step::Signal(libc::SIGWINCH), "got SIGWINCH\n"), (Step::Type(b"\x03"), "got SIGINT\n")];
    let killed = [(Step::Signal(libc::SIGTERM), "got SIGTERM\n")];
    for prog in ["sigreport", "sigreport.musl"] {
        let prog = image(prog);
        let dir = prog.parent().unwrap().to_path_buf();
        for (steps, want) in [(&steps[..], "ready\ngot SIGWINCH\n^Cgot SIGINT\n"), (&killed[..], "ready\ngot SIGTERM\n")] {
            let mut native = common::native_command(&prog);
            native.current_dir(&dir);
            let (n, l) = (on_its_own_terminal(native, steps), on_its_own_terminal(lego(&[], &prog, &[], &dir), steps));
            assert_eq!(n, (want.to_string(), Some(3)), "{} natively", prog.display());
            assert_eq!(l, n, "{} in a vNode", prog.display());
        }
    }
    let busybox = image("busybox");
    let dir = busybox.parent().unwrap().to_path_buf();
    // An interactive shell with job control gives the terminal to its foreground job
    // (`tcsetpgrp`): `^C` interrupts the job and not the shell, which goes on. The job says
    // when it runs (the shell's child gives itself the terminal before it runs the command).
    let shell = [(Step::Type(b"sh -c 'echo started; exec sleep 100'\n"), "started\n"), (Step::Type(b"\x03"), "^C"), (Step::Type(b"echo after $?; exit\n"), "after 130\n")];
    let interactive = ["sh", "-c", "echo ready; exec /busybox sh -i"];
    let mut native = common::native_command(&busybox);
    native.args(["sh", "-c", &format!("echo ready; exec {} sh -i", busybox.display())]).current_dir(&dir);
    for (what, cmd) in [("natively", native), ("in a vNode", lego(&[], &busybox, &interactive, &dir))] {
        let started = std::time::Instant::now();
        let (out, status) = on_its_own_terminal(cmd, &shell);
        assert_eq!(status, Some(0), "busybox sh -i {what}: {out}");
        assert!(started.elapsed() < Duration::from_secs(60), "^C ended the foreground sleep {what} at once: {:?}", started.elapsed());
    }
    let started = std::time::Instant::now();
    let sleeper = lego(&[], &busybox, &["sh", "-c", "echo ready; exec /busybox sleep 60"], &dir);
    let (out, status) = on_its_own_terminal(sleeper, &[(Step::Signal(libc::SIGTERM), "")]);
    assert_eq!((out.as_str(), status), ("ready\n", Some(128 + libc::SIGTERM)), "a sleep in a vNode, sent SIGTERM");
    assert!(started.elapsed() < Duration::from_secs(50), "SIGTERM ended the sleep at once: {:?}", started.elapsed());
}
