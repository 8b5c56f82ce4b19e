//! End-to-end tests of the Linux ABI breadth of issue 17: each case of `abi` (glibc and musl)
//! prints in a vNode what it prints natively and ends with the same status. The cases:
//! pthreads workers pinning themselves with `sched_setaffinity` (the assertion a well-known
//! map-reduce suite aborts on), the `sched_*` calls, nice values and I/O priorities, and
//! `personality`; interval and POSIX timers
//! delivering signals, timerfds; queued real-time signals in order, `rt_tgsigqueueinfo` and
//! signalfd; `getrusage`/`times` with real CPU time; record locks across 4 processes of one
//! vNode, `EDEADLK`, OFD locks, `flock` and an interrupted `F_SETLKW`; `MAP_SHARED` write-back
//! seen by `read` after `munmap`; the file calls (`memfd_create`, `sendfile`,
//! `copy_file_range`, `fallocate`, `close_range`, `preadv2`, `pidfd_open`, `execveat`);
//! FIFOs; `PROT_NONE` pages; memory shared between processes (anonymous, POSIX and
//! System V); job control (stop and continue, what `wait4`, `waitid` and `SIGCHLD` say of it);
//! and capabilities (`capget`/`capset`, the `prctl` options, and what `setresuid`,
//! `setfsuid`, `seteuid` and `execve` do to the sets).
//!
//! Cases that make files run one after another (they share the image directory).
//! Without `/dev/kvm` these tests fail with a clear message, unless `LEGO_SKIP_KVM_TESTS=1`.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lego_testkit as common;
use common::{image, kvm, lego, native, run, BUSYBOX_LINKS_SCRIPT};

fn matches_native(case: &str) {
    if !kvm() {
        return;
    }
    let dir = image("abi").parent().unwrap().to_path_buf();
    for prog in ["abi", "abi.musl"] {
        let prog = image(prog);
        let args = [case];
        let want = native(&prog, &args, &dir);
        assert_eq!(
            want.status,
            Some(0),
            "{} {case} natively: {}{}",
            prog.display(),
            want.stdout,
            want.stderr
        );
        let what = format!("{} {case}", prog.display());
        let got = run(
            lego(&[], &prog, &args, &dir),
            Duration::from_secs(60),
            &what,
        );
        assert_eq!(
            got.stdout, want.stdout,
            "{what}: output; stderr: {}",
            got.stderr
        );
        assert_eq!(
            got.status, want.status,
            "{what}: status; stderr: {}",
            got.stderr
        );
    }
}

#[test]
fn affinity_and_scheduling_match_native() {
    matches_native("sched");
}

#[test]
fn timers_match_native() {
    matches_native("timers");
}

#[test]
fn queued_signals_and_signalfd_match_native() {
    matches_native("rtsig");
}

#[test]
fn job_control_stop_and_continue_match_native() {
    matches_native("jobs");
}

#[test]
fn capabilities_and_their_changes_match_native() {
    matches_native("caps");
}

#[test]
fn resource_usage_matches_native() {
    matches_native("usage");
}

/// `PROT_NONE` pages fault on every access (`SEGV_ACCERR`), resident or not, and keep their
/// contents for when `mprotect` gives access back.
#[test]
fn prot_none_pages_fault_as_natively() {
    matches_native("protnone");
}

/// `MAP_SHARED | MAP_ANONYMOUS` memory is shared with children: writes both ways,
/// process-shared semaphores and mutexes (futex waits and wakes across processes), and
/// `mprotect`, `munmap`, `MADV_DONTNEED` and `mremap` of it.
#[test]
fn shared_anonymous_memory_matches_native() {
    matches_native("shared");
}

/// POSIX shared memory and named semaphores (`shm_open`, `sem_open`: files of `/dev/shm`, made
/// in the vNode's files) and memfds, each mapped by both processes on their own.
#[test]
fn posix_shared_memory_matches_native() {
    matches_native("posixshm");
}

/// System V shared memory: a keyed segment attached by a parent and its child (`nattch`
/// follows attaches, the fork and the child's exit), `SHM_RND`, `IPC_SET`, and `IPC_RMID`
/// while attached.
#[test]
fn system_v_shared_memory_matches_native() {
    matches_native("sysvshm");
}

#[test]
fn system_v_semaphores_match_native() {
    matches_native("sysvsem");
}

#[test]
fn system_v_message_queues_match_native() {
    matches_native("sysvmsg");
}

#[test]
fn posix_message_queues_match_native() {
    matches_native("mqueue");
}

/// The cases that make files in the image directory, one after another.
#[test]
fn locks_shared_mappings_and_file_calls_match_native() {
    for case in ["locks", "mapshared", "files", "fifo", "links", "attrs"] {
        matches_native(case);
    }
}

/// busybox `ln -s`, `ln`, `cp -p`, `touch -d`, `chmod`, `chown` and `stat -c` print in a vNode
/// what they print natively.
#[test]
fn busybox_links_and_attributes_match_native() {
    if !kvm() {
        return;
    }
    let bb = image("busybox");
    let args = ["sh", "-c", BUSYBOX_LINKS_SCRIPT];
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let want = native(&bb, &args, a.path());
    assert!(want.stdout.ends_with("end\n"), "natively: {}{}", want.stdout, want.stderr);
    let got = run(lego(&[], &bb, &args, b.path()), Duration::from_secs(60), "busybox links");
    assert_eq!(got.stdout, want.stdout, "stderr: {}", got.stderr);
    assert_eq!(got.status, want.status);
}

/// `--stats` says how many system calls lego implements, how much memory was locked, and how
/// much was shared between processes (`abi mapshared` maps a file shared).
#[test]
fn stats_count_the_implemented_calls() {
    if !kvm() {
        return;
    }
    let prog = image("abi");
    let dir = prog.parent().unwrap().to_path_buf();
    let got = run(
        lego(&["--stats"], &prog, &["mapshared"], &dir),
        Duration::from_secs(60),
        "abi mapshared --stats",
    );
    assert_eq!(got.status, Some(0), "{}", got.stderr);
    let line = got
        .stderr
        .lines()
        .find(|l| l.contains("system calls implemented"))
        .expect("the count");
    let n: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(n >= 160, "{line}");
    assert!(
        got.stderr.contains("lego: mlock'd memory at most"),
        "{}",
        got.stderr
    );
    assert!(got.stderr.contains("lego: memory shared between processes at most 12 KiB at once"), "{}", got.stderr);
}
