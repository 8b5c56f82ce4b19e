//! `lego bench storage`: 4 KB reads and writes on a 1 GiB file through the remote-file path a
//! vNode uses (the VMM's [`RemoteFs`] -> a mem-server's buffer cache -> a storage server), beside
//! the same I/O done natively with pread/pwrite on a file on the same disk, in the same run.
//!
//! "Cold" means the buffer cache has none of the file (a fresh mem-server) and, natively, the
//! page cache has none of it (`posix_fadvise(DONTNEED)` after an fsync). The storage server's own
//! host file may still be in the host page cache: the figure is about the network path, as in
//! LegoOS §6.1. The guest's system-call exit (`lego bench syscall`) is not included.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::storage::{self, StorageOp, StorageReply, StorageRequest, MAX_IO};
use lego_proto::transport::TcpTransport;
use lego_vmm::fs::remote::RemoteFs;
use lego_vmm::fs::{File, FileSystem};

use crate::size::parse_size;

const BLOCK: usize = 4096;
const VNODE: &str = "bench";
const PATH: &[u8] = b"/big";

/// Options of `lego bench storage`.
#[derive(clap::Args)]
pub struct StorageBenchArgs {
    /// Size of the file.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    file_size: u64,
    /// 4 KB operations per measurement.
    #[arg(long, default_value_t = 20_000)]
    ops: u64,
    /// Directory on the disk to measure (the storage server's files and the native file go in a
    /// temporary directory under it).
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// Bytes of buffer cache on the mem-server.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    buffer_cache: u64,
}

/// The remote side: a storage server, and a mem-server caching it (replaced to empty the cache).
struct Remote {
    storage: storage_server::Handle,
    mem: Option<mem_server::Handle>,
    buffer_cache: u64,
}

impl Remote {
    /// A fresh mem-server (an empty buffer cache) and the file opened through it.
    fn cold(&mut self) -> anyhow::Result<Box<dyn File>> {
        if let Some(old) = self.mem.take() {
            old.shutdown();
        }
        let config = mem_server::Config {
            storage: Some(self.storage.addr().to_string()),
            buffer_cache_bytes: self.buffer_cache,
            ..mem_server::Config::new("127.0.0.1:0", 1 << 20, 0)
        };
        let mem = mem_server::MemServer::bind(config)?.spawn()?;
        let fs = RemoteFs::connect(&mem.addr().to_string(), &self.storage.addr().to_string(), VNODE, 0, Duration::from_secs(30))
            .map_err(anyhow::Error::msg)?;
        self.mem = Some(mem);
        fs.open(PATH, libc::O_RDWR, 0).map_err(|e| anyhow::anyhow!("opening {}: {e:?}", String::from_utf8_lossy(PATH)))
    }
}

/// One pattern's offsets.
fn offsets(random: bool, ops: u64, file_size: u64, seed: u64) -> Vec<u64> {
    let blocks = file_size / BLOCK as u64;
    let mut x = seed | 1;
    (0..ops)
        .map(|i| {
            if random {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % blocks) * BLOCK as u64
            } else {
                (i % blocks) * BLOCK as u64
            }
        })
        .collect()
}

fn rate(ops: u64, t: Duration) -> f64 {
    ops as f64 / t.as_secs_f64()
}

/// Runs the benchmark.
pub fn run(args: &StorageBenchArgs) -> anyhow::Result<()> {
    if args.file_size < BLOCK as u64 || args.ops == 0 {
        bail!("--file-size must be at least 4 KiB and --ops at least 1");
    }
    let tmp = tempfile::Builder::new().prefix("lego-bench-storage").tempdir_in(&args.dir).with_context(|| format!("a directory under {}", args.dir.display()))?;
    let sdir = tmp.path().join("storage");
    let storage = storage_server::StorageServer::bind(storage_server::Config { listen: "127.0.0.1:0".into(), dir: sdir, cluster: 0 })?.spawn()?;

    // The file, written in MAX_IO pieces straight to storage and natively, then fsync'd.
    eprintln!("lego bench storage: writing a {} MiB file remotely and natively...", args.file_size >> 20);
    let mut conn = TcpTransport::connect(&storage.addr().to_string(), Hello::new(ComponentKind::Client, 0), Duration::from_secs(60))?;
    let mut call = |op: StorageOp| -> anyhow::Result<StorageReply> {
        match storage::call(&mut conn, &StorageRequest { vnode: VNODE.into(), op })? {
            StorageReply::Error(e) => bail!("storage: {}", std::io::Error::from_raw_os_error(e)),
            r => Ok(r),
        }
    };
    call(StorageOp::Create { path: PATH.to_vec(), mode: 0o644, exclusive: false, truncate: true })?;
    let native_path = tmp.path().join("native");
    let native = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&native_path)?;
    let chunk: Vec<u8> = (0..MAX_IO).map(|i| (i % 253) as u8).collect();
    let mut at = 0u64;
    while at < args.file_size {
        let n = (args.file_size - at).min(MAX_IO as u64) as usize;
        call(StorageOp::Write { path: PATH.to_vec(), offset: at, data: chunk[..n].to_vec() })?;
        native.write_all_at(&chunk[..n], at)?;
        at += n as u64;
    }
    call(StorageOp::Fsync { path: PATH.to_vec() })?;
    native.sync_all()?;

    let drop_native_cache = || {
        // SAFETY: advice on our own open descriptor; it changes no data.
        unsafe { libc::posix_fadvise(native.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    };
    let mut remote = Remote { storage, mem: None, buffer_cache: args.buffer_cache };
    let mut buf = vec![0u8; BLOCK];
    let data = vec![0x5au8; BLOCK];
    println!(
        "lego bench storage: {} x 4 KB per row over a {} MiB file; remote = RemoteFs -> mem-server buffer cache ({} MiB) -> storage-server, loopback; native = pread/pwrite, same disk",
        args.ops,
        args.file_size >> 20,
        args.buffer_cache >> 20
    );
    // The limit of every remote row: one round trip to a server on the same host.
    let rtt = lego_vmm::bench::raw_round_trips("127.0.0.1", args.ops as usize, std::time::Duration::ZERO)?;
    let limit = rate(args.ops, rtt.iter().sum());
    println!("  limit: one raw TCP round trip (40 B out, 4 KB back, loopback) = {limit:.0} ops/s");
    println!("  {:<34} {:>12} {:>12} {:>9} {:>9}", "pattern", "lego ops/s", "native ops/s", "lego/nat", "lego/lim");
    let row = |name: &str, lego: f64, native: f64| {
        println!("  {name:<34} {lego:>12.0} {native:>12.0} {:>8.3}x {:>8.2}x", lego / native, lego / limit);
    };

    for (random, name) in [(false, "sequential"), (true, "random")] {
        let offs = offsets(random, args.ops, args.file_size, 7);
        let file = remote.cold()?;
        drop_native_cache();
        for temp in ["cold", "warm"] {
            let t = Instant::now();
            for &o in &offs {
                file.read_at(&mut buf, o).map_err(|e| anyhow::anyhow!("remote read: {e:?}"))?;
            }
            let lego = rate(args.ops, t.elapsed());
            let t = Instant::now();
            for &o in &offs {
                native.read_at(&mut buf, o)?;
            }
            row(&format!("{name} read, {temp} cache"), lego, rate(args.ops, t.elapsed()));
        }
        let t = Instant::now();
        for &o in &offs {
            file.write_at(&data, o).map_err(|e| anyhow::anyhow!("remote write: {e:?}"))?;
        }
        file.sync(false).map_err(|e| anyhow::anyhow!("remote fsync: {e:?}"))?;
        let lego = rate(args.ops, t.elapsed());
        let t = Instant::now();
        for &o in &offs {
            native.write_at(&data, o)?;
        }
        native.sync_data()?;
        row(&format!("{name} write (+1 fsync at end)"), lego, rate(args.ops, t.elapsed()));
    }

    let n = (args.ops / 20).max(1);
    let offs = offsets(true, n, args.file_size, 11);
    let file = remote.cold()?;
    let t = Instant::now();
    for &o in &offs {
        file.write_at(&data, o).map_err(|e| anyhow::anyhow!("remote write: {e:?}"))?;
        file.sync(true).map_err(|e| anyhow::anyhow!("remote fsync: {e:?}"))?;
    }
    let lego = rate(n, t.elapsed());
    let t = Instant::now();
    for &o in &offs {
        native.write_at(&data, o)?;
        native.sync_data()?;
    }
    row(&format!("4 KB write + fsync ({n} times)"), lego, rate(n, t.elapsed()));
    Ok(())
}
