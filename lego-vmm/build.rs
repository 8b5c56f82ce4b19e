//! Builds the vDSO (`vdso/vdso.c`, linked by `vdso/vdso.lds`) into `$OUT_DIR/vdso.so`, which
//! `src/vdso.rs` embeds. Deterministic: no build id, no timestamps.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("vdso.so");
    for f in ["vdso/vdso.c", "vdso/vdso.h", "vdso/vdso.lds"] {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-env-changed=VDSO_CC");
    let cc = std::env::var("VDSO_CC").unwrap_or_else(|_| "gcc".into());
    let status = Command::new(&cc)
        .args([
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fPIC",
            "-ffreestanding",
            "-fno-builtin",
            "-fno-stack-protector",
            "-fcf-protection=none",
            "-fno-asynchronous-unwind-tables",
            "-nostdlib",
            "-shared",
            "-Wl,-T,vdso/vdso.lds",
            "-Wl,--hash-style=both",
            "-Wl,-soname=linux-vdso.so.1",
            "-Wl,--build-id=none",
            "-Wl,-Bsymbolic",
            "-Wl,-z,max-page-size=4096",
            "-Wl,-z,noexecstack",
            "-Wl,--no-undefined",
            "-o",
        ])
        .arg(&out)
        .arg("vdso/vdso.c")
        .status()
        .unwrap_or_else(|e| {
            panic!("running {cc} to build the vDSO: {e} (install build-essential)")
        });
    assert!(
        status.success(),
        "{cc} failed to build the vDSO (lego-vmm/vdso/vdso.c)"
    );
}
