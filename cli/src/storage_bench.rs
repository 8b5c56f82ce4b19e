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
use lego_proto::storage::{self, Owner, StorageOp, StorageReply, StorageRequest, MAX_IO};
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
        self.mem = Some(mem_server::MemServer::bind(config)?.spawn()?);
        self.open()
    }

    /// A new connection to the current mem-server and the big file opened on it.
    fn open(&self) -> anyhow::Result<Box<dyn File>> {
        self.fs()?.open(PATH, libc::O_RDWR, 0, Owner::ROOT).map_err(|e| anyhow::anyhow!("opening {}: {e:?}", String::from_utf8_lossy(PATH)))
    }

    /// A new connection to the current mem-server and client `c`'s own small file, created.
    fn create(&self, c: usize) -> anyhow::Result<Box<dyn File>> {
        let path = format!("/client{c}");
        self.fs()?.open(path.as_bytes(), libc::O_RDWR | libc::O_CREAT, 0o644, Owner::ROOT).map_err(|e| anyhow::anyhow!("creating {path}: {e:?}"))
    }

    fn fs(&self) -> anyhow::Result<RemoteFs> {
        let mem = self.mem.as_ref().context("no mem-server running")?;
        RemoteFs::connect(&mem.addr().to_string(), &self.storage.addr().to_string(), VNODE, 0, Duration::from_secs(30))
            .map_err(anyhow::Error::msg)
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
    call(StorageOp::Mount { quota: storage::QuotaChange::Set(None) })?;
    call(StorageOp::Create { path: PATH.to_vec(), mode: 0o644, exclusive: false, truncate: true, owner: Owner::ROOT })?;
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
    // Closed while its mem-server runs (closing writes back).
    drop(file);
    clients(&mut remote, args)
}

/// Client counts of the concurrency rows.
const CLIENTS: [usize; 3] = [1, 4, 16];

/// `ops` operations spread over `n` clients running at once, each its own thread with its own
/// connection (`files[i]`): `op(file, client, i)` for the client's i-th operation. Answers the
/// total rate.
fn at_once(files: &[Box<dyn File>], ops: u64, op: impl Fn(&dyn File, usize, u64) -> anyhow::Result<()> + Sync) -> anyhow::Result<f64> {
    let per = (ops / files.len() as u64).max(1);
    let start = std::sync::Barrier::new(files.len() + 1);
    let t = std::thread::scope(|s| -> anyhow::Result<Duration> {
        let workers: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(c, f)| {
                let (start, op) = (&start, &op);
                s.spawn(move || -> anyhow::Result<()> {
                    start.wait();
                    (0..per).try_for_each(|i| op(&**f, c, i))
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        }
        Ok(t.elapsed())
    })?;
    Ok(rate(per * files.len() as u64, t))
}

/// The raw limit of `n` clients: `n` pairs of threads doing raw TCP round trips at once.
fn raw_at_once(n: usize, ops: u64) -> anyhow::Result<f64> {
    let per = (ops / n as u64).max(1) as usize;
    let t = Instant::now();
    std::thread::scope(|s| {
        let pairs: Vec<_> = (0..n).map(|_| s.spawn(move || lego_vmm::bench::raw_round_trips("127.0.0.1", per, Duration::ZERO))).collect();
        pairs.into_iter().try_for_each(|p| p.join().map_err(|_| anyhow::anyhow!("a round-trip thread panicked"))?.map(drop).map_err(anyhow::Error::from))
    })?;
    Ok(rate((per * n) as u64, t.elapsed()))
}

/// The rows of 1, 4 and 16 clients at once, each beside the raw limit of as many concurrent
/// round trips: warm reads (every client on the one big file, cached), cold reads (a fresh
/// buffer cache; each client its own part of the file) and 4 KB writes each followed by an
/// fsync (each client its own file).
fn clients(remote: &mut Remote, args: &StorageBenchArgs) -> anyhow::Result<()> {
    let err = |what: &'static str| move |e: lego_vmm::errno::Errno| anyhow::anyhow!("{what}: {e:?}");
    println!("  concurrent clients (each its own thread and connection to the mem-server; total ops/s):");
    println!("  {:<34} {:>12} {:>12} {:>9} {:>9}", "pattern", "lego ops/s", "limit ops/s", "lego/lim", "vs 1 cl.");
    let blocks = args.file_size / BLOCK as u64;
    let mut warm1 = 0.0;
    for n in CLIENTS {
        let limit = raw_at_once(n, args.ops)?;
        // Cold: a fresh cache, each client reading its own slice of the file at random.
        remote.cold()?;
        let files: Vec<Box<dyn File>> = (0..n).map(|_| remote.open()).collect::<anyhow::Result<_>>()?;
        let slice = (blocks / n as u64).max(1);
        let block = |c: usize, i: u64| ((c as u64 * slice + offsets(true, 1, slice * BLOCK as u64, i + 3)[0] / BLOCK as u64) % blocks) * BLOCK as u64;
        let cold = at_once(&files, args.ops / 4, |f, c, i| {
            let mut buf = [0u8; BLOCK];
            f.read_at(&mut buf, block(c, i)).map(drop).map_err(err("cold read"))
        })?;
        // Warm: the same offsets again, now cached, over and over (all --ops of them).
        let cold_per = (args.ops / 4 / n as u64).max(1);
        let warm = at_once(&files, args.ops, |f, c, i| {
            let mut buf = [0u8; BLOCK];
            f.read_at(&mut buf, block(c, i % cold_per)).map(drop).map_err(err("warm read"))
        })?;
        if n == 1 {
            warm1 = warm;
        }
        let files: Vec<Box<dyn File>> = (0..n).map(|c| remote.create(c)).collect::<anyhow::Result<_>>()?;
        let data = [0x6bu8; BLOCK];
        let synced = at_once(&files, (args.ops / 40).max(n as u64), |f, _, i| {
            f.write_at(&data, (i % 64) * BLOCK as u64).map_err(err("write"))?;
            f.sync(true).map_err(err("fsync"))
        })?;
        for (name, lego) in [("warm read", warm), ("cold read", cold), ("4 KB write + fsync", synced)] {
            let vs = if name == "warm read" { format!("{:>8.2}x", warm / warm1) } else { String::new() };
            println!("  {:<34} {lego:>12.0} {limit:>12.0} {:>8.2}x {vs:>9}", format!("{name}, {n} client(s)"), lego / limit);
        }
    }
    Ok(())
}
