//! End-to-end tests of vNode disk quotas and of storage servers refusing vNodes nobody told
//! them about, with every component a separate process: `lego vnode create --disk` sets the
//! quota, the GSM tells the storage server, and busybox in the vNode writes past it. The tests
//! that run programs need /dev/kvm.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lego_testkit as common;
use common::TimedOutput;
use common::Server;

const HEARTBEAT_MS: &str = "200";
/// A run's deadline: generous, the machine is shared.
const LIMIT: Duration = Duration::from_secs(120);

fn lego() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lego"))
}

/// `lego ARGS`, which must succeed; its standard output.
fn ok(args: &[&str]) -> String {
    let mut c = lego();
    c.args(args);
    let r = common::run(c, LIMIT, &args.join(" "));
    assert_eq!(r.status, Some(0), "lego {}: {}{}", args.join(" "), r.stdout, r.stderr);
    r.stdout
}

/// A global manager, a storage server and a mem-server caching it, each a process, all up.
struct Cluster {
    global: Server,
    storage: Server,
    _mem: Server,
    _state: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let state = tempfile::tempdir().unwrap();
        let gdir = state.path().join("global");
        let global = Server::start(&[
            "global-mgr",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            gdir.to_str().unwrap(),
            "--heartbeat-ms",
            HEARTBEAT_MS,
        ]);
        let j = ["--global-mgr", global.addr.as_str(), "--heartbeat-ms", HEARTBEAT_MS];
        let sdir = state.path().join("storage");
        let storage = Server::start(&[&["storage-server", "--listen", "127.0.0.1:0", "--dir", sdir.to_str().unwrap()][..], &j].concat());
        let mem = Server::start(
            &[&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "1G", "--storage-server", &storage.addr][..], &j].concat(),
        );
        common::poll("the components to be up", Duration::from_secs(30), || {
            let mut c = lego();
            c.args(["ps", "--json", "--global-mgr", &global.addr]);
            let out = c.timed_output();
            let (list, _) = common::ps_json(&out);
            if list.len() == 2 && list.iter().all(|c| c.up) {
                Ok(())
            } else {
                Err(format!("{list:?}"))
            }
        });
        Cluster { global, storage, _mem: mem, _state: state }
    }

    /// `lego run` of busybox in `vnode`, placed by the managers in this shell's VMM.
    fn busybox(&self, vnode: &str, args: &[&str]) -> common::Run {
        let mut c = lego();
        c.args(["run", "--local", "--global-mgr", &self.global.addr, "--vnode", vnode, "/bin/busybox"]).args(args);
        common::run(c, LIMIT, &format!("busybox {} in {vnode}", args.join(" ")))
    }
}

/// 2 MiB that no run of zeroes or repetition would pass for.
fn pattern() -> Vec<u8> {
    common::pseudo_random_bytes(0x2545_f491_4f6c_dd1d, 2 << 20)
}

fn image(dir: &Path) -> u64 {
    std::fs::create_dir(dir.join("bin")).unwrap();
    std::fs::copy(common::image("busybox"), dir.join("bin/busybox")).unwrap();
    std::fs::write(dir.join("pat"), pattern()).unwrap();
    std::fs::metadata(dir.join("bin/busybox")).unwrap().len()
}

/// A vNode with a quota: busybox `dd` copying a file into it stops with ENOSPC at the quota
/// (the write is refused when the program makes it, not at close), every byte before is
/// intact, `statfs` reports the quota, removing a file frees room again, and another vNode
/// with no quota on the same storage server writes on.
#[test]
fn a_vnode_stops_at_its_disk_quota_and_nothing_else_does() {
    if !common::kvm() {
        return;
    }
    let c = Cluster::start();
    let img = tempfile::tempdir().unwrap();
    let busybox = image(img.path());
    // Room for the image and 1 MiB + 3 pages + 57 bytes more.
    let room = (1 << 20) + 12_345;
    let quota = busybox + (2 << 20) + room;
    let g = c.global.addr.as_str();
    ok(&["vnode", "create", "small", "--mem", "1G", "--excache", "16M", "--disk", &quota.to_string(), "--global-mgr", g]);
    ok(&["vnode", "create", "roomy", "--mem", "1G", "--excache", "16M", "--global-mgr", g]);
    let ls = ok(&["vnode", "ls", "--global-mgr", g]);
    assert!(ls.contains("DISK") && ls.contains(&format!("{} MiB", quota >> 20)), "{ls}");
    for v in ["small", "roomy"] {
        ok(&["image", "push", img.path().to_str().unwrap(), "--vnode", v, "--global-mgr", g]);
    }

    let r = c.busybox("small", &["dd", "if=/pat", "of=/copy", "bs=4096"]);
    assert_eq!(r.status, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
    // Whole 4 KiB writes fit until the last page that does not.
    let copied = (1 << 20) + 3 * 4096;
    let script = format!("stat -c %s /copy; head -c {copied} /pat | cmp - /copy && echo intact; stat -f -c '%b %a %S' /");
    let r = c.busybox("small", &["sh", "-c", &script]);
    assert_eq!(r.status, Some(0), "{}{}", r.stdout, r.stderr);
    let used: u64 = busybox + (2 << 20) + copied;
    let blocks = used.div_ceil(4096);
    assert_eq!(r.stdout, format!("{copied}\nintact\n{blocks} 0 4096\n"), "{}", r.stderr);

    // Another vNode on the same storage server is not limited.
    let r = c.busybox(
        "roomy",
        &["sh", "-c", "dd if=/pat of=/a bs=65536 2>/dev/null && dd if=/pat of=/b bs=4096 2>/dev/null && cmp /pat /b && echo ok"],
    );
    assert_eq!((r.status, r.stdout.as_str()), (Some(0), "ok\n"), "{}", r.stderr);

    // Room again once a file is gone.
    let r = c.busybox("small", &["sh", "-c", "rm /copy && dd if=/pat of=/again bs=65536 count=16 2>/dev/null && stat -c %s /again"]);
    assert_eq!((r.status, r.stdout.as_str()), (Some(0), "1048576\n"), "{}", r.stderr);
}

/// A vNode the storage server was never told about is refused with a clear error, from the
/// global manager (which knows no such vNode) and from the storage server itself.
#[test]
fn an_unknown_vnode_is_refused() {
    let c = Cluster::start();
    let mut cmd = lego();
    cmd.args(["image", "ls", "--vnode", "nosuch", "--storage-server", &c.storage.addr]);
    let r = common::run(cmd, LIMIT, "image ls");
    assert_ne!(r.status, Some(0));
    assert!(r.stderr.contains("does not know vNode nosuch") && r.stderr.contains("lego vnode create nosuch"), "{}", r.stderr);
    if !common::kvm() {
        return;
    }
    let r = c.busybox("nosuch", &["true"]);
    assert_eq!(r.status, Some(125));
    assert!(r.stderr.contains("no vNode nosuch"), "{}", r.stderr);
}

/// A full storage disk (a 16 MiB tmpfs the storage server mounts for itself in a user and mount
/// namespace of its own): busybox `dd` writing chunks of a file with `fsync` gets `ENOSPC` at
/// the chunk that does not fit, the chunks before it are intact, and the server goes on
/// serving reads and `statfs` (no space free).
#[test]
fn a_full_storage_disk_is_enospc_and_keeps_what_fit() {
    if !common::kvm() {
        return;
    }
    if !Command::new("unshare").args(["-rm", "true"]).status().is_ok_and(|s| s.success()) {
        eprintln!(
            "SKIPPED: no unprivileged user and mount namespaces here (`unshare -rm true` failed) to give the storage server a small tmpfs"
        );
        return;
    }
    let disk = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("unshare");
    let script = "mount -t tmpfs -o size=16m tmpfs \"$0\" && exec \"$1\" storage-server --listen 127.0.0.1:0 --dir \"$0\"";
    cmd.args(["-rm", "sh", "-c", script, disk.path().to_str().unwrap(), env!("CARGO_BIN_EXE_lego")]);
    cmd.stderr(std::process::Stdio::null());
    let storage = Server::spawn(cmd);
    let img = tempfile::tempdir().unwrap();
    image(img.path());
    ok(&["image", "push", img.path().to_str().unwrap(), "--vnode", "full", "--storage-server", &storage.addr]);
    let run = |script: &str| {
        let mut c = lego();
        c.args([
            "run",
            "--mem",
            "256M",
            "--excache",
            "16M",
            "--vnode",
            "full",
            "--storage-server",
            &storage.addr,
            "/bin/busybox",
            "sh",
            "-c",
            script,
        ]);
        common::run(c, LIMIT, script)
    };
    // 2 MiB chunks at 2 MiB steps: the disk (16 MiB, of which the image takes 4 and the index
    // some) fills within eight.
    let r = run("for i in 0 1 2 3 4 5 6 7; do dd if=/pat of=/big bs=65536 seek=$((i*32)) conv=notrunc,fsync 2>&1 || { echo full at $i; exit 1; }; done");
    assert_eq!(r.status, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("No space left on device"), "{}", r.stdout);
    let full: u32 = r.stdout.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(full >= 2, "the disk held less than it should: {}", r.stdout);
    let check = format!(
        "p=$(md5sum < /pat); for i in $(seq 0 {}); do [ \"$(dd if=/big bs=65536 skip=$((i*32)) count=32 2>/dev/null | md5sum)\" = \"$p\" ] || echo bad $i; done; stat -f -c %a /",
        full - 1
    );
    let r = run(&check);
    assert_eq!((r.status, r.stdout.as_str()), (Some(0), "0\n"), "{}", r.stderr);
}
