//! Nothing a guest does may end the VMM (exit 125, "a VMM bug") or hang it: each misbehaviour
//! ends the guest, or fails its call, as Linux would. Regression cases run natively and in a
//! vNode and compare; the fuzzers run in vNodes and must end cleanly within their deadline.
//!
//! Without `/dev/kvm` these tests fail with a clear message, unless `LEGO_SKIP_KVM_TESTS=1`.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use lego_testkit as common;
use common::{image, kvm, lego, native, run, Run};

/// What must never appear in what a vNode's VMM prints.
fn assert_no_vmm_failure(what: &str, r: &Run) {
    assert_ne!(r.status, Some(125), "{what}: the VMM failed: {}", r.stderr);
    for bad in ["VMM bug", "panicked", " failed: "] {
        assert!(!r.stderr.contains(bad), "{what}: the VMM said {bad:?}: {}", r.stderr);
    }
}

/// Runs `name args` natively and in a vNode (each in a fresh directory) and compares output and
/// status.
fn same_as_native(name: &str, args: &[&str]) -> Run {
    let prog = image(name);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let n = native(&prog, args, a.path());
    let l = run(lego(&[], &prog, args, b.path()), Duration::from_secs(120), &format!("{name} {args:?}"));
    let what = format!("{name} {args:?}");
    assert_no_vmm_failure(&what, &l);
    assert_eq!(l.stdout, n.stdout, "{what}: stdout differs (vNode stderr: {})", l.stderr);
    assert_eq!(l.status, n.status, "{what}: status differs (vNode stderr: {})", l.stderr);
    l
}

#[test]
fn munmap_reaching_below_the_lowest_address() {
    if !kvm() {
        return;
    }
    for prog in ["munmap_low", "munmap_low.musl"] {
        same_as_native(prog, &["0"]);
        // Over its own code: SIGSEGV on return, alone and in a forked child.
        assert_eq!(same_as_native(prog, &["1"]).status, Some(128 + libc::SIGSEGV));
        let child = same_as_native(prog, &["2"]);
        assert!(child.stdout.contains("child killed by signal 11"), "{}", child.stdout);
    }
}

#[test]
fn privileged_instructions_and_stub_jumps_get_linux_signals() {
    if !kvm() {
        return;
    }
    let every = same_as_native("privop", &[]);
    assert_eq!(every.stdout.lines().count(), 37, "{}", every.stdout);
    let stubs = same_as_native("privop", &["stubs"]);
    assert!(stubs.stdout.contains("99 calls into the stub page: exits 0; signal 11: 99"), "{}", stubs.stdout);
    let handled = same_as_native("privop", &["handled"]);
    assert_eq!(handled.stdout, "caught signal 11\ncaught signal 11\n");
    // A jump to an exception stub, alone (the case of the issue).
    assert_eq!(same_as_native("privop", &["32"]).status, Some(128 + libc::SIGSEGV));
    // `int 0x80` is SIGSEGV, as on a Linux without the 32-bit emulation (this host may have it).
    let d = tempfile::tempdir().unwrap();
    let r = run(lego(&[], &image("privop"), &["int80"], d.path()), Duration::from_secs(60), "privop int80");
    assert_no_vmm_failure("privop int80", &r);
    assert_eq!(r.status, Some(128 + libc::SIGSEGV), "{}", r.stderr);
}

#[test]
fn a_port_read_from_user_mode_is_a_handled_sigsegv_at_the_instruction() {
    // 0x10 and 0x23 are ports the stubs keep open: KVM would complete the read on the next
    // entry, past the registers set for the handler (the instruction fuzzer hung there).
    if kvm() {
        let r = same_as_native("portread", &["0x10", "0x23", "0x300", "0x80"]);
        assert_eq!(r.stdout.matches("at the in instruction: yes").count(), 4, "{}", r.stdout);
    }
}

#[test]
fn reading_a_piped_stdout_fails_at_once() {
    if !kvm() {
        return;
    }
    // Both runs have pipes for stdout and stderr (`common::run`); a hang fails the run.
    let r = same_as_native("readout", &[]);
    assert_eq!(r.stdout.matches("Bad file descriptor").count(), 4, "{}", r.stdout);
}

/// Runs the guest fuzzer `kind` in a vNode, fails on anything but a clean end in time, and
/// prints its figures.
fn fuzz(kind: &str, batches: u32, per_batch: u32, seed: u32) {
    let dir = tempfile::tempdir().unwrap();
    let args = [kind.to_string(), batches.to_string(), per_batch.to_string(), seed.to_string()];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let r = run(lego(&[], &image("fuzz"), &args, Path::new(dir.path())), Duration::from_secs(240), &format!("fuzz {kind}"));
    assert_no_vmm_failure(&format!("fuzz {args:?}"), &r);
    assert_eq!(r.status, Some(0), "fuzz {args:?}: {}{}", r.stdout, r.stderr);
    eprintln!("{} (the whole run: {:.1} s)", r.stdout.trim_end(), started.elapsed().as_secs_f64());
}

#[test]
fn syscall_fuzzer() {
    if kvm() {
        fuzz("sys", 120, 1000, 1);
    }
}

#[test]
fn instruction_fuzzer() {
    if kvm() {
        fuzz("insn", 60, 1000, 1);
    }
}
