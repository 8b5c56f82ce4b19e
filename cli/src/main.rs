//! `lego`: the one command of the lego system. Subcommands are thin: they parse arguments and
//! call the component libraries.

mod bench;
mod global;
mod image;
mod mem_server;
mod memory;
mod run;
mod size;
mod slowdown;
mod storage_bench;
mod storage_server;
mod throughput;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lego", version, about = "Run unmodified Linux programs in vNodes on disaggregated memory")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a static x86-64 Linux program in a vNode.
    Run(run::RunArgs),
    /// Run a memory server (mComponent).
    MemServer(mem_server::MemServerArgs),
    /// Run a storage server (sComponent).
    StorageServer(storage_server::StorageServerArgs),
    /// Run the global managers (registry, heartbeats, failure detection).
    GlobalMgr(global::GlobalMgrArgs),
    /// List the components a global manager knows, and whether they are up.
    Ps(global::PsArgs),
    /// Put guest images into a vNode's storage, and list them.
    Image {
        #[command(subcommand)]
        cmd: image::ImageCmd,
    },
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
        .init();
    match Cli::parse().command {
        Command::Run(args) => run::run(args),
        Command::MemServer(args) => mem_server::run(args),
        Command::StorageServer(args) => storage_server::run(args),
        Command::GlobalMgr(args) => global::run_global_mgr(args),
        Command::Ps(args) => match global::ps(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lego ps: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Image { cmd } => match image::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lego image: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench { which } => match bench::run(which) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lego: {e:#}");
                ExitCode::from(run::STATUS_VMM_FAILURE)
            }
        },
    }
}
