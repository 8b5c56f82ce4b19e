//! What the end-to-end test files share: where the repository and the guest programs are, and
//! whether KVM tests can run.

use std::path::{Path, PathBuf};

/// The repository root (the tests are built as part of `cli/`).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_path_buf()
}

/// A guest program from `guest-images/out`, which must have been built.
pub fn image(name: &str) -> PathBuf {
    let p = repo().join("guest-images/out").join(name);
    assert!(p.exists(), "{} is missing: run `make guest-images` first", p.display());
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
