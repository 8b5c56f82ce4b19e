//! `lego global-mgr`, `lego ps`, and the `--global-mgr` option of the servers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use global_mgr::heartbeat::{self, Heartbeats, Identity};
use lego_proto::global::{GlobalReply, GlobalRequest, Load, Role};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::{decode, encode};
use lego_proto::transport::{TcpTransport, Transport};

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
    #[arg(long, default_value_t = 0, env = "LEGO_CLUSTER_ID")]
    cluster: u64,
    #[command(flatten)]
    heartbeat: HeartbeatArgs,
}

/// The heartbeat interval, shared by the manager and the components.
#[derive(clap::Args, Clone, Copy)]
pub struct HeartbeatArgs {
    /// Milliseconds between heartbeats; a component missing three is down.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    heartbeat_ms: u64,
}

impl HeartbeatArgs {
    fn interval(self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}

/// The `--global-mgr` option of a component.
#[derive(clap::Args)]
pub struct JoinArgs {
    /// Global manager to register with and send heartbeats to.
    #[arg(long, value_name = "ADDR")]
    global_mgr: Option<String>,
    #[command(flatten)]
    heartbeat: HeartbeatArgs,
}

impl JoinArgs {
    /// Starts heartbeats for the component `role` listening on `addr`, if a global manager was
    /// named.
    pub fn join(&self, role: Role, addr: String, cluster: u64, load: impl Fn() -> Load + Send + 'static) -> anyhow::Result<Option<Heartbeats>> {
        let Some(global) = self.global_mgr.clone() else { return Ok(None) };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let me = Identity { role, addr, cores, cluster };
        Ok(Some(heartbeat::start(global, me, self.heartbeat.interval(), load).context("starting heartbeats")?))
    }
}

/// Serves until killed.
pub fn run_global_mgr(args: GlobalMgrArgs) -> ExitCode {
    let config = global_mgr::Config {
        listen: args.listen,
        state_dir: args.state_dir,
        cluster: args.cluster,
        heartbeat: args.heartbeat.interval(),
    };
    let server = match global_mgr::GlobalMgr::bind(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lego global-mgr: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Scripts and tests wait for this line to know the server is up, and where.
    println!("lego global-mgr listening on {}", server.local_addr());
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lego global-mgr: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Options of `lego ps`.
#[derive(clap::Args)]
pub struct PsArgs {
    /// The global manager.
    #[arg(long, value_name = "ADDR")]
    global_mgr: String,
    /// Cluster id presented to it.
    #[arg(long, default_value_t = 0, env = "LEGO_CLUSTER_ID")]
    cluster: u64,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Prints the components the global manager knows.
pub fn ps(args: &PsArgs) -> anyhow::Result<()> {
    let mut t = TcpTransport::connect(&args.global_mgr, Hello::new(ComponentKind::Client, args.cluster), Duration::from_secs(10))
        .with_context(|| format!("global manager {}", args.global_mgr))?;
    let list = match decode::<GlobalReply>(&t.call(0, &encode(&GlobalRequest::List))?)? {
        GlobalReply::Components(list) => list,
        other => bail!("global manager answered {other:?}"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "components": list }))?);
        return Ok(());
    }
    println!("{:>4}  {:<15} {:<22} {:<5} {:>6} {:>10} {:>10} {:>9}", "ID", "KIND", "ADDRESS", "STATE", "SEEN", "USED", "CAPACITY", "REQ/S");
    for c in &list {
        println!(
            "{:>4}  {:<15} {:<22} {:<5} {:>5.1}s {:>10} {:>10} {:>9.0}",
            c.id,
            c.role.to_string(),
            c.addr,
            if c.up { "up" } else { "down" },
            c.last_seen_ms as f64 / 1000.0,
            mib(c.load.used_bytes),
            mib(c.load.capacity_bytes),
            c.requests_per_s
        );
    }
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{} MiB", b >> 20)
}
