//! Real-world code no one here wrote:
//! - SQLite, Zstandard and Lua, built statically from the sources their crates bundle
//!   (guest-images `rust-realworld`), in a vNode with its files on a `lego storage-server`.
//!   Each run prints, and leaves in its files, exactly what a native run of the same binary
//!   does: the database file, the compressed file and the decompressed one are byte-identical
//!   (busybox `md5sum` in the vNode against native).
//! - This machine's own dynamically linked Debian programs (bash, coreutils, perl, gzip...),
//!   with `ld.so` and the libraries read from the vNode's files: the host's root, and a
//!   storage server holding only the programs and what `ldd` says they need (`lego image
//!   add`).
//! - Lua's C sources built with this machine's make and gcc, byte-identical to a native build.
//! - Debian's PostgreSQL 15: `initdb`, the server with its worker processes (memory shared
//!   between them, latches on signalfds in epoll), `psql` over a Unix socket.
//!
//! Without `/dev/kvm` these tests fail with a clear message, unless `LEGO_SKIP_KVM_TESTS=1`.

// A test: an unwrap that fails is the test failing (helpers outside #[test] functions too).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lego_testkit as common;
use common::{image, kvm, run, Server};

/// A Lua script: reads the lines of a file, sorts them, and prints figures of them.
const LUA: &str = r##"local t = {}
for w in io.lines(arg[1]) do t[#t + 1] = w end
table.sort(t)
local sum = 0
for _, w in ipairs(t) do sum = sum + tonumber(w) end
print(#t, t[1], t[#t], sum, string.format("%.4f", sum / #t))
print(string.rep("ab", 3), ("lego"):upper(), select("#", 1, 2, 3))
"##;

/// The runs: program arguments, with paths relative to the vNode's root (its working
/// directory) and to the native run's directory alike.
const RUNS: &[&[&str]] = &[
    &["rust-realworld", "sqlite", "data/t.db", "create table w(n integer, s text)",
      "with recursive c(x) as (select 1 union all select x + 1 from c where x < 3000) insert into w select x, printf('row %d', x * 7) from c",
      "create index wi on w(s)", "select count(*), sum(n), max(s) from w", "select s from w where n % 700 = 0 order by n"],
    &["rust-realworld", "sqlite", "data/t.db", "delete from w where n > 100", "vacuum", "select count(*), sum(n) from w"],
    &["rust-realworld", "zstd", "19", "data/in.txt", "data/in.zst"],
    &["rust-realworld", "unzstd", "data/in.zst", "data/out.txt"],
    &["rust-realworld", "lua", "data/s.lua", "data/in.txt"],
    &["busybox", "md5sum", "data/t.db", "data/in.zst", "data/out.txt"],
    // `/dev/shm` made in the vNode's storage, its files mapped shared between processes.
    &["abi", "posixshm"],
];

/// The image: the programs in `bin/`, the inputs in `data/`.
fn image_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for prog in ["rust-realworld", "busybox", "abi"] {
        std::fs::copy(image(prog), dir.join("bin").join(prog)).unwrap();
    }
    let lines: String = (1..=20000)
        .map(|i| format!("{}\n", (i * 7919) % 100003))
        .collect();
    std::fs::write(dir.join("data/in.txt"), lines).unwrap();
    std::fs::write(dir.join("data/s.lua"), LUA).unwrap();
}

/// Runs `native` and `vnode` (one program, natively and in a vNode) to their ends: the native
/// run must succeed, and the vNode's must print the same and end with the same status.
fn same_as_native(native: Command, vnode: Command, what: &str) {
    let n = run(native, Duration::from_secs(120), &format!("native {what}"));
    let l = run(vnode, Duration::from_secs(300), &format!("lego run {what}"));
    assert_eq!(n.status, Some(0), "native {what}: {}", n.stderr);
    assert_eq!((&l.stdout, &l.stderr, l.status), (&n.stdout, &n.stderr, n.status), "{what}");
}

#[test]
fn sqlite_zstd_and_lua_on_a_storage_server_match_native() {
    if !kvm() {
        return;
    }
    let (native_dir, pushed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    image_dir(native_dir.path());
    image_dir(pushed.path());
    let state = tempfile::tempdir().unwrap();
    let storage = Server::storage(state.path(), "127.0.0.1:0", &[]);
    let mem = Server::mem("2G", Some(&storage.addr));
    common::push_image(&storage.addr, "rw", pushed.path());
    for args in RUNS {
        let mut native = common::native_command(native_dir.path().join("bin").join(args[0]));
        native.args(&args[1..]).current_dir(native_dir.path());
        let mut vnode = Command::new(env!("CARGO_BIN_EXE_lego"));
        vnode
            .args([
                "run",
                "--mem",
                "1G",
                "--mem-server",
                &mem.addr,
                "--excache",
                "64M",
            ])
            .args(["--vnode", "rw", "--storage-server", &storage.addr])
            .arg(format!("/bin/{}", args[0]))
            .args(&args[1..]);
        same_as_native(native, vnode, &format!("{args:?}"));
    }
}

/// Shell command lines of unmodified Debian programs, each run by `/bin/bash -c` natively and in
/// a vNode whose files are the host's root. `DIR` is a directory of fixed files. Between them
/// they load `ld.so`, libc, libm, libpcre, libcrypt, perl's own libraries, and (through NSS,
/// with `dlopen`) what `ls -l` needs to name owners; `ls -l` and `cp -a` ask for extended
/// attributes, which the vNode's files do not keep.
const DEBIAN: &[&str] = &[
    "sort -r -n DIR/numbers | sha256sum",
    "awk '{ s += $1 } END { print s, NR }' DIR/numbers",
    "sed -n '5,8p' DIR/numbers | tr 0-9 a-j",
    "grep -c -E '^[1-3]+$' DIR/numbers; grep -n -w 7919 DIR/numbers",
    "perl -ne '$s += $_; $m = $_ if $_ > $m; END { printf \"%d %d %.3f\\n\", $s, $m, $s / $. }' DIR/numbers",
    "ls -l --time-style=+%s DIR; stat -c '%n %s %a' DIR/numbers",
    "gzip -9 -c DIR/numbers | gzip -d -c | cmp - DIR/numbers && echo same; gzip -9 -c DIR/numbers | wc -c",
    "f() { echo $(( $1 * 2 )); }; f 21; (exit 3); echo $?; x=$(seq 3 | tr '\\n' ,); echo ${x%,}; echo nope | cat -A",
    "cd DIR && ls | xargs -n 1 wc -c && cut -c1-3 numbers | sort | uniq -c | sort -rn | head -3",
    "cp -a DIR/words DIR/copy && cmp DIR/words DIR/copy && stat -c '%a %s %Y' DIR/copy; rm DIR/copy",
    // `/proc/self/exe` is the file itself, symlinks resolved (`ld.so`'s `$ORIGIN` comes from it).
    "ln -s /bin/readlink DIR/rl && DIR/rl /proc/self/exe; rm DIR/rl",
    // GNU rm walks a deep tree back up through `..` descriptors (gnulib fts), and goes on
    // removing through one after the directory it was reached from is gone.
    "mkdir -p DIR/t/a/b/c/d/e/f && touch DIR/t/a/b/c/d/e/f/x DIR/t/top && rm -rf DIR/t && echo removed; ls DIR",
    // A file unlinked while open: its `/proc/self/fd` link says so, and opens it anew.
    "exec 3<>DIR/u && rm DIR/u && echo kept >&3 && cat /proc/self/fd/3 && readlink /proc/self/fd/3",
    // Dropping privileges as services do: util-linux `setpriv` and `runuser`, libcap's `capsh`
    // (ambient capabilities across a change of user and an `execve`, keep-caps, securebits).
    "setpriv -d; setpriv --reuid=nobody --regid=nogroup --clear-groups id; /usr/sbin/runuser -u nobody -- id",
    "/usr/sbin/capsh --print; /usr/sbin/capsh --keep=1 --user=nobody --print | head -1",
    "setpriv --inh-caps=-all,+net_raw --ambient-caps=+net_raw --reuid=1000 --regid=1000 --clear-groups /usr/sbin/capsh --print",
    "/usr/sbin/capsh --drop=cap_net_raw --secbits=0x2f -- -c 'setpriv -d; grep Cap /proc/self/status'",
    // Job control in a script: bash sees its job stop and continue (wait4 WUNTRACED and
    // WCONTINUED, SIGCHLD), and a stopped process's /proc state.
    "set -m; sleep 2 & p=$!; kill -STOP $p; sleep 0.3; jobs -l | sed 's/ *[0-9][0-9]* / PID /'; cut -d' ' -f3 /proc/$p/stat; kill -CONT $p; sleep 0.2; jobs -l | sed 's/ *[0-9][0-9]* / PID /'; wait $p; echo done $?",
    // util-linux's System V IPC tools on a semaphore set and a message queue.
    "s=$(ipcmk -S 2 -p 0600 | awk '{print $NF}'); q=$(ipcmk -Q -p 0640 | awk '{print $NF}'); ipcs -s -i $s | grep -E 'mode|nsems|^[0-9]'; ipcs -q -i $q | grep -E 'mode|qnum'; ipcrm -s $s -q $q && echo removed; ipcs -s -i $s >/dev/null 2>&1 || echo gone",
    // Perl's IPC::Semaphore and IPC::Msg: values, an operation that would block, picking by
    // type, and a child blocked in msgrcv until its message comes.
    "perl -MIPC::Semaphore -MIPC::Msg -MIPC::SysV=IPC_PRIVATE,S_IRUSR,S_IWUSR,IPC_NOWAIT -e '$s = IPC::Semaphore->new(IPC_PRIVATE, 2, S_IRUSR | S_IWUSR); $s->setall(3, 4); print join(\",\", $s->getall), \"\\n\"; $s->op(0, -1, 0, 1, 2, 0); print join(\",\", $s->getall), \" \", $s->stat->nsems, \"\\n\"; print $s->op(0, -5, IPC_NOWAIT) ? \"went\\n\" : \"would block: $!\\n\"; $s->remove; $q = IPC::Msg->new(IPC_PRIVATE, S_IRUSR | S_IWUSR); $q->snd(2, \"two\"); $q->snd(1, \"one\"); $q->rcv($b, 10, -2); print \"$b \", $q->stat->qnum, \"\\n\"; if (!fork) { $q->rcv($c, 10, 5); exit($c eq \"five\" ? 0 : 1) } select(undef, undef, undef, 0.2); $q->snd(5, \"five\"); wait; print \"child got it: \", $? == 0 ? \"yes\" : \"no\", \"\\n\"; $q->remove'",
    // Python's multiprocessing: a pool (named semaphores in `/dev/shm`, pipes), and a value,
    // an array and a lock in memory shared with the workers.
    "python3 -c 'import multiprocessing as m; print(m.Pool(2).map(abs, [-1, -2, -3]))'",
    "python3 -c 'import multiprocessing as m
def add(v, a, l, i):
    for _ in range(100):
        with l: v.value += 1
    a[i] = i * i
if __name__ == \"__main__\":
    v, a, l = m.Value(\"i\", 0, lock=False), m.Array(\"i\", 3), m.Lock()
    ps = [m.Process(target=add, args=(v, a, l, i)) for i in range(3)]
    [p.start() for p in ps]; [p.join() for p in ps]; print(v.value, a[:])'",
];

/// Runs every line of [`DEBIAN`] natively and with `lego run --root /`; their output and
/// status must be the same.
#[test]
fn debian_dynamically_linked_programs_match_native() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let numbers: String = (1..=5000).map(|i| format!("{}\n", (i * 7919) % 10007)).collect();
    std::fs::write(dir.path().join("numbers"), numbers).unwrap();
    std::fs::write(dir.path().join("words"), "alpha beta\ngamma\n").unwrap();
    let shown = dir.path().to_str().unwrap();
    let env = |c: &mut Command| {
        c.env_clear().env("PATH", "/usr/bin:/bin").env("LC_ALL", "C").env("TZ", "UTC").current_dir(dir.path());
    };
    for line in DEBIAN {
        let line = line.replace("DIR", shown);
        let mut native = common::native_command("/bin/bash");
        native.args(["-c", &line]);
        env(&mut native);
        let mut vnode = common::lego_command();
        vnode.args(["run", "--mem", "1G", "--excache", "64M", "--root", "/", "/bin/bash", "-c", &line]);
        env(&mut vnode);
        same_as_native(native, vnode, &line);
    }
}

/// Runs `cmd` with a new pseudo-terminal as its standard input, output and error, and
/// returns what it wrote there (as the terminal's output processing left it).
fn on_a_terminal(mut cmd: Command) -> Vec<u8> {
    use std::io::Read;
    let (master, slave) = common::openpty();
    cmd.stdin(slave.try_clone().unwrap()).stdout(slave.try_clone().unwrap()).stderr(slave);
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Reading the master fails with EIO once no descriptor of the terminal is open.
    let reader = std::thread::spawn(move || {
        let mut master = master;
        while let Ok(n @ 1..) = master.read(&mut buf) {
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    reader.join().unwrap()
}

/// Terminal modes and the window size set in a vNode reach the terminal `lego run` was started
/// on, as they do natively: `stty` (raw mode: no output processing, no echo), `tput`, and
/// Python's `termios` and `tty`, as editors, pagers and password prompts use them.
#[test]
fn terminal_modes_set_in_a_vnode_apply_to_its_terminal() {
    if !kvm() {
        return;
    }
    let line = "stty rows 30 cols 99; stty size; tput cols; stty raw -echo; echo raw; stty -a | grep -o -- '-echo -echoe'; \
                stty sane; echo sane; python3 -c 'import termios, tty; a = termios.tcgetattr(0); tty.setraw(0); \
                print(\"setraw\", termios.tcgetattr(0)[3] & termios.ECHO); termios.tcsetattr(0, termios.TCSAFLUSH, a)'; echo done";
    let env = |c: &mut Command| {
        c.env_clear().env("PATH", "/usr/bin:/bin").env("LC_ALL", "C").env("TERM", "xterm");
    };
    let mut native = common::native_command("/bin/bash");
    native.args(["-c", line]);
    env(&mut native);
    let mut vnode = common::lego_command();
    vnode.args(["run", "--mem", "1G", "--root", "/", "/bin/bash", "-c", line]);
    env(&mut vnode);
    let (n, l) = (on_a_terminal(native), on_a_terminal(vnode));
    assert_eq!(String::from_utf8_lossy(&l), String::from_utf8_lossy(&n));
    assert!(String::from_utf8_lossy(&n).contains("30 99\r\n99\r\nraw\n"), "raw mode: no CR added: {:?}", String::from_utf8_lossy(&n));
}

/// Python's `pty` module: a child on a new pty with it as controlling terminal (`forkpty`:
/// `TIOCGPTPEER`, `setsid`, `TIOCSCTTY`), its output through the line discipline, its input
/// from the master, and `openpty` with raw mode.
const PYTHON_PTY: &str = r#"
import os, pty, re, termios, tty, sys
pid, fd = pty.fork()
if pid == 0:
    print("child:", re.sub(r"\d+$", "N", os.ttyname(0)), os.isatty(1), os.getsid(0) == os.getpid())
    print("ctty:", os.ttyname(os.open("/dev/tty", os.O_RDWR)) == os.ttyname(0))
    print("got:", sys.stdin.readline().strip())
    os._exit(3)
os.write(fd, b"hello there\n")
out = b""
while True:
    try:
        b = os.read(fd, 1024)
    except OSError:
        break
    if not b:
        break
    out += b
_, st = os.waitpid(pid, 0)
print(out.decode().replace("\r", "<CR>"), "status", os.waitstatus_to_exitcode(st))
m, s = os.openpty()
a = termios.tcgetattr(s)
tty.setraw(s)
print("raw", termios.tcgetattr(s) != a, re.sub(r"\d+$", "N", os.ttyname(s)))
os.write(m, b"abc\n")
print(os.read(s, 4))
"#;

/// Python's `pty` forks a child onto a pty; what the parent types and a window change signal
/// the child, the pty's foreground group, as the line discipline would.
const PYTHON_PTY_SIGNALS: &str = r#"
import os, pty, signal, struct, fcntl, termios, time
pid, fd = pty.fork()
if pid == 0:
    got = []
    signal.signal(signal.SIGWINCH, lambda *a: got.append("SIGWINCH"))
    signal.signal(signal.SIGQUIT, lambda *a: got.append("SIGQUIT"))
    signal.signal(signal.SIGTSTP, lambda *a: got.append("SIGTSTP"))
    print("ready", flush=True)
    try:
        while True:
            time.sleep(0.05)
            if got:
                print("child got", got.pop(0), flush=True)
    except KeyboardInterrupt:
        print("child got SIGINT", flush=True)
        os._exit(5)
def expect(text):
    out = b""
    while text.encode() not in out:
        out += os.read(fd, 1024)
    return text
print(expect("ready"))
print("foreground is the child:", os.tcgetpgrp(fd) == pid)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
print(expect("child got SIGWINCH"))
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
os.write(fd, b"\x1c")
print(expect("child got SIGQUIT"))
os.write(fd, b"\x1a")
print(expect("child got SIGTSTP"))
os.write(fd, b"abc\x03")
print(expect("child got SIGINT"))
_, st = os.waitpid(pid, 0)
print("status", os.waitstatus_to_exitcode(st))
"#;

/// Hang-ups, as the kernel makes them: a pty's master closed for good sends the session
/// leader `SIGHUP` (which ends it, or runs its handler) and `SIGCONT`; a session leader's end
/// sends `SIGHUP` to its pty's foreground group.
const PYTHON_PTY_HANGUP: &str = r#"
import os, pty, signal, sys, time
# Each line is out at once, so a run killed as hung shows how far it got.
sys.stdout.reconfigure(line_buffering=True)
def ready(fd):
    got = b""
    while b"ready\r\n" not in got:
        got += os.read(fd, 100)
# The master closes: the session leader gets SIGHUP (and dies of it), or runs its handlers.
pid, fd = pty.fork()
if pid == 0:
    print("ready", flush=True)
    time.sleep(5)
    os._exit(0)
ready(fd)
os.close(fd)
_, st = os.waitpid(pid, 0)
print("master closed: the leader ended by signal", os.WTERMSIG(st) if os.WIFSIGNALED(st) else None)
r, w = os.pipe()
pid, fd = pty.fork()
if pid == 0:
    os.close(r)
    got = []
    signal.signal(signal.SIGHUP, lambda s, f: got.append("HUP"))
    signal.signal(signal.SIGCONT, lambda s, f: got.append("CONT"))
    print("ready", flush=True)
    until = time.time() + 20
    while len(got) < 2 and time.time() < until:
        time.sleep(0.01)
    os.write(w, " ".join(got).encode())
    os._exit(0)
os.close(w)
ready(fd)
os.close(fd)
print("the leader's handlers saw:", os.read(r, 100).decode())
os.waitpid(pid, 0)
# The session leader ends: its foreground group (a grandchild) gets SIGHUP.
r, w = os.pipe()
pid, fd = pty.fork()
if pid == 0:
    os.close(r)
    if os.fork() == 0:
        time.sleep(5)
        os._exit(0)
    os._exit(0)
os.close(w)
os.waitpid(pid, 0)
t = time.time()
os.read(r, 1)
print("leader gone: the grandchild ended before its sleep:", time.time() - t < 4)
os.close(fd)
"#;

/// Pseudo-terminals made in a vNode work as natively: `script` runs a shell on one, Python's
/// `pty` forks a child onto one and talks to it, `^C`, `^\`, `^Z` and a window change typed or made
/// on the master signal the child, closing the master hangs up, and `/proc` and `stat` show
/// them as Linux does. A host pty the vNode did not make stays out of its reach.
#[test]
fn pseudo_terminals_made_in_a_vnode_work_as_natively() {
    if !kvm() {
        return;
    }
    let script = "script -qec 'tty | sed s/[0-9]*$/N/; test -t 0 && echo on a tty; stty size; \
                  readlink /proc/self/fd/0 | sed s/[0-9]*$/N/; stat -c \"%n %s\" /proc/self /proc/self/fd/0; \
                  echo $((6 * 7)); exit 3' /dev/null; echo status $?";
    let env = |c: &mut Command| {
        c.env_clear().env("PATH", "/usr/bin:/bin").env("LC_ALL", "C").env("TERM", "xterm");
    };
    let pythons = [PYTHON_PTY, PYTHON_PTY_SIGNALS, PYTHON_PTY_HANGUP].map(|p| ["/usr/bin/python3", "-c", p]);
    for args in [["/bin/bash", "-c", script]].into_iter().chain(pythons) {
        let mut native = common::native_command(args[0]);
        native.args(&args[1..]).stdin(std::process::Stdio::null());
        env(&mut native);
        let mut vnode = common::lego_command();
        vnode.args(["run", "--mem", "1G", "--root", "/"]).args(args).stdin(std::process::Stdio::null());
        env(&mut vnode);
        same_as_native(native, vnode, args[0]);
    }
    // A pty of the host's: its slave is not in the vNode's /dev/pts, and opening it by name
    // fails as if it were not there.
    let (_master, slave) = common::openpty();
    use std::os::fd::AsRawFd;
    let name = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).unwrap();
    let probe = format!(
        "import os\ntry:\n    os.open({name:?}, os.O_RDWR)\n    print('opened')\nexcept FileNotFoundError:\n    print('hidden')\nprint(os.listdir('/dev/pts'))"
    );
    let out = common::lego_command()
        .args(["run", "--mem", "1G", "--root", "/", "/usr/bin/python3", "-c", &probe])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hidden\n['ptmx']\n", "{}", String::from_utf8_lossy(&out.stderr));
}

/// `SO_PEERCRED` of a pair, of both ends of a connection across a fork, of an unconnected and
/// of a TCP socket.
const PYTHON_PEERCRED: &str = r#"
import os, socket, struct, tempfile
def cred(s):
    return struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
a, b = socket.socketpair()
print("pair", cred(a) == (os.getpid(), os.geteuid(), os.getegid()), cred(b) == cred(a))
path = tempfile.mkdtemp() + "/s"
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen()
print("unconnected", cred(socket.socket(socket.AF_UNIX)))
pid = os.fork()
if pid == 0:
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    c.sendall(("client sees the listener %s" % (cred(c)[0] == os.getppid())).encode())
    c.recv(1)
    os._exit(0)
conn, _ = srv.accept()
print("server sees the client", cred(conn)[0] == pid, cred(conn)[1:] == (os.geteuid(), os.getegid()))
print(conn.recv(100).decode())
conn.send(b"x")
os.waitpid(pid, 0)
t = socket.socket(socket.AF_INET)
t.bind(("127.0.0.1", 0))
t.listen()
print("tcp", cred(socket.create_connection(t.getsockname())))
"#;

/// tmux: a server forked off in the background (a pty, `SO_PEERCRED` on its socket) runs a
/// shell; keys are sent to it and its screen is read back once the shell's next prompt is on
/// it (before, a native run and a vNode's could differ by whether the prompt was drawn yet).
const TMUX: &str = r#"S=DIR/tmux
tmux -S $S -f /dev/null new-session -d -x 60 -y 10 'bash --norc --noprofile'
tmux -S $S send-keys 'PS1="$ "; clear; echo $((6*7)); tty | cut -c1-9; stty size' Enter
for i in $(seq 150); do tmux -S $S capture-pane -p | grep -v '^$' | tail -n 2 | tr '\n' ' ' | grep -q '^10 60 \$ $' && break; sleep 0.2; done
tmux -S $S capture-pane -p | grep -v '^$'
tmux -S $S list-sessions -F '#{session_windows} #{window_width}x#{window_height}'
tmux -S $S kill-server
"#;

/// The guest's credentials reach the other end of its `AF_UNIX` sockets as natively, not the
/// VMM's (the host process behind every socket), and tmux, which checks them, serves its
/// client in a vNode.
#[test]
fn unix_socket_peers_see_the_guests_credentials_and_tmux_runs() {
    if !kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tmux = TMUX.replace("DIR", dir.path().to_str().unwrap());
    for args in [["/usr/bin/python3", "-c", PYTHON_PEERCRED], ["/bin/bash", "-c", tmux.as_str()]] {
        let mut native = common::native_command(args[0]);
        native.args(&args[1..]).env_clear().env("PATH", "/usr/bin:/bin").env("LC_ALL", "C").env("TERM", "xterm");
        let mut vnode = common::lego_command();
        vnode.args(["run", "--mem", "1G", "--root", "/"]).args(args);
        vnode.env_clear().env("PATH", "/usr/bin:/bin").env("LC_ALL", "C").env("TERM", "xterm");
        same_as_native(native, vnode, args[0]);
    }
}

/// The Lua 5.4 sources the `lua-src` crate bundles (fetched into Cargo's registry by `make
/// guest-images`, whose `rust-realworld` builds them).
fn lua_sources() -> std::path::PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cargo"));
    let mut found: Vec<_> = std::fs::read_dir(home.join("registry/src"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|index| std::fs::read_dir(index.path()).into_iter().flatten().flatten())
        .filter(|c| c.file_name().to_string_lossy().starts_with("lua-src-"))
        .flat_map(|c| std::fs::read_dir(c.path()).into_iter().flatten().flatten())
        .map(|d| d.path())
        .filter(|d| d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("lua-5.4")))
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("no lua-src crate in {}/registry/src: run make guest-images", home.display()))
}

/// Builds Lua from its C sources with `make -j2` and gcc in `DIR`, runs the result, and
/// prints a checksum of every object file and of the program.
const BUILD: &str = r#"set -e
cd DIR
cat > main.c <<'C'
#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"
int main(int argc, char **argv) { lua_State *L = luaL_newstate(); luaL_openlibs(L); if (argc < 2 || luaL_dostring(L, argv[1])) return 1; lua_close(L); return 0; }
C
objs=$(ls *.c | sed 's/\.c$/.o/' | tr '
' ' ')
printf 'CFLAGS=-O2 -DLUA_USE_LINUX
lua: %s
	$(CC) -o $@ $^ -lm
%%.o: %%.c
	$(CC) $(CFLAGS) -c $<
' "$objs" > Makefile
make -s -j2
./lua 'local t = {} for i = 1, 200000 do t[i] = i * i end local s = 0 for _, v in ipairs(t) do s = s + v end print(s, #t, string.format("%q", 1 / 3), io.popen("echo piped"):read("l"))'
md5sum *.o lua | md5sum
"#;

/// A C project no one here wrote (Lua 5.4) built in a vNode with this machine's make and gcc
/// (`-j2`: make, the compiler driver, cc1, as and ld fork, exec, pipe and wait at once): the
/// object files and the program are byte-identical to a native build's, and the program runs.
#[test]
fn a_c_project_builds_with_make_and_gcc_as_natively() {
    if !kvm() {
        return;
    }
    let src = lua_sources();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for d in &dirs {
        for f in std::fs::read_dir(&src).unwrap().flatten() {
            std::fs::copy(f.path(), d.path().join(f.file_name())).unwrap();
        }
    }
    let script = |d: &tempfile::TempDir| BUILD.replace("DIR", d.path().to_str().unwrap());
    let env = |c: &mut Command| {
        c.env_clear().env("PATH", "/usr/bin:/bin").env("LC_ALL", "C");
    };
    let mut native = common::native_command("/bin/bash");
    native.args(["-c", &script(&dirs[0])]);
    env(&mut native);
    let mut vnode = common::lego_command();
    vnode.args(["run", "--mem", "2G", "--excache", "128M", "--root", "/", "/bin/bash", "-c", &script(&dirs[1])]);
    env(&mut vnode);
    same_as_native(native, vnode, "make -j2 of Lua");
}

/// Dynamically linked programs on a storage server, put there by `lego image add` with what
/// `ldd` lists for them: `ld.so` and the libraries are read, and mapped, through the
/// mem-server's buffer cache, and the programs work as natively. A static program is added
/// alone; a program that is not there is an error naming it.
#[test]
fn dynamically_linked_programs_added_to_a_storage_server_run_there() {
    if !kvm() {
        return;
    }
    let image_dir = tempfile::tempdir().unwrap();
    let lines: String = (1..=20000).map(|i| format!("{}\n", (i * 7919) % 100003)).collect();
    std::fs::write(image_dir.path().join("in.txt"), &lines).unwrap();
    let state = tempfile::tempdir().unwrap();
    let storage = Server::storage(state.path(), "127.0.0.1:0", &[]);
    let mem = Server::mem("2G", Some(&storage.addr));
    common::push_image(&storage.addr, "dyn", image_dir.path());
    let busybox = std::path::absolute(image("busybox")).unwrap();
    let add = |programs: &[&Path]| common::lego_command().args(["image", "add"]).args(programs).args(["--vnode", "dyn", "--storage-server", &storage.addr]).output().unwrap();
    let out = add(&[Path::new("/usr/bin/sort"), Path::new("/usr/bin/sha256sum"), Path::new("/usr/bin/rm"), &busybox]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "image add: {said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("/lib64/ld-linux-x86-64.so.2") && said.contains("libc.so.6"), "{said}");
    let missing = add(&[Path::new("/no/such/program")]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/program"), "{}", String::from_utf8_lossy(&missing.stderr));
    let native_dir = tempfile::tempdir().unwrap();
    std::fs::write(native_dir.path().join("in.txt"), &lines).unwrap();
    let busybox = busybox.to_str().unwrap();
    // Files unlinked or renamed while open (a temporary file, a log rotated under its
    // writer, a file replaced by a rename) stay reachable through their descriptors.
    let open_files = "mkdir w && cd w && exec 3<>tmp && rm tmp && echo kept >&3 && cat /proc/self/fd/3 && ls && \
        exec 4>log && mv log log.1 && echo rotated >&4 && mkdir d1 && exec 5>d1/f && mv d1 d2 && echo inner >&5 && cat log.1 d2/f && \
        echo old > c && exec 6<c && echo new > n && mv n c && cat <&6 && cat c && exec 3>&- 6<&- && ls -a && cd .. && rm -r w";
    for args in [&["/usr/bin/sort", "-n", "-r", "in.txt", "-o", "out.txt"][..], &["/usr/bin/sha256sum", "in.txt", "out.txt"], &[busybox, "wc", "-l", "in.txt"], &[busybox, "sh", "-c", open_files]] {
        let mut native = common::native_command(args[0]);
        native.args(&args[1..]).current_dir(native_dir.path()).env("LC_ALL", "C");
        let mut vnode = common::lego_command();
        vnode.args(["run", "--mem", "1G", "--excache", "64M", "--mem-server", &mem.addr]);
        vnode.args(["--vnode", "dyn", "--storage-server", &storage.addr]).args(args).env("LC_ALL", "C");
        same_as_native(native, vnode, &format!("{args:?}"));
    }
    // The vNode's `/` is the storage server's export of it, an NFS-like mount.
    let mut vnode = common::lego_command();
    vnode.args(["run", "--mem", "1G", "--mem-server", &mem.addr, "--vnode", "dyn", "--storage-server", &storage.addr]);
    vnode.args([busybox, "head", "-1", "/proc/mounts"]);
    let mounts = run(vnode, Duration::from_secs(60), "head /proc/mounts");
    assert_eq!(mounts.stdout, format!("{}:/dyn / nfs rw,noatime 0 0\n", storage.addr), "{}", mounts.stderr);
    // A program started through a symlink: its `/proc/PID/exe` is the file itself.
    let in_vnode = |args: &[&str]| {
        let mut vnode = common::lego_command();
        vnode.args(["run", "--mem", "1G", "--mem-server", &mem.addr, "--vnode", "dyn", "--storage-server", &storage.addr]).args(args);
        run(vnode, Duration::from_secs(60), &format!("{args:?}"))
    };
    let linked = in_vnode(&[busybox, "ln", "-s", busybox, "/readlink"]);
    assert_eq!(linked.status, Some(0), "{}", linked.stderr);
    let exe = in_vnode(&["/readlink", "/proc/self/exe"]);
    assert_eq!(exe.stdout, format!("{busybox}\n"), "{}", exe.stderr);
    // GNU rm of a deep tree, which it walks back up through `..` descriptors.
    let made = in_vnode(&[busybox, "sh", "-c", &format!("{busybox} mkdir -p /t/a/b/c/d/e/f && {busybox} touch /t/a/b/c/d/e/f/x /t/top")]);
    assert_eq!(made.status, Some(0), "{}", made.stderr);
    let removed = in_vnode(&["/usr/bin/rm", "-rf", "/t"]);
    assert_eq!((removed.status, removed.stderr.as_str()), (Some(0), ""));
    assert_eq!(in_vnode(&[busybox, "ls", "/t"]).status, Some(1), "/t is gone");
    let hidden = in_vnode(&[busybox, "ls", "-A", "/.lego-unlinked"]);
    assert_eq!((hidden.status, hidden.stdout.as_str()), (Some(0), ""), "closed files unlinked while open are gone: {}", hidden.stderr);
}

/// What the PostgreSQL test runs as the `postgres` user, in the directory `$1`: `initdb`, the
/// server (Unix socket only), a few statements through `psql`, and a fast shutdown.
const POSTGRES: &str = r#"B=/usr/lib/postgresql/15/bin
D=$1
$B/initdb -D $D/data -A trust --no-instructions >/dev/null || exit 1
$B/pg_ctl -s -D $D/data -l $D/log -o "-k $D -c listen_addresses=''" -w start || { cat $D/log; exit 1; }
$B/psql -h $D -d postgres -X -q -c "create table t (k int primary key, v text)" \
  -c "insert into t select g, md5(g::text) from generate_series(1, 20000) g" \
  -c "select count(*), sum(k), min(v), max(v) from t" \
  -c "update t set v = 'x' || v where k % 3 = 0" \
  -c "create index on t (v)" -c "select k from t where v = 'x' || md5('300')" \
  -c "select count(*) from t where v like 'x%'" -c "vacuum analyze t" \
  -c "select relname, reltuples from pg_class where relname = 't'"
rc=$?
$B/pg_ctl -s -D $D/data -w stop -m fast || rc=1
exit $rc
"#;

/// Debian's PostgreSQL 15 in a vNode, as the `postgres` user (busybox `su`): `initdb`, then
/// the server and its worker processes, which share their buffers and wake each other through
/// latches (signalfds watched by epoll), queried by `psql` over a Unix socket; the same
/// output as natively, in the same directory.
#[test]
fn postgresql_initdb_server_and_queries_match_native() {
    if !kvm() {
        return;
    }
    let bin = Path::new("/usr/lib/postgresql/15/bin/postgres");
    assert!(bin.exists(), "{} is missing: `make test` installs Debian's postgresql (scripts/install-deps.sh)", bin.display());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("run.sh");
    std::fs::write(&script, POSTGRES).unwrap();
    let work = dir.path().join("pg");
    let shown = work.to_str().unwrap();
    let su = format!("/bin/sh {} {shown}", script.display());
    let command = |mut c: Command| {
        c.args(["su", "-s", "/bin/sh", "postgres", "-c", &su]).env_clear().env("PATH", "/usr/bin:/bin").env("LC_ALL", "C").env("TZ", "UTC");
        c
    };
    let fresh = || {
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir(&work).unwrap();
        let chown = Command::new("chown").args(["postgres:postgres", shown]).status().unwrap();
        assert!(chown.success(), "chown postgres {shown}");
    };
    fresh();
    let n = run(command(common::native_command("/bin/busybox")), Duration::from_secs(120), "native PostgreSQL");
    let native_log = std::fs::read_to_string(work.join("log")).unwrap_or_default();
    fresh();
    let mut vnode = common::lego_command();
    vnode.args(["run", "--root", "/", "/bin/busybox"]);
    let l = run(command(vnode), Duration::from_secs(300), "PostgreSQL in a vNode");
    let log = std::fs::read_to_string(work.join("log")).unwrap_or_default();
    assert_eq!(n.status, Some(0), "native: {}{}\n{native_log}", n.stdout, n.stderr);
    assert!(n.stdout.contains("20000 | 200010000") && n.stdout.contains(" 300\n"), "native: {}", n.stdout);
    assert_eq!((&l.stdout, &l.stderr, l.status), (&n.stdout, &n.stderr, n.status), "server log in the vNode:\n{log}");
}
