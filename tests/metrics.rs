//! End-to-end tests of the Prometheus endpoints: real component processes started with
//! `--metrics`, scraped over TCP, whose figures must follow real work (registrations and
//! heartbeats, an image push, `lego run`s), and `lego up`, which gives every component an
//! endpoint that keeps its address across `lego down`/`lego up`. The `lego run` part needs
//! /dev/kvm.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lego_testkit as common;
use common::TimedOutput;
use common::{image, sample, scrape, Server};

const HB: &str = "200";

fn lego(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lego")).args(args).timed_output()
}

/// A fresh scrape of `server`'s endpoint, which must answer 200.
fn metrics_of(server: &Server) -> String {
    let (status, body) = scrape(server.metrics.as_deref().expect("started with --metrics"));
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    body
}

/// Scrapes `server` until `series` has a value for which `done` holds, for at most 10 s.
fn wait_for(server: &Server, series: &str, done: impl Fn(f64) -> bool) {
    let started = Instant::now();
    loop {
        let text = metrics_of(server);
        if sample(&text, series).is_some_and(&done) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{series} never got there:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn components_serve_figures_that_follow_real_work() {
    let state = tempfile::tempdir().unwrap();
    let sdir = state.path().join("storage");
    let gdir = state.path().join("global");
    let m = ["--metrics", "127.0.0.1:0"];
    let global = Server::start(&[&["global-mgr", "--listen", "127.0.0.1:0", "--state-dir", gdir.to_str().unwrap(), "--heartbeat-ms", HB][..], &m].concat());
    let join = ["--global-mgr", global.addr.as_str(), "--heartbeat-ms", HB];
    let storage = Server::start(&[&["storage-server", "--listen", "127.0.0.1:0", "--dir", sdir.to_str().unwrap()][..], &join, &m].concat());
    let mem = Server::start(
        &[&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "256M", "--storage-server", &storage.addr][..], &join, &m].concat(),
    );

    let pcomp = Server::start(&[&["pcomp", "--listen", "127.0.0.1:0"][..], &join, &m].concat());

    // The global manager counts the components up, and their heartbeats.
    wait_for(&global, "lego_global_components{role=\"mem-server\",state=\"up\"}", |n| n == 1.0);
    wait_for(&global, "lego_global_components{role=\"pcomp\",state=\"up\"}", |n| n == 1.0);
    let p = metrics_of(&pcomp);
    assert_eq!(sample(&p, "lego_pcomp_processes"), Some(0.0), "{p}");
    assert_eq!(sample(&p, "lego_pcomp_threads"), Some(0.0), "{p}");
    assert_eq!(sample(&p, "lego_pcomp_processes_started_total"), Some(0.0), "{p}");
    wait_for(&global, "lego_global_components{role=\"storage-server\",state=\"up\"}", |n| n == 1.0);
    wait_for(&global, "lego_global_heartbeats_total", |n| n >= 2.0);
    let g = metrics_of(&global);
    assert!(g.contains("# HELP lego_global_components Registered components"), "{g}");
    assert_eq!(sample(&g, "lego_global_registrations_total"), Some(3.0), "{g}");

    // A bad request to an endpoint is answered and changes nothing for the component.
    let storage_metrics = storage.metrics.clone().unwrap();
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&storage_metrics).unwrap();
        s.write_all(b"\x16\x03\x01 this is not HTTP\r\n\r\n").unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
    }

    // An image push is storage work: writes, fsyncs, bytes.
    let img = tempfile::tempdir().unwrap();
    std::fs::create_dir(img.path().join("bin")).unwrap();
    std::fs::copy(image("busybox"), img.path().join("bin/busybox")).unwrap();
    std::fs::write(img.path().join("greeting"), "counted\n").unwrap();
    let before = metrics_of(&storage);
    assert_eq!(sample(&before, "lego_storage_requests_total{op=\"write\"}"), Some(0.0), "{before}");
    let out = lego(&["image", "push", img.path().to_str().unwrap(), "--vnode", "demo", "--storage-server", &storage.addr]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = metrics_of(&storage);
    let busybox = std::fs::metadata(image("busybox")).unwrap().len() as f64;
    assert!(sample(&after, "lego_storage_requests_total{op=\"write\"}").unwrap() >= 1.0, "{after}");
    assert!(sample(&after, "lego_storage_requests_total{op=\"fsync\"}").unwrap() >= 2.0, "{after}");
    assert!(sample(&after, "lego_storage_written_bytes_total").unwrap() >= busybox + 8.0, "{after}");
    assert!(sample(&after, "lego_storage_disk_capacity_bytes").unwrap() > 0.0, "{after}");
    assert!(sample(&after, "lego_connections_accepted_total").unwrap() >= 1.0, "{after}");

    if common::kvm() {
        // A program with its memory on the mem-server, through an ExCache a third of its data:
        // the page path is used in every direction.
        let m0 = metrics_of(&mem);
        assert_eq!(sample(&m0, "lego_mem_requests_total{op=\"fetch\"}"), Some(0.0), "{m0}");
        let out = Command::new(env!("CARGO_BIN_EXE_lego"))
            .args(["run", "--mem", "256M", "--mem-server", &mem.addr, "--excache", "512K"])
            .arg(image("sort"))
            .args(["100000", "3"])
            .timed_output();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let m1 = metrics_of(&mem);
        for op in ["fetch", "flush_fetch", "control"] {
            let series = format!("lego_mem_requests_total{{op=\"{op}\"}}");
            assert!(sample(&m1, &series).unwrap() > 0.0, "{series}:\n{m1}");
        }
        assert!(sample(&m1, "lego_mem_sent_bytes_total").unwrap() > 4096.0 * 100.0, "{m1}");
        assert!(sample(&m1, "lego_mem_received_bytes_total").unwrap() > 4096.0 * 100.0, "{m1}");
        // Whether the server polled depends on the host's load (the poll gate), so only the
        // series and their ranges are checked.
        assert!(matches!(sample(&m1, "lego_mem_polling"), Some(v) if v == 0.0 || v == 1.0), "{m1}");
        assert!(sample(&m1, "lego_mem_poll_cpu_microseconds_total").unwrap() >= 0.0, "{m1}");

        // A program reading its files through the mem-server's buffer cache.
        let out = lego(&["run", "--vnode", "demo", "--mem-server", &mem.addr, "--storage-server", &storage.addr, "/bin/busybox", "cat", "/greeting"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "counted\n", "{}", String::from_utf8_lossy(&out.stderr));
        let m2 = metrics_of(&mem);
        assert!(sample(&m2, "lego_mem_buffer_cache_misses_total").unwrap() > 0.0, "{m2}");
        assert!(sample(&m2, "lego_mem_buffer_cache_bytes").unwrap() > 0.0, "{m2}");
        let s2 = metrics_of(&storage);
        assert!(sample(&s2, "lego_storage_read_bytes_total").unwrap() >= busybox, "{s2}");
    }

    // A killed component shows as down.
    mem.kill();
    wait_for(&global, "lego_global_components{role=\"mem-server\",state=\"down\"}", |n| n == 1.0);
    drop(storage);
}

#[test]
fn a_bad_metrics_address_stops_the_component_with_a_message() {
    let out = lego(&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "64M", "--metrics", "127.0.0.1:99999"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics") && err.contains("127.0.0.1:99999"), "{err}");
}

/// `lego ARGS` with the state directory `state`, which must succeed.
fn lego_in(state: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_lego")).args(args).env("LEGO_STATE_DIR", state).timed_output();
    assert!(out.status.success(), "lego {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Stops a `lego up` cluster when dropped, so a failing test leaves no processes behind.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_lego")).arg("down").env("LEGO_STATE_DIR", self.0).output();
    }
}

/// The metrics endpoints `lego up` recorded, by component.
fn endpoints(state: &Path) -> serde_json::Map<String, serde_json::Value> {
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(state.join("cluster.json")).unwrap()).unwrap();
    c["metrics"].as_object().expect("a metrics object").clone()
}

#[test]
fn lego_up_gives_every_component_an_endpoint_that_keeps_its_address() {
    let state = tempfile::tempdir().unwrap();
    let s = state.path();
    let up = lego_in(s, &["up", "--mem-servers", "2", "--heartbeat-ms", HB]);
    let _down = Down(s);
    let first = endpoints(s);
    let names: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(names, ["global-mgr", "mem-server-0", "mem-server-1", "pcomp-0", "storage-server-0"]);
    let printed = String::from_utf8_lossy(&up.stdout);
    for (name, url) in &first {
        let url = url.as_str().unwrap();
        assert!(printed.contains(url), "lego up prints {name}'s {url}:\n{printed}");
        let (status, body) = scrape(url.trim_start_matches("http://").trim_end_matches("/metrics"));
        assert!(status.starts_with("HTTP/1.1 200") && body.contains("lego_connections_open"), "{name}: {status}\n{body}");
    }
    let global = first["global-mgr"].as_str().unwrap().trim_start_matches("http://").trim_end_matches("/metrics").to_string();
    let started = Instant::now();
    while sample(&scrape(&global).1, "lego_global_components{role=\"mem-server\",state=\"up\"}") != Some(2.0) {
        assert!(started.elapsed() < Duration::from_secs(10), "the mem-servers never showed up:\n{}", scrape(&global).1);
        std::thread::sleep(Duration::from_millis(50));
    }

    lego_in(s, &["down"]);
    lego_in(s, &["up", "--mem-servers", "2", "--heartbeat-ms", HB]);
    assert_eq!(endpoints(s), first, "the same endpoints after lego down and lego up");
    lego_in(s, &["down"]);
}
