//! `lego bench apps` end to end: a smoke run of every configuration on tiny inputs, the
//! Infiniswap-style remote swap device on its own, and Ctrl-C in the middle of a run. All of
//! them change the machine (swap, zram, loop devices, FUSE mounts, cgroups) and check that it
//! is exactly as before afterwards. They need root and the cgroup v1 memory controller; they
//! fail and say why otherwise, unless `LEGO_SKIP_SWAP_TESTS=1`.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use lego_testkit as common;
use common::TimedOutput;

use lego_proto::sync::LockExt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// The tests share the machine's swap and zram: one at a time.
static MACHINE: Mutex<()> = Mutex::new(());

/// Whether the swap tests can run; panics with the reason if not, unless told to skip.
fn swap_tests() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let memcg = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    let why = match (root, memcg) {
        (true, true) => return common::kvm(),
        (false, _) => "they need root (swapon, losetup, cgroups)",
        (true, false) => "there is no cgroup v1 memory controller at /sys/fs/cgroup/memory",
    };
    if std::env::var("LEGO_SKIP_SWAP_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED (LEGO_SKIP_SWAP_TESTS=1): {why}");
        return false;
    }
    panic!("the swap benchmark tests cannot run: {why}. Set LEGO_SKIP_SWAP_TESTS=1 to skip them.");
}

/// What the benchmark may change: active swap, zram0, loop devices, FUSE mounts, its cgroups.
fn machine_state() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut loops: Vec<String> = std::fs::read_dir("/sys/block")
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let backing = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
            Some(format!("{name} {}", backing.trim()))
        })
        .collect();
    loops.sort();
    let fuse: Vec<String> = read("/proc/mounts").lines().filter(|l| l.contains("fuse") && !l.contains("fusectl")).map(String::from).collect();
    let cgroups: Vec<String> = std::fs::read_dir("/sys/fs/cgroup/memory")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("lego-bench"))
        .collect();
    format!(
        "swaps:\n{}zram0 disksize: {}loops: {loops:?}\nfuse mounts: {fuse:?}\ncgroups: {cgroups:?}\n",
        read("/proc/swaps"),
        read("/sys/block/zram0/disksize")
    )
}

fn lego() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lego"))
}

fn bench(out: &Path, scale: &str, extra: &[&str]) -> Command {
    let mut c = lego();
    c.args(["bench", "apps", "--quick", "--scale", scale, "--timeout", "60", "--images"])
        .arg(common::image("checksum").parent().unwrap())
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

/// The one results directory under `out`, and its CSV.
fn results(out: &Path) -> (std::path::PathBuf, String) {
    let dir = std::fs::read_dir(out).unwrap().next().expect("a results directory").unwrap().path();
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    (dir, csv)
}

#[test]
fn smoke_every_configuration() {
    let _one = MACHINE.lock_unpoisoned();
    if !swap_tests() {
        return;
    }
    let before = machine_state();
    let out = tempfile::tempdir().unwrap();
    // checksum is left out: its random read-modify-writes at 25% take tens of seconds even
    // on 1 MiB (tests/memory.rs and `lego bench slowdown` cover it in lego).
    let o = bench(out.path(), "0.03", &["--workloads", "wordcount,histogram,kmeans,matmul,psort"]).timed_output();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "lego bench apps failed: {}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(machine_state(), before, "the benchmark left the machine changed");
    let (dir, csv) = results(out.path());
    assert!(dir.join("results.md").exists() && dir.join("slowdown.png").exists());
    let configs = [
        "\"native, unlimited memory (a)\"",
        "Linux swap to local disk (b)",
        "Linux swap to zram (c)",
        "Infiniswap-style remote swap (d)",
        "\"lego, 1 mem-server (e)\"",
        "\"lego, 2 mem-servers (e)\"",
    ];
    for w in ["wordcount", "histogram", "kmeans", "matmul", "psort"] {
        for c in configs {
            let percents: &[&str] = if c.contains("(a)") { &["100"] } else { &["100", "25"] };
            for p in percents {
                let prefix = format!("{w},{c},{p},");
                let line = csv.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no row {prefix} in\n{csv}"));
                // A limit of a quarter of a tiny working set can be below what Linux cannot
                // swap out; the OOM killer then ends the program, and the row says so.
                let oom_ok = p == &"25" && !c.contains("lego");
                assert!(line.contains(",ok,") || (oom_ok && line.contains(",oom-killed,")), "{line}");
            }
        }
    }
}

#[test]
fn remote_swap_device_stores_blocks_and_swaps() {
    let _one = MACHINE.lock_unpoisoned();
    if !swap_tests() {
        return;
    }
    let before = machine_state();
    // Blocks written through the FUSE file come back from the mem-server.
    {
        let server = common::Server::start(&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "256M"]);
        let mount = tempfile::tempdir().unwrap();
        let mut daemon = lego()
            .args(["remote-swap", "--mem-server", &server.addr, "--size", "64M", "--vregion-size", "16M", "--mount"])
            .arg(mount.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = [0u8; 256];
        let n = daemon.stdout.as_mut().unwrap().read(&mut line).unwrap();
        assert!(String::from_utf8_lossy(&line[..n]).contains("serving"), "{:?}", String::from_utf8_lossy(&line[..n]));
        let disk = mount.path().join("disk");
        assert_eq!(std::fs::metadata(&disk).unwrap().len(), 64 << 20);
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&disk).unwrap();
        // Whole blocks in three slabs, and a write across a block boundary.
        let writes: Vec<(u64, Vec<u8>)> = vec![
            (0, vec![1u8; 4096]),
            (20 << 20, (0..8192u32).map(|i| i as u8).collect()),
            ((40 << 20) + 4000, vec![7u8; 200]),
            ((64 << 20) - 4096, vec![9u8; 4096]),
        ];
        for (off, data) in &writes {
            f.seek(SeekFrom::Start(*off)).unwrap();
            f.write_all(data).unwrap();
        }
        for (off, data) in &writes {
            let mut back = vec![0u8; data.len()];
            f.seek(SeekFrom::Start(*off)).unwrap();
            f.read_exact(&mut back).unwrap();
            assert_eq!(&back, data, "block at {off}");
        }
        let mut around = vec![0xffu8; 100];
        f.seek(SeekFrom::Start((40 << 20) + 3900)).unwrap();
        f.read_exact(&mut around).unwrap();
        assert_eq!(around, vec![0u8; 100], "bytes never written read as zeroes");
        drop(f);
        // SAFETY: kill on our own unreaped child.
        unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
        assert!(daemon.wait().unwrap().success());
    }
    assert_eq!(machine_state(), before, "the daemon left its mount behind");
    // Swapping through it under a cgroup limit: pages go out and come back, and the workload
    // prints what it prints natively (the harness checks).
    let out = tempfile::tempdir().unwrap();
    // One thread, and half the working set local: with a quarter of it the OOM killer
    // sometimes ended the run, when reclaim through the FUSE device fell behind.
    let o = bench(out.path(), "0.2", &["--configs", "d", "--workloads", "psort", "--threads", "1", "--percents", "50"])
        .timed_output();
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stderr), String::from_utf8_lossy(&o.stdout));
    let (_, csv) = results(out.path());
    let row = csv.lines().find(|l| l.starts_with("psort,Infiniswap-style remote swap (d),50,")).expect("the 50% row");
    assert!(row.contains(",ok,"), "{row}");
    let swapped: u64 = row.split(" pages swapped out").next().unwrap().rsplit([',', '"']).next().unwrap().parse().unwrap();
    assert!(swapped > 0, "nothing was swapped out: {row}");
    assert_eq!(machine_state(), before);
}

#[test]
fn interrupt_restores_the_system() {
    let _one = MACHINE.lock_unpoisoned();
    if !swap_tests() {
        return;
    }
    let before = machine_state();
    let out = tempfile::tempdir().unwrap();
    let mut child = bench(out.path(), "0.03", &["--configs", "d", "--workloads", "checksum,psort", "--runs", "1000"]).spawn().unwrap();
    // Interrupt once the remote swap device is on.
    common::poll("the remote swap device to be swapped on", Duration::from_secs(60), || {
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap();
        if swaps.contains("/dev/loop") { Ok(()) } else { Err(swaps) }
    });
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill on our own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted run must fail");
    assert_eq!(machine_state(), before, "Ctrl-C left the machine changed");
    let (dir, _) = results(out.path());
    assert!(std::fs::read_to_string(dir.join("results.md")).unwrap().contains("interrupted"));
}
