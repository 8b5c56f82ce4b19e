//! `lego`: the one command of the lego system. Subcommands are thin: they parse arguments and
//! call the component libraries.

mod apps;
mod bench;
mod cluster;
mod config;
mod endpoints;
mod fault_bench;
mod fuzz_bench;
mod global;
mod image;
mod lease;
mod mem_server;
mod measure;
mod memory;
mod metrics;
mod net_bench;
mod reclaim_bench;
mod replication_bench;
mod pcomp;
mod remote;
mod remote_swap;
mod report;
mod run;
mod size;
mod slowdown;
mod storage_bench;
mod threads_bench;
mod storage_server;
mod throughput;
mod top;
mod transport;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// How options get their values, for `lego --help`.
const PRECEDENCE: &str = "\
Each option's value comes from, in order: the command line; its environment variable \
(LEGO_CLUSTER, LEGO_CLUSTER_ID, LEGO_STATE_DIR, ...); the TOML file of --config or LEGO_CONFIG, \
whose keys are named like the options ([cluster] for every command, [global_mgr], [mem_server], \
[storage_server], [run]); the built-in default. The cluster secret comes from \
LEGO_CLUSTER_SECRET or the file's cluster.secret.";

#[derive(Parser)]
#[command(name = "lego", version, about = "Run unmodified Linux programs in vNodes on disaggregated memory", after_help = PRECEDENCE)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    state: cluster::StateArgs,
    #[command(flatten)]
    config: config::ConfigArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run an x86-64 Linux program (static or dynamically linked) in a vNode.
    Run(run::RunArgs),
    /// Run a memory server (mComponent).
    MemServer(mem_server::MemServerArgs),
    /// Run a pComponent daemon: it runs the processes the global manager places on it.
    Pcomp(pcomp::PcompArgs),
    /// Run a storage server (sComponent).
    StorageServer(storage_server::StorageServerArgs),
    /// Start a whole cluster on this machine (global manager, storage servers, mem-servers, pComponents).
    Up(cluster::UpArgs),
    /// Stop the cluster `lego up` started.
    Down,
    /// Run the global managers (registry, heartbeats, failure detection).
    GlobalMgr(global::GlobalMgrArgs),
    /// List the components a global manager knows, whether they are up, and the vNodes.
    Ps(global::PsArgs),
    /// A live view of the cluster, refreshed every second.
    Top(top::TopArgs),
    /// Create, list and remove vNodes.
    Vnode {
        #[command(subcommand)]
        cmd: global::VnodeCmd,
    },
    /// Put guest images into a vNode's storage, and list them.
    Image {
        #[command(subcommand)]
        cmd: image::ImageCmd,
    },
    /// Serve an Infiniswap-style swap device: a FUSE file whose blocks live on mem-servers
    /// (for `losetup` and `swapon`).
    RemoteSwap(remote_swap::RemoteSwapArgs),
    /// Measure the vNode execution and memory paths.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: server logs usually go to files (`lego up`'s logs/), where
        // escape codes would split `peer=ADDR` and the like for grep.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli: Cli = match config::parse() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("lego: {e:#}");
            return ExitCode::from(2);
        }
    };
    let state = &cli.state;
    match cli.command {
        Command::Run(args) => run::run(args, state),
        Command::Up(args) => status("up", cli.config.export().and_then(|()| cluster::up(&args, state)), ExitCode::FAILURE),
        Command::Down => status("down", cluster::down(state), ExitCode::FAILURE),
        Command::MemServer(args) => status("mem-server", mem_server::run(args), ExitCode::FAILURE),
        Command::Pcomp(args) => status("pcomp", pcomp::run(args), ExitCode::FAILURE),
        Command::StorageServer(args) => status("storage-server", storage_server::run(args), ExitCode::FAILURE),
        Command::GlobalMgr(args) => status("global-mgr", global::run_global_mgr(args), ExitCode::FAILURE),
        Command::Ps(args) => status("ps", global::ps(&args, state), ExitCode::FAILURE),
        Command::Top(args) => status("top", top::run(&args, state), ExitCode::FAILURE),
        Command::Vnode { cmd } => status("vnode", global::vnode(cmd, state), ExitCode::FAILURE),
        Command::Image { cmd } => status("image", image::run(cmd, state), ExitCode::FAILURE),
        Command::RemoteSwap(args) => status("remote-swap", remote_swap::run(args), ExitCode::FAILURE),
        Command::Bench { which } => status("bench", bench::run(which), ExitCode::from(run::STATUS_VMM_FAILURE)),
    }
}

/// The exit status of a command: success, or `failure` after printing `lego WHAT: error`.
fn status(what: &str, result: anyhow::Result<()>, failure: ExitCode) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lego {what}: {e:#}");
            failure
        }
    }
}

/// Prints the line scripts and tests wait for to know a server is up, and where.
fn announce(kind: &str, addr: std::net::SocketAddr) {
    println!("lego {kind} listening on {addr}");
}
