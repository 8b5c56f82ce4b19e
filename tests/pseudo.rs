//! End-to-end tests of what a vNode generates from its own state rather than the host's: the
//! pseudo-files of `/proc`, `/dev` and `/sys` (compared with a native run where the two must
//! agree, checked for format where the values are the vNode's own), busybox's `ps`, `free`,
//! `uptime` and `top` inside a vNode, the vDSO's clocks with glibc and with musl, and a sweep of
//! busybox applets against native runs.
//!
//! Without `/dev/kvm` these tests fail with a clear message, unless `LEGO_SKIP_KVM_TESTS=1`.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lego_testkit as common;
use common::{busybox_files, image, kvm, lego, native, run, Run};

/// A vNode run of `prog args` with its files in `dir` (and its host path as the program).
fn vnode(prog: &Path, args: &[&str], dir: &Path, options: &[&str]) -> Run {
    run(
        lego(options, prog, args, dir),
        Duration::from_secs(120),
        &format!("lego run {} {args:?}", prog.display()),
    )
}

/// Busybox in `dir/bin` with a link for each of its applets, so that a shell finds the same
/// programs in `/bin` of a vNode whose root is `dir` and natively in `dir/bin`. Returns it.
fn busybox_root(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let bb = bin.join("busybox");
    std::fs::copy(image("busybox"), &bb).unwrap();
    // A child another test thread forks meanwhile holds the copy open for writing until it
    // execs: wait for that to pass (ETXTBSY) before anything runs the copy.
    let list = loop {
        match Command::new(&bb).arg("--list").output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            r => break r.unwrap(),
        }
    };
    for applet in String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .filter(|a| *a != "busybox")
    {
        std::fs::hard_link(&bb, bin.join(applet)).unwrap();
    }
    bb
}

/// `busybox args` natively, with the applets of [`busybox_root`] first in `PATH`.
fn native_bb(bb: &Path, args: &[&str], dir: &Path) -> Run {
    let mut c = common::native_command(bb);
    c.args(args)
        .current_dir(dir)
        .env("PATH", bb.parent().unwrap());
    run(c, Duration::from_secs(60), "native run")
}

/// `busybox args` in a vNode whose root is `dir` (made by [`busybox_root`]).
fn vnode_bb(bb: &Path, args: &[&str], dir: &Path) -> Run {
    vnode(bb, args, dir, &["--env", "PATH=/bin"])
}

/// Pseudo-file reads whose output is the same natively and in a vNode.
const SAME_AS_NATIVE: &str = r#"
cat /proc/self/cmdline | tr '\0' ' '; echo
cat /proc/self/comm
cut -d' ' -f2,3 /proc/self/stat
grep -E '^(Name|State|Threads):' /proc/self/status
grep -c '\[stack\]' /proc/self/maps
grep -c '\[vdso\]' /proc/self/maps
readlink /proc/self/fd/0 >/dev/null && echo fd0 is a link
test -d /proc/self/fd && echo fd is a directory
test -L /proc/self && echo self is a link
readlink /dev/stdin /dev/stdout /dev/stderr /dev/fd
echo discarded > /dev/null; echo "null: $?"
cat /dev/null | wc -c
head -c 16 /dev/urandom | wc -c
head -c 9 /dev/random | wc -c
head -c 5 /dev/zero | od -An -tx1
echo full > /dev/full 2>/dev/null; echo "full: $?"
ls -l /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty | cut -c1-10,35-42
echo to stderr > /dev/stderr
echo to stdout > /dev/stdout
cat /sys/devices/system/cpu/online /sys/devices/system/cpu/possible
grep -c ^processor /proc/cpuinfo
awk '{ print NF }' /proc/uptime /proc/loadavg
head -1 /proc/stat | cut -c1-4
grep -c '^cpu[0-9]' /proc/stat
grep -cE '^(MemTotal|MemFree|MemAvailable|Cached|SwapTotal):' /proc/meminfo
test -e /proc/no-such-file || echo no such file
cd /proc/self && cat comm
cat /proc/self/limits
(ulimit -n 100; ulimit -S -c 4096; grep -E '^Max (open files|core file size)' /proc/self/limits)
"#;

#[test]
fn proc_dev_and_sys_files_read_as_natively() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bb = busybox_root(dir.path());
    let n = native_bb(&bb, &["sh", "-c", SAME_AS_NATIVE], dir.path());
    let l = vnode_bb(&bb, &["sh", "-c", SAME_AS_NATIVE], dir.path());
    assert_eq!(n.status, Some(0), "native: {}", n.stderr);
    assert_eq!(
        (l.status, l.stdout.as_str(), l.stderr.as_str()),
        (Some(0), n.stdout.as_str(), n.stderr.as_str())
    );
}

/// The vNode's own figures: the format Linux uses, values of the vNode.
const VNODE_FIGURES: &str = r#"
sleep 5 &
until [ "$(head -c 5 /proc/2/cmdline)" = sleep ]; do :; done
echo "== ps"; ps
echo "== free"; free
echo "== uptime"; uptime
echo "== top"; top -b -n 1
echo "== proc"; ls /proc
echo "== maps"; cat /proc/1/maps
echo "== status"; cat /proc/1/status
echo "== meminfo"; cat /proc/meminfo
echo "== stat"; cat /proc/stat
echo "== task"; ls /proc/2/task; cut -d' ' -f1,3 /proc/2/task/2/stat; grep -E '^(Tgid|Pid):' /proc/2/task/2/status; ls /proc/2/task/3 2>&1 | cut -d: -f3
echo "== sleeper"; cat /proc/2/cmdline | tr '\0' ' '; echo; readlink /proc/2/exe; readlink /proc/self/exe
kill %1
"#;

/// The lines of `out` from the one after `== section` to the next section.
fn section<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .skip_while(|l| *l != format!("== {name}"))
        .skip(1)
        .take_while(|l| !l.starts_with("== "))
        .collect()
}

#[test]
fn ps_free_uptime_and_top_show_the_vnode() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bb = busybox_root(dir.path());
    let l = vnode_bb(&bb, &["sh", "-c", VNODE_FIGURES], dir.path());
    let out = &l.stdout;
    assert!(l.stderr.is_empty(), "{}", l.stderr);
    // ps: the shell (pid 1), the sleeper it started (pid 2), and ps itself, nothing of the host.
    let ps = section(out, "ps");
    assert_eq!(
        ps[0].split_whitespace().collect::<Vec<_>>(),
        ["PID", "USER", "COMMAND"],
        "{ps:?}"
    );
    let pids: Vec<&str> = ps[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(&pids[..2], ["1", "2"], "{ps:?}");
    assert_eq!(pids.len(), 3, "the shell, the sleeper and ps: {ps:?}");
    assert!(ps[2].ends_with("sleep 5"), "{ps:?}");
    // free: the vNode's 1 GiB.
    let free = section(out, "free");
    let mem: Vec<&str> = free[1].split_whitespace().collect();
    assert_eq!(
        (mem[0], mem[1], mem.len()),
        ("Mem:", "1048576", 7),
        "{free:?}"
    );
    let uptime = section(out, "uptime").join("\n");
    assert!(
        uptime.contains(" up ") && uptime.contains("load average:"),
        "{uptime}"
    );
    let top = section(out, "top");
    assert!(
        top[0].starts_with("Mem: ")
            && top[1].starts_with("CPU:")
            && top[2].starts_with("Load average:"),
        "{top:?}"
    );
    assert!(
        top.iter().any(|l| l.ends_with("top -b -n 1"))
            && top.iter().any(|l| l.trim_start().starts_with("2 ")),
        "{top:?}"
    );
    // /proc lists the vNode's processes and files.
    let proc = section(out, "proc");
    for name in [
        "1", "2", "cpuinfo", "loadavg", "meminfo", "self", "stat", "uptime",
    ] {
        assert!(proc.contains(&name), "{name} in {proc:?}");
    }
    let maps = section(out, "maps");
    assert!(
        maps.iter().any(|l| l.ends_with("[heap]"))
            && maps.iter().any(|l| l.ends_with(" /bin/busybox")),
        "{maps:?}"
    );
    assert!(maps.last().unwrap().ends_with("[vdso]"), "{maps:?}");
    let status = section(out, "status");
    assert!(
        status.contains(&"Name:\tbusybox")
            && status.contains(&"Pid:\t1")
            && status.contains(&"PPid:\t0"),
        "{status:?}"
    );
    let meminfo = section(out, "meminfo");
    assert_eq!(
        meminfo[0].split_whitespace().collect::<Vec<_>>(),
        ["MemTotal:", "1048576", "kB"]
    );
    assert!(
        meminfo.iter().any(|l| l.starts_with("ExCacheTotal:")),
        "{meminfo:?}"
    );
    let stat = section(out, "stat");
    assert_eq!(stat[0].split_whitespace().count(), 11, "{stat:?}");
    assert!(stat.iter().any(|l| l.starts_with("btime ")), "{stat:?}");
    // A process's threads have directories of their own below task/ (the sleeper has one).
    assert_eq!(section(out, "task"), ["2", "2 S", "Tgid:\t2", "Pid:\t2", " No such file or directory"]);
    // Paths are the vNode's: the program is /bin/busybox below its root (the shell starts its
    // applets through /proc/self/exe, which Linux too resolves to the file).
    assert_eq!(
        section(out, "sleeper"),
        ["sleep 5 ", "/bin/busybox", "/bin/busybox"]
    );
}

/// `/proc/mounts` (a link to `self/mounts`) and `mountinfo` list the vNode's files at `/`
/// (their source the host directory, with a space escaped as Linux escapes it) and the pseudo
/// file systems, with the devices `stat` gives their roots.
#[test]
fn mounts_list_the_vnode_files_and_the_pseudo_file_systems() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a root");
    std::fs::create_dir(&root).unwrap();
    let bb = busybox_root(&root);
    let script = "readlink /proc/mounts; cat /proc/mounts; cat /proc/self/mountinfo; stat -c %d / /proc /sys /dev";
    let got = vnode_bb(&bb, &["sh", "-c", script], &root);
    assert_eq!(got.status, Some(0), "{}", got.stderr);
    let lines: Vec<&str> = got.stdout.lines().collect();
    let source = std::fs::canonicalize(&root).unwrap().display().to_string().replace(' ', "\\040");
    assert_eq!(lines[0], "self/mounts");
    let first: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!((first[0], first[1], first[4], first[5]), (source.as_str(), "/", "0", "0"), "{lines:?}");
    assert!(first[3].starts_with("rw,"), "{lines:?}");
    assert_eq!(
        lines[2..5],
        [
            "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
            "sysfs /sys sysfs ro,nosuid,nodev,noexec,relatime 0 0",
            "devtmpfs /dev devtmpfs rw,nosuid,relatime 0 0",
        ],
        "{lines:?}"
    );
    let devs: Vec<u64> = lines[9..13].iter().map(|d| d.parse().unwrap()).collect();
    for (i, (line, dev)) in lines[5..9].iter().zip(devs).enumerate() {
        let f: Vec<&str> = line.split(' ').collect();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        assert_eq!((f[0], f[1], f[2]), (&*(i + 2).to_string(), if i == 0 { "1" } else { "2" }, &*format!("{major}:{minor}")), "{lines:?}");
        assert_eq!((f[4], f[6]), (["/", "/proc", "/sys", "/dev"][i], "-"), "{lines:?}");
    }
}

/// Seconds since the epoch now.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn clocks_come_from_the_vdso_with_glibc_and_musl() {
    if !kvm() {
        return;
    }
    for prog in ["vdsotime", "vdsotime.musl"] {
        let p = image(prog);
        let dir = tempfile::tempdir().unwrap();
        let n = native(&p, &[], dir.path());
        let before = now();
        let l = vnode(&p, &[], dir.path(), &["--stats"]);
        let after = now();
        assert_eq!(l.status, Some(0), "{prog}: {}\n{}", l.stdout, l.stderr);
        // The checks: a vDSO, clocks that never go back and agree with each other.
        let checks = |out: &str| out.lines().take(5).map(str::to_string).collect::<Vec<_>>();
        assert_eq!(checks(&l.stdout), checks(&n.stdout), "{prog}");
        // The guest's wall clock is the host's.
        let real: f64 = l
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("realtime: "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            before - 0.01 <= real && real <= after + 0.01,
            "{prog}: {real} outside [{before}, {after}]"
        );
        // 1.2 million clock reads, and they cost no exit: the system calls are start-up's.
        let first = l.stderr.lines().next().unwrap_or_default();
        let calls: u64 = first
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {first}"));
        assert!(
            calls < 200,
            "{prog} made {calls} system calls: the clock reads exited\n{}",
            l.stderr
        );
    }
}

/// Why a vNode run prints something else than a native one by design, and what it prints.
type Differs = Option<(&'static str, &'static str)>;

/// Busybox applets compared with native runs: each case is the applet and its arguments, and
/// `None` if the vNode must print exactly what the native run prints, or the reason and the
/// expected vNode output where the two differ by design.
const SWEEP: &[(&[&str], Differs)] = &[
    (&["basename", "/a/b/c.txt", ".txt"], None),
    (&["dirname", "/a/b/c.txt"], None),
    (&["printf", "%s-%d\\n", "x", "42"], None),
    (&["true"], None),
    (&["false"], None),
    (&["factor", "360"], None),
    (&["seq", "-s", ",", "5"], None),
    (&["sum", "words.txt"], None),
    (&["cksum", "words.txt"], None),
    (&["sha1sum", "words.txt"], None),
    (&["sha512sum", "table.csv"], None),
    (&["base64", "table.csv"], None),
    (&["hexdump", "-C", "sub/a"], None),
    (&["rev", "words.txt"], None),
    (&["fold", "-w", "3", "table.csv"], None),
    (&["nl", "words.txt"], None),
    (&["paste", "-d:", "words.txt", "words.txt"], None),
    (&["tac", "words.txt"], None),
    (&["expand", "table.csv"], None),
    (&["comm", "words.txt", "table.csv"], None),
    (&["cmp", "words.txt", "table.csv"], None),
    (&["diff", "words.txt", "table.csv"], None),
    (&["strings", "sub/a"], None),
    (&["find", ".", "-name", "*.txt"], None),
    (&["find", "sub", "-type", "f"], None),
    (&["stat", "-c", "%s %F %a", "table.csv", "sub"], None),
    (&["realpath", "sub/../words.txt"], Some(("paths are the vNode's: its root is the directory", "/words.txt\n"))),
    (&["grep", "-c", "^Pid:", "/proc/self/status"], None),
    (&["uname", "-s", "-m"], None),
    (&["nproc"], None),
    (&["id", "-u"], None),
    (&["test", "-f", "words.txt"], None),
    (&["expr", "3", "+", "4"], None),
    (&["sh", "-c", "yes | head -3"], None),
    (&["sh", "-c", "gzip -c words.txt | gunzip -c | md5sum"], None),
    (&["sh", "-c", "bzip2 -c table.csv | bunzip2 -c | wc -c"], None),
    (&["sh", "-c", "tar cf - sub | tar tf - | sort"], None),
    (&["sh", "-c", "mkdir -p x/y && echo > x/y/z && ls -R x && rm -r x && ls"], None),
    (&["sh", "-c", "cp words.txt w2 && mv w2 w3 && cat w3 && rm w3"], None),
    (&["sh", "-c", "dd if=/dev/zero of=z bs=1k count=3 2>/dev/null; wc -c z; split -b 1000 z part; ls part*"], None),
    (&["sh", "-c", "echo hi | tee t1 > /dev/null; cat t1"], None),
    (&["sh", "-c", "sleep 0; echo slept"], None),
    (&["sh", "-c", "head -c 100 /dev/urandom | wc -c"], None),
    (&["sh", "-c", "readlink -f /proc/self/exe | wc -l"], None),
    (&["sort", "-n", "-k3", "-t,", "table.csv"], None),
    (&["hostname"], Some(("the vNode's own name", "vnode\n"))),
];

#[test]
fn busybox_applets_sweep_as_natively() {
    if !kvm() {
        return;
    }
    for (args, differs) in SWEEP {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        busybox_files(a.path());
        busybox_files(b.path());
        let l = vnode_bb(&busybox_root(b.path()), args, b.path());
        match differs {
            None => {
                let n = native_bb(&busybox_root(a.path()), args, a.path());
                assert_eq!(
                    (&l.stdout, &l.stderr, l.status),
                    (&n.stdout, &n.stderr, n.status),
                    "busybox {args:?}"
                );
            }
            Some((why, want)) => assert_eq!(
                (l.stdout.as_str(), l.status),
                (*want, Some(0)),
                "busybox {args:?}: {why}"
            ),
        }
    }
}
