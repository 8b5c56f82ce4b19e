//! End-to-end tests of `lego run`: real vNodes under KVM, compared with native runs of the same
//! static binaries from `guest-images/out` (built by `make guest-images`).
//!
//! Without `/dev/kvm` these tests fail with a clear message, unless `LEGO_SKIP_KVM_TESTS=1`,
//! in which case each says on stderr that it was skipped.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lego_testkit as common;
use common::{busybox_files, image, kvm, BUSYBOX_CASES, WORDS};

struct Run {
    status: i32,
    stdout: Vec<u8>,
    stderr: String,
}

/// How long one program may run before the test calls it a hang.
const LIMIT: Duration = Duration::from_secs(120);

fn run(cmd: Command, stdin: &[u8]) -> Run {
    let what = format!("{cmd:?}");
    let r = common::run_input(cmd, Some(stdin), LIMIT, &what);
    Run { status: r.status.unwrap_or(-1), stdout: r.stdout, stderr: r.stderr }
}

/// Runs `prog args` natively in `dir`.
fn native(prog: &Path, args: &[&str], dir: &Path, stdin: &[u8]) -> Run {
    let mut c = common::native_command(prog);
    c.args(args).current_dir(dir).env("TZ", "UTC");
    run(c, stdin)
}

/// Runs `prog args` in a vNode whose root is `dir` (also the host cwd, so argv[0] matches).
fn vnode(prog: &Path, args: &[&str], dir: &Path, stdin: &[u8], extra: &[&str]) -> Run {
    let mut c = common::lego(extra, prog, args, dir);
    c.env("TZ", "UTC");
    run(c, stdin)
}

fn assert_same(name: &str, native: &Run, lego: &Run) {
    assert_eq!(
        String::from_utf8_lossy(&lego.stdout),
        String::from_utf8_lossy(&native.stdout),
        "{name}: stdout differs (vNode stderr: {})",
        lego.stderr
    );
    assert_eq!(lego.status, native.status, "{name}: status differs (vNode stderr: {})", lego.stderr);
}

/// Runs a guest image natively and in a vNode, each in a fresh directory, and compares.
fn compare(name: &str, args: &[&str], stdin: &[u8]) -> (Run, Run) {
    let prog = image(name);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let n = native(&prog, args, a.path(), stdin);
    let l = vnode(&prog, args, b.path(), stdin, &[]);
    assert_same(&format!("{name} {args:?}"), &n, &l);
    (n, l)
}

#[test]
fn hello_glibc_musl_pie_rust() {
    if !kvm() {
        return;
    }
    for name in ["hello", "hello.musl", "hello.pie"] {
        let (_, l) = compare(name, &[], b"");
        assert_eq!(l.stdout, b"hello from a vNode\n");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    compare("rust-hello", &[], b"");
    let prog = image("rust-hello");
    let n = native(&prog, &["."], dir.path(), b"");
    let l = vnode(&prog, &["."], dir.path(), b"", &[]);
    assert_same(&format!("rust-hello {d}"), &n, &l);
}

#[test]
fn argv_env_auxv() {
    if !kvm() {
        return;
    }
    for name in ["auxv", "auxv.musl"] {
        let (_, l) = compare(name, &["one", "two words", ""], b"");
        assert_eq!(l.status, 4);
    }
}

#[test]
fn exit_status_and_stdin() {
    if !kvm() {
        return;
    }
    assert_eq!(compare("exitcode", &[], b"").1.status, 42);
    assert_eq!(compare("exitcode", &["300"], b"").1.status, 44);
    let input: Vec<u8> = (0..200_000u32).map(|i| b"abcdefgh\n"[(i % 9) as usize]).collect();
    for name in ["stdin_echo", "stdin_echo.musl"] {
        let (n, l) = compare(name, &[], &input);
        assert_eq!(n.stderr, l.stderr, "{name}: stderr differs");
    }
}

#[test]
fn file_io_round_trip() {
    if !kvm() {
        return;
    }
    for name in ["fileio", "fileio.musl"] {
        let (_, l) = compare(name, &["."], b"");
        assert_eq!(l.status, 0, "{}", String::from_utf8_lossy(&l.stdout));
    }
}

#[test]
fn memory_heavy_programs() {
    if !kvm() {
        return;
    }
    for name in ["malloc", "malloc.musl"] {
        compare(name, &[], b"");
    }
    compare("checksum", &["48", "7"], b"");
    compare("checksum.musl", &["16"], b"");
    compare("sort", &["300000", "3"], b"");
    compare("sort.musl", &["100000"], b"");
}

#[test]
fn time_and_system_information() {
    if !kvm() {
        return;
    }
    for name in ["timeinfo", "timeinfo.musl"] {
        assert_eq!(compare(name, &[], b"").1.status, 0);
    }
}

#[test]
fn guest_faults_become_linux_signals() {
    if !kvm() {
        return;
    }
    let cases: &[(&str, &[&str], i32, &str)] = &[
        ("segv", &[], 139, "page fault at address 0x10 (write, address not mapped)"),
        ("segv.musl", &[], 139, "page fault at address 0x10"),
        ("segv_ro", &["ro"], 139, "(write, access not permitted)"),
        ("segv_ro", &["unmapped"], 139, "(read, address not mapped)"),
        ("ud2", &[], 132, "SIGILL: invalid opcode"),
        ("divzero", &[], 136, "SIGFPE: divide error"),
        ("gp", &[], 139, "SIGSEGV: general protection fault"),
        ("abort", &[], 134, ""),
        ("abort.musl", &[], 134, ""),
    ];
    for (name, args, status, message) in cases {
        let (_, l) = compare(name, args, b"");
        assert_eq!(l.status, *status, "{name}");
        assert!(l.stderr.contains(message), "{name}: stderr {:?} lacks {message:?}", l.stderr);
        if !message.is_empty() {
            assert!(l.stderr.contains("rip 0x"), "{name}: no RIP in {:?}", l.stderr);
            assert_eq!(l.stderr.lines().count(), 1, "{name}: one line expected: {:?}", l.stderr);
        }
    }
}

#[test]
fn bad_programs_get_a_clear_error_and_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let hello = std::fs::read(image("hello")).unwrap();
    let mut arm = hello.clone();
    arm[18] = 183;
    let mut elf32 = hello.clone();
    elf32[4] = 1;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("script", b"#!/bin/sh\necho hi\n".to_vec(), "not an ELF executable"),
        ("empty", Vec::new(), "not an ELF executable"),
        ("truncated", hello[..100].to_vec(), "truncated ELF file"),
        ("truncated-data", hello[..hello.len() / 2].to_vec(), "truncated ELF file"),
        ("arm", arm, "another architecture (AArch64)"),
        ("elf32", elf32, "not a 64-bit ELF file"),
    ];
    for (name, bytes, message) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let l = vnode(&path, &[], dir.path(), b"", &[]);
        assert_eq!(l.status, 2, "{name}: {}", l.stderr);
        assert!(l.stderr.contains(message), "{name}: {:?} lacks {message:?}", l.stderr);
        assert_eq!(l.stderr.lines().count(), 1, "{name}: {:?}", l.stderr);
    }
    // A dynamically linked program whose interpreter is not in the vNode's files, then one
    // whose interpreter there is no ELF file.
    let dynamic = vnode(Path::new("/bin/true"), &[], dir.path(), b"", &[]);
    assert_eq!(dynamic.status, 2);
    assert!(dynamic.stderr.contains("program interpreter /lib64/ld-linux-x86-64.so.2 cannot be read from the vNode's files"), "{}", dynamic.stderr);
    assert!(dynamic.stderr.contains("No such file"), "{}", dynamic.stderr);
    std::fs::create_dir(dir.path().join("lib64")).unwrap();
    std::fs::write(dir.path().join("lib64/ld-linux-x86-64.so.2"), "#!/bin/sh\n").unwrap();
    let bad = vnode(Path::new("/bin/true"), &[], dir.path(), b"", &[]);
    assert_eq!(bad.status, 2);
    assert!(bad.stderr.contains("program interpreter /lib64/ld-linux-x86-64.so.2: not an ELF executable"), "{}", bad.stderr);
    let missing = vnode(&dir.path().join("nope"), &[], dir.path(), b"", &[]);
    assert_eq!(missing.status, 2);
    assert!(missing.stderr.contains("No such file"), "{}", missing.stderr);
}

#[test]
fn files_are_confined_to_the_vnode_root() {
    if !kvm() {
        return;
    }
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "host secret\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("inside"), "vnode file\n").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("abs-link")).unwrap();
    let bb = image("busybox");
    let secret = outside.path().join("secret");
    let up = format!("../../../../../../..{}", secret.display());
    for path in [secret.to_str().unwrap(), up.as_str(), "abs-link"] {
        let l = vnode(&bb, &["cat", path], root.path(), b"", &[]);
        assert_ne!(l.status, 0, "{path} was readable from the vNode");
        assert!(!String::from_utf8_lossy(&l.stdout).contains("host secret"), "{path} escaped");
    }
    let l = vnode(&bb, &["cat", "/inside"], root.path(), b"", &[]);
    assert_eq!(l.stdout, b"vnode file\n");
}

#[test]
fn the_program_starts_in_the_callers_directory_when_it_is_inside_the_root() {
    if !kvm() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("a/b")).unwrap();
    std::fs::write(root.path().join("a/b/here"), "found\n").unwrap();
    let bb = image("busybox");
    let pwd = |cwd: &Path| {
        let mut c = common::lego(&[], &bb, &["sh", "-c", "pwd; read -r l < here && echo $l"], root.path());
        c.current_dir(cwd);
        run(c, b"")
    };
    let inside = pwd(&root.path().join("a/b"));
    assert_eq!((inside.status, String::from_utf8_lossy(&inside.stdout).as_ref()), (0, "/a/b\nfound\n"), "{}", inside.stderr);
    let outside = tempfile::tempdir().unwrap();
    let l = pwd(outside.path());
    assert_eq!(String::from_utf8_lossy(&l.stdout).lines().next(), Some("/"), "outside the root: {}", l.stderr);
}

#[test]
fn trace_syscalls_prints_each_call() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let l = vnode(&image("hello"), &[], dir.path(), b"", &["--trace-syscalls"]);
    assert_eq!(l.status, 0);
    assert!(l.stderr.contains("write(1, \"hello from a vNode\\n\", 19) = 19"), "{}", l.stderr);
    assert!(l.stderr.contains("exit_group(0)"), "{}", l.stderr);
    assert!(l.stderr.lines().all(|line| line.starts_with("[1] ")), "{}", l.stderr);
}

/// The busybox applets the issue names, on fixed inputs, byte-identical to native.
#[test]
fn busybox_applets_match_native() {
    if !kvm() {
        return;
    }
    let bb = image("busybox");
    for args in BUSYBOX_CASES {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        busybox_files(a.path());
        busybox_files(b.path());
        let n = native(&bb, args, a.path(), WORDS.as_bytes());
        let l = vnode(&bb, args, b.path(), WORDS.as_bytes(), &[]);
        assert_same(&format!("busybox {args:?}"), &n, &l);
    }
}

#[test]
fn bad_sizes_are_usage_errors_that_name_the_option_and_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let busybox = image("busybox");
    let busybox = busybox.to_str().unwrap();
    let mem = "'--mem <MEM>': must be a multiple of 4K from 64M to 1T";
    let excache = "'--excache <EXCACHE>': must be a multiple of 4K from 64K to 1T";
    let capacity = "'--capacity <CAPACITY>': must be a multiple of 4K from 4K to 16T";
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--mem", "0", busybox, "true"], mem),
        (&["run", "--mem", "1", busybox, "true"], mem),
        (&["run", "--mem", "100T", busybox, "true"], mem),
        (&["run", "--mem", "65537K", busybox, "true"], mem),
        (&["run", "--excache", "1", busybox, "true"], excache),
        (&["run", "--excache", "100T", busybox, "true"], excache),
        (&["vnode", "create", "v", "--global-mgr", "127.0.0.1:1", "--mem", "0"], mem),
        (&["vnode", "create", "v", "--global-mgr", "127.0.0.1:1", "--excache", "2T"], excache),
        (&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "0"], capacity),
        (&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "32T"], capacity),
        (&["up", "--capacity", "1"], capacity),
    ];
    for (args, message) in cases {
        // A state directory of its own, so that `lego up` could not touch a real cluster.
        let mut c = common::lego_command();
        c.args(*args).env("LEGO_STATE_DIR", dir.path());
        let out = common::run_input(c, None, LIMIT, &format!("lego {args:?}"));
        let err = &out.stderr;
        assert_eq!(out.status, Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err:?} lacks {message:?}");
        assert!(!err.contains("embedded"), "{args:?} blames the embedded mem-server: {err}");
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "lego up started nothing");

    // The ends of the ranges are good sizes: a vNode of the smallest memory and ExCache runs.
    if !kvm() {
        return;
    }
    let args = ["echo", "smallest"];
    let n = native(Path::new(busybox), &args, dir.path(), b"");
    let mut c = common::lego_command();
    c.args(["run", "--mem", "64M", "--excache", "64K", "--root"]).arg(dir.path()).arg(busybox).args(args).current_dir(dir.path());
    assert_same("busybox echo in the smallest vNode", &n, &run(c, b""));
}
