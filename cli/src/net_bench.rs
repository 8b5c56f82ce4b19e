//! `lego bench net`: TCP round-trip latency (16 B each way) and streaming throughput (64 KiB
//! writes) between two vNodes, with the guest program `netbench`, beside the same program on
//! raw host sockets and the cost of one forwarded system call, all measured in this run.
//!
//! The vNodes are two `lego run`s placed by a global manager this benchmark starts (with a
//! mem-server), the server in one vNode and the client in the other. "One pComponent": both
//! VMMs bind their sockets to the same host address; "two pComponents": to two different ones
//! (127.0.0.2 and 127.0.0.3 by default, as two pComponent hosts on one machine would; across
//! machines use `--pcomp-ips`). Targets: throughput at least 0.5x raw; latency at most raw + 2
//! forwarded calls.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

use crate::memory::MemoryArgs;

/// Options of `lego bench net`.
#[derive(clap::Args)]
pub struct NetBenchArgs {
    /// Directory holding the guest programs (`make guest-images` builds them).
    #[arg(long, default_value = "guest-images/out")]
    images: PathBuf,
    /// Round trips per latency measurement.
    #[arg(long, default_value_t = 2000)]
    round_trips: u64,
    /// MiB streamed per throughput measurement.
    #[arg(long, default_value_t = 256)]
    stream_mib: u64,
    /// Host addresses of the two pComponents of the second configuration.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.2,127.0.0.3")]
    pcomp_ips: Vec<std::net::Ipv4Addr>,
    #[command(flatten)]
    memory: MemoryArgs,
}

/// A child process killed when dropped.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and reads its stdout until a line containing `marker`; the line.
pub(crate) fn start(mut cmd: Command, marker: &str) -> anyhow::Result<(Running, String)> {
    let what = format!("{cmd:?}");
    let mut child = Running(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().with_context(|| what.clone())?);
    let out = child.0.stdout.take().context("piped stdout")?;
    let mut lines = BufReader::new(out).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(marker) => return Ok((child, line)),
            Some(Ok(_)) => continue,
            _ => bail!("{what} ended before it printed {marker:?}"),
        }
    }
}

/// Runs `cmd` to its end and returns the number after `key` in its output.
fn figure(mut cmd: Command, key: &str) -> anyhow::Result<f64> {
    let what = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().with_context(|| what.clone())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{what} failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse().ok()).with_context(|| format!("{what} printed {text:?}"))
}

/// Latency (µs) and throughput (MiB/s) of the client `client(mode, ip, port, n)` against a
/// server at `ip:port`.
fn pair(args: &NetBenchArgs, client: &dyn Fn(&str) -> Command, ip: &str, port: u16) -> anyhow::Result<(f64, f64)> {
    let mut rtt = client("rtt");
    rtt.args([ip, &port.to_string(), &args.round_trips.to_string()]);
    let mut stream = client("stream");
    stream.args([ip, &port.to_string(), &(args.stream_mib << 20).to_string()]);
    Ok((figure(rtt, "rtt_us")?, figure(stream, "stream_mib_s")?))
}

/// Runs the benchmark.
pub fn run(args: &NetBenchArgs) -> anyhow::Result<()> {
    let [ip_a, ip_b] = args.pcomp_ips[..] else { bail!("--pcomp-ips takes two addresses") };
    let lego = std::env::current_exe().context("finding the lego executable")?;
    let images = args.images.canonicalize().with_context(|| format!("{}: run `make guest-images` first", args.images.display()))?;
    let prog = images.join("netbench");
    if !prog.exists() {
        bail!("{} is missing: run `make guest-images` first", prog.display());
    }

    // The limits: raw host sockets, and one forwarded call.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut native = Command::new(&prog);
    native.args(["server", &port.to_string()]);
    let (server, _) = start(native, "listening")?;
    let (raw_rtt, raw_mib) = pair(args, &|mode| {
        let mut c = Command::new(&prog);
        c.arg(mode);
        c
    }, "127.0.0.1", port)?;
    drop(server);
    let (memory, _embedded) = args.memory.config(1 << 30, None)?;
    let call = lego_vmm::bench::syscall(5000, 3, &memory).context("the forwarded-call measurement")?.forwarded_getpid.as_secs_f64() * 1e6;

    // A cluster for the two vNodes.
    let state = tempfile::tempdir()?;
    let mut g = Command::new(&lego);
    g.args(["global-mgr", "--listen", "127.0.0.1:0", "--state-dir"]).arg(state.path().join("global"));
    let (_global, line) = start(g, " listening on ")?;
    let global = line.rsplit(' ').next().unwrap_or_default().to_string();
    let mut m = Command::new(&lego);
    m.args(["mem-server", "--listen", "127.0.0.1:0", "--capacity", "2G", "--global-mgr", &global]);
    let (_mem, line) = start(m, " listening on ")?;
    let mem = line.rsplit(' ').next().unwrap_or_default().to_string();
    let mut vips = Vec::new();
    for v in ["bench-server", "bench-client"] {
        let out = Command::new(&lego).args(["vnode", "create", v, "--mem", "1G", "--excache", "64M", "--global-mgr", &global]).output()?;
        if !out.status.success() {
            bail!("vnode create {v}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        vips.push(text.trim().rsplit(' ').next().unwrap_or_default().trim_end_matches(')').to_string());
    }
    let in_vnode = |vnode: &str, host_ip: std::net::Ipv4Addr, root: &Path| {
        let mut c = Command::new(&lego);
        c.args(["run", "--local", "--global-mgr", &global, "--mem-server", &mem, "--vnode", vnode]);
        c.arg("--on-pcomp").arg(format!("{host_ip}:7050")).arg("--root").arg(root).arg(&prog);
        c
    };

    println!(
        "lego bench net: TCP between two vNodes, {} round trips of 16 B, {} MiB in 64 KiB writes; {} cores",
        args.round_trips,
        args.stream_mib,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  raw host sockets (loopback): round trip {raw_rtt:.1} us, {raw_mib:.0} MiB/s; one forwarded call {call:.1} us");
    let rtt_limit = raw_rtt + 2.0 * call;
    println!("  {:<18} {:>12} {:>12} {:>10} {:>12} {:>10}", "vNodes on", "round trip", "limit", "vs limit", "throughput", "vs raw");
    for (label, (sa, cb), vport) in [("one pComponent", (ip_a, ip_a), 80u16), ("two pComponents", (ip_a, ip_b), 81)] {
        let mut s = in_vnode("bench-server", sa, &images);
        s.args(["server", &vport.to_string()]);
        let (server, _) = start(s, "listening")?;
        let (rtt, mib) = pair(args, &|mode| {
            let mut c = in_vnode("bench-client", cb, &images);
            c.arg(mode);
            c
        }, &vips[0], vport)?;
        drop(server);
        println!(
            "  {label:<18} {rtt:>9.1} us {rtt_limit:>9.1} us {:>9.2}x {mib:>7.0} MiB/s {:>9.2}x",
            rtt / rtt_limit,
            mib / raw_mib
        );
        println!(
            "  {:<18} latency target (<= raw + 2 forwarded calls): {}; throughput target (>= 0.5x raw): {}",
            "",
            if rtt <= rtt_limit { "met" } else { "NOT met" },
            if mib >= 0.5 * raw_mib { "met" } else { "NOT met" }
        );
    }
    Ok(())
}
