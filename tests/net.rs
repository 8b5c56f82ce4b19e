//! End-to-end tests of sockets in vNodes (LegoOS §5.2): programs in different vNodes talk over
//! virtual IPs, each vNode a separate `lego run` placed by a global manager (a separate
//! process, with a mem-server), and every program's output is compared with a native run of
//! the same binary. Also: AF_UNIX and SCM_RIGHTS across a fork, the readiness calls, Rust
//! `std::net`, busybox `nc`, `httpd` and `wget`, and the isolation and error cases. They need
//! /dev/kvm.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lego_testkit as common;
use common::TimedOutput;
use common::Server;

const HEARTBEAT_MS: &str = "200";

/// A global manager and a mem-server, with vNodes.
struct Cluster {
    global: Server,
    _mem: Server,
    /// The vNodes' virtual IPs, by name.
    vips: Vec<(String, String)>,
    _state: tempfile::TempDir,
}

fn lego() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lego"))
}

impl Cluster {
    /// A cluster with the vNodes `names`.
    fn new(names: &[&str]) -> Cluster {
        let state = tempfile::tempdir().unwrap();
        let sdir = state.path().join("state");
        let global = Server::start(&["global-mgr", "--listen", "127.0.0.1:0", "--state-dir", sdir.to_str().unwrap(), "--heartbeat-ms", HEARTBEAT_MS]);
        let mem = Server::start(&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "2G", "--global-mgr", &global.addr, "--heartbeat-ms", HEARTBEAT_MS]);
        let mut vips = Vec::new();
        for name in names {
            let out = lego().args(["vnode", "create", name, "--mem", "1G", "--excache", "16M", "--global-mgr", &global.addr]).timed_output();
            assert!(out.status.success(), "vnode create: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8(out.stdout).unwrap();
            let vip = text.trim().rsplit(' ').next().unwrap().trim_end_matches(')').to_string();
            vips.push((name.to_string(), vip));
        }
        // The mem-server must be up in the manager's view before a run is placed.
        common::poll("the mem-server registers", Duration::from_secs(10), || {
            let out = lego().args(["ps", "--json", "--global-mgr", &global.addr]).timed_output();
            let (list, _) = common::ps_json(&out);
            if list.iter().any(|c| c.role == "Memory" && c.up) {
                Ok(())
            } else {
                Err(format!("{list:?}"))
            }
        });
        Cluster { global, _mem: mem, vips, _state: state }
    }

    fn vip(&self, name: &str) -> &str {
        &self.vips.iter().find(|(n, _)| n == name).expect("a vNode of the cluster").1
    }

    /// `lego run` of `prog args` in vNode `vnode` with files in `root`.
    fn run(&self, vnode: &str, root: &Path, prog: &Path, args: &[&str]) -> Command {
        self.run_with(&[], vnode, root, prog, args)
    }

    /// [`Cluster::run`] with more options of `lego run`.
    fn run_with(&self, options: &[&str], vnode: &str, root: &Path, prog: &Path, args: &[&str]) -> Command {
        let mut c = lego();
        c.args(["run", "--global-mgr", &self.global.addr, "--vnode", vnode, "--local", "--root", root.to_str().unwrap()]);
        c.args(options).arg(prog).args(args);
        c
    }
}

/// A program running in the background, killed if the test ends first.
struct Background(Option<Child>);

impl Background {
    fn start(mut cmd: Command) -> Background {
        Background(Some(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null()).spawn().expect("spawn")))
    }

    /// Its output, once it has ended by itself (within `limit`).
    fn finish(mut self, limit: Duration) -> Output {
        let mut child = self.0.take().unwrap();
        let t = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!("still running after {limit:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` to its end; its stdout (it must succeed).
fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).timed_output();
    assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until the server program's first output line is there (it listens).
fn await_listening(server: &mut Background) {
    use std::io::BufRead;
    let out = server.0.as_mut().unwrap().stdout.as_mut().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line, "listening\n");
}

/// A port free on the host now, for native runs.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn echo_server_and_client(server: (Command, Command), client: (Command, Command)) {
    let native = |srv: Command, mut cli: Command| {
        let mut s = Background::start(srv);
        await_listening(&mut s);
        let c = stdout_of(&mut cli);
        let out = s.finish(Duration::from_secs(120));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), c)
    };
    let (ns, nc) = native(server.0, client.0);
    let (vs, vc) = native(server.1, client.1);
    assert_eq!(vc, nc, "the client in a vNode");
    assert_eq!(vs, ns, "the server in a vNode");
}

#[test]
fn an_epoll_echo_server_serves_200_concurrent_clients_from_another_vnode() {
    if !common::kvm() {
        return;
    }
    let c = Cluster::new(&["server", "client"]);
    let root = tempfile::tempdir().unwrap();
    let (prog, musl) = (common::image("epoll_echo"), common::image("epoll_echo.musl"));
    let port = free_port().to_string();
    let mut ns = Command::new(&prog);
    ns.args(["server", &port, "200"]);
    let mut nc = Command::new(&prog);
    nc.args(["client", "127.0.0.1", &port, "200", "20000"]);
    // In the vNodes the server has port 80 of its own virtual IP.
    let vs = c.run("server", root.path(), &musl, &["server", "80", "200"]);
    let vc = c.run("client", root.path(), &prog, &["client", c.vip("server"), "80", "200", "20000"]);
    echo_server_and_client((ns, vs), (nc, vc));
}

/// Output of each build of a program natively and in a vNode of its own.
fn same_as_native(builds: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let native = stdout_of(common::native_command(common::image(builds[0])).current_dir(dir.path()));
    for build in builds {
        let prog = common::image(build);
        let got = stdout_of(lego().args(["run", "--root", dir.path().to_str().unwrap()]).arg(&prog));
        assert_eq!(got, native, "{build} in a vNode");
    }
}

#[test]
fn a_socketpair_passes_descriptors_with_scm_rights_across_a_fork_and_unix_names_live_in_the_vnode() {
    if !common::kvm() {
        return;
    }
    same_as_native(&["sockpass", "sockpass.musl"]);
}

/// The socket nodes `bind` makes are nodes of a storage server too, with the same behaviour.
#[test]
fn unix_socket_names_are_nodes_of_remote_storage_too() {
    if !common::kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let native = stdout_of(common::native_command(common::image("sockpass")).current_dir(dir.path()));
    let (state, pushed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::copy(common::image("sockpass"), pushed.path().join("sockpass")).unwrap();
    let storage = Server::storage(state.path(), "127.0.0.1:0", &[]);
    let mem = Server::mem("1G", Some(&storage.addr));
    common::push_image(&storage.addr, "socks", pushed.path());
    let got = stdout_of(lego().args(["run", "--mem", "1G", "--mem-server", &mem.addr, "--vnode", "socks", "--storage-server", &storage.addr, "/sockpass"]));
    assert_eq!(got, native);
}

#[test]
fn select_poll_epoll_and_eventfd_behave_as_natively() {
    if !common::kvm() {
        return;
    }
    same_as_native(&["readiness", "readiness.musl"]);
}

/// A dual-stack IPv6 server reached over `::1` and 127.0.0.1, the addresses it is shown,
/// `IPV6_V6ONLY`, UDP on `::1` and malformed addresses (the host must have IPv6 loopback).
#[test]
fn ipv6_sockets_are_dual_stack_over_the_vnode_network() {
    if !common::kvm() {
        return;
    }
    same_as_native(&["inet6", "inet6.musl"]);
}

#[test]
fn rust_std_net_tcp_and_udp_work_in_a_vnode() {
    if !common::kvm() {
        return;
    }
    same_as_native(&["rust-net"]);
}

/// What `netcheck ARGS` answers natively and in vNode `vnode`.
fn netcheck(c: &Cluster, vnode: &str, args: &[&str]) -> String {
    let root = tempfile::tempdir().unwrap();
    stdout_of(&mut c.run(vnode, root.path(), &common::image("netcheck"), args))
}

#[test]
fn the_hosts_own_services_are_out_of_reach() {
    if !common::kvm() {
        return;
    }
    let c = Cluster::new(&["a"]);
    // The global manager listens on the host's loopback; natively it is there.
    let (_, port) = c.global.addr.rsplit_once(':').unwrap();
    let native = stdout_of(common::native_command(common::image("netcheck")).args(["connect", "127.0.0.1", port]));
    assert_eq!(native, format!("connect 127.0.0.1:{port}: OK\n"));
    // In a vNode 127.0.0.1 is the vNode's own loopback, where nothing listens.
    assert_eq!(netcheck(&c, "a", &["connect", "127.0.0.1", port]), format!("connect 127.0.0.1:{port}: ECONNREFUSED\n"));
}

#[test]
fn addresses_outside_the_vip_space_are_unreachable() {
    if !common::kvm() {
        return;
    }
    let c = Cluster::new(&["a"]);
    // TEST-NET-1: nothing is sent, the VMM refuses before the host sees anything.
    assert_eq!(netcheck(&c, "a", &["connect", "192.0.2.1", "80"]), "connect 192.0.2.1:80: ENETUNREACH\n");
    assert_eq!(netcheck(&c, "a", &["udp", "192.0.2.1", "53"]), "udp 192.0.2.1:53: ENETUNREACH\n");
}

#[test]
fn binding_another_vnodes_vip_is_eaddrnotavail() {
    if !common::kvm() {
        return;
    }
    let c = Cluster::new(&["a", "b"]);
    let (a, b) = (c.vip("a").to_string(), c.vip("b").to_string());
    assert_eq!(netcheck(&c, "a", &["bind", &b, "80"]), format!("bind {b}:80: EADDRNOTAVAIL\n"));
    assert_eq!(netcheck(&c, "a", &["bind", &a, "80"]), format!("bind {a}:80: OK\n"));
}

#[test]
fn a_taken_port_is_eaddrinuse_and_free_again_when_its_socket_closes() {
    if !common::kvm() {
        return;
    }
    let c = Cluster::new(&["a"]);
    assert_eq!(netcheck(&c, "a", &["bindtwice", "0.0.0.0", "8080"]), "bindtwice 0.0.0.0:8080: EADDRINUSE\n");
    // Taken by another process of the vNode, through the global manager's table.
    let root = tempfile::tempdir().unwrap();
    let mut server = Background::start(c.run("a", root.path(), &common::image("epoll_echo"), &["server", "8080", "1"]));
    await_listening(&mut server);
    assert_eq!(netcheck(&c, "a", &["bind", c.vip("a"), "8080"]), format!("bind {}:8080: EADDRINUSE\n", c.vip("a")));
    // Killed, its VMM cannot give the port back: the manager lets it go once the process has
    // stopped reporting.
    drop(server);
    let want = format!("bind {}:8080: OK\n", c.vip("a"));
    common::poll("the port of a killed server is free again", Duration::from_secs(20), || {
        let got = netcheck(&c, "a", &["bind", c.vip("a"), "8080"]);
        if got == want { Ok(()) } else { Err(got) }
    });
}

#[test]
fn connecting_to_a_vip_port_nobody_listens_on_is_refused() {
    if !common::kvm() {
        return;
    }
    let c = Cluster::new(&["a", "b"]);
    let b = c.vip("b").to_string();
    assert_eq!(netcheck(&c, "a", &["connect", &b, "9"]), format!("connect {b}:9: ECONNREFUSED\n"));
    // Nor on its own vIP.
    let a = c.vip("a").to_string();
    assert_eq!(netcheck(&c, "a", &["connect", &a, "9"]), format!("connect {a}:9: ECONNREFUSED\n"));
}

/// `busybox nc -l -p 9000` in vNode `listener`, `busybox nc VIP 9000` with a line on its
/// input in vNode `sender`: the listener prints the line.
fn nc_between(c: &Cluster, listener: &str, sender: &str) {
    let root = tempfile::tempdir().unwrap();
    let bb = common::image("busybox");
    let l = Background::start(c.run(listener, root.path(), &bb, &["nc", "-l", "-p", "9000"]));
    let line = format!("from {sender} to {listener}\n");
    // The listener may not be up yet: the sender is refused until it is.
    common::poll("nc reaches the listener", Duration::from_secs(20), || {
        let mut s = c.run(sender, root.path(), &bb, &["nc", c.vip(listener), "9000"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        s.stdin.take().unwrap().write_all(line.as_bytes()).unwrap();
        let out = s.wait_with_output().unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    });
    let out = l.finish(Duration::from_secs(20));
    assert_eq!(String::from_utf8_lossy(&out.stdout), line);
}

#[test]
fn busybox_nc_both_ways() {
    if !common::kvm() {
        return;
    }
    let c = Cluster::new(&["left", "right"]);
    nc_between(&c, "left", "right");
    nc_between(&c, "right", "left");
}

/// A 10 MiB file of pseudo-random bytes in `dir`.
fn big_file(dir: &Path) -> PathBuf {
    let data = common::pseudo_random_bytes(0x9e37_79b9_7f4a_7c15, 10 << 20);
    let p = dir.join("big.bin");
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn busybox_wget_fetches_a_file_from_busybox_httpd_in_another_vnode() {
    if !common::kvm() {
        return;
    }
    let c = Cluster::new(&["web", "fetch"]);
    let www = tempfile::tempdir().unwrap();
    let file = big_file(www.path());
    let bb = common::image("busybox");
    let _httpd = Background::start(c.run("web", www.path(), &bb, &["httpd", "-f", "-p", "80", "-h", "/"]));
    let dl = tempfile::tempdir().unwrap();
    let url = format!("http://{}/big.bin", c.vip("web"));
    common::poll("wget from the vNode's httpd", Duration::from_secs(20), || {
        let out = c.run("fetch", dl.path(), &bb, &["wget", "-q", "-O", "/got.bin", &url]).stdin(Stdio::null()).timed_output();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    });
    assert!(std::fs::read(dl.path().join("got.bin")).unwrap() == std::fs::read(file).unwrap(), "the file came through byte-identical");
}

#[test]
fn a_published_port_serves_the_host_and_lego_ps_lists_the_endpoint() {
    if !common::kvm() {
        return;
    }
    let c = Cluster::new(&["web"]);
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "served from a vNode\n").unwrap();
    let port = free_port().to_string();
    let publish = format!("{port}:80");
    let httpd = c.run_with(&["--publish", &publish], "web", www.path(), &common::image("busybox"), &["httpd", "-f", "-p", "80", "-h", "/"]);
    let _httpd = Background::start(httpd);
    let (endpoints, _) = common::poll("lego ps lists the vNode's endpoint", Duration::from_secs(20), || {
        let out = lego().args(["ps", "--json", "--global-mgr", &c.global.addr]).timed_output();
        let (_, v) = common::ps_json(&out);
        let eps = v["endpoints"].as_array().cloned().unwrap_or_default();
        if eps.is_empty() { Err(v.to_string()) } else { Ok(eps) }
    });
    let e = &endpoints[0];
    let vip: Vec<String> = e["endpoint"]["vip"].as_array().unwrap().iter().map(|b| b.to_string()).collect();
    assert_eq!((e["vnode"].as_str(), e["endpoint"]["proto"].as_str(), e["endpoint"]["port"].as_u64()), (Some("web"), Some("Tcp"), Some(80)));
    assert_eq!(vip.join("."), c.vip("web"));
    let table = stdout_of(lego().args(["ps", "--global-mgr", &c.global.addr]));
    assert!(table.contains(&format!("tcp   {}:80", c.vip("web"))), "{table}");
    // A plain host client reaches the service through the published port.
    let (reply, _) = common::poll("the published port answers", Duration::from_secs(20), || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).map_err(|e| e.to_string())?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
        if reply.is_empty() { Err("an empty reply".into()) } else { Ok(reply) }
    });
    assert!(reply.starts_with("HTTP/1.") && reply.ends_with("\r\n\r\nserved from a vNode\n"), "{reply}");
}

/// A vNode created with `--publish` publishes its port in every run, with no option on `lego
/// run`; `lego vnode ls` shows the setting.
#[test]
fn a_vnode_publishes_the_ports_it_was_created_with() {
    if !common::kvm() {
        return;
    }
    let c = Cluster::new(&[]);
    let port = free_port().to_string();
    let publish = format!("{port}:80");
    let out = lego().args(["vnode", "create", "site", "--mem", "1G", "--excache", "16M", "--publish", &publish, "--global-mgr", &c.global.addr]).timed_output();
    assert!(out.status.success(), "vnode create: {}", String::from_utf8_lossy(&out.stderr));
    let ls = stdout_of(lego().args(["vnode", "ls", "--global-mgr", &c.global.addr]));
    assert!(ls.contains(&publish), "{ls}");
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "published by its vNode\n").unwrap();
    let _httpd = Background::start(c.run("site", www.path(), &common::image("busybox"), &["httpd", "-f", "-p", "80", "-h", "/"]));
    let (reply, _) = common::poll("the vNode's published port answers", Duration::from_secs(20), || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).map_err(|e| e.to_string())?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
        if reply.is_empty() { Err("an empty reply".into()) } else { Ok(reply) }
    });
    assert!(reply.starts_with("HTTP/1.") && reply.ends_with("\r\n\r\npublished by its vNode\n"), "{reply}");
}
