//! rust-hello: a static Rust std program run as a guest. Tests what Rust's
//! runtime does before and around `main` (stack guard, signal handlers,
//! args/env via the initial stack, TLS), heap growth from a 1e6-element
//! `Vec<u64>` sort, and std::fs file I/O in the directory given as argv[1]
//! (skipped if absent). Spawns no threads. Output is deterministic for a
//! given argument count and environment size. Exit 0, or 1 on failure.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;

fn xorshift64(s: &mut u64) -> u64 {
    let mut x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    x
}

fn fold(sum: u64, v: u64) -> u64 {
    (sum ^ v).wrapping_mul(0x100_0000_01B3).rotate_left(5)
}

fn file_roundtrip(dir: &Path) -> std::io::Result<u64> {
    let path = dir.join("lego_rust_hello.dat");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8).collect();

    let mut f = fs::File::create(&path)?;
    f.write_all(&data)?;
    f.sync_all()?;
    drop(f);

    let meta = fs::metadata(&path)?;
    if meta.len() != data.len() as u64 {
        return Err(std::io::Error::other("size mismatch"));
    }

    let mut back = Vec::new();
    let mut f = fs::File::open(&path)?;
    f.read_to_end(&mut back)?;
    if back != data {
        return Err(std::io::Error::other("content mismatch"));
    }
    f.seek(SeekFrom::Start(50_000))?;
    let mut chunk = [0u8; 16];
    f.read_exact(&mut chunk)?;
    if chunk[..] != data[50_000..50_016] {
        return Err(std::io::Error::other("seek/read mismatch"));
    }
    drop(f);

    fs::remove_file(&path)?;
    if path.exists() {
        return Err(std::io::Error::other("file still exists after remove"));
    }
    Ok(back.iter().fold(0u64, |s, &b| fold(s, b as u64)))
}

fn main() -> ExitCode {
    println!("hello from Rust");

    let args: Vec<String> = std::env::args().collect();
    println!("args: {}", args.len());
    println!("env vars: {}", std::env::vars_os().count());

    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let mut v: Vec<u64> = (0..1_000_000).map(|_| xorshift64(&mut state)).collect();
    v.sort_unstable();
    let sorted = v.windows(2).all(|w| w[0] <= w[1]);
    let sum = v.iter().fold(0u64, |s, &x| fold(s, x));
    println!("sorted 1000000 u64: {}", if sorted { "ok" } else { "NOT SORTED" });
    println!("checksum: {sum:016x}");
    let mut ok = sorted;

    if let Some(dir) = args.get(1) {
        match file_roundtrip(Path::new(dir)) {
            Ok(fsum) => println!("file roundtrip: ok, checksum {fsum:016x}"),
            Err(e) => {
                println!("file roundtrip: FAILED ({e})");
                ok = false;
            }
        }
    } else {
        println!("file roundtrip: skipped (no directory argument)");
    }

    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
