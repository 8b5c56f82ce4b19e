//! End-to-end tests of the global manager with every component a separate process: components
//! register and send heartbeats, `lego ps --json` shows them, a killed mem-server is marked
//! down within three heartbeats, a restarted global manager keeps its registry, `lego run
//! --global-mgr` takes its vNode, mem-servers, storage server and file cache from the managers,
//! and `lego run` in a `lego up` cluster runs on the pComponent the GPM picks, with its standard
//! streams and exit status carried back. The tests that run programs need /dev/kvm.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lego_testkit as common;
use common::TimedOutput;
use common::{Component, Server};

const HEARTBEAT_MS: u64 = 200;

fn global_mgr(state: &Path, listen: &str) -> Server {
    let hb = HEARTBEAT_MS.to_string();
    Server::start(&["global-mgr", "--listen", listen, "--state-dir", state.to_str().unwrap(), "--heartbeat-ms", &hb])
}

fn join<'a>(global: &'a str, hb: &'a str) -> [&'a str; 4] {
    ["--global-mgr", global, "--heartbeat-ms", hb]
}

/// `lego ps --json`: every component, in id order.
fn ps(global: &str) -> Vec<Component> {
    common::ps_json(&lego(&["ps", "--json", "--global-mgr", global])).0
}

/// Polls `ps` until `done` holds, for at most `limit`; returns how long it took.
fn wait_for(global: &str, limit: Duration, done: impl Fn(&[Component]) -> bool) -> Duration {
    let (_, took) = common::poll("lego ps", limit, || {
        let list = ps(global);
        if done(&list) {
            Ok(())
        } else {
            Err(format!("{list:?}"))
        }
    });
    took
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

    wait_for(&global.addr, Duration::from_secs(10), |l| l.len() == 3 && l.iter().all(|c| c.up));
    let before = ps(&global.addr);
    let kinds: Vec<&str> = before.iter().map(|c| c.role.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "Memory").count(), 2, "{before:?}");
    assert!(kinds.contains(&"Storage"), "{before:?}");

    // A killed mem-server is down within three heartbeats (plus one for the poll and slack).
    let victim = mem[0].addr.clone();
    mem.remove(0).kill();
    let took = wait_for(&global.addr, Duration::from_secs(10), |l| l.iter().any(|c| c.addr == victim && !c.up));
    assert!(took <= Duration::from_millis(4 * HEARTBEAT_MS + 1000), "took {took:?} to mark {victim} down");
    assert!(ps(&global.addr).iter().filter(|c| c.addr != victim).all(|c| c.up), "the others stay up");

    // A restarted global manager knows every component, with the same ids, and the live ones
    // are up again through their heartbeats.
    let addr = global.addr.clone();
    global.kill();
    let global = global_mgr(&state.path().join("state"), &addr);
    let after = ps(&global.addr);
    let ids = |l: &[Component]| l.iter().map(|c| (c.addr.clone(), c.id)).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before), "the registry survived the restart");
    wait_for(&global.addr, Duration::from_secs(10), |l| l.iter().any(|c| c.addr == victim && !c.up) && l.iter().filter(|c| c.up).count() == 2);
    drop((storage, mem));
}

#[test]
fn a_client_of_another_cluster_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let global = global_mgr(state.path(), "127.0.0.1:0");
    let out = Command::new(env!("CARGO_BIN_EXE_lego"))
        .args(["ps", "--global-mgr", &global.addr, "--cluster-id", "5"])
        .timed_output();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster 0x5") && err.contains("cluster 0x0"), "{err}");
}

fn lego(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lego")).args(args).timed_output()
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
    wait_for(&global.addr, Duration::from_secs(10), |l| l.len() == 3 && l.iter().all(|c| c.up));

    // Before the vNode exists, lego run says so.
    let out = lego(&["run", "--global-mgr", &global.addr, "--vnode", "demo", "/bin/busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no vNode demo"), "{}", String::from_utf8_lossy(&out.stderr));

    assert!(lego(&["vnode", "create", "demo", "--mem", "1G", "--excache", "4M", "--global-mgr", &global.addr]).status.success());
    let img = tempfile::tempdir().unwrap();
    std::fs::create_dir(img.path().join("bin")).unwrap();
    std::fs::copy(common::image("busybox"), img.path().join("bin/busybox")).unwrap();
    std::fs::write(img.path().join("greeting"), "placed by the global managers\n").unwrap();
    // Symlinks are pushed as symlinks (twice: a second push replaces them), and a tar
    // archive's hard links as hard links.
    std::os::unix::fs::symlink("busybox", img.path().join("bin/cat")).unwrap();
    std::os::unix::fs::symlink("/greeting", img.path().join("link")).unwrap();
    for _ in 0..2 {
        let out = lego(&["image", "push", img.path().to_str().unwrap(), "--vnode", "demo", "--storage-server", &storage.addr]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("pushed 2 files and 2 symlinks"), "{}", String::from_utf8_lossy(&out.stdout));
    }
    let tarred = tempfile::tempdir().unwrap();
    std::fs::write(tarred.path().join("first"), "one file, two names\n").unwrap();
    std::fs::hard_link(tarred.path().join("first"), tarred.path().join("second")).unwrap();
    let tar = tarred.path().join("image.tar");
    let made = Command::new("tar").args(["-cf", tar.to_str().unwrap(), "-C", tarred.path().to_str().unwrap(), "first", "second"]).status().unwrap();
    assert!(made.success());
    assert!(lego(&["image", "push", tar.to_str().unwrap(), "--vnode", "demo", "--storage-server", &storage.addr]).status.success());

    // No --mem-server, no --storage-server, no --excache: all of it comes from the managers.
    let linked = lego(&["run", "--global-mgr", &global.addr, "--vnode", "demo", "/bin/cat", "/link", "/second"]);
    assert_eq!(String::from_utf8_lossy(&linked.stdout), "placed by the global managers\none file, two names\n", "{}", String::from_utf8_lossy(&linked.stderr));
    let ls = lego(&["run", "--global-mgr", &global.addr, "--vnode", "demo", "/bin/busybox", "stat", "-c", "%h %F", "/first", "/bin/cat"]);
    assert_eq!(String::from_utf8_lossy(&ls.stdout), "2 regular file\n1 symbolic link\n", "{}", String::from_utf8_lossy(&ls.stderr));
    let out = lego(&["run", "--global-mgr", &global.addr, "--vnode", "demo", "--stats", "/bin/busybox", "cat", "/greeting"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "placed by the global managers\n");
    assert!(stderr.contains("ExCache 1024 lines (4096 KiB)"), "the vNode's ExCache: {stderr}");

    // With the only mem-server fronting its storage server gone, the GSM has no cache for it.
    let [fronting, other] = mem;
    fronting.kill();
    wait_for(&global.addr, Duration::from_secs(10), |l| l.iter().filter(|c| c.up).count() == 2);
    let out = lego(&["run", "--global-mgr", &global.addr, "--vnode", "demo", "/bin/busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no mem-server that is up caches storage server"));
    drop(other);
}

/// `lego ARGS` with the state directory `state`, which must succeed.
fn lego_in(state: &Path, args: &[&str]) -> std::process::Output {
    let out = lego_at(state).args(args).timed_output();
    assert!(out.status.success(), "lego {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A `lego` command with the state directory `state`.
fn lego_at(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lego"));
    c.env("LEGO_STATE_DIR", state);
    c
}

/// Stops a `lego up` cluster when dropped, so a failing test leaves no processes behind.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = lego_at(self.0).arg("down").output();
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
    assert_eq!(pids.len(), 5, "global manager, one storage server, two mem-servers, one pComponent");

    // No addresses anywhere below: everything comes from the state directory.
    lego_in(s, &["vnode", "create", "demo", "--excache", "4M"]);
    let img = tempfile::tempdir().unwrap();
    std::fs::create_dir(img.path().join("bin")).unwrap();
    std::fs::copy(common::image("busybox"), img.path().join("bin/busybox")).unwrap();
    std::fs::write(img.path().join("note"), "kept across down and up\n").unwrap();
    lego_in(s, &["image", "push", img.path().to_str().unwrap(), "--vnode", "demo"]);
    let out = lego_in(s, &["run", "--vnode", "demo", "/bin/busybox", "cat", "/note"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept across down and up\n");
    // Every component (the storage server, both mem-servers, the pComponent) registers with its
    // first heartbeat.
    let all_up = || {
        let v: serde_json::Value = serde_json::from_slice(&lego_in(s, &["ps", "--json"]).stdout).unwrap();
        v["components"].as_array().unwrap().iter().filter(|c| c["up"].as_bool() == Some(true)).count() == 4
    };
    let started = Instant::now();
    while !all_up() {
        assert!(started.elapsed() < Duration::from_secs(10), "not every component is up");
        std::thread::sleep(Duration::from_millis(50));
    }

    lego_in(s, &["down"]);
    // SAFETY: signal 0 only asks whether the process exists.
    assert!(pids.iter().all(|&p| unsafe { libc::kill(p, 0) } != 0), "every process is gone");
    let refused = lego_at(s).args(["ps"]).timed_output();
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
fn a_restarted_manager_is_found_by_its_address_and_a_run_naming_a_vnode_never_goes_local() {
    // The current directory has a /note of its own: a run that quietly went local would print it.
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("note"), "the current directory\n").unwrap();
    let state = tempfile::tempdir().unwrap();
    let s = state.path();
    let busybox = common::image("busybox");
    let run_note = || lego_at(s).args(["run", "--vnode", "demo", "/bin/busybox", "cat", "/note"]).current_dir(cwd.path()).timed_output();

    // No cluster at all: a usage error, not a local run.
    let out = run_note();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--vnode demo: no cluster is up in") && err.contains("--root DIR"), "{err}");
    assert!(out.stdout.is_empty());
    if !common::kvm() {
        return;
    }

    lego_in(s, &["up", "--mem-servers", "1", "--heartbeat-ms", "200"]);
    let _down = Down(s);
    let cluster: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(s.join("cluster.json")).unwrap()).unwrap();
    let (manager_pid, addr) = (cluster["pids"][0].as_i64().unwrap() as i32, cluster["global_mgr"].as_str().unwrap().to_string());
    lego_in(s, &["vnode", "create", "demo", "--excache", "4M"]);
    let img = tempfile::tempdir().unwrap();
    std::fs::create_dir(img.path().join("bin")).unwrap();
    std::fs::copy(&busybox, img.path().join("bin/busybox")).unwrap();
    std::fs::write(img.path().join("note"), "on the vNode's storage\n").unwrap();
    lego_in(s, &["image", "push", img.path().to_str().unwrap(), "--vnode", "demo"]);
    let native = common::native(&busybox, &["cat", "note"], img.path());

    // The manager dies: every command says it cannot reach it, at its address.
    // SAFETY: kill(2) on the manager this test's `lego up` started.
    assert_eq!(unsafe { libc::kill(manager_pid, libc::SIGKILL) }, 0);
    common::poll("the manager's end", Duration::from_secs(10), || {
        std::net::TcpStream::connect(&addr).map(|_| ()).err().ok_or_else(|| "still listening".to_string())
    });
    let out = lego_at(s).args(["ps"]).timed_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("global manager {addr}")), "{err}");
    let out = run_note();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains(&format!("global manager {addr}")), "{err}");
    assert!(out.stdout.is_empty(), "ran locally: {}", String::from_utf8_lossy(&out.stdout));

    // Restarted by hand on its address (with a pid the state directory does not know), it is
    // found again: `lego ps` lists the components, and the run is placed as before.
    let hb = "200".to_string();
    let _manager = Server::start(&["global-mgr", "--listen", &addr, "--state-dir", s.join("global").to_str().unwrap(), "--heartbeat-ms", &hb]);
    let components = |out: std::process::Output| common::ps_json(&out).0;
    common::poll("the components back in lego ps", Duration::from_secs(10), || {
        let list = components(lego_at(s).args(["ps", "--json"]).timed_output());
        let up = list.iter().filter(|c| c.up).count();
        if up == 3 { Ok(()) } else { Err(format!("{list:?}")) }
    });
    let out = run_note();
    assert_eq!(out.status.code(), native.status, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), native.stdout);
}

#[test]
fn lego_down_leaves_a_process_that_took_a_recorded_pid_alone() {
    // The recorded manager died and its pid went to some other program.
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    let state = tempfile::tempdir().unwrap();
    let record = serde_json::json!({
        "global_mgr": "127.0.0.1:1", "mem_servers": [], "storage_servers": [], "pids": [other.id()],
    });
    std::fs::write(state.path().join("cluster.json"), record.to_string()).unwrap();
    lego_in(state.path(), &["down"]);
    assert!(other.try_wait().unwrap().is_none(), "lego down killed a process that is not lego's");
    let _ = other.kill();
    let _ = other.wait();
}

/// The parent of process `pid`, from /proc.
fn parent(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn lego_run_is_placed_on_pcomps_which_stream_its_input_output_and_status() {
    if !common::kvm() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let s = state.path();
    let secret = ("LEGO_CLUSTER_SECRET", "pcomp test secret");
    let lego = |args: &[&str]| {
        let mut c = lego_at(s);
        c.env(secret.0, secret.1).args(args);
        c
    };
    let ok = |args: &[&str]| {
        let out = lego(args).timed_output();
        assert!(out.status.success(), "lego {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    ok(&["up", "--mem-servers", "1", "--pcomps", "2", "--capacity", "1G", "--heartbeat-ms", "200"]);
    let _down = Down(s);
    let cluster: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(s.join("cluster.json")).unwrap()).unwrap();
    let pcomps: Vec<&str> = cluster["pcomps"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(pcomps.len(), 2);
    ok(&["vnode", "create", "demo", "--excache", "4M", "--mem", "1G"]);
    let img = tempfile::tempdir().unwrap();
    std::fs::create_dir(img.path().join("bin")).unwrap();
    std::fs::copy(common::image("busybox"), img.path().join("bin/busybox")).unwrap();
    std::fs::copy(common::image("threads"), img.path().join("bin/threads")).unwrap();
    ok(&["image", "push", img.path().to_str().unwrap(), "--vnode", "demo"]);
    let ps = || -> serde_json::Value { serde_json::from_slice(&ok(&["ps", "--json"]).stdout).unwrap() };
    let t = Instant::now();
    while ps()["components"].as_array().unwrap().iter().filter(|c| c["role"] == "Processor" && c["up"] == true).count() < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "the pComponents never registered");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Standard input goes to the program, its output comes back.
    let mut sort = lego(&["run", "--vnode", "demo", "/bin/busybox", "sort"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    sort.stdin.take().unwrap().write_all(common::WORDS.as_bytes()).unwrap();
    let out = sort.wait_with_output().unwrap();
    assert!(out.status.success());
    let mut want: Vec<&str> = common::WORDS.lines().collect();
    want.sort();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want.iter().map(|w| format!("{w}\n")).collect::<String>());
    // Standard error and the exit status come back too.
    let out = lego(&["run", "--vnode", "demo", "/bin/busybox", "ls", "/no/such/file"]).timed_output();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file"), "{}", String::from_utf8_lossy(&out.stderr));
    // The environment is this shell's, with --env applied and without the cluster secret.
    let out = lego(&["run", "--vnode", "demo", "--env", "GREETING=from the shell", "/bin/busybox", "env"]).timed_output();
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(env.contains("GREETING=from the shell") && env.contains("LEGO_STATE_DIR=") && !env.contains("LEGO_CLUSTER_SECRET"), "{env}");
    // Signals the client ignored or blocked are so in the process on the pComponent, as
    // across execve.
    let mut c = lego(&["run", "--vnode", "demo", "/bin/busybox", "grep", "-E", "Sig(Ign|Blk)", "/proc/self/status"]);
    let mut n = common::native_command(common::image("busybox"));
    n.args(["grep", "-E", "Sig(Ign|Blk)", "/proc/self/status"]);
    for cmd in [&mut c, &mut n] {
        common::with_ignored(cmd, &[libc::SIGQUIT]);
        common::with_blocked(cmd, &[libc::SIGUSR2]);
    }
    let (got, want) = (c.timed_output(), n.timed_output());
    assert_eq!(String::from_utf8_lossy(&got.stdout), String::from_utf8_lossy(&want.stdout), "{}", String::from_utf8_lossy(&got.stderr));
    let vip = ps()["vnodes"][0]["vip"].as_array().unwrap().iter().map(|b| b.to_string()).collect::<Vec<_>>().join(".");
    assert!(env.contains(&format!("LEGO_VNODE_IP={vip}\n")), "the vNode's virtual IP {vip}: {env}");

    // Two processes at once go to different pComponents (the GPM picks the one with the fewest
    // threads), run as children of the daemons, and show in lego ps with their home. First the
    // runs above must have faded from the GPM's view: their VMMs gone from the heartbeats, and
    // their placements settled (a run that ended before its first report counts as placed for
    // three report intervals), so that both pComponents are equally idle.
    std::thread::sleep(3 * lego_proto::global::PROCESS_REPORT_INTERVAL);
    let t = Instant::now();
    loop {
        let v = ps();
        let busy: Vec<u64> = v["components"].as_array().unwrap().iter().filter(|c| c["role"] == "Processor").map(|c| c["load"]["threads"].as_u64().unwrap()).collect();
        if busy.iter().all(|&n| n == 0) && v["processes"].as_array().is_none_or(|p| p.is_empty()) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the pComponents never went idle: threads {busy:?}, processes {}", v["processes"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let sleeper = |secs| lego(&["run", "--vnode", "demo", "/bin/busybox", "sleep", secs]).stdin(std::process::Stdio::null()).spawn().unwrap();
    let (mut first, mut second) = (sleeper("60"), sleeper("8"));
    let t = Instant::now();
    let processes = loop {
        // Only the sleepers: an earlier run's last report may still be on its way (its client
        // has its status once the VMM sent it, before the VMM's reporter sends that report).
        let mut p = ps()["processes"].as_array().unwrap().clone();
        p.retain(|p| p["who"]["program"].as_str().is_some_and(|prog| prog.contains("sleep")));
        if p.len() == 2 {
            break p;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the processes never showed in lego ps: {p:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut on: Vec<&str> = processes.iter().map(|p| p["who"]["pcomp"].as_str().unwrap()).collect();
    on.sort();
    let mut all = pcomps.clone();
    all.sort();
    assert_eq!(on, all, "one process on each pComponent: {processes:?}");
    let daemons: Vec<i64> = cluster["pids"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()).collect();
    for p in &processes {
        assert_eq!((p["who"]["vnode"].as_str(), p["who"]["home"].as_str()), (Some("demo"), cluster["mem_servers"][0].as_str()));
        assert_eq!(p["cache"]["excache_bytes"], 4 << 20);
        let ppid = parent(p["who"]["pid"].as_i64().unwrap()).expect("the VMM process exists");
        assert!(daemons.contains(&ppid), "the VMM {p} is a child of a pComponent daemon, not of {ppid}");
    }
    // A client that goes away takes its process with it; the other one runs on.
    let vmms: Vec<i64> = processes.iter().map(|p| p["who"]["pid"].as_i64().unwrap()).collect();
    first.kill().unwrap();
    first.wait().unwrap();
    let t = Instant::now();
    while vmms.iter().filter(|&&pid| parent(pid).is_some()).count() != 1 {
        assert!(t.elapsed() < Duration::from_secs(5), "a process outlived its client");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = *vmms.iter().find(|&&pid| parent(pid).is_none()).unwrap();
    // Killed, it sends no last report: the manager forgets it after three missed ones.
    while ps()["processes"].as_array().unwrap().iter().any(|p| p["who"]["pid"] == killed) {
        assert!(t.elapsed() < Duration::from_secs(10), "lego ps still lists the killed process");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(second.wait().unwrap().success());

    // A pComponent's load is its guest threads: a process with four counts four.
    let threads = lego(&["run", "--vnode", "demo", "/bin/threads", "idle", "3", "5000"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let t = Instant::now();
    while !ps()["components"].as_array().unwrap().iter().any(|c| c["role"] == "Processor" && c["load"]["threads"] == 4) {
        assert!(t.elapsed() < Duration::from_secs(4), "no pComponent reported the 4 guest threads: {}", ps()["components"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = threads.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3 threads slept 5000 ms\n");

    // --local runs in this shell's VMM, and says so in lego ps.
    let mut local = lego(&["run", "--local", "--vnode", "demo", "/bin/busybox", "sleep", "2"]).stdin(std::process::Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    loop {
        let p = ps()["processes"].as_array().unwrap().clone();
        if let Some(p) = p.first() {
            assert!(p["who"]["pcomp"].as_str().unwrap().starts_with("local:"), "{p}");
            assert_eq!(p["who"]["pid"].as_u64(), Some(local.id() as u64), "the VMM is lego run itself");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the local process never showed in lego ps");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(local.wait().unwrap().success());

    // Every process of a run shows, the first and those it forked, each with its vNode pid.
    let mut shell = lego(&["run", "--local", "--vnode", "demo", "/bin/busybox", "sh", "-c", "sleep 4 & sleep 4 & wait"]).stdin(std::process::Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    loop {
        let p = ps()["processes"].as_array().unwrap().clone();
        let mine: Vec<&serde_json::Value> = p.iter().filter(|p| p["who"]["pid"].as_u64() == Some(shell.id() as u64)).collect();
        let mut vpids: Vec<i64> = mine.iter().map(|p| p["who"]["vpid"].as_i64().unwrap()).collect();
        vpids.sort();
        // A child reported between its fork and its exec still shows the shell's command line
        // (as ps does on Linux): wait for the report after the exec.
        let programs: Vec<&str> = mine.iter().map(|p| p["who"]["program"].as_str().unwrap()).collect();
        if vpids.len() == 3 && programs.iter().filter(|p| **p == "sleep 4").count() == 2 {
            assert_eq!(vpids[0], 1, "the shell is process 1 of its vNode: {mine:?}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the shell and its two children never showed in lego ps as sleep 4: {p:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(shell.wait().unwrap().success());
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
        c.timed_output()
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
    let out = Command::new("tmux").args(["capture-pane", "-p", "-t", name]).timed_output();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lego_top_shows_components_and_processes_live_in_a_terminal() {
    let state = tempfile::tempdir().unwrap();
    let global = global_mgr(state.path(), "127.0.0.1:0");
    let hb = HEARTBEAT_MS.to_string();
    let mem = Server::start(&[&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "256M"][..], &join(&global.addr, &hb)].concat());
    let session = format!("lego-top-{}", std::process::id());
    let cmd = format!("{} top --global-mgr {}", env!("CARGO_BIN_EXE_lego"), global.addr);
    let started = Command::new("tmux").args(["new-session", "-d", "-s", &session, "-x", "200", "-y", "30", &cmd]).status();
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
    if common::kvm() {
        // A placed process missing in a 1 MiB ExCache over 64 MiB shows with its miss rate.
        assert!(lego(&["vnode", "create", "topvn", "--excache", "1M", "--global-mgr", &global.addr]).status.success());
        let dir = tempfile::tempdir().unwrap();
        let checksum = common::image("checksum");
        let run = [
            "run", "--global-mgr", &global.addr, "--vnode", "topvn", "--root", dir.path().to_str().unwrap(), checksum.to_str().unwrap(), "64",
        ];
        struct Running(std::process::Child);
        impl Drop for Running {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let process = Running(Command::new(env!("CARGO_BIN_EXE_lego")).args(run).stdout(std::process::Stdio::null()).spawn().unwrap());
        let pid = process.0.id().to_string();
        until("the process missing", &|s| {
            s.lines().find(|l| l.contains("topvn") && l.contains(&pid)).is_some_and(|r| {
                let misses: f64 = r.split_whitespace().nth(4).and_then(|m| m.parse().ok()).unwrap_or(0.0);
                misses > 0.0 && r.contains(&addr) && r.contains("checksum")
            })
        });
        drop(process);
    }
    mem.kill();
    until("the mem-server down", &|s| row_of(s).is_some_and(|r| r.contains("down")));
    Command::new("tmux").args(["send-keys", "-t", &session, "q"]).status().unwrap();
    let t = Instant::now();
    while Command::new("tmux").args(["has-session", "-t", &session]).status().unwrap().success() {
        assert!(t.elapsed() < Duration::from_secs(5), "lego top did not quit on q");
        std::thread::sleep(Duration::from_millis(50));
    }
}
