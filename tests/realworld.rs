//! Real-world C code no one here wrote, in a vNode with its files on a `lego storage-server`:
//! SQLite, Zstandard and Lua, built statically from the sources their crates bundle
//! (guest-images `rust-realworld`). Each run prints, and leaves in its files, exactly what a
//! native run of the same binary does: the database file, the compressed file and the
//! decompressed one are byte-identical (busybox `md5sum` in the vNode against native).
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
];

/// The image: the two programs in `bin/`, the inputs in `data/`.
fn image_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for prog in ["rust-realworld", "busybox"] {
        std::fs::copy(image(prog), dir.join("bin").join(prog)).unwrap();
    }
    let lines: String = (1..=20000)
        .map(|i| format!("{}\n", (i * 7919) % 100003))
        .collect();
    std::fs::write(dir.join("data/in.txt"), lines).unwrap();
    std::fs::write(dir.join("data/s.lua"), LUA).unwrap();
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
        let n = run(
            native,
            Duration::from_secs(120),
            &format!("native {args:?}"),
        );
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
        let l = run(
            vnode,
            Duration::from_secs(300),
            &format!("lego run {args:?}"),
        );
        assert_eq!(n.status, Some(0), "native {args:?}: {}", n.stderr);
        assert_eq!(
            (&l.stdout, &l.stderr, l.status),
            (&n.stdout, &n.stderr, n.status),
            "{args:?}"
        );
    }
}
