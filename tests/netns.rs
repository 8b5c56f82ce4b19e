//! Multi-host tests: every component runs on a "host" of its own, a network namespace with its
//! own address, and the hosts reach each other only over veth pairs joined by a bridge in a
//! "switch" namespace. Loopback stays down on every host, so nothing can take a shortcut. All
//! servers share a cluster secret, and the client host runs `lego run`, `lego ps`, `lego vnode`
//! and `lego image`. The tests check that:
//! - the global manager places a process's memory on both mem-servers: with 2 MiB vRegions,
//!   sort's data spans several, the VMM reports memory on 2 mem-servers, the `requests` counter
//!   of both grows in `lego ps --json`, and the output is the native one. A program from the
//!   vNode's storage mount also runs, placed on the pComponent host and reading its files
//!   through the mem-server fronting the storage server (these two runs need /dev/kvm);
//! - a mem-server killed with SIGKILL shows as down in `lego ps --json` within three heartbeats;
//! - a global manager killed and restarted on the same address and state directory keeps its
//!   vNodes (same ids, same virtual IPs) and components;
//! - a client without the secret, or with a wrong one, is refused with a clear error, and the
//!   global manager logs the refusal with the client's address;
//! - busybox `wget` in a vNode on one pComponent host fetches a 10 MiB file byte-identical from
//!   busybox `httpd` in another vNode on the other pComponent host, over their virtual IPs.
//! - with `--replicas 2` a process keeps a copy of its memory on each mem-server host: `kill -9`
//!   of its VMM has the global manager release its pages on both hosts, and `kill -9` of the
//!   mem-server holding the primary copy leaves the program's output the native one, served by
//!   the copy on the other host (these need /dev/kvm).
//!
//! They need root and iproute2's `ip`. Where network namespaces cannot be made they fail and
//! say why, unless `LEGO_SKIP_NETNS_TESTS=1`, in which case each says on stderr that it was
//! skipped. Namespace names carry the test binary's pid and a per-test number. Interfaces are
//! created inside the test's own namespaces, so parallel tests cannot collide. Everything (the
//! processes, the namespaces and with them the veths and the bridge) is removed when a test
//! ends, whether it passed or failed.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lego_testkit as common;
use common::TimedOutput;
use common::{Component, Server};

const HEARTBEAT_MS: u64 = 200;

/// The cluster secret every server is given.
const SECRET: &str = "netns test secret";

/// The hosts, and the last byte of each one's address in 10.99.0.0/24.
const HOSTS: [(&str, u8); 7] = [("global", 1), ("storage", 2), ("mem1", 3), ("mem2", 4), ("client", 5), ("pcomp", 6), ("pcomp2", 7)];

/// Where the servers listen: their host's address in [`HOSTS`], never loopback.
const GLOBAL: &str = "10.99.0.1:7060";
const STORAGE: &str = "10.99.0.2:7080";
const MEM: [&str; 2] = ["10.99.0.3:7070", "10.99.0.4:7070"];
const PCOMP: &str = "10.99.0.6:7050";
/// A second pComponent, started only by the tests that need two.
const PCOMP2: &str = "10.99.0.7:7050";
/// The client host's address, as the global manager sees its connections.
const CLIENT_IP: &str = "10.99.0.5";

/// Runs `ip ARGS`; the error says which command failed and why.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if !out.status.success() {
        return Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A test's network: one namespace per host, with its address on `eth0`, the other end of that
/// veth pair in a bridge in the switch namespace. Dropping it kills whatever still runs on its
/// hosts and deletes the namespaces, which removes the veths and the bridge with them.
struct Netns {
    /// Prefix of its namespace names, unique per test binary (pid) and per test.
    prefix: String,
    /// The namespaces made so far.
    made: Vec<String>,
}

impl Netns {
    /// Makes the switch and `hosts` (name, last address byte), each linked to the switch.
    fn create(hosts: &[(&str, u8)]) -> Result<Netns, String> {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            return Err(format!("making network namespaces needs root, and this test runs as uid {uid}"));
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!("lego{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        // From here on, a failure drops `net`, which deletes what was made.
        let mut net = Netns { prefix, made: Vec::new() };
        let switch = net.add("switch")?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for &(host, byte) in hosts {
            let ns = net.add(host)?;
            // Both ends are created inside the test's namespaces: the machine's own network
            // never sees them.
            ip(&["-n", &switch, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &switch, "link", "set", host, "master", "br0", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("10.99.0.{byte}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    fn add(&mut self, name: &str) -> Result<String, String> {
        let ns = self.ns(name);
        ip(&["netns", "add", &ns])?;
        self.made.push(ns.clone());
        Ok(ns)
    }

    /// The namespace of `host`.
    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// A command running `lego` on `host` (`ip netns exec` execs it: the child is lego).
    fn lego(&self, host: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host), env!("CARGO_BIN_EXE_lego")]);
        c
    }
}

/// The pids of the processes in namespace `ns`.
fn pids_in(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns]).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            // Normally nothing runs any more: the servers are dropped first. After a panic, a
            // process left in a namespace would keep it, and its veth, alive; all of them were
            // started by this test.
            let started = Instant::now();
            loop {
                let pids = pids_in(ns);
                if pids.is_empty() || started.elapsed() > Duration::from_secs(5) {
                    break;
                }
                for pid in pids {
                    // SAFETY: kill(2) on a process of this test's namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("leaving network namespace {ns} behind: {e}");
            }
        }
    }
}

/// A new network of [`HOSTS`]. If it cannot be made: with `LEGO_SKIP_NETNS_TESTS=1`, `None`
/// after saying so on stderr; otherwise a panic saying why.
fn network() -> Option<Netns> {
    match Netns::create(&HOSTS) {
        Ok(net) => Some(net),
        Err(why) if std::env::var("LEGO_SKIP_NETNS_TESTS").as_deref() == Ok("1") => {
            eprintln!("SKIPPED (LEGO_SKIP_NETNS_TESTS=1): cannot make network namespaces: {why}");
            None
        }
        Err(why) => panic!(
            "cannot make network namespaces: {why}. These tests run each component in a network namespace of \
             its own and need root and iproute2's `ip`; set LEGO_SKIP_NETNS_TESTS=1 to skip them."
        ),
    }
}

/// A cluster on the hosts of a [`Netns`]: global manager, storage server, two mem-servers
/// (`mem1` fronts the storage server), a pComponent, all with the cluster secret. The client
/// host runs the commands.
struct Cluster {
    /// The running servers by host. Fields drop in order: the processes before the network.
    servers: BTreeMap<&'static str, Server>,
    net: Netns,
    /// State directories and logs.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts every server and waits until the global manager lists the three components up;
    /// `None` if the test is skipped.
    fn start() -> Option<Cluster> {
        let net = network()?;
        let mut c = Cluster { servers: BTreeMap::new(), net, dir: tempfile::tempdir().unwrap() };
        for host in ["global", "storage", "mem1", "mem2", "pcomp"] {
            c.start_server(host);
        }
        let (list, _) = c.wait_for("the four components up", |l| l.len() == 4 && l.iter().all(|x| x.up));
        let mut addrs: Vec<&str> = list.iter().map(|x| x.addr.as_str()).collect();
        addrs.sort_unstable();
        assert_eq!(addrs, [STORAGE, MEM[0], MEM[1], PCOMP], "each registers its own host's address");
        Some(c)
    }

    /// Starts the server of `host`, its stderr appended to its log.
    fn start_server(&mut self, host: &'static str) {
        let hb = HEARTBEAT_MS.to_string();
        let dir = self.dir.path().to_str().unwrap().to_string();
        let join = ["--global-mgr", GLOBAL, "--heartbeat-ms", &hb];
        let (state, storage) = (format!("{dir}/global"), format!("{dir}/storage"));
        let args: Vec<&str> = match host {
            "global" => vec!["global-mgr", "--listen", GLOBAL, "--state-dir", &state, "--heartbeat-ms", &hb],
            "storage" => [&["storage-server", "--listen", STORAGE, "--dir", &storage][..], &join].concat(),
            "mem1" => [&["mem-server", "--listen", MEM[0], "--capacity", "256M", "--storage-server", STORAGE][..], &join].concat(),
            "mem2" => [&["mem-server", "--listen", MEM[1], "--capacity", "256M"][..], &join].concat(),
            "pcomp" => [&["pcomp", "--listen", PCOMP][..], &join].concat(),
            "pcomp2" => [&["pcomp", "--listen", PCOMP2][..], &join].concat(),
            other => panic!("no server runs on {other}"),
        };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(host)).unwrap();
        let mut cmd = self.net.lego(host);
        cmd.args(&args).env("LEGO_CLUSTER_SECRET", SECRET).env("RUST_LOG", "info").stderr(log);
        self.servers.insert(host, Server::spawn(cmd));
    }

    /// SIGKILLs the server of `host` and waits until it is gone.
    fn kill(&mut self, host: &str) {
        self.servers.remove(host).unwrap_or_else(|| panic!("no server runs on {host}")).kill();
    }

    fn log_path(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("{host}.log"))
    }

    /// What the server of `host` has logged.
    fn log(&self, host: &str) -> String {
        std::fs::read_to_string(self.log_path(host)).unwrap_or_default()
    }

    /// `lego ARGS` on the client host, presenting `secret` (none: `LEGO_CLUSTER_SECRET` unset).
    fn lego_with(&self, secret: Option<&str>, args: &[&str]) -> Output {
        let mut c = self.net.lego("client");
        c.args(args).env_remove("LEGO_CLUSTER_SECRET").stdin(Stdio::null());
        if let Some(s) = secret {
            c.env("LEGO_CLUSTER_SECRET", s);
        }
        c.timed_output()
    }

    /// `lego ARGS` on the client host, with the secret.
    fn lego(&self, args: &[&str]) -> Output {
        self.lego_with(Some(SECRET), args)
    }

    /// `lego ARGS` on the client host, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.lego(args);
        assert!(out.status.success(), "lego {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// `lego ps --json` from the client host.
    fn ps(&self) -> (Vec<Component>, serde_json::Value) {
        common::ps_json(&self.lego(&["ps", "--json", "--global-mgr", GLOBAL]))
    }

    /// Polls `lego ps --json` until `done` holds (at most 10 s); the list and how long it took.
    fn wait_for(&self, what: &str, done: impl Fn(&[Component]) -> bool) -> (Vec<Component>, Duration) {
        common::poll(what, Duration::from_secs(10), || {
            let (list, _) = self.ps();
            if done(&list) {
                Ok(list)
            } else {
                Err(format!("{list:?}"))
            }
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (host, _) in HOSTS {
                let log = self.log(host);
                if !log.is_empty() {
                    eprintln!("--- log of the {host} host:\n{log}");
                }
            }
        }
    }
}

/// The component listening on `addr`.
fn component<'a>(list: &'a [Component], addr: &str) -> &'a Component {
    list.iter().find(|c| c.addr == addr).unwrap_or_else(|| panic!("{addr} is not registered: {list:?}"))
}

/// Requests a mem-server must have served for a process to count as having pages on it: far
/// more than the few memory calls (mmap, brk) and vRegion set-up a process sends without pages.
const MIN_PAGE_REQUESTS: u64 = 200;

#[test]
fn the_global_manager_spreads_a_process_over_both_mem_servers() {
    if !common::kvm() {
        return;
    }
    let Some(c) = Cluster::start() else { return };
    c.ok(&["vnode", "create", "demo", "--mem", "1G", "--excache", "256K", "--global-mgr", GLOBAL]);
    let (before, _) = c.ps();

    // 262144 values are 2 MiB, and qsort's buffer as much again: several 2 MiB vRegions,
    // through a 256 KiB ExCache, so pages go back and forth to their owners.
    let sort = common::image("sort");
    let args = ["262144", "3"];
    let dir = tempfile::tempdir().unwrap();
    let (root, prog) = (dir.path().to_str().unwrap(), sort.to_str().unwrap());
    let run = ["run", "--global-mgr", GLOBAL, "--vnode", "demo", "--root", root, "--vregion-size", "2M", "--stats", prog];
    let out = c.lego(&[&run[..], &args].concat());
    let ended = Instant::now();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), common::native_stdout(&sort, &args), "{stderr}");
    assert!(stderr.contains("memory on 2 mem-server(s)"), "the VMM used one mem-server: {stderr}");
    // Both mem-servers served its pages. Their request counters, as of heartbeats sent after the
    // run, grew by far more than memory calls alone would, and together by at least the page
    // requests the VMM sent: its remote fetches, and the flushes not piggybacked on one.
    let sent = common::stat(&stderr, "misses (remote fetches)") + common::stat(&stderr, "dirty flushes")
        - common::stat(&stderr, "piggybacked flushes");
    let grown = |l: &[Component], m: &str| component(l, m).requests - component(&before, m).requests;
    let (after, _) = common::poll("both mem-servers serving the process's pages", Duration::from_secs(10), || {
        let since = ended.elapsed();
        let (list, _) = c.ps();
        let fresh = MEM.iter().all(|m| Duration::from_millis(component(&list, m).last_seen_ms) < since);
        let spread = MEM.iter().all(|m| grown(&list, m) >= MIN_PAGE_REQUESTS);
        if fresh && spread && MEM.iter().map(|m| grown(&list, m)).sum::<u64>() >= sent {
            Ok(list)
        } else {
            Err(format!("{sent} page requests sent; {list:?}"))
        }
    });
    eprintln!("sort's {sent} page requests: {} served by {}, {} by {}", grown(&after, MEM[0]), MEM[0], grown(&after, MEM[1]), MEM[1]);

    // The vNode's own files: pushed from the client host to the storage server, and read by the
    // program through the buffer cache of mem1, the mem-server the managers chose.
    let img = tempfile::tempdir().unwrap();
    std::fs::create_dir(img.path().join("bin")).unwrap();
    std::fs::copy(common::image("busybox"), img.path().join("bin/busybox")).unwrap();
    std::fs::write(img.path().join("greeting"), "from the storage host\n").unwrap();
    c.ok(&["image", "push", img.path().to_str().unwrap(), "--vnode", "demo", "--storage-server", STORAGE]);
    // Placed by the GPM, it runs on the pComponent host, its output streamed back to the client.
    let out = c.lego(&["run", "--global-mgr", GLOBAL, "--vnode", "demo", "/bin/busybox", "cat", "/greeting"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the storage host\n");
    let log = c.log("pcomp");
    let started = log.lines().find(|l| l.contains("process started")).unwrap_or_else(|| panic!("the pComponent ran nothing:\n{log}"));
    assert!(started.contains(&format!("peer={CLIENT_IP}:")) && started.contains("/bin/busybox"), "{started}");
}

#[test]
fn a_killed_mem_server_is_down_within_three_heartbeats() {
    let Some(mut c) = Cluster::start() else { return };
    c.kill("mem2");
    let (list, took) = c.wait_for("mem2 marked down", |l| !component(l, MEM[1]).up);
    eprintln!("{} was marked down {took:?} after its SIGKILL (heartbeat {HEARTBEAT_MS} ms)", MEM[1]);
    // Three heartbeats, plus one `lego ps` poll (a process started in a namespace, a handshake
    // across the veths) and scheduling.
    let limit = Duration::from_millis(3 * HEARTBEAT_MS + 300);
    assert!(took <= limit, "took {took:?} (more than {limit:?}) to mark {} down", MEM[1]);
    assert!(list.iter().filter(|x| x.addr != MEM[1]).all(|x| x.up), "the others stay up: {list:?}");
}

#[test]
fn a_restarted_global_manager_keeps_the_vnode_registry() {
    let Some(mut c) = Cluster::start() else { return };
    let create = |name: &str, extra: &[&str]| c.ok(&[&["vnode", "create", name, "--global-mgr", GLOBAL][..], extra].concat());
    assert_eq!(create("web", &["--mem", "2G"]), "created vNode web (id 1, virtual IP 10.77.0.1)\n");
    assert_eq!(create("db", &["--vip", "10.99.9.9"]), "created vNode db (id 2, virtual IP 10.99.9.9)\n");
    let (components, doc) = c.ps();
    let ls = c.ok(&["vnode", "ls", "--global-mgr", GLOBAL]);

    c.kill("global");
    let out = c.lego(&["vnode", "ls", "--global-mgr", GLOBAL]);
    assert!(!out.status.success(), "the global manager is still there");
    c.start_server("global");
    let restarted = Instant::now();

    let (after, doc_after) = c.ps();
    assert_eq!(doc_after["vnodes"], doc["vnodes"], "the vNodes, with their ids and virtual IPs, survive the restart");
    assert_eq!(c.ok(&["vnode", "ls", "--global-mgr", GLOBAL]), ls);
    let ids = |l: &[Component]| l.iter().map(|x| (x.id, x.addr.clone())).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&components), "the components keep their ids");
    // Known components count as just seen after a restart; still up three heartbeats later
    // means their heartbeats reach the new manager.
    c.wait_for("the components heartbeating to the new manager", |l| {
        restarted.elapsed() > Duration::from_millis(3 * HEARTBEAT_MS) && l.len() == 4 && l.iter().all(|x| x.up)
    });
    let created = c.ok(&["vnode", "create", "cache", "--global-mgr", GLOBAL]);
    assert_eq!(created, "created vNode cache (id 3, virtual IP 10.77.0.2)\n", "ids are never given twice");
}

#[test]
fn a_client_without_the_secret_is_refused_and_the_refusal_logged() {
    let Some(c) = Cluster::start() else { return };
    // The global manager's log lines refusing a connection from the client host for its secret.
    let refusals = || {
        let log = c.log("global");
        let from_client = format!("peer={CLIENT_IP}:");
        log.lines()
            .filter(|l| l.contains("handshake refused") && l.contains(&from_client) && l.contains("without the cluster secret"))
            .count()
    };
    assert_eq!(refusals(), 0, "{}", c.log("global"));
    let cases: [(Option<&str>, &[&str]); 2] = [
        (None, &["ps", "--global-mgr", GLOBAL]),
        (Some("not the secret"), &["vnode", "create", "intruder", "--global-mgr", GLOBAL]),
    ];
    for (n, (secret, args)) in cases.into_iter().enumerate() {
        let out = c.lego_with(secret, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "secret {secret:?} got in");
        assert!(err.contains("wrong or missing cluster secret") && err.contains(GLOBAL), "secret {secret:?}: {err}");
        common::poll("the refusal in the global manager's log", Duration::from_secs(5), || {
            if refusals() == n + 1 {
                Ok(())
            } else {
                Err(c.log("global"))
            }
        });
    }
    // With the secret the client gets in, and the refused creation left nothing.
    let ls = c.ok(&["vnode", "ls", "--global-mgr", GLOBAL]);
    assert!(!ls.contains("intruder"), "{ls}");
}

#[test]
fn wget_in_a_vnode_on_one_pcomponent_fetches_from_httpd_in_a_vnode_on_another() {
    if !common::kvm() {
        return;
    }
    let Some(mut c) = Cluster::start() else { return };
    c.start_server("pcomp2");
    c.wait_for("both pComponents up", |l| l.len() == 5 && l.iter().all(|x| x.up));
    for v in ["web", "fetch"] {
        c.ok(&["vnode", "create", v, "--mem", "1G", "--excache", "16M", "--global-mgr", GLOBAL]);
    }
    // A 10 MiB file of pseudo-random bytes in the web vNode, busybox in both.
    let data = common::pseudo_random_bytes(0x2545_f491_4f6c_dd1d, 10 << 20);
    let img = tempfile::tempdir().unwrap();
    std::fs::create_dir(img.path().join("bin")).unwrap();
    std::fs::copy(common::image("busybox"), img.path().join("bin/busybox")).unwrap();
    c.ok(&["image", "push", img.path().to_str().unwrap(), "--vnode", "fetch", "--storage-server", STORAGE]);
    std::fs::write(img.path().join("big.bin"), &data).unwrap();
    c.ok(&["image", "push", img.path().to_str().unwrap(), "--vnode", "web", "--storage-server", STORAGE]);
    let (_, view) = c.ps();
    let web = view["vnodes"].as_array().unwrap().iter().find(|v| v["name"] == "web").unwrap();
    let vip: Vec<String> = web["vip"].as_array().unwrap().iter().map(|b| b.to_string()).collect();
    let url = format!("http://{}/big.bin", vip.join("."));

    // httpd, placed by the GPM on one pComponent; once that one reports its threads, the GPM
    // places the next process on the other.
    let mut httpd = c.net.lego("client");
    httpd.args(["run", "--global-mgr", GLOBAL, "--vnode", "web", "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/"]);
    httpd.env("LEGO_CLUSTER_SECRET", SECRET).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _httpd = Kill(httpd.spawn().unwrap());
    let (server_pcomp, _) = common::poll("httpd runs and its pComponent reports it", Duration::from_secs(20), || {
        let (_, v) = c.ps();
        let on = v["processes"].as_array().unwrap().iter().find(|p| p["who"]["vnode"] == "web").map(|p| p["who"]["pcomp"].as_str().unwrap().to_string());
        let busy = v["components"].as_array().unwrap().iter().find(|x| Some(x["addr"].as_str().unwrap().to_string()) == on);
        match (on.clone(), busy) {
            (Some(on), Some(b)) if b["load"]["threads"].as_u64().unwrap_or(0) > 0 => Ok(on),
            _ => Err(v.to_string()),
        }
    });
    let client_pcomp = if server_pcomp == PCOMP { PCOMP2 } else { PCOMP };
    common::poll("wget from the httpd on the other pComponent", Duration::from_secs(30), || {
        let out = c.lego(&["run", "--global-mgr", GLOBAL, "--vnode", "fetch", "/bin/busybox", "wget", "-q", "-O", "/got.bin", &url]);
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).to_string()) }
    });
    let log = c.log(if client_pcomp == PCOMP { "pcomp" } else { "pcomp2" });
    assert!(log.contains("process started"), "wget did not run on the other pComponent {client_pcomp}:\n{log}");
    // The file is byte-identical: its checksum in the fetch vNode is the native one.
    let out = c.ok(&["run", "--global-mgr", GLOBAL, "--vnode", "fetch", "/bin/busybox", "md5sum", "/got.bin"]);
    let local = img.path().join("big.bin");
    let native = common::native_stdout(&common::image("busybox"), &["md5sum", local.to_str().unwrap()]);
    assert_eq!(out.split_whitespace().next(), native.split_whitespace().next(), "the fetched file differs");
}

/// Fills about 1.3 MB of shell memory, waits for a file `go` in its directory, then prints a
/// digest of that memory (see `tests/reclaim.rs`).
const FILL_AND_WAIT: &str =
    "x=$(./busybox seq 1 200000); while [ ! -e go ]; do ./busybox sleep 0.1; done; echo \"$x\" | ./busybox md5sum";

/// Pages each mem-server holds, as its last heartbeat says, and the processes `lego ps` lists.
fn held(c: &Cluster) -> (Vec<u64>, Vec<serde_json::Value>) {
    let (_, v) = c.ps();
    let used = MEM
        .iter()
        .map(|m| {
            let comps = v["components"].as_array().unwrap();
            let x = comps.iter().find(|x| x["addr"] == *m).unwrap_or_else(|| panic!("{m} is not registered"));
            x["load"]["used_bytes"].as_u64().unwrap()
        })
        .collect();
    (used, v["processes"].as_array().cloned().unwrap_or_default())
}

#[test]
fn replicas_on_two_hosts_survive_a_killed_mem_server_and_a_killed_vmm_is_reclaimed() {
    if !common::kvm() {
        return;
    }
    let Some(mut c) = Cluster::start() else { return };
    c.ok(&["vnode", "create", "rep", "--mem", "1G", "--excache", "256K", "--global-mgr", GLOBAL]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(common::image("busybox"), dir.path().join("busybox")).unwrap();
    let busybox = common::image("busybox");
    let root = dir.path().to_str().unwrap();
    let start = || {
        let mut run = c.net.lego("client");
        run.args(["run", "--global-mgr", GLOBAL, "--vnode", "rep", "--root", root, "--replicas", "2", "--stats"]);
        run.args([busybox.to_str().unwrap(), "sh", "-c", FILL_AND_WAIT]);
        run.env("LEGO_CLUSTER_SECRET", SECRET).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        run.spawn().unwrap()
    };
    // Each host holds a copy of the process's vRegions, and the manager lists it: its home.
    // The home holds the secondaries (the primaries go elsewhere while they can), which mem1,
    // in front of the storage server, keeps in its backup log and file; the other host holds
    // the primaries' pages in frames.
    let holding = || {
        common::poll("the process listed, each vRegion with a copy on each mem-server host", Duration::from_secs(60), || {
            let (used, procs) = held(&c);
            let Some(p) = procs.first() else { return Err(format!("used {used:?}, no process")) };
            let home = p["who"]["home"].as_str().unwrap().to_string();
            let vregions = p["cache"]["vregions"].as_array().cloned().unwrap_or_default();
            let on_both = |v: &serde_json::Value| v["state"] == "Replicated" && v["primary"] != home && v["secondary"] == home.as_str();
            let primaries = MEM.iter().position(|m| *m != home).unwrap();
            if !vregions.is_empty() && vregions.iter().all(on_both) && used[primaries] >= 1 << 20 {
                Ok(home)
            } else {
                Err(format!("used {used:?}, home {home}, vRegions {vregions:?}"))
            }
        })
        .0
    };

    // kill -9 of the VMM on the client host: the manager has the home release it on both hosts.
    let mut killed = start();
    holding();
    let at = Instant::now();
    killed.kill().unwrap();
    killed.wait().unwrap();
    common::poll("the killed process's pages released on both hosts", Duration::from_secs(60), || {
        let (used, procs) = held(&c);
        if used.iter().all(|&u| u == 0) && procs.is_empty() { Ok(()) } else { Err(format!("used {used:?}, {} processes", procs.len())) }
    });
    eprintln!("the killed VMM's pages were released on both hosts {:.1} s after its kill -9", at.elapsed().as_secs_f64());

    // kill -9 of the host holding the primary copy (with two copies on two servers, the home
    // holds the secondary): the program goes on from the copy on the home's host.
    let child = start();
    let home = holding();
    let primary = if home == MEM[0] { "mem2" } else { "mem1" };
    c.kill(primary);
    std::fs::write(dir.path().join("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let native_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&busybox, native_dir.path().join("busybox")).unwrap();
    std::fs::write(native_dir.path().join("go"), "").unwrap();
    let want = common::native(&native_dir.path().join("busybox"), &["sh", "-c", FILL_AND_WAIT], native_dir.path());
    assert_eq!(String::from_utf8_lossy(&out.stdout), want.stdout, "{stderr}");
    assert!(stderr.contains("fail-overs"), "no fail-over after the kill of {primary}: {stderr}");
}
