//! The RDMA transport (`--transport tcp|rdma|auto`, built with `--features rdma`).
//!
//! What runs everywhere: `rdma` on a host without a usable RDMA device fails at once with one
//! line naming the device looked for and the peer, for `lego run`, `lego mem-server` and the
//! benchmarks; `auto` falls back to TCP, says so in the log, and runs a program byte-identical to
//! native (a sequential scan at 25% ExCache on two mem-servers). What needs
//! `/dev/infiniband/uverbs*` (skipped elsewhere, with a message): the checksum at 25% ExCache on
//! two mem-servers over RDMA, byte-identical to native.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lego_testkit as common;
use common::TimedOutput;
use common::{image, kvm, native_stdout as native, Server};

/// Whether this host has an RDMA device node.
fn rdma_device() -> bool {
    std::fs::read_dir("/dev/infiniband")
        .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("uverbs")))
        .unwrap_or(false)
}

fn lego(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lego"));
    c.args(args).current_dir(std::env::temp_dir()).env("TZ", "UTC");
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn mem_servers(n: usize, transport: &str) -> Vec<Server> {
    (0..n).map(|_| Server::start(&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "1G", "--transport", transport])).collect()
}

fn addrs(s: &[Server]) -> String {
    s.iter().map(|m| m.addr.as_str()).collect::<Vec<_>>().join(",")
}

#[test]
fn rdma_without_a_device_fails_at_once_naming_the_device_and_the_peer() {
    if rdma_device() {
        eprintln!("skipped: this host has an RDMA device, so `--transport rdma` does not fail here");
        return;
    }
    let hello = image("hello");
    let hello = hello.to_str().unwrap();
    let images = image("faultlat").parent().unwrap().to_str().unwrap().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["run", "--transport", "rdma", "--mem-server", "127.0.0.1:9", hello], "127.0.0.1:9"),
        (&["run", "--transport", "rdma", hello], "the embedded mem-server"),
        (&["mem-server", "--capacity", "64M", "--listen", "127.0.0.1:0", "--transport", "rdma"], "its clients"),
        (&["bench", "throughput", "--transport", "rdma", "--seconds", "0.1"], "the benchmark's mem-server"),
        (&["bench", "fault", "--transport", "rdma", "--rounds", "1", "--images", &images], "the embedded mem-server"),
    ];
    for (args, peer) in cases {
        let started = Instant::now();
        let out = lego(args).timed_output();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded without an RDMA device");
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?} took {:?} to fail", started.elapsed());
        let line = stderr.trim();
        assert_eq!(line.lines().count(), 1, "{args:?}: not one line: {stderr}");
        assert!(line.contains(peer), "{args:?}: the error does not name the peer {peer:?}: {line}");
        // The device looked for (a build with the feature), or the missing support (without).
        assert!(
            line.contains("/dev/infiniband/uverbs*") || line.contains("built without RDMA support"),
            "{args:?}: the error names no device: {line}"
        );
    }
}

#[test]
fn auto_falls_back_to_tcp_says_so_and_runs_identically() {
    if !kvm() {
        return;
    }
    if rdma_device() {
        eprintln!("skipped: this host has an RDMA device, so `auto` takes RDMA (see checksum_over_rdma)");
        return;
    }
    let prog = image("scan");
    let want = native(&prog, &["2", "2", "3"]);
    let s = mem_servers(2, "auto");
    // 25% of the 2 MiB working set.
    let excache = (512u64 << 10).to_string();
    let mut c = lego(&["run", "--mem", "256M", "--transport", "auto", "--mem-server", &addrs(&s), "--excache", &excache, "--vregion-size", "2M"]);
    c.env("RUST_LOG", "info").arg(&prog).args(["2", "2", "3"]);
    let out = c.timed_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), want, "output differs; stderr: {stderr}");
    assert!(stderr.contains("transport auto: using TCP"), "no logged fallback: {stderr}");
}

#[test]
fn checksum_over_rdma_on_two_mem_servers_is_identical_to_native() {
    if !rdma_device() {
        eprintln!("skipped: no /dev/infiniband/uverbs* on this host (no RDMA device, no soft-RoCE)");
        return;
    }
    if !kvm() {
        return;
    }
    let prog = image("checksum");
    let want = native(&prog, &["8", "3"]);
    let s = mem_servers(2, "rdma");
    // 25% of the 8 MiB working set.
    let excache = (2u64 << 20).to_string();
    let mut c = lego(&["run", "--mem", "256M", "--transport", "rdma", "--mem-server", &addrs(&s), "--excache", &excache, "--vregion-size", "2M"]);
    c.arg(&prog).args(["8", "3"]);
    let out = c.timed_output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), want, "output differs; stderr: {stderr}");
}
