//! Where things are: the repository, the guest programs, the `lego` binary; and whether KVM tests
//! can run here.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testkit/ has a parent").to_path_buf()
}

/// A guest program from `guest-images/out`, which must have been built.
pub fn image(name: &str) -> PathBuf {
    let p = repo().join("guest-images/out").join(name);
    assert!(p.exists(), "{} is missing: run `make guest-images` first", p.display());
    p
}

/// The `lego` binary cargo built next to the running test binary (`target/PROFILE/lego`, the
/// test being `target/PROFILE/deps/NAME-HASH`). Cargo builds it before the tests of `lego-cli`;
/// a test of another package that needs it must be run after `cargo build`.
pub fn lego_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running test");
    let mut dir = exe.parent().expect("the test binary is in a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps/ has a parent");
    }
    let p = dir.join("lego");
    assert!(p.exists(), "{} is missing: build it with `cargo build --release -p lego-cli`", p.display());
    p
}

/// Whether KVM tests can run; panics with the reason if not, unless told to skip
/// (`LEGO_SKIP_KVM_TESTS=1`), in which case the test says on stderr that it was skipped.
pub fn kvm() -> bool {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => true,
        Err(e) if std::env::var("LEGO_SKIP_KVM_TESTS").as_deref() == Ok("1") => {
            eprintln!("SKIPPED (LEGO_SKIP_KVM_TESTS=1): /dev/kvm is not usable: {e}");
            false
        }
        Err(e) => panic!(
            "/dev/kvm is not usable ({e}): lego runs programs as KVM guests. \
             Run on a machine with KVM, or set LEGO_SKIP_KVM_TESTS=1 to skip these tests."
        ),
    }
}
