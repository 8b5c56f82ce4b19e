//! `lego global-mgr`, `lego ps`, and the `--global-mgr` option of the servers.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use global_mgr::heartbeat::{self, Heartbeats, Identity};
use lego_proto::global::{
    ComponentInfo, EndpointInfo, GlobalReply, GlobalRequest, Load, NetProto, Placement, ProcessFigures, ProcessReport, PublishedPort,
    Role, VnodeInfo, VnodeSettings, MAX_LISTED_VREGIONS,
};
use lego_proto::codec::{decode, encode};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::transport::{TcpTransport, Transport};

use crate::cluster::StateArgs;

/// Options of `lego global-mgr`.
#[derive(clap::Args)]
pub struct GlobalMgrArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7060")]
    listen: String,
    /// Directory of the persisted registry.
    #[arg(long)]
    state_dir: PathBuf,
    /// Cluster id components must present.
    #[arg(long, default_value_t = 0, env = "LEGO_CLUSTER_ID", value_name = "ID")]
    cluster_id: u64,
    #[command(flatten)]
    heartbeat: HeartbeatArgs,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
}

/// Heartbeat intervals the options accept, in milliseconds.
pub const HEARTBEAT_MS: std::ops::RangeInclusive<u64> = 10..=60_000;

/// The heartbeat interval, shared by the manager and the components.
#[derive(clap::Args, Clone, Copy)]
pub struct HeartbeatArgs {
    /// Milliseconds between heartbeats; a component missing three is down.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(HEARTBEAT_MS))]
    heartbeat_ms: u64,
}

impl HeartbeatArgs {
    fn interval(self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}

/// The cluster options of a component: its cluster id and the global manager it joins.
#[derive(clap::Args)]
pub struct JoinArgs {
    /// Cluster id peers must present.
    #[arg(long, default_value_t = 0, env = "LEGO_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: u64,
    /// Global manager (the cluster's address) to register with and send heartbeats to.
    #[arg(long, value_name = "ADDR", visible_alias = "cluster", env = "LEGO_CLUSTER")]
    global_mgr: Option<String>,
    #[command(flatten)]
    heartbeat: HeartbeatArgs,
}

impl JoinArgs {
    /// The global manager named, if any.
    pub fn global_mgr(&self) -> Option<String> {
        self.global_mgr.clone()
    }

    /// Starts heartbeats for the component `role` listening on `addr` (a mem-server in front of
    /// the storage server `fronts`), if a global manager was named.
    pub fn join(
        &self,
        role: Role,
        addr: String,
        fronts: Option<String>,
        load: impl Fn() -> Load + Send + 'static,
    ) -> anyhow::Result<Option<Heartbeats>> {
        let Some(global) = self.global_mgr.clone() else { return Ok(None) };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let me = Identity { role, addr, cores, fronts, cluster: self.cluster_id };
        Ok(Some(heartbeat::start(global, me, self.heartbeat.interval(), load).context("starting heartbeats")?))
    }
}

/// Serves until killed.
pub fn run_global_mgr(args: GlobalMgrArgs) -> anyhow::Result<()> {
    let config = global_mgr::Config {
        listen: args.listen,
        state_dir: args.state_dir,
        cluster: args.cluster_id,
        heartbeat: args.heartbeat.interval(),
    };
    let server = global_mgr::GlobalMgr::bind(config)?;
    let _metrics = args.metrics.serve("global-mgr", |r| server.register_metrics(r))?;
    crate::announce("global-mgr", server.local_addr());
    Ok(server.run()?)
}

/// Options of `lego ps`.
#[derive(clap::Args)]
pub struct PsArgs {
    #[command(flatten)]
    at: ManagerArgs,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One request to the global manager at `addr`; a `Failed` answer is an error.
fn ask(addr: &str, cluster: u64, req: &GlobalRequest) -> anyhow::Result<GlobalReply> {
    let mut t = TcpTransport::connect(addr, Hello::new(ComponentKind::Client, cluster), Duration::from_secs(10))
        .with_context(|| format!("global manager {addr}"))?;
    match decode::<GlobalReply>(&t.call(0, &encode(req))?)? {
        GlobalReply::Failed(e) => bail!("{e}"),
        r => Ok(r),
    }
}

/// The managers' placement for a new process of `vnode`.
pub fn place(addr: &str, cluster: u64, vnode: &str) -> anyhow::Result<Placement> {
    match ask(addr, cluster, &GlobalRequest::Place { vnode: vnode.to_string() })? {
        GlobalReply::Placement(p) => Ok(p),
        other => bail!("global manager answered {other:?}"),
    }
}

/// The vNode `name`, if the global manager knows it.
pub fn vnode_info(addr: &str, cluster: u64, name: &str) -> anyhow::Result<Option<VnodeInfo>> {
    match ask(addr, cluster, &GlobalRequest::ListVnodes)? {
        GlobalReply::Vnodes(v) => Ok(v.into_iter().find(|v| v.name == name)),
        other => bail!("global manager answered {other:?}"),
    }
}

/// The GPM's choice of pComponent for a new process, if any is up.
pub fn choose_pcomp(addr: &str, cluster: u64) -> anyhow::Result<Option<String>> {
    match ask(addr, cluster, &GlobalRequest::ChoosePcomp)? {
        GlobalReply::Pcomp(p) => Ok(p),
        other => bail!("global manager answered {other:?}"),
    }
}

/// What the global manager knows: components, vNodes, running processes.
#[derive(serde::Serialize)]
pub struct ClusterView {
    /// Every component, in id order.
    pub components: Vec<ComponentInfo>,
    /// Every vNode, in id order.
    pub vnodes: Vec<VnodeInfo>,
    /// Every running process, by pComponent and pid.
    pub processes: Vec<ProcessReport>,
    /// The vNodes' listening endpoints.
    pub endpoints: Vec<EndpointInfo>,
}

/// The components, vNodes and processes the global manager at `addr` knows.
pub fn registry(addr: &str, cluster: u64) -> anyhow::Result<ClusterView> {
    let GlobalReply::Components(components) = ask(addr, cluster, &GlobalRequest::List)? else {
        bail!("unexpected answer to a component list")
    };
    let GlobalReply::Vnodes(vnodes) = ask(addr, cluster, &GlobalRequest::ListVnodes)? else {
        bail!("unexpected answer to a vNode list")
    };
    let GlobalReply::Processes(processes) = ask(addr, cluster, &GlobalRequest::Processes)? else {
        bail!("unexpected answer to a process list")
    };
    let GlobalReply::Endpoints(endpoints) = ask(addr, cluster, &GlobalRequest::Endpoints)? else {
        bail!("unexpected answer to an endpoint list")
    };
    Ok(ClusterView { components, vnodes, processes, endpoints })
}

/// How long ago `started_unix_ms` was, for tables.
pub fn uptime(started_unix_ms: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let s = now.saturating_sub(started_unix_ms) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// Prints the components, vNodes and processes the global manager knows.
pub fn ps(args: &PsArgs, state: &StateArgs) -> anyhow::Result<()> {
    let global = args.at.addr(state)?;
    let view = registry(&global, args.at.cluster_id)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    let ClusterView { components: list, vnodes, processes, endpoints } = view;
    println!(
        "{:>4}  {:<15} {:<22} {:<5} {:>6} {:>10} {:>10} {:>9} {:>7}",
        "ID", "KIND", "ADDRESS", "STATE", "SEEN", "USED", "CAPACITY", "REQ/S", "THREADS"
    );
    for c in &list {
        println!(
            "{:>4}  {:<15} {:<22} {:<5} {:>5.1}s {:>10} {:>10} {:>9.0} {:>7}",
            c.id,
            c.role.to_string(),
            c.addr,
            if c.up { "up" } else { "down" },
            c.last_seen_ms as f64 / 1000.0,
            mib(c.load.used_bytes),
            mib(c.load.capacity_bytes),
            c.requests_per_s,
            threads(c)
        );
    }
    if !vnodes.is_empty() {
        println!();
        print_vnodes(&vnodes);
    }
    if !processes.is_empty() {
        println!();
        println!(
            "{:<12} {:>8} {:>5}  {:<22} {:<22} {:>10} {:>10} {:>8}  {:<18} PROGRAM",
            "VNODE", "PID", "VPID", "PCOMPONENT", "HOME", "EXCACHE", "IN USE", "UPTIME", "VREGIONS"
        );
        for p in &processes {
            println!(
                "{:<12} {:>8} {:>5}  {:<22} {:<22} {:>10} {:>10} {:>8}  {:<18} {}",
                p.who.vnode,
                p.who.pid,
                p.who.vpid,
                p.who.pcomp,
                p.who.home,
                mib(p.cache.excache_bytes),
                mib(p.cache.resident_bytes),
                uptime(p.who.started_unix_ms),
                copies(&p.cache),
                p.who.program
            );
        }
        print_vregions(&processes);
    }
    if !endpoints.is_empty() {
        println!();
        println!("{:<12} {:<5} {:<21} {:<22} {:>8}  PCOMPONENT", "VNODE", "PROTO", "ENDPOINT", "HOST ADDRESS", "PID");
        for e in &endpoints {
            let proto = match e.endpoint.proto {
                NetProto::Tcp => "tcp",
                NetProto::Udp => "udp",
            };
            let at = format!("{}:{}", Ipv4Addr::from(e.endpoint.vip), e.endpoint.port);
            println!("{:<12} {:<5} {:<21} {:<22} {:>8}  {}", e.vnode, proto, at, e.host, e.owner.pid, e.owner.pcomp);
        }
    }
    Ok(())
}

fn print_vnodes(vnodes: &[VnodeInfo]) {
    println!(
        "{:>4}  {:<20} {:<15} {:>10} {:>10} {:>10} {:>8} {:<6} PUBLISH",
        "ID", "VNODE", "VIP", "MEM", "EXCACHE", "DISK", "REPLICAS", "EGRESS"
    );
    for v in vnodes {
        let s = &v.settings;
        let publish: Vec<String> = s.publish.iter().map(PublishedPort::to_string).collect();
        println!(
            "{:>4}  {:<20} {:<15} {:>10} {:>10} {:>10} {:>8} {:<6} {}",
            v.id,
            v.name,
            Ipv4Addr::from(v.vip).to_string(),
            mib(v.mem_bytes),
            mib(v.excache_bytes),
            s.disk_quota.map_or_else(|| "-".to_string(), mib),
            s.replicas,
            if s.egress { "yes" } else { "no" },
            if publish.is_empty() { "-".to_string() } else { publish.join(",") }
        );
    }
}

/// `lego vnode` subcommands.
#[derive(clap::Subcommand)]
pub enum VnodeCmd {
    /// Create a vNode: a unique id, a unique virtual IP, its own storage mount.
    Create {
        /// Its name (1-64 bytes of [A-Za-z0-9._-]).
        name: String,
        /// Its virtual IP (default: the first free one in 10.77.0.0/16).
        #[arg(long)]
        vip: Option<Ipv4Addr>,
        /// Address space of its processes.
        #[arg(long, default_value = "4G", value_parser = crate::size::vnode_mem())]
        mem: u64,
        /// ExCache of its processes.
        #[arg(long, default_value = "256M", value_parser = crate::size::excache())]
        excache: u64,
        /// Disk quota: most bytes of file data its storage mount may hold (file sizes); a write
        /// past it gets ENOSPC [default: no quota].
        #[arg(long, value_name = "SIZE", value_parser = crate::size::parse_size)]
        disk: Option<u64>,
        /// Copies of its processes' memory (`lego run --replicas`, which overrides it).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        replicas: u8,
        /// Publish its TCP port VPORT on port HOSTPORT of the host each of its processes runs on
        /// (repeatable; `lego run --publish` replaces the list).
        #[arg(long, value_name = "HOSTPORT:VPORT")]
        publish: Vec<PublishedPort>,
        /// Its processes may reach addresses outside the virtual IP space (`lego run --egress`).
        #[arg(long)]
        egress: bool,
        #[command(flatten)]
        at: ManagerArgs,
    },
    /// List the vNodes.
    Ls {
        #[command(flatten)]
        at: ManagerArgs,
    },
    /// Remove a vNode (its files stay on the storage servers).
    Rm {
        /// Its name.
        name: String,
        #[command(flatten)]
        at: ManagerArgs,
    },
}

/// Which global manager.
#[derive(clap::Args)]
pub struct ManagerArgs {
    /// The global manager: the cluster's address [default: the one of the cluster `lego up`
    /// started].
    #[arg(long, value_name = "ADDR", visible_alias = "cluster", env = "LEGO_CLUSTER")]
    global_mgr: Option<String>,
    /// Cluster id presented to it.
    #[arg(long, default_value_t = 0, env = "LEGO_CLUSTER_ID", value_name = "ID")]
    cluster_id: u64,
}

impl ManagerArgs {
    /// The global manager's address: given, or the running cluster's.
    pub fn addr(&self, state: &StateArgs) -> anyhow::Result<String> {
        state.global_mgr(self.global_mgr.as_deref())
    }

    /// The cluster id to present.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }
}

/// The state of a process's vRegions: how many are replicated (two copies), degraded (one copy
/// left by a mem-server's failure), being rebuilt and suspended (one copy left by a full backup
/// log); `-` for a process with one copy of everything (`--replicas 1`).
fn copies(f: &ProcessFigures) -> String {
    let c = &f.copies;
    let counts: Vec<String> = [(c.replicated, "replicated"), (c.degraded, "degraded"), (c.rebuilding, "rebuilding"), (c.suspended, "suspended")]
        .into_iter()
        .filter(|&(n, _)| n > 0)
        .map(|(n, name)| format!("{n} {name}"))
        .collect();
    if counts.is_empty() {
        "-".to_string()
    } else {
        counts.join(", ")
    }
}

/// Each vRegion of the replicated processes: where its copies are and their state.
fn print_vregions(processes: &[ProcessReport]) {
    let replicated: Vec<&ProcessReport> = processes.iter().filter(|p| p.cache.copies.total() > p.cache.copies.single).collect();
    if replicated.is_empty() {
        return;
    }
    println!();
    println!("{:<12} {:>8} {:>5} {:>7}  {:<22} {:<22} STATE", "VNODE", "PID", "VPID", "VREGION", "PRIMARY", "SECONDARY");
    for p in replicated {
        for v in &p.cache.vregions {
            let secondary = v.secondary.as_deref().unwrap_or("-");
            println!("{:<12} {:>8} {:>5} {:>7}  {:<22} {:<22} {}", p.who.vnode, p.who.pid, p.who.vpid, v.index, v.primary, secondary, v.state);
        }
        let unlisted = p.cache.copies.total().saturating_sub(p.cache.vregions.len() as u64);
        if unlisted > 0 {
            println!(
                "{:<12} {:>8} {:>5} {unlisted} more not listed (a report lists {MAX_LISTED_VREGIONS}, those not fully copied first)",
                p.who.vnode, p.who.pid, p.who.vpid
            );
        }
    }
}

/// Runs a vNode command.
pub fn vnode(cmd: VnodeCmd, state: &StateArgs) -> anyhow::Result<()> {
    match cmd {
        VnodeCmd::Create { name, vip, mem, excache, disk, replicas, publish, egress, at } => {
            let settings = VnodeSettings { disk_quota: disk, replicas, publish, egress };
            let req = GlobalRequest::CreateVnode { name, vip: vip.map(|ip| ip.octets()), mem_bytes: mem, excache_bytes: excache, settings };
            let GlobalReply::Vnode(v) = ask(&at.addr(state)?, at.cluster_id, &req)? else { bail!("unexpected answer to a vNode creation") };
            println!("created vNode {} (id {}, virtual IP {})", v.name, v.id, Ipv4Addr::from(v.vip));
        }
        VnodeCmd::Ls { at } => {
            let GlobalReply::Vnodes(v) = ask(&at.addr(state)?, at.cluster_id, &GlobalRequest::ListVnodes)? else {
                bail!("unexpected answer to a vNode list")
            };
            print_vnodes(&v);
        }
        VnodeCmd::Rm { name, at } => {
            ask(&at.addr(state)?, at.cluster_id, &GlobalRequest::RemoveVnode { name: name.clone() })?;
            println!("removed vNode {name}");
        }
    }
    Ok(())
}

/// Guest threads a pComponent runs ("-" for other components), for tables.
pub fn threads(c: &ComponentInfo) -> String {
    if c.role == Role::Processor {
        c.load.threads.to_string()
    } else {
        "-".into()
    }
}

/// `b` bytes in whole MiB, for tables.
pub fn mib(b: u64) -> String {
    format!("{} MiB", b >> 20)
}
