//! End-to-end tests of who owns what a vNode program creates: `owners` (glibc and musl), run as
//! root, makes files, directories, FIFOs and symlinks as root, with `setfsuid`/`setfsgid`, and
//! after `setresuid`/`setresgid` to 1000, beside and inside a set-group-ID directory, opens
//! existing files with `O_CREAT`, creates through a dangling symlink and makes a hard link; then
//! prints every object's owner, group and mode. A vNode on a host directory and one with its
//! files on a `lego storage-server` print what a native run prints; on the host directory the
//! host files are owned so too.
//!
//! The native runs change their ids, so these tests need root (as the VMM does to give files
//! their owners on a host directory). Without `/dev/kvm` they fail with a clear message, unless
//! `LEGO_SKIP_KVM_TESTS=1`.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{image, kvm, lego, run, Server};
use lego_testkit as common;

/// The two builds of the program.
const PROGS: [&str; 2] = ["owners", "owners.musl"];

/// What `prog` prints natively, working in a fresh directory; it must succeed.
fn native(prog: &str) -> String {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the owners tests change ids natively, which needs root; they run as uid {uid}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::native_command(image(prog));
    cmd.arg(dir.path());
    let r = run(cmd, Duration::from_secs(60), &format!("native {prog}"));
    assert_eq!(r.status, Some(0), "native {prog}: {}{}", r.stdout, r.stderr);
    assert!(r.stdout.ends_with("end\n"), "native {prog}: {}", r.stdout);
    r.stdout
}

/// `(uid, gid, permission bits)` of host file `path`, not followed.
fn host_owner(path: &Path) -> (u32, u32, u32) {
    let md = std::fs::symlink_metadata(path).unwrap();
    (md.uid(), md.gid(), md.mode() & 0o7777)
}

#[test]
fn owners_on_a_host_directory_match_native() {
    if !kvm() {
        return;
    }
    for prog in PROGS {
        let want = native(prog);
        let root = tempfile::tempdir().unwrap();
        std::fs::copy(image(prog), root.path().join(prog)).unwrap();
        let what = format!("{prog} on a host directory");
        let got = run(
            lego(&[], &root.path().join(prog), &["/"], root.path()),
            Duration::from_secs(120),
            &what,
        );
        assert_eq!(got.status, Some(0), "{what}: {}{}", got.stdout, got.stderr);
        assert_eq!(got.stdout, want, "{what}; stderr: {}", got.stderr);
        // The host files themselves, not only what the VMM reports of them.
        let t = root.path().join("t");
        assert_eq!(
            host_owner(&t.join("fs.fifo")),
            (1000, 1000, 0o604),
            "{what}"
        );
        assert_eq!(
            host_owner(&t.join("sg/user.dir")),
            (1000, 50, 0o2750),
            "{what}"
        );
        assert_eq!(
            host_owner(&t.join("sg/user.link")),
            (1000, 50, 0o777),
            "{what}"
        );
        assert_eq!(host_owner(&t.join("root.file")), (0, 0, 0o644), "{what}");
    }
}

#[test]
fn owners_on_remote_storage_match_native() {
    if !kvm() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let storage = Server::storage(state.path(), "127.0.0.1:0", &[]);
    let mem = Server::mem("1G", Some(&storage.addr));
    // The programs under /bin, and a directory for each to work in.
    let img = tempfile::tempdir().unwrap();
    std::fs::create_dir(img.path().join("bin")).unwrap();
    for prog in PROGS {
        std::fs::copy(image(prog), img.path().join("bin").join(prog)).unwrap();
        std::fs::create_dir(img.path().join(format!("in-{prog}"))).unwrap();
    }
    common::push_image(&storage.addr, "owners", img.path());
    for prog in PROGS {
        let want = native(prog);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lego"));
        cmd.args([
            "run",
            "--mem",
            "256M",
            "--mem-server",
            &mem.addr,
            "--excache",
            "8M",
        ])
        .args(["--vnode", "owners", "--storage-server", &storage.addr])
        .arg(format!("/bin/{prog}"))
        .arg(format!("/in-{prog}"));
        let what = format!("{prog} on remote storage");
        let got = run(cmd, Duration::from_secs(120), &what);
        assert_eq!(got.status, Some(0), "{what}: {}{}", got.stdout, got.stderr);
        assert_eq!(got.stdout, want, "{what}; stderr: {}", got.stderr);
    }
}
