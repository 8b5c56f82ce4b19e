//! End-to-end tests of multi-threaded programs: thread semantics against native runs (exit and
//! exit_group, a crashing thread, futex timeouts, robust mutexes), the threaded workloads at
//! 100% and 25% ExCache with their memory on a separate mem-server, and the shared-ExCache stress
//! program at 5%, which checks every word it reads.
//!
//! Without `/dev/kvm` these tests fail with a clear message, unless `LEGO_SKIP_KVM_TESTS=1`.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lego_testkit as common;
use common::{image, kvm, lego, native, run, stat, Server};

fn out_dir() -> std::path::PathBuf {
    image("words.txt").parent().unwrap().to_path_buf()
}

/// Each case of `threads` (semantics), glibc and musl, prints what it prints natively and
/// ends with the same status, within a few seconds: a thread's `exit` ends only the thread,
/// the last thread's status is the process's, `exit_group` and a crash in one thread end the
/// others wherever they wait.
#[test]
fn thread_semantics_match_native() {
    if !kvm() {
        return;
    }
    let dir = out_dir();
    let cases: &[&[&str]] = &[&["basic", "4"], &["exit"], &["leader-exit"], &["exit-group"], &["segv"], &["futex"], &["robust"]];
    for prog in ["threads", "threads.musl"] {
        for args in cases {
            // musl's pthread_join waits for its own bookkeeping, which a raw exit(2) skips: the
            // case hangs natively too.
            if prog == "threads.musl" && args[0] == "exit" {
                continue;
            }
            let prog = image(prog);
            let want = native(&prog, args, &dir);
            let what = format!("{} {args:?}", prog.display());
            let got = run(lego(&[], &prog, args, &dir), Duration::from_secs(30), &what);
            assert_eq!(got.status, want.status, "{what}: status; stderr: {}", got.stderr);
            assert_eq!(got.stdout, want.stdout, "{what}: output; stderr: {}", got.stderr);
            if args[0] == "segv" {
                assert_eq!(got.status, Some(139));
                assert!(got.stderr.contains("killed by SIGSEGV: page fault at address 0x0"), "{what}: {}", got.stderr);
            }
        }
    }
}

/// `--stats` sums the calls of every thread and says how many threads were started.
#[test]
fn stats_count_the_threads() {
    if !kvm() {
        return;
    }
    let dir = out_dir();
    let got = run(lego(&["--stats"], &image("threads"), &["basic", "6"], &dir), Duration::from_secs(30), "threads basic 6");
    assert_eq!(got.status, Some(0), "{}", got.stderr);
    assert!(got.stderr.contains("6 thread(s) started besides the first"), "{}", got.stderr);
    // glibc's pthread_create uses clone3.
    assert_eq!(stat(&got.stderr, "clone3"), 6, "{}", got.stderr);
}

/// Lines resident at exit, from `--stats`.
fn resident(stderr: &str) -> u64 {
    let line = stderr.lines().find(|l| l.contains("resident at exit")).unwrap_or_else(|| panic!("no ExCache line: {stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "resident").unwrap();
    words[at - 1].parse().unwrap()
}

/// Runs `prog args` on a separate mem-server at 100% ExCache, then with 25% of the lines that
/// run left resident; both must print exactly what the program prints natively.
fn at_100_and_25_percent(prog: &str, args: &[&str]) {
    let dir = out_dir();
    let prog = image(prog);
    let want = native(&prog, args, &dir);
    assert_eq!(want.status, Some(0));
    let server = Server::start(&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "2G"]);
    let mut excache = "256M".to_string();
    for percent in [100, 25] {
        let what = format!("{} {args:?} at {percent}% ExCache ({excache})", prog.display());
        let options = ["--mem-server", server.addr.as_str(), "--excache", &excache, "--stats"];
        let got = run(lego(&options, &prog, args, &dir), Duration::from_secs(120), &what);
        assert_eq!(got.status, Some(0), "{what}: stderr: {}", got.stderr);
        assert_eq!(got.stdout, want.stdout, "{what}: output differs; stderr: {}", got.stderr);
        if percent == 100 {
            excache = ((resident(&got.stderr) / 4).max(64) * 4096).to_string();
        } else {
            assert!(stat(&got.stderr, "evictions") > 0, "{what}: nothing was evicted: {}", got.stderr);
        }
    }
}

#[test]
fn pthreads_reduction_matches_native() {
    if kvm() {
        at_100_and_25_percent("reduce", &["1000000", "4"]);
    }
}

#[test]
fn word_count_matches_native() {
    if kvm() {
        at_100_and_25_percent("wordcount", &["words.txt", "4"]);
        at_100_and_25_percent("wordcount.musl", &["words.txt", "3"]);
    }
}

#[test]
fn rust_threads_and_channels_match_native() {
    if kvm() {
        at_100_and_25_percent("rust-threads", &["4", "200000"]);
    }
}

/// Four threads write, read back and cross-check every word of 2 MiB of shared pages, with an
/// ExCache of 5% of it (26 lines), three times: lines are evicted under the threads all the time,
/// and a lost write or a stale line is a wrong word, which the program reports.
#[test]
fn shared_excache_stress_at_5_percent() {
    if !kvm() {
        return;
    }
    let dir = out_dir();
    let server = Server::start(&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "1G"]);
    let excache = (2u64 << 20) / 20 / 4096 * 4096;
    for (prog, threads) in [("stress", "4"), ("stress.musl", "3"), ("stress", "4")] {
        let prog = image(prog);
        let args = [threads, "2", "4"];
        let want = native(&prog, &args, &dir);
        let what = format!("{} {args:?} at 5% ExCache", prog.display());
        let options = ["--mem-server", server.addr.as_str(), "--excache", &excache.to_string(), "--stats"];
        let got = run(lego(&options, &prog, &args, &dir), Duration::from_secs(120), &what);
        assert_eq!(got.stdout, want.stdout, "{what}: stderr: {}", got.stderr);
        assert_eq!(got.status, Some(0), "{what}: stderr: {}", got.stderr);
        assert!(stat(&got.stderr, "dirty flushes") > 1000, "{what}: too few write-backs to mean anything: {}", got.stderr);
    }
}
