//! End-to-end tests of the configuration file: real components started with nothing but a
//! `--config FILE` (or `LEGO_CONFIG`), the cluster's address, id and secret taken from the file,
//! the environment or the command line in that order of strength, and bad files refused at
//! start-up with the key and the value named.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lego_testkit as common;
use common::TimedOutput;
use common::{sample, scrape, Server};

/// `lego ARGS` with exactly the `LEGO_*` variables in `env`.
fn lego(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lego"));
    for var in ["LEGO_CONFIG", "LEGO_CLUSTER", "LEGO_CLUSTER_ID", "LEGO_CLUSTER_SECRET", "LEGO_STATE_DIR"] {
        c.env_remove(var);
    }
    c.args(args).envs(env.iter().copied()).timed_output()
}

/// Components `lego ps --json` lists, as (kind, up), which must succeed.
fn ps(env: &[(&str, &str)], args: &[&str]) -> Vec<(String, bool)> {
    let out = lego(env, &[&["ps", "--json"][..], args].concat());
    assert!(out.status.success(), "lego ps {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["components"].as_array().unwrap().iter().map(|c| (c["role"].as_str().unwrap().to_string(), c["up"].as_bool().unwrap())).collect()
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn components_and_clients_take_the_cluster_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cluster = "[cluster]\nid = 9\nheartbeat_ms = 200\nsecret = \"from the file\"\n";
    let gfile = write(
        &d.join("global.toml"),
        &format!("{cluster}[global_mgr]\nlisten = \"127.0.0.1:0\"\nstate_dir = {:?}\nmetrics = \"127.0.0.1:0\"\n", d.join("state")),
    );
    let global = Server::start(&["global-mgr", "--config", &gfile]);
    assert!(global.metrics.is_some(), "global_mgr.metrics started the endpoint");

    // Every other command finds the global manager through cluster.global_mgr.
    let file = write(
        &d.join("lego.toml"),
        &format!(
            "{cluster}global_mgr = {:?}\n[mem_server]\nlisten = \"127.0.0.1:0\"\ncapacity = \"64M\"\nmetrics = \"127.0.0.1:0\"\n",
            global.addr
        ),
    );
    let mem = Server::start_with_env(&[("LEGO_CONFIG", &file)], &["mem-server"]);
    let (_, text) = scrape(mem.metrics.as_deref().expect("mem_server.metrics started the endpoint"));
    assert_eq!(sample(&text, "lego_mem_capacity_bytes"), Some((64 << 20) as f64), "mem_server.capacity");

    // It registered with the file's global manager, id and secret; lego ps finds them the same way.
    let started = Instant::now();
    while ps(&[], &["--config", &file]) != [("Memory".to_string(), true)] {
        assert!(started.elapsed() < Duration::from_secs(10), "the mem-server never registered");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The same cluster named by the environment, then by the command line.
    let env = [("LEGO_CLUSTER", global.addr.as_str()), ("LEGO_CLUSTER_ID", "9"), ("LEGO_CLUSTER_SECRET", "from the file")];
    assert_eq!(ps(&env, &[]).len(), 1);
    assert_eq!(ps(&env[2..], &["--cluster", &global.addr, "--cluster-id", "9"]).len(), 1);
    // The environment is stronger than the file, the command line than both.
    let wrong_secret = lego(&[("LEGO_CLUSTER_SECRET", "wrong")], &["ps", "--config", &file]);
    assert!(String::from_utf8_lossy(&wrong_secret.stderr).contains("wrong or missing cluster secret"));
    let wrong_id = lego(&[("LEGO_CONFIG", &file), ("LEGO_CLUSTER_ID", "3")], &["ps"]);
    assert!(String::from_utf8_lossy(&wrong_id.stderr).contains("cluster 0x3"), "{}", String::from_utf8_lossy(&wrong_id.stderr));
    assert_eq!(ps(&[("LEGO_CONFIG", &file), ("LEGO_CLUSTER_ID", "3")], &["--cluster-id", "9"]).len(), 1);
}

#[test]
fn a_bad_file_stops_the_command_naming_the_key_and_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let bad_value = write(&dir.path().join("bad.toml"), "[mem_server]\nlisten = \"127.0.0.1:0\"\ncapacity = \"4X\"\n");
    let out = lego(&[], &["mem-server", "--config", &bad_value]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err, format!("lego: config {bad_value}: mem_server.capacity = \"4X\": not a size (use e.g. 512M, 4G)\n"));

    let unknown = write(&dir.path().join("unknown.toml"), "[storage_server]\ndri = \"/srv\"\n");
    let out = lego(&[("LEGO_CONFIG", &unknown)], &["storage-server"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("lego: config {unknown}: storage_server.dri: unknown key (expected one of `listen`, `dir`")), "{err}");

    let out = lego(&[], &["ps", "--config", "/nonexistent/lego.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("lego: config /nonexistent/lego.toml: "));
}

#[test]
fn lego_up_passes_the_file_to_the_components_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = write(&dir.path().join("lego.toml"), "[cluster]\nid = 4\nsecret = \"kept in the file\"\nheartbeat_ms = 200\n");
    let s = [("LEGO_STATE_DIR", state.to_str().unwrap())];
    let up = lego(&s, &["up", "--config", &file, "--mem-servers", "1"]);
    struct Down<'a>(&'a [(&'a str, &'a str)]);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            lego(self.0, &["down"]);
        }
    }
    let _down = Down(&s);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    // The components (storage server, mem-server, pComponent) have the file's cluster id and
    // secret: clients with the file get in, and see them all register; clients without it are
    // refused.
    let started = Instant::now();
    while ps(&[s[0], ("LEGO_CONFIG", &file)], &[]).iter().filter(|c| c.1).count() != 3 {
        assert!(started.elapsed() < Duration::from_secs(10), "the components never registered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let outsider = lego(&[s[0], ("LEGO_CLUSTER_ID", "4")], &["ps"]);
    assert!(String::from_utf8_lossy(&outsider.stderr).contains("wrong or missing cluster secret"));
}
