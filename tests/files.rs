//! End-to-end tests of remote files: vNode programs whose files live on a `lego storage-server`
//! process, read and written through the buffer cache of a `lego mem-server` process, print
//! exactly what they print natively on a local directory. A storage server killed and restarted
//! between two programs loses nothing that was fsync'd.
//!
//! Without `/dev/kvm` these tests fail with a clear message, unless `LEGO_SKIP_KVM_TESTS=1`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{busybox_files, image, kvm, Server, BUSYBOX_CASES, WORDS};

/// A `lego storage-server` process on `dir`, listening on `listen`.
fn storage_server(dir: &Path, listen: &str) -> Server {
    Server::start(&["storage-server", "--listen", listen, "--dir", dir.to_str().unwrap()])
}

/// A `lego mem-server` process caching the files of the storage server at `storage`.
fn mem_server(storage: &str) -> Server {
    Server::start(&["mem-server", "--listen", "127.0.0.1:0", "--capacity", "1G", "--storage-server", storage])
}

/// `lego image push SOURCE` into `vnode` on the storage server at `storage`.
fn push(storage: &str, vnode: &str, source: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_lego"))
        .args(["image", "push"])
        .arg(source)
        .args(["--vnode", vnode, "--storage-server", storage])
        .output()
        .unwrap();
    assert!(out.status.success(), "image push: {}", String::from_utf8_lossy(&out.stderr));
}

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
    for prog in ["busybox", "fileio", "mmapfile"] {
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
    let storage = storage_server(dir.path(), "127.0.0.1:0");
    let mem = mem_server(&storage.addr);
    let img = image_dir();
    extra(img.path());
    push(&storage.addr, vnode, img.path());
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
        let mut cmd = Command::new(img.path().join("bin/busybox"));
        cmd.args(*args).current_dir(img.path());
        let native = output(cmd, WORDS.as_bytes());
        let remote = run(mem, storage, "bb", "/bin/busybox", args, WORDS.as_bytes());
        let what = format!("busybox {args:?}");
        assert_eq!(remote.status.code(), native.status.code(), "{what}: stderr {}", String::from_utf8_lossy(&remote.stderr));
        assert_eq!(String::from_utf8_lossy(&remote.stdout), String::from_utf8_lossy(&native.stdout), "{what}");
    }
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
    let mut cmd = Command::new(image("mmapfile"));
    cmd.arg(scratch.path());
    let native = output(cmd, b"");
    let remote = run(mem, storage, "mm", "/bin/mmapfile", &["/sub"], b"");
    assert_eq!(remote.status.code(), Some(0), "{}", String::from_utf8_lossy(&remote.stderr));
    assert_eq!(String::from_utf8_lossy(&remote.stdout), String::from_utf8_lossy(&native.stdout));
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
    let storage = storage_server(dir.path(), &addr);

    let mut md5 = Command::new("md5sum");
    md5.arg(image("busybox"));
    let sum = String::from_utf8_lossy(&output(md5, b"").stdout).split_whitespace().next().unwrap().to_string();
    let out = run(&mem, &storage, "keep", "/bin/busybox", &["md5sum", "/kept.bin"], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{sum}  /kept.bin\n"), "{}", String::from_utf8_lossy(&out.stderr));
    // A listing goes to the restarted storage server itself, not to the mem-server's cache.
    let out = run(&mem, &storage, "keep", "/bin/busybox", &["ls", "/"], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bin\nkept.bin\nsub\ntable.csv\nwords.txt\n");
}

/// `lego image ls` of `vnode`.
fn ls(storage: &str, vnode: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lego"))
        .args(["image", "ls", "--vnode", vnode, "--storage-server", storage])
        .output()
        .unwrap();
    assert!(out.status.success(), "image ls: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_tar_archive_pushes_like_its_directory() {
    // No vNode runs here: this needs no /dev/kvm.
    let dir = tempfile::tempdir().unwrap();
    let storage = storage_server(dir.path(), "127.0.0.1:0");
    let img = image_dir();
    let tar = dir.path().join("image.tar");
    let status = Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(img.path()).arg(".").status().unwrap();
    assert!(status.success());
    push(&storage.addr, "from-dir", img.path());
    push(&storage.addr, "from-tar", &tar);
    let listing = ls(&storage.addr, "from-dir");
    assert!(listing.contains("/bin/busybox") && listing.contains("/sub/b"), "{listing}");
    assert_eq!(ls(&storage.addr, "from-tar"), listing);
}
