//! `lego bench throughput`: 4 KB fetches per second a mem-server process pinned to one core
//! serves over loopback, beside a raw socket echo (same request and reply sizes, no page store,
//! no protocol) pinned to the same core.
//!
//! Clients keep `depth` requests in flight per connection and answer each batch of replies with
//! one write of as many new requests, so the server, not the client, is the bottleneck.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lego_proto::codec::{decode, encode};
use lego_proto::frame::{Header, Op, HEADER_LEN, PAGE_SIZE};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::{MemCall, ProcessSpec, Reply, Request};
use lego_proto::rdma::select::{Chosen, TransportChoice};
use lego_proto::transport::{RegisteredBuf, Slot, TcpTransport, Transport};
use lego_proto::vma::{Prot, VmaKind};

/// Options of `lego bench throughput`.
#[derive(clap::Args)]
pub struct ThroughputArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 32)]
    depth: usize,
    /// Client connections (threads).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Distinct pages fetched (round robin).
    #[arg(long, default_value_t = 4096)]
    pages: u64,
    #[command(flatten)]
    transport: crate::transport::TransportArgs,
}

const PROC: u64 = 0x7e57;
const REPLY_LEN: usize = HEADER_LEN + PAGE_SIZE;

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays inside it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % 1024, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn server_cpu() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).saturating_sub(1)
}

/// A `lego mem-server` child pinned to the last CPU, killed on drop.
struct ServerProcess {
    child: Child,
    addr: String,
}

impl ServerProcess {
    fn start(transport: TransportChoice) -> anyhow::Result<ServerProcess> {
        use std::os::unix::process::CommandExt;
        let cpu = server_cpu();
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["mem-server", "--listen", "127.0.0.1:0", "--capacity", "1G"]).stdout(Stdio::piped());
        cmd.args(["--transport", &transport.to_string()]);
        // SAFETY: the closure only calls sched_setaffinity, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                pin_to(cpu);
                Ok(())
            })
        };
        let mut child = cmd.spawn().context("starting lego mem-server")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("mem-server stdout")?).read_line(&mut line)?;
        let addr = line.trim().rsplit(' ').next().unwrap_or_default().to_string();
        if addr.is_empty() {
            let _ = child.kill();
            bail!("lego mem-server did not say where it listens");
        }
        Ok(ServerProcess { child, addr })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a process on the server, maps `pages` pages and writes each once; returns the base.
fn populate(addr: &str, pages: u64) -> anyhow::Result<u64> {
    let hello = Hello::new(ComponentKind::Client, 0);
    let mut t = TcpTransport::connect(addr, hello, Duration::from_secs(10))?;
    let top = 1u64 << 34;
    let spec = ProcessSpec {
        servers: vec![addr.to_string()],
        home: 0,
        vregion_size: 1 << 30,
        user_min: 1 << 16,
        space_top: top,
        mmap_top: top - (16 << 20),
        stack: (top - (8 << 20), top),
        replicas: 1,
        backup_storage: None,
    };
    let mut call = |req: &Request| -> anyhow::Result<Reply> { Ok(decode(&t.call(PROC, &encode(req))?)?) };
    match call(&Request::CreateProcess(spec))? {
        Reply::Mem(Ok(_)) => {}
        other => bail!("creating the benchmark process: {other:?}"),
    }
    let len = pages * PAGE_SIZE as u64;
    let base = match call(&Request::Mem(MemCall::Mmap { addr: 0, len, prot: Prot::RW, flags: 0x22, kind: VmaKind::Anon }))? {
        Reply::Mem(Ok(o)) => o.value,
        other => bail!("mapping the benchmark pages: {other:?}"),
    };
    let mut buf = RegisteredBuf::new(1);
    for i in 0..pages {
        buf.page_mut(0)[..8].copy_from_slice(&i.to_le_bytes());
        t.write_page(PROC, base + i * PAGE_SIZE as u64, &buf, Slot(0))?;
    }
    Ok(base)
}

/// One client connection: keeps `depth` fetches in flight for `secs`; returns replies received.
fn client(addr: &str, base: u64, pages: u64, depth: usize, secs: f64, handshake: bool) -> anyhow::Result<u64> {
    pin_to(0);
    let mut s = if handshake {
        // The hello and the cluster secret, then raw frames on the same socket.
        TcpTransport::connect(addr, Hello::new(ComponentKind::Client, 0), Duration::from_secs(10))?.into_stream()
    } else {
        TcpStream::connect(addr)?
    };
    s.set_nodelay(true)?;
    s.set_read_timeout(None)?;
    s.set_write_timeout(None)?;
    let mut next = 0u64;
    let mut requests = |n: usize, out: &mut Vec<u8>| {
        out.clear();
        for _ in 0..n {
            let h = Header::request(Op::Fetch, next as u32, PROC, base + (next % pages) * PAGE_SIZE as u64, 0);
            out.extend_from_slice(&h.encode());
            next += 1;
        }
    };
    let mut out = Vec::new();
    requests(depth, &mut out);
    s.write_all(&out)?;
    let mut inbuf = vec![0u8; REPLY_LEN * depth];
    let (mut partial, mut done) = (0usize, 0u64);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let n = s.read(&mut inbuf[partial..])?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        let total = partial + n;
        let complete = total / REPLY_LEN;
        partial = total % REPLY_LEN;
        if complete > 0 {
            if handshake {
                let h = Header::decode(inbuf[..HEADER_LEN].try_into().expect("header"))?;
                if h.len as usize != PAGE_SIZE {
                    bail!("the server refused a fetch: {:?}", h.status);
                }
            }
            inbuf.copy_within(complete * REPLY_LEN..total, 0);
            done += complete as u64;
            requests(complete, &mut out);
            s.write_all(&out)?;
        }
    }
    Ok(done)
}

/// Runs `connections` clients in parallel, each fetching one page at a time through a page-path
/// [`lego_proto::transport::Transport`] over `transport`; returns requests per second.
fn load_transport(args: &ThroughputArgs, transport: &Chosen, addr: &str, base: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let threads: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            let (addr, pages, secs, transport) = (addr.to_string(), args.pages.max(1), args.seconds, transport.clone());
            std::thread::spawn(move || -> anyhow::Result<u64> {
                pin_to(0);
                let mut t = transport.connect(&addr, Hello::new(ComponentKind::Client, 0), Duration::from_secs(10))?;
                let mut buf = RegisteredBuf::new(1);
                let end = Instant::now() + Duration::from_secs_f64(secs);
                let mut done = 0u64;
                while Instant::now() < end {
                    t.read_page(PROC, base + (done % pages) * PAGE_SIZE as u64, &mut buf, Slot(0))?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for t in threads {
        total += t.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Runs `connections` clients in parallel; returns requests per second.
fn load(args: &ThroughputArgs, addr: &str, base: u64, handshake: bool) -> anyhow::Result<f64> {
    let started = Instant::now();
    let threads: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            let (addr, pages, depth, secs) = (addr.to_string(), args.pages.max(1), args.depth.max(1), args.seconds);
            std::thread::spawn(move || client(&addr, base, pages, depth, secs, handshake))
        })
        .collect();
    let mut total = 0;
    for t in threads {
        total += t.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The raw echo: for every 40-byte request, a 40 + 4096-byte reply; pinned to the server's CPU.
fn echo_server() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        pin_to(server_cpu());
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                pin_to(server_cpu());
                let mut s = conn;
                let _ = s.set_nodelay(true);
                let mut inbuf = vec![0u8; 64 * HEADER_LEN];
                let mut out = Vec::new();
                let reply = [7u8; REPLY_LEN];
                let mut partial = 0;
                while let Ok(n) = s.read(&mut inbuf[partial..]) {
                    if n == 0 {
                        return;
                    }
                    let total = partial + n;
                    out.clear();
                    for _ in 0..total / HEADER_LEN {
                        out.extend_from_slice(&reply);
                    }
                    partial = total % HEADER_LEN;
                    inbuf.copy_within(total - partial..total, 0);
                    if s.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Runs the benchmark and prints both figures and their ratio.
pub fn run(args: &ThroughputArgs) -> anyhow::Result<()> {
    let transport = args.transport.resolve(&["the benchmark's mem-server"])?;
    let server = ServerProcess::start(args.transport.transport)?;
    let base = populate(&server.addr, args.pages.max(1)).context("populating the mem-server")?;
    let served = match &transport {
        Chosen::Tcp => load(args, &server.addr, base, true)?,
        rdma => load_transport(args, rdma, &server.addr, base)?,
    };
    drop(server);
    let echo = load(args, &echo_server()?, 0, false)?;
    println!(
        "lego bench throughput: 4 KB fetches, {} connection(s) x {} in flight, {:.1} s each, server pinned to CPU {}",
        args.connections,
        args.depth,
        args.seconds,
        server_cpu()
    );
    if !matches!(transport, Chosen::Tcp) {
        println!("  page path over {transport}: one fetch in flight per connection (the Transport API is synchronous)");
    }
    println!("  mem-server (tokio, page store)          {:>10.0} requests/s", served);
    println!("  raw socket echo, same sizes = limit      {:>10.0} requests/s", echo);
    println!("  mem-server / limit  {:.2}x", served / echo);
    println!("  target >= 150000 requests/s: {}", if served >= 150_000.0 { "met" } else { "NOT met" });
    Ok(())
}
