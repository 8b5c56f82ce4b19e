//! End-to-end tests of disaggregated memory: programs run in vNodes whose memory lives on
//! `lego mem-server` processes, with ExCaches much smaller than their working sets, and must
//! print exactly what they print natively. Also: the resident set stays bounded (checked from
//! outside, in /proc/PID/smaps), and a mem-server that dies or stops ends the program with a
//! clear error instead of a hang.
//!
//! Without `/dev/kvm` these tests fail with a clear message, unless `LEGO_SKIP_KVM_TESTS=1`.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lego_testkit as common;
use common::TimedOutput;
use common::{image, kvm, native_stdout as native, stat, Server};

/// A `lego mem-server` process with `extra` options.
fn mem_server(extra: &[&str]) -> Server {
    let mut args = vec!["mem-server", "--listen", "127.0.0.1:0", "--capacity", "1G"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn servers(n: usize) -> Vec<Server> {
    (0..n).map(|_| mem_server(&[])).collect()
}

fn addrs(s: &[Server]) -> String {
    s.iter().map(|m| m.addr.as_str()).collect::<Vec<_>>().join(",")
}

fn lego(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lego"));
    c.arg("run").arg("--mem").arg("256M").args(args).current_dir(std::env::temp_dir()).env("TZ", "UTC");
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn check(out: Output, want: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what}: status {:?}, stderr: {stderr}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{what}: output differs; stderr: {stderr}");
}

/// Runs `prog args` with the ExCache at each percentage of `working_set`, on `servers`
/// mem-servers with 2 MiB vRegions (so the memory spreads over all of them), and compares with
/// the native output.
fn matrix(prog: &str, args: &[&str], working_set: u64, runs: &[(u64, usize, &str)]) {
    if !kvm() {
        return;
    }
    let prog = image(prog);
    let want = native(&prog, args);
    for &(percent, nservers, policy) in runs {
        let s = servers(nservers);
        let excache = (working_set * percent / 100).max(64 << 10) / 4096 * 4096;
        let what = format!("{} {args:?} at {percent}% ExCache ({excache} bytes), {nservers} mem-server(s), {policy}", prog.display());
        let out = lego(&["--mem-server", &addrs(&s), "--excache", &excache.to_string(), "--excache-policy", policy,
                         "--vregion-size", "2M", "--stats"])
            .arg(&prog)
            .args(args)
            .timed_output();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        check(out, &want, &what);
        if percent < 100 {
            assert!(stderr.contains("evictions"), "{what}: no ExCache statistics: {stderr}");
            let evictions = stat(&stderr, "evictions");
            assert!(evictions > 0, "{what}: a {percent}% ExCache evicted nothing: {stderr}");
        }
        if nservers > 1 {
            assert!(stderr.contains(&format!("memory on {nservers} mem-server(s)")), "{what}: not spread: {stderr}");
        }
    }
}

const RUNS: &[(u64, usize, &str)] =
    &[(100, 1, "fifo"), (25, 1, "clock"), (5, 1, "lru"), (25, 3, "clock"), (5, 3, "fifo")];

#[test]
fn checksum_is_identical_at_every_excache_size() {
    // 1 MiB of random read-modify-writes: nearly every access misses at 5%.
    matrix("checksum", &["1", "7"], 1 << 20, RUNS);
}

#[test]
fn sort_is_identical_at_every_excache_size() {
    matrix("sort", &["262144", "3"], 262144 * 8, RUNS);
}

#[test]
fn malloc_heavy_program_is_identical_at_every_excache_size() {
    // mmap, munmap, mremap and brk all go through the home; realloc moves pages between owners.
    matrix("malloc", &["3000"], 8 << 20, &[(100, 1, "fifo"), (25, 3, "lru"), (5, 3, "fifo")]);
}

#[test]
fn eviction_loses_no_write_while_threads_and_the_vmm_write() {
    // 3 threads increment their words of 512 pages while a fourth has read(2) fill a slot of
    // each: with a 64 KiB ExCache (16 lines) every page is evicted while it is being written,
    // by the guest (KVM's D bits) and by the VMM, on 1 and on 3 mem-servers.
    if !kvm() {
        return;
    }
    let prog = image("evictrace");
    let args = ["512", "12", "3"];
    let want = native(&prog, &args);
    for n in [1, 3] {
        let s = servers(n);
        let out = lego(&["--mem-server", &addrs(&s), "--excache", "64K", "--vregion-size", "2M", "--stats"])
            .arg(&prog)
            .args(args)
            .timed_output();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        check(out, &want, &format!("evictrace on {n} mem-server(s)"));
        assert!(stat(&stderr, "dirty flushes") > 1000, "evictrace wrote little back: {stderr}");
    }
}

/// The ExCache faults of a `--stats` run: remote misses, p-local fills and first writes.
fn faults(stderr: &str) -> u64 {
    stat(stderr, "misses (remote fetches)") + stat(stderr, "p-local fills") + stat(stderr, "first writes (dirtied)")
}

#[test]
fn prefetch_keeps_a_sequential_scan_identical_and_saves_faults() {
    if !kvm() {
        return;
    }
    // 4 MiB scanned front to back 4 times through a 1 MiB (25%) ExCache, on 2 mem-servers with
    // 2 MiB vRegions, so windows meet vRegion and region ends.
    let prog = image("scan");
    let args = ["4", "4", "3"];
    let want = native(&prog, &args);
    let run = |prefetch: &str| {
        let s = servers(2);
        let out = lego(&["--mem-server", &addrs(&s), "--excache", "1M", "--vregion-size", "2M", "--prefetch", prefetch, "--stats"])
            .arg(&prog)
            .args(args)
            .timed_output();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        check(out, &want, &format!("scan with --prefetch {prefetch}"));
        stderr
    };
    let off = run("0");
    let on = run("32");
    assert_eq!(stat(&off, "prefetched lines"), 0, "prefetch off prefetched: {off}");
    let prefetched = stat(&on, "prefetched lines");
    assert!(prefetched > 1000, "a sequential scan prefetched only {prefetched} lines: {on}");
    assert!(stat(&on, "prefetched, used") > prefetched / 2, "most prefetched lines should be used: {on}");
    let (f_off, f_on) = (faults(&off), faults(&on));
    assert!(f_on * 3 < f_off, "prefetch should save most faults: {f_on} with it, {f_off} without\n{on}\n{off}");
}

/// Resident bytes of the user-memory mapping (the one of exactly `size` bytes) of process `pid`.
fn resident_of_user_memory(pid: u32, size_kb: u64) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut in_slot = false;
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Size:") {
            in_slot = v.trim().trim_end_matches("kB").trim().parse::<u64>().ok() == Some(size_kb);
        } else if in_slot {
            if let Some(v) = line.strip_prefix("Rss:") {
                return v.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024);
            }
        }
    }
    None
}

#[test]
fn resident_set_stays_within_the_excache() {
    if !kvm() {
        return;
    }
    let s = servers(1);
    let prog = image("sort");
    let want = native(&prog, &["262144", "3"]);
    // The ExCache is the only host memory behind the guest's user memory: one mapping of
    // exactly its size (264 KiB, a size no other mapping of the VMM has),
    // and no mapping the size of the address space (300 MiB) at all.
    let excache: u64 = 264 << 10;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lego"))
        .args(["run", "--mem", "300M", "--mem-server", &s[0].addr, "--excache", "264K"])
        .arg(&prog)
        .args(["262144", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut samples, mut max, mut whole_space) = (0, 0, 0);
    while child.try_wait().unwrap().is_none() {
        if let Some(rss) = resident_of_user_memory(child.id(), excache >> 10) {
            samples += 1;
            max = max.max(rss);
        }
        whole_space += u32::from(resident_of_user_memory(child.id(), 300 << 10).is_some());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    check(out, &want, "sort of 2 MiB with a 264 KiB ExCache");
    assert!(samples >= 5, "only {samples} samples of the VMM's smaps");
    assert!(max <= excache, "resident user memory reached {max} bytes with a {excache}-byte ExCache");
    assert!(max >= excache / 2, "the ExCache frames peaked at {max} resident bytes: were they found?");
    assert_eq!(whole_space, 0, "a mapping the size of the whole address space showed up");
}

/// Starts a long random-access run against one mem-server, sends the server `sig` once the
/// program is well into its run, and returns the server's address, lego's output and how long
/// lego took to end after the signal.
fn lose_the_server_mid_run(sig: i32, extra: &[&str]) -> (String, Output, Duration) {
    let s = servers(1);
    let mut child = lego(&["--mem-server", &s[0].addr, "--excache", "256K"])
        .args(extra)
        .arg(image("checksum"))
        .args(["64", "1"])
        .spawn()
        .unwrap();
    // checksum 64 through a 256 KiB ExCache needs minutes; 1.5 s is well into it.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the program ended before the server was lost");
    s[0].signal(sig);
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    (s[0].addr.clone(), out, started.elapsed())
}

#[test]
fn killed_mem_server_ends_the_program_with_a_clear_error() {
    if !kvm() {
        return;
    }
    let (addr, out, took) = lose_the_server_mid_run(libc::SIGKILL, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(took < Duration::from_secs(20), "took {took:?} to notice");
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    assert!(stderr.contains("memory server") && stderr.contains(&addr), "unclear error: {stderr}");
    assert!(out.stdout.is_empty(), "the program printed after losing its memory: {:?}", out.stdout);
}

#[test]
fn stopped_mem_server_times_out_instead_of_hanging() {
    if !kvm() {
        return;
    }
    let (addr, out, took) = lose_the_server_mid_run(libc::SIGSTOP, &["--mem-timeout", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(took < Duration::from_secs(20), "took {took:?} to give up on a 2 s timeout");
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    assert!(stderr.contains(&format!("{addr} did not answer within 2 s")), "unclear error: {stderr}");
}

#[test]
fn cluster_mismatch_is_refused_naming_both_sides() {
    if !kvm() {
        return;
    }
    let s = mem_server(&["--cluster-id", "7"]);
    let out = lego(&["--mem-server", &s.addr, "--cluster-id", "9"]).arg(image("hello")).timed_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    assert!(stderr.contains("cluster 0x9") && stderr.contains("cluster 0x7"), "stderr: {stderr}");
}

#[test]
fn embedded_mem_server_is_the_default() {
    if !kvm() {
        return;
    }
    let prog = image("sort");
    let want = native(&prog, &["100000", "2"]);
    check(lego(&["--excache", "256K"]).arg(&prog).args(["100000", "2"]).timed_output(), &want, "embedded");
}
