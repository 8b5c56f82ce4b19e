//! End-to-end tests of remote files: vNode programs whose files live on a `lego storage-server`
//! process, read and written through the buffer cache of a `lego mem-server` process, print
//! exactly what they print natively on a local directory. A storage server killed and restarted
//! between two programs loses nothing that was fsync'd; one killed while a write waits in the
//! cache fails the fsync that owned it, once, and the file works again once it is back.
//!
//! Without `/dev/kvm` these tests fail with a clear message, unless `LEGO_SKIP_KVM_TESTS=1`.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use lego_proto::storage::{errno, StorageOp, StorageReply, StorageRequest};

use lego_testkit as common;
use common::TimedOutput;
use common::{busybox_files, image, kvm, Server, BUSYBOX_ATTRS_SCRIPT, BUSYBOX_CASES, BUSYBOX_LINKS_SCRIPT, WORDS};

/// Runs `cmd` with `stdin` as its input.
fn output(mut cmd: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd.env("TZ", "UTC").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // A program that does not read its input closes the pipe early: that is not a failure.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// Runs vNode path `prog` of `vnode` with `args`, its memory and file cache on `mem`, its
/// files on `storage`.
fn run(mem: &Server, storage: &Server, vnode: &str, prog: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lego"));
    cmd.args(["run", "--mem", "256M", "--vnode", vnode, "--mem-server", &mem.addr])
        .args(["--storage-server", &storage.addr, "--excache", "8M", prog])
        .args(args);
    output(cmd, stdin)
}

/// A directory holding busybox under /bin and the files the busybox cases read.
fn image_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    busybox_files(d.path());
    std::fs::create_dir(d.path().join("bin")).unwrap();
    for prog in ["busybox", "fileio", "mmapfile", "abi", "abi.musl"] {
        std::fs::copy(image(prog), d.path().join("bin").join(prog)).unwrap();
    }
    d
}

/// A storage server on a temporary directory, a mem-server caching it, and the image of
/// [`image_dir`] pushed into `vnode`. Keep the directories alive while the servers run.
struct Setup {
    storage: Server,
    mem: Server,
    img: tempfile::TempDir,
    dir: tempfile::TempDir,
}

fn setup(vnode: &str, extra: impl FnOnce(&Path)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let storage = Server::storage(dir.path(), "127.0.0.1:0", &[]);
    let mem = Server::mem("1G", Some(&storage.addr));
    let img = image_dir();
    extra(img.path());
    common::push_image(&storage.addr, vnode, img.path());
    Setup { storage, mem, img, dir }
}

#[test]
fn busybox_applets_on_remote_storage_match_native() {
    if !kvm() {
        return;
    }
    let s = setup("bb", |_| ());
    let (storage, mem, img) = (&s.storage, &s.mem, &s.img);
    for args in BUSYBOX_CASES {
        // Natively, in the tree that was pushed (so `ls` sees `bin` too).
        let mut cmd = common::native_command(img.path().join("bin/busybox"));
        cmd.args(*args).current_dir(img.path());
        let native = output(cmd, WORDS.as_bytes());
        let remote = run(mem, storage, "bb", "/bin/busybox", args, WORDS.as_bytes());
        let what = format!("busybox {args:?}");
        assert_eq!(remote.status.code(), native.status.code(), "{what}: stderr {}", String::from_utf8_lossy(&remote.stderr));
        assert_eq!(String::from_utf8_lossy(&remote.stdout), String::from_utf8_lossy(&native.stdout), "{what}");
    }
}

/// busybox `chmod`, `touch -d`, `ln -s`, `readlink` and `stat -c` on remote storage print what
/// they print natively.
#[test]
fn busybox_modes_times_and_symlinks_on_remote_storage_match_native() {
    if !kvm() {
        return;
    }
    let s = setup("bbattrs", |img| std::fs::create_dir(img.join("work")).unwrap());
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = common::native_command(image("busybox"));
    cmd.args(["sh", "-c", BUSYBOX_ATTRS_SCRIPT]).arg(scratch.path());
    let native = output(cmd, b"");
    assert!(String::from_utf8_lossy(&native.stdout).ends_with("end\n"), "natively: {native:?}");
    let remote = run(&s.mem, &s.storage, "bbattrs", "/bin/busybox", &["sh", "-c", BUSYBOX_ATTRS_SCRIPT, "/work"], b"");
    assert_eq!(String::from_utf8_lossy(&remote.stdout), String::from_utf8_lossy(&native.stdout), "{}", String::from_utf8_lossy(&remote.stderr));
    assert_eq!(remote.status.code(), native.status.code());
}

/// busybox `ln` (hard links, to a file and to a symlink), `chown`, `cp -p` and
/// `stat -c '%h %u %g'` on remote storage print what they print natively: the whole script the
/// host-directory test runs.
#[test]
fn busybox_links_and_owners_on_remote_storage_match_native() {
    if !kvm() {
        return;
    }
    let s = setup("bblinks", |img| std::fs::create_dir(img.join("work")).unwrap());
    let script = format!("cd \"$0\" || exit 1; {BUSYBOX_LINKS_SCRIPT}");
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = common::native_command(image("busybox"));
    cmd.args(["sh", "-c", &script]).arg(scratch.path());
    let native = output(cmd, b"");
    assert!(String::from_utf8_lossy(&native.stdout).ends_with("end\n"), "natively: {native:?}");
    let remote = run(&s.mem, &s.storage, "bblinks", "/bin/busybox", &["sh", "-c", &script, "/work"], b"");
    assert_eq!(String::from_utf8_lossy(&remote.stdout), String::from_utf8_lossy(&native.stdout), "{}", String::from_utf8_lossy(&remote.stderr));
    assert_eq!(remote.status.code(), native.status.code());
}

/// FIFOs made with busybox `mkfifo` on remote storage: their type, mode and links as `stat`
/// and `ls` show them, data through them between two processes of the vNode (its pipe is the
/// VMM's, found by the node), `mv`, `ln` and `rm` of them, as natively; and the link counts of
/// directories (2 plus their subdirectories).
const BUSYBOX_FIFO_SCRIPT: &str = "cd \"$0\" || exit 1; mkfifo -m 640 p && stat -c '%n %a %F %s %h' p && ls -l p | cut -c1-10; \
    (echo through the fifo > p &); cat p; mv p q && ln q r && stat -c '%n %F %h' q r && ls; \
    (sleep 0.2; echo again > r) & read line < q; echo \"$line\"; wait; rm q r; ls; mkfifo q && mkfifo q 2>&1; \
    echo data > f; mkfifo f 2>&1; rm q f; mkdir -p dd/e dd/f/g && stat -c '%n %h' . dd dd/e dd/f; rm -r dd; \
    stat -c '%n %h' .; echo end";

#[test]
fn busybox_fifos_and_directory_links_on_remote_storage_match_native() {
    if !kvm() {
        return;
    }
    let s = setup("bbfifo", |img| std::fs::create_dir(img.join("work")).unwrap());
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = common::native_command(image("busybox"));
    cmd.args(["sh", "-c", BUSYBOX_FIFO_SCRIPT]).arg(scratch.path());
    let native = output(cmd, b"");
    assert!(String::from_utf8_lossy(&native.stdout).ends_with("end\n"), "natively: {native:?}");
    let remote = run(&s.mem, &s.storage, "bbfifo", "/bin/busybox", &["sh", "-c", BUSYBOX_FIFO_SCRIPT, "/work"], b"");
    assert_eq!(String::from_utf8_lossy(&remote.stdout), String::from_utf8_lossy(&native.stdout), "{}", String::from_utf8_lossy(&remote.stderr));
    assert_eq!(remote.status.code(), native.status.code());
}

#[test]
fn file_round_trip_program_passes_on_remote_storage() {
    if !kvm() {
        return;
    }
    let s = setup("io", |img| std::fs::create_dir(img.join("work")).unwrap());
    let (storage, mem) = (&s.storage, &s.mem);
    let out = run(mem, storage, "io", "/bin/fileio", &["/work"], b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.ends_with("all checks passed\n"), "{stdout}");
}

#[test]
fn private_file_mappings_work_on_remote_storage() {
    if !kvm() {
        return;
    }
    let s = setup("mm", |_| ());
    let (storage, mem) = (&s.storage, &s.mem);
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = common::native_command(image("mmapfile"));
    cmd.arg(scratch.path());
    let native = output(cmd, b"");
    let remote = run(mem, storage, "mm", "/bin/mmapfile", &["/sub"], b"");
    assert_eq!(remote.status.code(), Some(0), "{}", String::from_utf8_lossy(&remote.stderr));
    assert_eq!(String::from_utf8_lossy(&remote.stdout), String::from_utf8_lossy(&native.stdout));
}

/// Record locks across processes, shared file mappings written back, and the file calls of
/// issue 17 (`tests/abi.rs` runs them on a host directory) behave the same on remote storage.
#[test]
fn locks_shared_mappings_and_file_calls_work_on_remote_storage() {
    if !kvm() {
        return;
    }
    let s = setup("abi", |_| ());
    for case in ["locks", "mapshared", "files"] {
        matches_native_remotely(&s, "abi", case);
    }
}

/// `abi CASE` (`prog` is `abi` or `abi.musl`) prints on remote storage what it prints natively.
fn matches_native_remotely(s: &Setup, prog: &str, case: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = common::native_command(image(prog));
    cmd.arg(case).current_dir(scratch.path());
    let native = output(cmd, b"");
    assert_eq!(native.status.code(), Some(0), "{prog} {case} natively: {}", String::from_utf8_lossy(&native.stdout));
    let remote = run(&s.mem, &s.storage, "abi", &format!("/bin/{prog}"), &[case], b"");
    assert_eq!(remote.status.code(), Some(0), "{prog} {case}: {}", String::from_utf8_lossy(&remote.stderr));
    assert_eq!(String::from_utf8_lossy(&remote.stdout), String::from_utf8_lossy(&native.stdout), "{prog} {case}");
}

/// What remote storage keeps of a file's attributes (its mode and modification time; `creat`
/// and `truncate` too), set by every call of the `chmod` and `utimes` families, glibc and musl:
/// as natively. A time set after a write stays when the write-back comes at close.
#[test]
fn modes_and_times_on_remote_storage_match_native() {
    if !kvm() {
        return;
    }
    let s = setup("abi", |_| ());
    for prog in ["abi", "abi.musl"] {
        matches_native_remotely(&s, prog, "attrs");
    }
}

#[test]
fn fsynced_files_survive_a_storage_server_restart_between_programs() {
    if !kvm() {
        return;
    }
    let Setup { storage, mem, dir, .. } = setup("keep", |_| ());
    // Two programs: one writes the file (written back at close), the next fsyncs it.
    for args in [&["cp", "/bin/busybox", "/kept.bin"][..], &["sync", "/kept.bin"]] {
        let out = run(&mem, &storage, "keep", "/bin/busybox", args, b"");
        assert_eq!(out.status.code(), Some(0), "busybox {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    // SIGKILL the storage server and start it again on the same directory and address; the
    // mem-server reconnects on its next request.
    let addr = storage.addr.clone();
    storage.kill();
    let storage = Server::storage(dir.path(), &addr, &[]);

    let mut md5 = Command::new("md5sum");
    md5.arg(image("busybox"));
    let sum = String::from_utf8_lossy(&output(md5, b"").stdout).split_whitespace().next().unwrap().to_string();
    let out = run(&mem, &storage, "keep", "/bin/busybox", &["md5sum", "/kept.bin"], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{sum}  /kept.bin\n"), "{}", String::from_utf8_lossy(&out.stderr));
    // A listing goes to the restarted storage server itself, not to the mem-server's cache.
    let out = run(&mem, &storage, "keep", "/bin/busybox", &["ls", "/"], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bin\nkept.bin\nsub\ntable.csv\nwords.txt\n");
}

/// A pComponent's connection to a mem-server, sending file requests as a vNode's VMM does.
struct FileClient {
    t: lego_proto::transport::TcpTransport,
    vnode: String,
}

impl FileClient {
    fn new(mem: &Server, vnode: &str) -> FileClient {
        use lego_proto::handshake::{ComponentKind, Hello};
        let hello = Hello::new(ComponentKind::Processor, 0);
        let t = lego_proto::transport::TcpTransport::connect(&mem.addr, hello, std::time::Duration::from_secs(60)).unwrap();
        let mut c = FileClient { t, vnode: vnode.into() };
        let mount = StorageOp::Mount { quota: lego_proto::storage::QuotaChange::Keep };
        assert_eq!(c.file(mount), StorageReply::Done);
        c
    }

    fn call(&mut self, req: &lego_proto::mm::Request) -> StorageReply {
        use lego_proto::transport::Transport;
        match lego_proto::codec::decode(&self.t.call(0, &lego_proto::codec::encode(req)).unwrap()).unwrap() {
            lego_proto::mm::Reply::File(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn file(&mut self, op: StorageOp) -> StorageReply {
        self.call(&lego_proto::mm::Request::File(StorageRequest { vnode: self.vnode.clone(), op }))
    }

    /// What the VMM sends when a file it wrote to is closed.
    fn closed(&mut self, path: &str) -> StorageReply {
        self.call(&lego_proto::mm::Request::FileClosed { vnode: self.vnode.clone(), path: path.into() })
    }
}

#[test]
fn a_storage_restart_that_loses_write_backs_fails_one_fsync_and_the_file_works_again() {
    let Setup { storage, mem, dir, .. } = setup("poison", |img| std::fs::write(img.join("f"), "old\n").unwrap());
    let mut c = FileClient::new(&mem, "poison");
    // A write the buffer cache holds; the storage server is SIGKILLed before the fsync.
    assert!(matches!(c.file(StorageOp::Write { path: b"/f".to_vec(), offset: 0, data: b"lost".to_vec() }), StorageReply::Attr(_)));
    let addr = storage.addr.clone();
    storage.kill();
    let fsync = || StorageOp::Fsync { path: b"/f".to_vec() };
    assert_eq!(c.file(fsync()), StorageReply::Error(errno::EIO), "the fsync that owned the write learns it was lost");
    assert_eq!(c.closed("/f"), StorageReply::Done, "reported once: not again at close");

    // Restarted, the storage server holds the file as it was; the mem-server reconnects, and the
    // file works again, as on Linux once the error was reported.
    let storage = Server::storage(dir.path(), &addr, &[]);
    assert!(matches!(c.file(StorageOp::Stat { path: b"/f".to_vec() }), StorageReply::Attr(a) if a.size == 4));
    assert_eq!(c.file(StorageOp::Read { path: b"/f".to_vec(), offset: 0, len: 100 }), StorageReply::Data(b"old\n".to_vec()));
    assert_eq!(c.file(fsync()), StorageReply::Done);
    if !kvm() {
        return;
    }
    // Later programs open, stat and remove it as they do natively.
    let native_dir = tempfile::tempdir().unwrap();
    std::fs::write(native_dir.path().join("f"), "old\n").unwrap();
    for args in [&["cat", "f"][..], &["stat", "-c", "%s %F", "f"], &["rm", "f"], &["cat", "f"]] {
        let mut cmd = common::native_command(image("busybox"));
        cmd.args(args).current_dir(native_dir.path());
        let native = output(cmd, b"");
        let remote = run(&mem, &storage, "poison", "/bin/busybox", args, b"");
        let what = format!("busybox {args:?}");
        assert_eq!(remote.status.code(), native.status.code(), "{what}: stderr {}", String::from_utf8_lossy(&remote.stderr));
        assert_eq!(String::from_utf8_lossy(&remote.stdout), String::from_utf8_lossy(&native.stdout), "{what}");
    }
}

/// `lego image ls` of `vnode`.
fn ls(storage: &str, vnode: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lego"))
        .args(["image", "ls", "--vnode", vnode, "--storage-server", storage])
        .timed_output();
    assert!(out.status.success(), "image ls: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_tar_archive_pushes_like_its_directory() {
    // No vNode runs here: this needs no /dev/kvm.
    let dir = tempfile::tempdir().unwrap();
    let storage = Server::storage(dir.path(), "127.0.0.1:0", &[]);
    let img = image_dir();
    let tar = dir.path().join("image.tar");
    let status = Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(img.path()).arg(".").status().unwrap();
    assert!(status.success());
    common::push_image(&storage.addr, "from-dir", img.path());
    common::push_image(&storage.addr, "from-tar", &tar);
    let listing = ls(&storage.addr, "from-dir");
    assert!(listing.contains("/bin/busybox") && listing.contains("/sub/b"), "{listing}");
    assert_eq!(ls(&storage.addr, "from-tar"), listing);
}
