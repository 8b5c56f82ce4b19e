//! `lego up` and `lego down`: a whole cluster on this machine (global manager, storage servers,
//! mem-servers, pComponent daemons), each component its own process
//! on a loopback port, with its data under a state directory; and how the other commands find
//! that cluster when no address is given.
//!
//! The state directory is `--state-dir`, else `LEGO_STATE_DIR`, else `lego` under the user's
//! data directory (`$XDG_DATA_HOME`, else `~/.local/share`). `STATE/cluster.json` records the
//! running cluster; `STATE/logs/` has each component's output; `STATE/addresses.json` keeps the
//! address (and the `--metrics` address) each component got the first time, so a cluster started
//! again (`lego down`, `lego up`) has the same addresses, and the registry's records (which
//! vNode's mount is on which storage server) stay true.
//!
//! The other commands find the cluster's global manager by the address `cluster.json` records,
//! not by its process id: a manager restarted by hand on that address is found again, and one
//! that is down is an error naming the address, never a silent "no cluster".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};


/// The running cluster, as `lego up` recorded it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterFile {
    /// The global manager's address.
    pub global_mgr: String,
    /// Every mem-server's address.
    pub mem_servers: Vec<String>,
    /// Every storage server's address.
    pub storage_servers: Vec<String>,
    /// Every pComponent daemon's address.
    #[serde(default)]
    pub pcomps: Vec<String>,
    /// Process ids, the global manager's first.
    pub pids: Vec<u32>,
    /// Each component's Prometheus endpoint (`http://ADDR/metrics`), by component name.
    #[serde(default)]
    pub metrics: BTreeMap<String, String>,
}

/// The state directory option, shared by every command that can find a running cluster.
#[derive(clap::Args, Clone, Debug)]
pub struct StateArgs {
    /// Directory holding a `lego up` cluster's data and address file.
    #[arg(long, global = true, env = "LEGO_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

impl StateArgs {
    /// The state directory.
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.state_dir {
            return Ok(d.clone());
        }
        let data = match std::env::var_os("XDG_DATA_HOME") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => PathBuf::from(std::env::var_os("HOME").context("no --state-dir, LEGO_STATE_DIR or HOME")?).join(".local/share"),
        };
        Ok(data.join("lego"))
    }

    /// The cluster `lego up` started from the state directory and `lego down` has not stopped,
    /// if any. Whether its components are up is for their addresses to answer.
    pub fn recorded(&self) -> anyhow::Result<Option<ClusterFile>> {
        let path = self.dir()?.join("cluster.json");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
        let c: ClusterFile = serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(c))
    }

    /// `explicit`, or the recorded cluster's global manager.
    pub fn global_mgr(&self, explicit: Option<&str>) -> anyhow::Result<String> {
        if let Some(a) = explicit {
            return Ok(a.to_string());
        }
        match self.recorded()? {
            Some(c) => Ok(c.global_mgr),
            None => bail!("no --global-mgr given and no cluster is up in {} (start one with `lego up`)", self.dir()?.display()),
        }
    }
}

/// Whether the recorded cluster's global manager is still there: its process, or (restarted
/// by hand) something listening on its address.
fn manager_up(c: &ClusterFile) -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    let listening = || {
        let addrs = c.global_mgr.to_socket_addrs().map(Iterator::collect::<Vec<_>>).unwrap_or_default();
        addrs.iter().any(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok())
    };
    c.pids.first().is_some_and(|&pid| alive(pid)) || listening()
}

/// Whether `pid` is a live lego process. A pid the state directory recorded may have died and
/// been reused by an unrelated process since (a manager restarted by hand has a new one), so
/// the process's name must be this program's too.
fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let exists = unsafe { libc::kill(pid as i32, 0) == 0 };
    // The kernel keeps the first 15 bytes of the executable's name.
    let name = |n: &str| n.as_bytes()[..n.len().min(15)].to_vec();
    let ours = std::env::current_exe().ok().and_then(|p| p.file_name().map(|n| name(&n.to_string_lossy()))).unwrap_or_else(|| name("lego"));
    exists && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| name(comm.trim_end()) == ours)
}

/// Options of `lego up`.
#[derive(clap::Args)]
pub struct UpArgs {
    /// Mem-servers to start.
    #[arg(long, default_value_t = 2)]
    mem_servers: usize,
    /// Storage servers to start (at least one; mem-servers front them in turn).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    storage_servers: u64,
    /// pComponent daemons to start (0: `lego run` runs processes in its own shell).
    #[arg(long, default_value_t = 1)]
    pcomps: usize,
    /// Page memory of each mem-server.
    #[arg(long, default_value = "4G", value_parser = crate::size::mem_server_capacity())]
    capacity: u64,
    /// Milliseconds between heartbeats.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
}

/// Starts one component in the background, its output in `logs/NAME.log`, and returns its pid,
/// its address and its metrics address once it says it is listening.
fn launch(logs: &Path, name: &str, args: &[String], listen: &str, metrics: &str) -> anyhow::Result<(u32, String, String)> {
    use std::os::unix::process::CommandExt;
    let log = logs.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(std::env::current_exe()?)
        .args(&args[..1])
        .args(["--listen", listen, "--metrics", metrics])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        // Its own process group: it outlives this command and a Ctrl-C in this shell.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // The metrics line comes first, so both are there once the component listens.
        let last_word = |marker: &str| text.lines().find(|l| l.contains(marker)).and_then(|l| l.rsplit(' ').next());
        if let (Some(addr), Some(url)) = (last_word(" listening on "), last_word(" metrics on ")) {
            let metrics = url.trim_start_matches("http://").trim_end_matches("/metrics");
            return Ok((child.id(), addr.to_string(), metrics.to_string()));
        }
        if !alive(child.id()) || started.elapsed() > Duration::from_secs(20) {
            bail!("{name} did not start; see {}:\n{text}", log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a cluster and records it.
pub fn up(args: &UpArgs, state: &StateArgs) -> anyhow::Result<()> {
    let dir = state.dir()?;
    if let Some(c) = state.recorded()?.filter(manager_up) {
        bail!("a cluster is already up in {} (global manager {}); `lego down` stops it", dir.display(), c.global_mgr);
    }
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let addresses_path = dir.join("addresses.json");
    let mut addresses: BTreeMap<String, String> = match std::fs::read_to_string(&addresses_path) {
        Ok(t) => serde_json::from_str(&t).with_context(|| format!("reading {}", addresses_path.display()))?,
        Err(_) => Default::default(),
    };
    let mut metrics = BTreeMap::new();
    let mut start = |name: &str, args: &[String]| -> anyhow::Result<(u32, String)> {
        let metrics_name = format!("{name} metrics");
        let listen = |key: &str| addresses.get(key).cloned().unwrap_or_else(|| "127.0.0.1:0".to_string());
        let (pid, addr, metrics_addr) = launch(&logs, name, args, &listen(name), &listen(&metrics_name))?;
        addresses.insert(name.to_string(), addr.clone());
        addresses.insert(metrics_name, metrics_addr.clone());
        metrics.insert(name.to_string(), format!("http://{metrics_addr}/metrics"));
        Ok((pid, addr))
    };
    let hb = args.heartbeat_ms.to_string();
    let mut pids = Vec::new();
    let result = (|| {
        let s = |x: &str| x.to_string();
        let state = dir.join("global");
        let (pid, global) = start("global-mgr", &[s("global-mgr"), s("--state-dir"), state.display().to_string(), s("--heartbeat-ms"), hb.clone()])?;
        pids.push(pid);
        let join = [s("--global-mgr"), global.clone(), s("--heartbeat-ms"), hb.clone()];
        let mut storage = Vec::new();
        for i in 0..args.storage_servers {
            let d = dir.join(format!("storage-{i}"));
            let mut a = vec![s("storage-server"), s("--dir"), d.display().to_string()];
            a.extend_from_slice(&join);
            let (pid, addr) = start(&format!("storage-server-{i}"), &a)?;
            pids.push(pid);
            storage.push(addr);
        }
        let mut mem = Vec::new();
        for i in 0..args.mem_servers {
            let fronts = storage[i % storage.len()].clone();
            let mut a = vec![s("mem-server"), s("--capacity"), args.capacity.to_string(), s("--storage-server"), fronts];
            a.extend_from_slice(&join);
            let (pid, addr) = start(&format!("mem-server-{i}"), &a)?;
            pids.push(pid);
            mem.push(addr);
        }
        let mut pcomps = Vec::new();
        for i in 0..args.pcomps {
            let mut a = vec![s("pcomp")];
            a.extend_from_slice(&join);
            let (pid, addr) = start(&format!("pcomp-{i}"), &a)?;
            pids.push(pid);
            pcomps.push(addr);
        }
        Ok::<_, anyhow::Error>(ClusterFile { global_mgr: global, mem_servers: mem, storage_servers: storage, pcomps, pids: pids.clone(), metrics: BTreeMap::new() })
    })();
    let cluster = match result {
        Ok(c) => ClusterFile { metrics, ..c },
        Err(e) => {
            stop(&pids);
            return Err(e);
        }
    };
    std::fs::write(&addresses_path, serde_json::to_string_pretty(&addresses)?)?;
    std::fs::write(dir.join("cluster.json"), serde_json::to_string_pretty(&cluster)?)?;
    println!("cluster up in {}", dir.display());
    println!("  global manager   {}", cluster.global_mgr);
    println!("  mem-servers      {}", cluster.mem_servers.join(" "));
    println!("  storage servers  {}", cluster.storage_servers.join(" "));
    println!("  pComponents      {}", if cluster.pcomps.is_empty() { "none: lego run runs processes in its own shell".into() } else { cluster.pcomps.join(" ") });
    for (name, url) in &cluster.metrics {
        println!("  metrics          {url}  ({name})");
    }
    println!("next: lego vnode create demo && lego image push guest-images/out/image --vnode demo && \\");
    println!("      lego run --vnode demo /bin/busybox wc -l /data/lines.txt; lego ps; lego down");
    Ok(())
}

/// Stops the processes: SIGTERM (servers make their state durable and exit), then SIGKILL for
/// any still there after 10 s. Components are stopped in reverse order of start.
fn stop(pids: &[u32]) {
    let pids: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    for &pid in pids.iter().rev() {
        // SAFETY: kill(2) on a lego process with a pid this cluster recorded.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let started = Instant::now();
    while pids.iter().any(|&p| alive(p) && !reaped(p)) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in &pids {
        if alive(pid) && !reaped(pid) {
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Reaps `pid` if it is our exited child (it is when `lego up` itself fails part way).
fn reaped(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: a non-blocking wait on one pid; `status` is a live local.
    unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) == pid as i32 }
}

/// Stops the cluster recorded in the state directory.
pub fn down(state: &StateArgs) -> anyhow::Result<()> {
    let dir = state.dir()?;
    let path = dir.join("cluster.json");
    let Ok(text) = std::fs::read_to_string(&path) else { bail!("no cluster is up in {}", dir.display()) };
    let c: ClusterFile = serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    stop(&c.pids);
    std::fs::remove_file(&path)?;
    println!("cluster in {} stopped ({} processes); its data stays there", dir.display(), c.pids.len());
    Ok(())
}
