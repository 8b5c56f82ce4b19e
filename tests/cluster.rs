//! End-to-end tests of the global manager with every component a separate process: components
//! register and send heartbeats, `lego ps --json` shows them, a killed mem-server is marked
//! down within three heartbeats, a restarted global manager keeps its registry, and `lego run
//! --global-mgr` takes its vNode, mem-servers, storage server and file cache from the managers.
//! Only that last test needs /dev/kvm.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::Server;

const HEARTBEAT_MS: u64 = 200;

fn global_mgr(state: &Path, listen: &str) -> Server {
    let hb = HEARTBEAT_MS.to_string();
    Server::start(&["global-mgr", "--listen", listen, "--state-dir", state.to_str().unwrap(), "--heartbeat-ms", &hb])
}

fn join<'a>(global: &'a str, hb: &'a str) -> [&'a str; 4] {
    ["--global-mgr", global, "--heartbeat-ms", hb]
}

/// `lego ps --json`: (address, kind, up) of every component, in id order.
fn ps(global: &str) -> Vec<(String, String, bool, u64)> {
    let out = Command::new(env!("CARGO_BIN_EXE_lego")).args(["ps", "--json", "--global-mgr", global]).output().unwrap();
    assert!(out.status.success(), "lego ps: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lego ps --json prints JSON");
    v["components"]
        .as_array()
        .expect("a components array")
        .iter()
        .map(|c| {
            (
                c["addr"].as_str().unwrap().to_string(),
                c["role"].as_str().unwrap().to_string(),
                c["up"].as_bool().unwrap(),
                c["id"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Polls `ps` until `done` holds, for at most `limit`; returns how long it took.
fn wait_for(global: &str, limit: Duration, done: impl Fn(&[(String, String, bool, u64)]) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let list = ps(global);
        if done(&list) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not reached within {limit:?}: {list:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn components_register_go_down_when_killed_and_survive_a_manager_restart() {
    let state = tempfile::tempdir().unwrap();
    let global = global_mgr(&state.path().join("state"), "127.0.0.1:0");
    let hb = HEARTBEAT_MS.to_string();
    let j = join(&global.addr, &hb);
    let mut mem: Vec<Server> = (0..2)
        .map(|_| Server::start(&[&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "256M"][..], &j].concat()))
        .collect();
    let sdir = state.path().join("storage");
    let storage = Server::start(&[&["storage-server", "--listen", "127.0.0.1:0", "--dir", sdir.to_str().unwrap()][..], &j].concat());

    wait_for(&global.addr, Duration::from_secs(10), |l| l.len() == 3 && l.iter().all(|c| c.2));
    let before = ps(&global.addr);
    let kinds: Vec<&str> = before.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "Memory").count(), 2, "{before:?}");
    assert!(kinds.contains(&"Storage"), "{before:?}");

    // A killed mem-server is down within three heartbeats (plus one for the poll and slack).
    let victim = mem[0].addr.clone();
    mem.remove(0).kill();
    let took = wait_for(&global.addr, Duration::from_secs(10), |l| l.iter().any(|c| c.0 == victim && !c.2));
    assert!(took <= Duration::from_millis(4 * HEARTBEAT_MS + 1000), "took {took:?} to mark {victim} down");
    assert!(ps(&global.addr).iter().filter(|c| c.0 != victim).all(|c| c.2), "the others stay up");

    // A restarted global manager knows every component, with the same ids, and the live ones
    // are up again through their heartbeats.
    let addr = global.addr.clone();
    global.kill();
    let global = global_mgr(&state.path().join("state"), &addr);
    let after = ps(&global.addr);
    let ids = |l: &[(String, String, bool, u64)]| l.iter().map(|c| (c.0.clone(), c.3)).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before), "the registry survived the restart");
    wait_for(&global.addr, Duration::from_secs(10), |l| l.iter().any(|c| c.0 == victim && !c.2) && l.iter().filter(|c| c.2).count() == 2);
    drop((storage, mem));
}

#[test]
fn a_client_of_another_cluster_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let global = global_mgr(state.path(), "127.0.0.1:0");
    let out = Command::new(env!("CARGO_BIN_EXE_lego"))
        .args(["ps", "--global-mgr", &global.addr, "--cluster-id", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster 0x5") && err.contains("cluster 0x0"), "{err}");
}

fn lego(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lego")).args(args).output().unwrap()
}

#[test]
fn vnodes_get_unique_ids_and_vips_and_survive_a_manager_restart() {
    let state = tempfile::tempdir().unwrap();
    let global = global_mgr(state.path(), "127.0.0.1:0");
    let g = global.addr.clone();
    let out = lego(&["vnode", "create", "web", "--mem", "2G", "--global-mgr", &g]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "created vNode web (id 1, virtual IP 10.77.0.1)\n");
    assert!(lego(&["vnode", "create", "db", "--vip", "10.1.2.3", "--global-mgr", &g]).status.success());
    let dup = lego(&["vnode", "create", "web", "--global-mgr", &g]);
    assert!(!dup.status.success() && String::from_utf8_lossy(&dup.stderr).contains("vNode web exists"));
    let taken = lego(&["vnode", "create", "x", "--vip", "10.1.2.3", "--global-mgr", &g]);
    assert!(String::from_utf8_lossy(&taken.stderr).contains("virtual IP 10.1.2.3 is taken"));

    global.kill();
    let global = global_mgr(state.path(), &g);
    let out = lego(&["ps", "--json", "--global-mgr", &global.addr]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<(&str, u64, u64)> = v["vnodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["name"].as_str().unwrap(), x["id"].as_u64().unwrap(), x["mem_bytes"].as_u64().unwrap()))
        .collect();
    assert_eq!(names, [("web", 1, 2 << 30), ("db", 2, 4 << 30)]);
    assert!(lego(&["vnode", "rm", "web", "--global-mgr", &g]).status.success());
    let ls = lego(&["vnode", "ls", "--global-mgr", &g]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains("db") && ls.contains("10.1.2.3") && !ls.contains("web"), "{ls}");
}

#[test]
fn lego_run_is_placed_by_the_managers() {
    if !common::kvm() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let global = global_mgr(&state.path().join("state"), "127.0.0.1:0");
    let hb = HEARTBEAT_MS.to_string();
    let j = join(&global.addr, &hb);
    let sdir = state.path().join("storage");
    let storage = Server::start(&[&["storage-server", "--listen", "127.0.0.1:0", "--dir", sdir.to_str().unwrap()][..], &j].concat());
    let fronting = ["mem-server", "--listen", "127.0.0.1:0", "--capacity", "1G", "--storage-server", &storage.addr];
    let mem = [Server::start(&[&fronting[..], &j].concat()), Server::start(&[&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "1G"][..], &j].concat())];
    wait_for(&global.addr, Duration::from_secs(10), |l| l.len() == 3 && l.iter().all(|c| c.2));

    // Before the vNode exists, lego run says so.
    let out = lego(&["run", "--global-mgr", &global.addr, "--vnode", "demo", "/bin/busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no vNode demo"), "{}", String::from_utf8_lossy(&out.stderr));

    assert!(lego(&["vnode", "create", "demo", "--mem", "1G", "--excache", "4M", "--global-mgr", &global.addr]).status.success());
    let img = tempfile::tempdir().unwrap();
    std::fs::create_dir(img.path().join("bin")).unwrap();
    std::fs::copy(common::image("busybox"), img.path().join("bin/busybox")).unwrap();
    std::fs::write(img.path().join("greeting"), "placed by the global managers\n").unwrap();
    assert!(lego(&["image", "push", img.path().to_str().unwrap(), "--vnode", "demo", "--storage-server", &storage.addr]).status.success());

    // No --mem-server, no --storage-server, no --excache: all of it comes from the managers.
    let out = lego(&["run", "--global-mgr", &global.addr, "--vnode", "demo", "--stats", "/bin/busybox", "cat", "/greeting"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "placed by the global managers\n");
    assert!(stderr.contains("ExCache 1024 lines (4096 KiB)"), "the vNode's ExCache: {stderr}");

    // With the only mem-server fronting its storage server gone, the GSM has no cache for it.
    let [fronting, other] = mem;
    fronting.kill();
    wait_for(&global.addr, Duration::from_secs(10), |l| l.iter().filter(|c| c.2).count() == 2);
    let out = lego(&["run", "--global-mgr", &global.addr, "--vnode", "demo", "/bin/busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no mem-server that is up caches storage server"));
    drop(other);
}

/// `lego ARGS` with the state directory `state`.
fn lego_in(state: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_lego")).args(args).env("LEGO_STATE_DIR", state).output().unwrap();
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

#[test]
fn lego_up_starts_a_cluster_the_other_commands_find_and_down_stops_it() {
    if !common::kvm() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let s = state.path();
    lego_in(s, &["up", "--mem-servers", "2", "--heartbeat-ms", "200"]);
    let _down = Down(s);
    let cluster: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(s.join("cluster.json")).unwrap()).unwrap();
    let pids: Vec<i32> = cluster["pids"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap() as i32).collect();
    assert_eq!(pids.len(), 4, "global manager, one storage server, two mem-servers");

    // No addresses anywhere below: everything comes from the state directory.
    lego_in(s, &["vnode", "create", "demo", "--excache", "4M"]);
    let img = tempfile::tempdir().unwrap();
    std::fs::create_dir(img.path().join("bin")).unwrap();
    std::fs::copy(common::image("busybox"), img.path().join("bin/busybox")).unwrap();
    std::fs::write(img.path().join("note"), "kept across down and up\n").unwrap();
    lego_in(s, &["image", "push", img.path().to_str().unwrap(), "--vnode", "demo"]);
    let out = lego_in(s, &["run", "--vnode", "demo", "/bin/busybox", "cat", "/note"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept across down and up\n");
    // Every component (the storage server and both mem-servers) registers with its first
    // heartbeat.
    let all_up = || {
        let v: serde_json::Value = serde_json::from_slice(&lego_in(s, &["ps", "--json"]).stdout).unwrap();
        v["components"].as_array().unwrap().iter().filter(|c| c["up"].as_bool() == Some(true)).count() == 3
    };
    let started = Instant::now();
    while !all_up() {
        assert!(started.elapsed() < Duration::from_secs(10), "not every component is up");
        std::thread::sleep(Duration::from_millis(50));
    }

    lego_in(s, &["down"]);
    // SAFETY: signal 0 only asks whether the process exists.
    assert!(pids.iter().all(|&p| unsafe { libc::kill(p, 0) } != 0), "every process is gone");
    let refused = Command::new(env!("CARGO_BIN_EXE_lego")).args(["ps"]).env("LEGO_STATE_DIR", s).output().unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no cluster is up"));

    // Up again: same addresses, same registry, same files.
    lego_in(s, &["up", "--mem-servers", "2", "--heartbeat-ms", "200"]);
    let again: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(s.join("cluster.json")).unwrap()).unwrap();
    assert_eq!(again["storage_servers"], cluster["storage_servers"]);
    let out = lego_in(s, &["run", "--vnode", "demo", "/bin/busybox", "cat", "/note"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept across down and up\n");
    lego_in(s, &["down"]);
}

#[test]
fn only_holders_of_the_cluster_secret_get_in() {
    let state = tempfile::tempdir().unwrap();
    let secret = [("LEGO_CLUSTER_SECRET", "correct horse")];
    let hb = HEARTBEAT_MS.to_string();
    let global = Server::start_with_env(
        &secret,
        &["global-mgr", "--listen", "127.0.0.1:0", "--state-dir", state.path().to_str().unwrap(), "--heartbeat-ms", &hb],
    );
    let ps_with = |value: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lego"));
        c.args(["ps", "--json", "--global-mgr", &global.addr]).env_remove("LEGO_CLUSTER_SECRET");
        if let Some(v) = value {
            c.env("LEGO_CLUSTER_SECRET", v);
        }
        c.output().unwrap()
    };
    for wrong in [None, Some("battery staple")] {
        let out = ps_with(wrong);
        assert!(!out.status.success(), "{wrong:?} got in");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("wrong or missing cluster secret"), "{err}");
    }
    // A mem-server with the secret joins; one without it never shows up.
    let _member = Server::start_with_env(&secret, &[&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "64M"][..], &join(&global.addr, &hb)].concat());
    let _outsider = Server::start(&[&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "64M"][..], &join(&global.addr, &hb)].concat());
    let started = Instant::now();
    loop {
        let out = ps_with(Some("correct horse"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let n = v["components"].as_array().unwrap().len();
        if n == 1 && started.elapsed() > Duration::from_millis(5 * HEARTBEAT_MS) {
            break;
        }
        assert!(n <= 1, "the outsider registered: {v}");
        assert!(started.elapsed() < Duration::from_secs(10), "the member never registered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The screen of tmux session `name`.
fn screen(name: &str) -> String {
    let out = Command::new("tmux").args(["capture-pane", "-p", "-t", name]).output().expect("tmux (scripts/install-deps.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lego_top_shows_components_live_in_a_terminal() {
    let state = tempfile::tempdir().unwrap();
    let global = global_mgr(state.path(), "127.0.0.1:0");
    let hb = HEARTBEAT_MS.to_string();
    let mem = Server::start(&[&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "64M"][..], &join(&global.addr, &hb)].concat());
    let session = format!("lego-top-{}", std::process::id());
    let cmd = format!("{} top --global-mgr {}", env!("CARGO_BIN_EXE_lego"), global.addr);
    let started = Command::new("tmux").args(["new-session", "-d", "-s", &session, "-x", "120", "-y", "30", &cmd]).status();
    assert!(started.is_ok_and(|s| s.success()), "tmux is needed for this test (scripts/install-deps.sh installs it)");
    struct Kill<'a>(&'a str);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = Command::new("tmux").args(["kill-session", "-t", self.0]).status();
        }
    }
    let _kill = Kill(&session);
    let until = |what: &str, done: &dyn Fn(&str) -> bool| {
        let t = Instant::now();
        loop {
            let s = screen(&session);
            if done(&s) {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "the screen never showed {what}:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let addr = mem.addr.clone();
    let row_of = |s: &str| s.lines().find(|l| l.contains(&addr)).map(str::to_string);
    until("the mem-server up", &|s| s.contains("lego top") && row_of(s).is_some_and(|r| r.contains("mem-server") && r.contains(" up ")));
    mem.kill();
    until("the mem-server down", &|s| row_of(s).is_some_and(|r| r.contains("down")));
    Command::new("tmux").args(["send-keys", "-t", &session, "q"]).status().unwrap();
    let t = Instant::now();
    while Command::new("tmux").args(["has-session", "-t", &session]).status().unwrap().success() {
        assert!(t.elapsed() < Duration::from_secs(5), "lego top did not quit on q");
        std::thread::sleep(Duration::from_millis(50));
    }
}
