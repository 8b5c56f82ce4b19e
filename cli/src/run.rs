//! `lego run`: one program in a vNode.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::ExitCode;

use lego_proto::auth::SECRET_ENV;
use lego_proto::global::{ProcessIdentity, VnodeInfo, VnodeSettings};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::storage::QuotaChange;
use lego_proto::pcomp::RunRequest;
use lego_vmm::fault::signal_name;
use lego_vmm::process::Termination;
use lego_vmm::fs::remote::cache_server;
use lego_vmm::{syscall::names, Files, Program, RunReport, Vnode, VnodeConfig, VmmError};

use std::net::ToSocketAddrs;
use std::sync::Arc;

use lego_vmm::net::publish::{Forwarder, Publish};
use lego_vmm::net::NetConfig;

use crate::cluster::StateArgs;
use crate::endpoints::GlobalDirectory;
use crate::memory::MemoryArgs;

/// Exit status when the program is not something lego can run (bad ELF, missing file, bad option).
const STATUS_BAD_PROGRAM: u8 = 2;
/// Exit status when the VMM itself failed (no KVM, KVM error, memory servers lost).
pub const STATUS_VMM_FAILURE: u8 = 125;

/// Options of `lego run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Name of the vNode (its host name inside) [default: vnode]. Given with no server address
    /// and no --root, the managers of the cluster `lego up` started place the process (an
    /// error if there is none, or its manager does not answer).
    #[arg(long)]
    vnode: Option<String>,
    /// User address space of the vNode (e.g. 512M, 4G) [default: the vNode's with
    /// --global-mgr, else 4G].
    #[arg(long, value_parser = crate::size::vnode_mem())]
    mem: Option<u64>,
    /// Global manager that places the process: the vNode (`lego vnode create`) gives its memory
    /// size and ExCache, the GMM its mem-servers, the GSM its storage server and the mem-server
    /// caching its files. Options given here override those choices.
    #[arg(long, value_name = "ADDR", visible_alias = "cluster", env = "LEGO_CLUSTER")]
    global_mgr: Option<String>,
    #[command(flatten)]
    memory: MemoryArgs,
    /// Host directory holding the vNode's files (default: the current directory). Paths the
    /// program uses cannot leave it.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Storage server holding the vNode's files (its mount for --vnode), reached through the
    /// buffer cache of a mem-server; PROGRAM is then a path in that mount.
    #[arg(long, value_name = "ADDR", conflicts_with = "root")]
    storage_server: Option<String>,
    /// Print every system call, its arguments and result to stderr, strace-style.
    #[arg(long)]
    trace_syscalls: bool,
    /// Print system-call and ExCache statistics at exit.
    #[arg(long)]
    stats: bool,
    /// Run in this shell's own VMM even when the cluster has pComponents (the GPM then does not
    /// place the process; the GMM and GSM still do).
    #[arg(long)]
    local: bool,
    /// Start the program with an empty environment instead of this shell's.
    #[arg(long)]
    clear_env: bool,
    /// Set KEY=VALUE in the program's environment (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<OsString>,
    /// The pComponent this VMM runs for (set by `lego pcomp`), for the process's reports.
    #[arg(long, value_name = "ADDR", hide = true)]
    on_pcomp: Option<String>,
    /// Let the program reach addresses outside the virtual IP space (10.0.0.0/8) through the
    /// pComponent's network; without it they are unreachable (ENETUNREACH) [default: the vNode's
    /// setting (`lego vnode create --egress`)].
    #[arg(long)]
    egress: bool,
    /// Publish the vNode's TCP port VPORT on port HOSTPORT of the host it runs on (all its
    /// addresses), as `docker run -p` does (repeatable) [default: the vNode's published ports;
    /// any given here replace them].
    #[arg(long, value_name = "HOSTPORT:VPORT")]
    publish: Vec<Publish>,
    /// argv[0] for the program (default: PROGRAM as given).
    #[arg(long)]
    argv0: Option<OsString>,
    /// Host path of the program.
    program: PathBuf,
    /// Arguments for the program.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// The variable that gives a placed program its vNode's virtual IP.
const VIP_ENV: &str = "LEGO_VNODE_IP";

/// The vNode name when none is given.
const DEFAULT_VNODE: &str = "vnode";

/// Default address space when neither `--mem` nor a vNode gives one.
const DEFAULT_MEM: u64 = 4 << 30;

/// An `--env` value without a name and an `=`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not KEY=VALUE")]
struct NotKeyValue(String);

fn parse_env(s: &str) -> Result<OsString, NotKeyValue> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() => Ok(s.into()),
        _ => Err(NotKeyValue(s.to_string())),
    }
}

/// The program's environment: this shell's (unless `--clear-env`) with `--env` applied. The
/// cluster secret is lego's, never the program's.
fn guest_env(args: &RunArgs) -> Vec<Vec<u8>> {
    let mut env: Vec<Vec<u8>> = if args.clear_env {
        Vec::new()
    } else {
        std::env::vars_os()
            .filter(|(k, _)| k != SECRET_ENV)
            .map(|(k, v)| {
                let mut e = k.into_vec();
                e.push(b'=');
                e.extend(v.into_vec());
                e
            })
            .collect()
    };
    for set in &args.env {
        let set = set.as_bytes();
        let key = &set[..=set.iter().position(|&b| b == b'=').unwrap_or(set.len() - 1)];
        env.retain(|e| !e.starts_with(key));
        env.push(set.to_vec());
    }
    env
}

/// With a vNode and no address or directory at all, the cluster `lego up` started places the
/// process: its global manager is asked at the address the state directory records (a manager
/// that is down is then an error naming it). Without a recorded cluster that is a usage error,
/// never a quiet run here with the current directory as the vNode's files.
fn find_cluster(args: &mut RunArgs, state: &StateArgs) -> anyhow::Result<()> {
    let no_address = args.global_mgr.is_none() && args.memory.mem_server.is_empty() && args.storage_server.is_none();
    let Some(vnode) = args.vnode.as_deref().filter(|_| no_address && args.root.is_none()) else { return Ok(()) };
    match state.recorded()? {
        Some(c) => args.global_mgr = Some(c.global_mgr),
        None => anyhow::bail!(
            "--vnode {vnode}: no cluster is up in {} to place it (start one with `lego up`, name its manager with \
             --global-mgr, or run it here with --root DIR)",
            state.dir()?.display()
        ),
    }
    Ok(())
}

/// With a global manager, the vNode's settings (`lego vnode create`) fill in what the options
/// left open: replicas, published ports (the options' list replaces the vNode's) and egress
/// (either turns it on). Answers the vNode, if the manager knows it (if not, placing the process
/// reports that).
fn vnode_defaults(args: &mut RunArgs) -> anyhow::Result<Option<VnodeInfo>> {
    let Some(global) = &args.global_mgr else { return Ok(None) };
    let name = args.vnode.as_deref().unwrap_or(DEFAULT_VNODE);
    let Some(v) = crate::global::vnode_info(global, args.memory.cluster_id, name)? else { return Ok(None) };
    apply_settings(args, &v.settings);
    Ok(Some(v))
}

/// The vNode's settings `s` where the options left them open (see [`vnode_defaults`]).
fn apply_settings(args: &mut RunArgs, s: &VnodeSettings) {
    args.memory.replicas.get_or_insert(s.replicas);
    args.egress |= s.egress;
    if args.publish.is_empty() {
        args.publish = s.publish.clone();
    }
}

/// Tells the storage server named with `--storage-server` about the vNode (a vNode the global
/// manager knows with its quota; else the implicit vNode of this run, whose quota, if any,
/// stays), as the GSM does for the storage server it chose.
fn mount(storage: &str, cluster: u64, vnode: &str, known: Option<&VnodeInfo>) -> anyhow::Result<()> {
    let quota = known.map_or(QuotaChange::Keep, |v| QuotaChange::Set(v.settings.disk_quota));
    let me = Hello::new(ComponentKind::Client, cluster);
    Ok(lego_proto::storage::mount(storage, me, vnode, quota, std::time::Duration::from_secs(30))?)
}

/// The pComponent the GPM chooses for the process, if the managers place it (a global manager,
/// no address or directory given, no `--local`) and some pComponent is up.
fn choose_pcomp(args: &RunArgs) -> anyhow::Result<Option<String>> {
    let placed = args.memory.mem_server.is_empty() && args.storage_server.is_none() && args.root.is_none();
    match &args.global_mgr {
        Some(global) if placed && !args.local => crate::global::choose_pcomp(global, args.memory.cluster_id),
        _ => Ok(None),
    }
}

/// The signals this `lego run` has ignored, which its program starts with ignored too (as
/// across `execve`); none, with a warning, if they cannot be read.
fn ignored_signals() -> u64 {
    lego_vmm::signal::host_ignored().unwrap_or_else(|| {
        tracing::warn!("cannot read the ignored signals from /proc/self/status: the program starts with none ignored");
        0
    })
}

/// The signals this `lego run` has blocked, which its program starts with blocked too (as
/// across `execve`); none, with a warning, if they cannot be read.
fn blocked_signals() -> u64 {
    lego_vmm::signal::host_blocked().unwrap_or_else(|| {
        tracing::warn!("cannot read the blocked signals from /proc/thread-self/status: the program starts with none blocked");
        0
    })
}

/// The request that runs this command's program on a pComponent, which starts it with the
/// signals `ignored` and `blocked` (this process's: see [`ignored_signals`]).
fn request(args: &RunArgs, ignored: u64, blocked: u64) -> RunRequest {
    let m = &args.memory;
    let argv0 = args.argv0.clone().unwrap_or_else(|| args.program.clone().into_os_string());
    RunRequest {
        vnode: args.vnode.clone().unwrap_or_else(|| DEFAULT_VNODE.to_string()),
        program: args.program.clone().into_os_string().into_vec(),
        argv: std::iter::once(argv0).chain(args.args.iter().cloned()).map(OsString::into_vec).collect(),
        envp: guest_env(args),
        mem: args.mem,
        excache: m.excache,
        excache_ways: m.excache_ways as u32,
        excache_clock: matches!(m.excache_policy, crate::memory::PolicyArg::Clock),
        excache_prefetch: m.prefetch.min(u64::from(u32::MAX)) as u32,
        excache_cleaner: m.excache_cleaner,
        vregion_size: m.vregion_size,
        mem_timeout_s: m.mem_timeout,
        replicas: m.replicas.unwrap_or(1),
        trace_syscalls: args.trace_syscalls,
        ignored_signals: ignored,
        blocked_signals: blocked,
        stats: args.stats,
        egress: args.egress,
        publish: args.publish.iter().map(Publish::to_string).collect(),
    }
}

/// What the managers decided for the process.
#[derive(Default)]
struct Placed {
    /// The vNode's remote files, if the managers chose them.
    files: Option<Files>,
    /// The vNode's virtual IP.
    vip: Option<std::net::Ipv4Addr>,
}

/// Asks the global manager (if there is one) where the process's memory and files go, and
/// fills in what the options left open.
fn place(args: &mut RunArgs) -> anyhow::Result<Placed> {
    let Some(global) = &args.global_mgr else { return Ok(Placed::default()) };
    let vnode = args.vnode.get_or_insert_with(|| DEFAULT_VNODE.to_string()).clone();
    let p = crate::global::place(global, args.memory.cluster_id, &vnode)?;
    // The vNode's virtual IP, for programs that want to know who they are (an --env wins).
    args.env.insert(0, format!("{VIP_ENV}={}", std::net::Ipv4Addr::from(p.vnode.vip)).into());
    args.mem.get_or_insert(p.vnode.mem_bytes);
    args.memory.excache.get_or_insert(p.vnode.excache_bytes);
    if args.memory.mem_server.is_empty() {
        if p.mem_servers.is_empty() {
            anyhow::bail!("no mem-server is up (lego ps --global-mgr {global})");
        }
        args.memory.mem_server = p.mem_servers;
    }
    let vip = Some(p.vnode.vip.into());
    if args.storage_server.is_some() || args.root.is_some() {
        return Ok(Placed { files: None, vip });
    }
    match (p.vnode.storage, p.cache) {
        (Some(storage), Some(cache)) => Ok(Placed { files: Some(Files::Remote { cache, storage }), vip }),
        (Some(storage), None) => anyhow::bail!(
            "no mem-server that is up caches storage server {storage}, which holds vNode {} (start one with \
             `lego mem-server --storage-server {storage} --global-mgr {global}`)",
            vnode
        ),
        (None, _) => anyhow::bail!("no storage server is up to hold vNode {vnode}'s files"),
    }
}

/// Runs the program; the exit code is the program's own status.
pub fn run(mut args: RunArgs, state: &StateArgs) -> ExitCode {
    if let Err(e) = find_cluster(&mut args, state) {
        eprintln!("lego: {e:#}");
        return ExitCode::from(STATUS_BAD_PROGRAM);
    }
    let known = match vnode_defaults(&mut args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("lego: {e:#}");
            return ExitCode::from(STATUS_VMM_FAILURE);
        }
    };
    match choose_pcomp(&args) {
        Ok(Some(pcomp)) => {
            let transport = args.memory.transport.transport;
            if transport != lego_proto::rdma::select::TransportChoice::Tcp {
                // The run request to a pComponent carries no transport: its runs use TCP.
                eprintln!("lego: --transport {transport} applies to runs in this VMM; the pComponent {pcomp} runs over TCP (add --local)");
                return ExitCode::from(STATUS_BAD_PROGRAM);
            }
            return match crate::remote::run(&pcomp, args.memory.cluster_id, request(&args, ignored_signals(), blocked_signals())) {
                Ok(status) => ExitCode::from(status),
                Err(e) => {
                    eprintln!("lego: {e:#}");
                    ExitCode::from(STATUS_VMM_FAILURE)
                }
            }
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("lego: {e:#}");
            return ExitCode::from(STATUS_VMM_FAILURE);
        }
    }
    // The program starts with the signals this process ignores and blocks now; then the ones
    // passed on to it are blocked, before any thread of the VMM starts.
    let (ignored, blocked) = (ignored_signals(), blocked_signals());
    let passed = lego_vmm::hostsig::block()
        .map_err(|e| tracing::warn!("cannot block the signals passed on to the program (^C ends the VMM): {e}"))
        .ok();
    let placed = match place(&mut args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lego: {e:#}");
            return ExitCode::from(STATUS_VMM_FAILURE);
        }
    };
    let mem = args.mem.unwrap_or(DEFAULT_MEM);
    let (memory, _embedded) = match args.memory.config(mem, args.storage_server.as_deref()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("lego: {e:#}");
            return ExitCode::from(STATUS_VMM_FAILURE);
        }
    };
    let RunRequest { vnode, argv, envp, .. } = request(&args, ignored, blocked);
    let net = net_config(&args, placed.vip, &vnode);
    let files = match (placed.files, args.storage_server) {
        (Some(files), _) => files,
        (None, Some(storage)) => {
            if let Err(e) = mount(&storage, args.memory.cluster_id, &vnode, known.as_ref()) {
                eprintln!("lego: {e:#}");
                return ExitCode::from(STATUS_VMM_FAILURE);
            }
            Files::Remote { cache: cache_server(&memory.servers, &vnode).unwrap_or_default().to_string(), storage }
        }
        (None, None) => Files::HostDir(args.root.unwrap_or_else(lego_vmm::vnode::default_root)),
    };
    let cwd = match &files {
        Files::HostDir(root) => lego_vmm::vnode::start_dir(root),
        Files::Remote { .. } => b"/".to_vec(),
    };
    let config = VnodeConfig {
        name: vnode,
        mem_size: mem,
        files,
        cwd,
        trace_syscalls: args.trace_syscalls,
        ignored_signals: ignored,
        blocked_signals: blocked,
        memory,
        net,
    };
    let program = Program { path: args.program, argv, envp };
    let vnode = Vnode::new(&config, &program);
    // Processes the managers placed report to them while they run.
    let _reporter = match (&vnode, &args.global_mgr) {
        (Ok(v), Some(global)) => {
            let who = ProcessIdentity {
                pcomp: args.on_pcomp.unwrap_or_else(crate::report::local_pcomp),
                vnode: config.name.clone(),
                program: program.path.display().to_string(),
                home: v.process().mm.home().to_string(),
                ..ProcessIdentity::default()
            };
            let procs = v.process().procs.clone();
            // The leases come first: a process the manager hears of always holds one.
            let leases = crate::lease::start(args.memory.cluster_id, procs.clone())
                .map_err(|e| tracing::warn!("cannot start renewing the memory leases: {e}"))
                .ok();
            let reports = crate::report::start(global.clone(), args.memory.cluster_id, who, procs)
                .map_err(|e| tracing::warn!("cannot start the process reports: {e}"))
                .ok();
            // Dropped in this order: the last report, then the leases.
            Some((reports, leases))
        }
        _ => None,
    };
    let passing = match (&vnode, passed) {
        (Ok(v), Some(passed)) => {
            let procs = v.process().procs.clone();
            lego_vmm::hostsig::start(procs, passed).map_err(|e| tracing::warn!("cannot pass signals on to the program: {e}")).ok()
        }
        _ => None,
    };
    let mut forwarders = Vec::new();
    if let Ok(v) = &vnode {
        let net = v.process().net.clone();
        for p in &args.publish {
            match Forwarder::start(net.clone(), *p) {
                Ok(f) => forwarders.push(f),
                Err(e) => {
                    eprintln!("lego: --publish {}:{}: {e}", p.host_port, p.vport);
                    return ExitCode::from(STATUS_BAD_PROGRAM);
                }
            }
        }
    }
    let report = vnode.and_then(Vnode::run);
    let _stopped = passing.as_ref().map(lego_vmm::hostsig::Passing::stop);
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lego: {e}");
            let status = match e {
                VmmError::Program { .. } | VmmError::BadElf { .. } | VmmError::Config(_) => STATUS_BAD_PROGRAM,
                _ => STATUS_VMM_FAILURE,
            };
            return ExitCode::from(status);
        }
    };
    if let Termination::Signaled { signal, detail: Some(detail) } = &report.termination {
        eprintln!("lego: {} killed by {}: {detail}", program.path.display(), signal_name(*signal));
    }
    if args.stats {
        print_stats(&report);
    }
    ExitCode::from(report.termination.shell_status() as u8)
}

/// The vNode's network: with a global manager, its virtual IP and the cluster's endpoint
/// table, sockets bound on the host address of the pComponent it runs for; else a network of
/// its own on the loopback.
fn net_config(args: &RunArgs, vip: Option<std::net::Ipv4Addr>, vnode: &str) -> NetConfig {
    let mut net = NetConfig::standalone();
    net.egress = args.egress;
    if let (Some(vip), Some(global)) = (vip, &args.global_mgr) {
        net.vip = vip;
        let pcomp = args.on_pcomp.clone().unwrap_or_else(crate::report::local_pcomp);
        net.directory = Arc::new(GlobalDirectory::new(global.clone(), args.memory.cluster_id, vnode.to_string(), pcomp));
    }
    let host = args.on_pcomp.as_deref().and_then(|a| a.to_socket_addrs().ok()?.find(|a| a.is_ipv4()));
    if let Some(std::net::SocketAddr::V4(a)) = host {
        net.host_ip = *a.ip();
    }
    net
}

fn print_stats(report: &RunReport) {
    let s = &report.stats;
    eprintln!(
        "lego: {} system calls in {:.3} s, {} thread(s) started besides the first",
        s.calls,
        report.elapsed.as_secs_f64(),
        s.threads_created
    );
    eprintln!("lego: {} system calls implemented", lego_vmm::syscall::implemented().len());
    if s.peak_locked > 0 {
        eprintln!("lego: mlock'd memory at most {} KiB", s.peak_locked / 1024);
    }
    if s.peak_shared > 0 {
        eprintln!("lego: memory shared between processes at most {} KiB at once (in the pComponent, not the ExCache)", s.peak_shared / 1024);
    }
    for (nr, n) in &s.by_nr {
        let name = names::name(*nr).unwrap_or("?");
        let note = if s.unimplemented.contains_key(nr) { "  (unimplemented: ENOSYS)" } else { "" };
        eprintln!("lego:   {name:<20} {n:>10}{note}");
    }
    let c = &report.cache;
    eprintln!(
        "lego: ExCache {} lines ({} KiB), {} resident at exit, memory on {} mem-server(s)",
        c.lines,
        c.lines * 4,
        c.resident,
        c.owners
    );
    eprintln!("lego:   misses (remote fetches) {:>10}", c.misses);
    eprintln!("lego:   p-local fills           {:>10}", c.plocal_fills);
    eprintln!("lego:   evictions               {:>10}", c.evictions);
    eprintln!("lego:   dirty flushes           {:>10}", c.dirty_flushes);
    eprintln!("lego:   piggybacked flushes     {:>10}", c.piggybacked);
    eprintln!("lego:   first writes (dirtied)  {:>10}", c.dirtied);
    eprintln!("lego:   dirty on prediction     {:>10}", c.predicted_dirty);
    eprintln!("lego:     found unwritten       {:>10}", c.predicted_unwritten);
    eprintln!("lego:   waits on write-back     {:>10}", c.writeback_waits);
    eprintln!("lego:   cleaned ahead (cleaner) {:>10}", c.cleaned);
    eprintln!("lego:   second chances (CLOCK)  {:>10}", c.second_chances);
    eprintln!("lego:   invalidated frame runs  {:>10}", c.invalidations);
    if c.evictions > 0 {
        eprintln!("lego:   eviction work per line  {:>10.2} us", c.evict_ns as f64 / 1e3 / c.evictions as f64);
    }
    eprintln!("lego:   prefetched lines        {:>10}", c.prefetched);
    eprintln!("lego:   prefetched, used        {:>10}", c.prefetch_used);
    eprintln!("lego:   prefetched, evicted unused {:>7}", c.prefetch_unused);
    eprintln!("lego:   bytes in / out          {:>10} / {}", c.bytes_in, c.bytes_out);
    eprintln!("lego:   replicated lines        {:>10}", c.replicated);
    if c.suspended > 0 || c.log_full_waits > 0 {
        eprintln!("lego:   replication suspended   {:>10}  (secondaries whose backup log was full)", c.suspended);
        eprintln!("lego:   waits on a full log     {:>10}  (write-backs a promoted primary refused, retried)", c.log_full_waits);
    }
    if c.failovers > 0 || c.suspended > 0 {
        eprintln!("lego:   fail-overs              {:>10}  (longest {:.1} ms)", c.failovers, c.failover_ns as f64 / 1e6);
        eprintln!("lego:   copies rebuilt          {:>10}  (longest {:.1} ms)", c.rebuilt, c.rebuild_ns as f64 / 1e6);
    }
    if !c.miss_ns.is_empty() {
        let us = |q: f64| c.miss_ns.value_at_quantile(q) as f64 / 1000.0;
        eprintln!(
            "lego:   miss latency (VMM side) p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us",
            us(0.5),
            us(0.99),
            us(0.999)
        );
        let n = c.miss_ns.len();
        let mean = c.miss_ns.mean();
        eprintln!("lego:   miss latency (VMM side) mean {:.1} us, {:.3} s in all", mean / 1e3, mean * n as f64 / 1e9);
    }
    print_kvm_stats(&report.kvm);
}

/// KVM's own counters: what happened in the host kernel without reaching the VMM. On a
/// shadow-paging KVM every one of them costs the guest tens of microseconds here.
fn print_kvm_stats(k: &lego_vmm::kvm_stats::KvmStats) {
    if k.0.is_empty() {
        return;
    }
    eprintln!("lego: KVM's counters (what KVM handled itself never reaches the VMM)");
    for (name, what) in [
        ("exits", "exits of the guest, of any kind"),
        ("pf_taken", "page faults KVM took"),
        ("pf_fixed", "of them fixed in its shadow page tables"),
        ("pf_guest", "of them passed on to the guest (misses)"),
        ("insn_emulation", "guest instructions emulated (CPL0 stubs)"),
        ("mmu_shadow_zapped", "shadow page-table pages zapped"),
    ] {
        if k.0.contains_key(name) {
            eprintln!("lego:   {:<58} {:>10}", format!("{what} ({name})"), k.get(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(options: &[&str]) -> RunArgs {
        Cmd::parse_from(["lego"].iter().chain(options).chain(&["prog"])).run
    }

    /// The vNode's replicas, published ports and egress are the defaults; options given win
    /// (a `--publish` list replaces the vNode's; `--egress` turns it on).
    #[test]
    fn the_vnode_settings_fill_what_the_options_leave_open() {
        let port = |h, v| Publish { host_port: h, vport: v };
        let s = VnodeSettings { disk_quota: Some(1 << 20), replicas: 2, publish: vec![port(8080, 80)], egress: true };
        let mut a = args(&[]);
        apply_settings(&mut a, &s);
        assert_eq!((a.memory.replicas, a.publish.clone(), a.egress), (Some(2), vec![port(8080, 80)], true));
        assert_eq!(request(&a, 0, 0).publish, ["8080:80"]);
        let mut a = args(&["--replicas", "1", "--publish", "9090:90"]);
        apply_settings(&mut a, &s);
        assert_eq!((a.memory.replicas, a.publish, a.egress), (Some(1), vec![port(9090, 90)], true));
        let mut a = args(&["--egress"]);
        apply_settings(&mut a, &VnodeSettings::default());
        assert_eq!((a.memory.replicas, a.publish.is_empty(), a.egress), (Some(1), true, true));
    }
}
