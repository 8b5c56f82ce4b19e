//! End-to-end tests of processes in a vNode: fork, execve, wait, pipes and signals between
//! processes, with the memory on a `lego mem-server` process. A busybox shell pipeline and a
//! shell script (for, if, command substitution, redirections, pipelines) print exactly what
//! they print natively, also with the files on a `lego storage-server`; the `procs` guest
//! program's cases match native runs at a 100% and a 1 MiB ExCache, so that after a fork the
//! lines of parent and child really travel to and from the mem-server.
//!
//! Without `/dev/kvm` these tests fail with a clear message, unless `LEGO_SKIP_KVM_TESTS=1`.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lego_testkit as common;
use common::TimedOutput;
use common::{image, kvm, Server};

/// What a run printed and how it ended: its stdout and status (its stderr, for messages, apart).
fn run(cmd: Command, limit: Duration, what: &str) -> (Outcome, String) {
    let r = common::run(cmd, limit, what);
    ((r.stdout, r.status), r.stderr)
}

/// `lego run` of program `prog` with its memory on `mem` and an ExCache of `excache`; `files`
/// are the options saying where the files are (with `--root`, `prog` is a host path).
fn lego(mem: &Server, excache: &str, files: &[&str], prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lego"));
    c.args(["run", "--mem", "256M", "--mem-server", &mem.addr, "--excache", excache, "--env", "PATH=/bin"]).env("TZ", "UTC")
        .args(files)
        .arg(prog)
        .args(args);
    c
}

/// The applets the shell cases run through `PATH`.
const APPLETS: &[&str] = &["sh", "seq", "sort", "head", "uniq", "wc", "ls", "sed", "cat", "tr", "grep", "tail"];

/// The shell pipeline of the issue.
const PIPELINE: &str = "seq 1 1000 | sort -rn | head -3; echo $?";

/// A small shell script: for, if, command substitution, redirections and pipelines. It works in
/// `work/` below the current directory.
const SCRIPT: &str = r#"cd work
count=0
for word in pear apple fig apple banana; do
    echo "$word" >> fruits.txt
    count=$((count + 1))
done
if [ "$count" -eq 5 ]; then
    echo "five fruits"
else
    echo "not five: $count"
fi
echo "distinct: $(sort fruits.txt | uniq | wc -l)"
sort -r < fruits.txt > sorted.txt
head -2 sorted.txt
ls /no/such/file > err.txt 2>&1
echo "ls status: $?"
sed 's/:.*//' err.txt
total=0
for n in $(seq 1 10); do
    if [ $((n % 2)) -eq 0 ]; then
        total=$((total + n))
    fi
done
echo "sum of even numbers: $total"
cat fruits.txt | tr a-z A-Z | grep -c A
echo "last: $(tail -1 fruits.txt | tr a-z A-Z)"
exit 3
"#;

/// A vNode root: busybox under /bin, named after each applet too (`links`: as symbolic links,
/// else as copies, for an image pushed to a storage server, which keeps no links), the script
/// as /script.sh and an empty /work.
fn shell_root(links: bool) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy(image("busybox"), bin.join("busybox")).unwrap();
    for a in APPLETS {
        if links {
            std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
        } else {
            std::fs::copy(image("busybox"), bin.join(a)).unwrap();
        }
    }
    std::fs::create_dir(d.path().join("work")).unwrap();
    std::fs::write(d.path().join("script.sh"), SCRIPT).unwrap();
    d
}

/// What a run printed on stdout, and its status.
type Outcome = (String, Option<i32>);

/// busybox `sh ARGS` natively in `root` (whose /bin comes first in `PATH`), starting from an
/// empty `work/`.
fn native_sh(root: &Path, args: &[&str]) -> Outcome {
    clear_work(root);
    let mut c = common::native_command(root.join("bin/busybox"));
    c.arg("sh").args(args).current_dir(root).env("PATH", root.join("bin"));
    run(c, Duration::from_secs(60), "native sh").0
}

fn clear_work(root: &Path) {
    let work = root.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir(&work).unwrap();
}

/// The shell cases, each run natively and in a vNode by `in_vnode`, must match.
fn shell_cases_match(root: &Path, mut in_vnode: impl FnMut(&[&str]) -> (Outcome, String)) {
    for args in [&["-c", PIPELINE][..], &["script.sh"]] {
        let native = native_sh(root, args);
        assert_eq!(native.1, Some(if args[0] == "-c" { 0 } else { 3 }), "native sh {args:?}: {native:?}");
        let (got, stderr) = in_vnode(args);
        assert_eq!(got, native, "sh {args:?} in a vNode; its stderr: {stderr}");
    }
}

#[test]
fn busybox_shell_pipeline_and_script_match_native() {
    if !kvm() {
        return;
    }
    let root = shell_root(true);
    let mem = Server::mem("2G", None);
    let dir = root.path().to_str().unwrap();
    for excache in ["256M", "1M"] {
        shell_cases_match(root.path(), |args| {
            clear_work(root.path());
            let busybox = root.path().join("bin/busybox");
            let c = lego(&mem, excache, &["--root", dir], busybox.to_str().unwrap(), &[&["sh"], args].concat());
            run(c, Duration::from_secs(120), &format!("sh {args:?} at a {excache} ExCache"))
        });
    }
}

#[test]
fn busybox_shell_on_remote_storage_matches_native() {
    if !kvm() {
        return;
    }
    let root = shell_root(false);
    let state = tempfile::tempdir().unwrap();
    let storage = Server::start(&["storage-server", "--listen", "127.0.0.1:0", "--dir", state.path().to_str().unwrap()]);
    let mem = Server::mem("2G", Some(&storage.addr));
    let push = Command::new(env!("CARGO_BIN_EXE_lego"))
        .args(["image", "push"])
        .arg(root.path())
        .args(["--vnode", "sh", "--storage-server", &storage.addr])
        .timed_output();
    assert!(push.status.success(), "image push: {}", String::from_utf8_lossy(&push.stderr));
    let files = ["--vnode", "sh", "--storage-server", storage.addr.as_str()];
    // The script appends to work/fruits.txt: each run gets a fresh directory of its own.
    let mut runs = 0;
    shell_cases_match(root.path(), |args| {
        runs += 1;
        let script;
        let args: Vec<&str> = if args == ["script.sh"] {
            script = SCRIPT.replace("cd work", &format!("mkdir work{runs} && cd work{runs}"));
            vec!["-c", &script]
        } else {
            args.to_vec()
        };
        let c = lego(&mem, "8M", &files, "/bin/busybox", &[&["sh"], &args[..]].concat());
        run(c, Duration::from_secs(120), &format!("sh {args:?} on remote storage"))
    });
}

/// The cases of `procs`, each compared with a native run.
const PROCS_CASES: &[&[&str]] = &[
    &["status"],
    &["memory", "8"],
    &["ppid"],
    &["kill"],
    &["pipe"],
    &["sigpipe"],
    &["echild"],
    &["sigchld"],
];

#[test]
fn procs_cases_match_native_at_full_and_small_excache() {
    if !kvm() {
        return;
    }
    let mem = Server::mem("2G", None);
    let root = tempfile::tempdir().unwrap();
    for prog in ["procs", "procs.musl"] {
        std::fs::copy(image(prog), root.path().join(prog)).unwrap();
    }
    // An executable file that is not a program: ENOEXEC.
    let text = root.path().join("notes.txt");
    std::fs::write(&text, "just words\n").unwrap();
    std::fs::set_permissions(&text, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dir = root.path().to_str().unwrap();
    for prog in ["procs", "procs.musl"] {
        let host = root.path().join(prog);
        // execve of the program itself: by its host path natively, its vNode path in a vNode.
        let in_vnode = format!("/{prog}");
        let exec_native = ["exec", host.to_str().unwrap(), text.to_str().unwrap()];
        let exec_vnode = ["exec", &in_vnode, "/notes.txt"];
        let threads_native = ["exec-threads", host.to_str().unwrap()];
        let threads_vnode = ["exec-threads", &in_vnode];
        let cases: Vec<(&[&str], &[&str])> = PROCS_CASES
            .iter()
            .map(|c| (*c, *c))
            .chain([(&exec_native[..], &exec_vnode[..]), (&threads_native[..], &threads_vnode[..])])
            .collect();
        for (native_args, vnode_args) in cases {
            let mut c = common::native_command(&host);
            c.args(native_args).current_dir(root.path());
            let (native, _) = run(c, Duration::from_secs(60), "native procs");
            assert_eq!(native.1, Some(0), "native {prog} {native_args:?}: {native:?}");
            for excache in ["256M", "1M"] {
                let what = format!("{prog} {vnode_args:?} at a {excache} ExCache");
                let c = lego(&mem, excache, &["--root", dir], host.to_str().unwrap(), vnode_args);
                let (got, stderr) = run(c, Duration::from_secs(120), &what);
                assert_eq!(got, native, "{what}; its stderr: {stderr}");
            }
        }
    }
}

/// A process blocked reading its terminal (here a pipe from the host) ends with the run when
/// the first process exits, and the run reports the first process's status.
#[test]
fn the_run_ends_with_the_first_process() {
    if !kvm() {
        return;
    }
    let mem = Server::mem("2G", None);
    let root = shell_root(true);
    let dir = root.path().to_str().unwrap();
    let busybox = root.path().join("bin/busybox");
    let mut c = lego(&mem, "64M", &["--root", dir], busybox.to_str().unwrap(), &["sh", "-c", "sleep 60 & cat & exit 5"]);
    c.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the run outlived its first process");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = stdin.write_all(b"late\n");
    assert_eq!(status.code(), Some(5));
}
