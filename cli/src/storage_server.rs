//! `lego storage-server`: a storage component.

use std::path::PathBuf;
use std::process::ExitCode;

use lego_proto::global::Role;

/// Options of `lego storage-server`.
#[derive(clap::Args)]
pub struct StorageServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7080")]
    listen: String,
    /// Directory holding the files of every vNode (created if missing; reused after a restart).
    #[arg(long)]
    dir: PathBuf,
    /// Cluster id peers must present.
    #[arg(long, default_value_t = 0, env = "LEGO_CLUSTER_ID")]
    cluster: u64,
    #[command(flatten)]
    join: crate::global::JoinArgs,
}

/// Serves until killed.
pub fn run(args: StorageServerArgs) -> ExitCode {
    let config = storage_server::Config { listen: args.listen, dir: args.dir.clone(), cluster: args.cluster };
    let server = match storage_server::StorageServer::bind(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lego storage-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let probe = server.load_probe(args.dir);
    let _heartbeats = match args.join.join(Role::Storage, server.local_addr().to_string(), args.cluster, probe) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("lego storage-server: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // Scripts and tests wait for this line to know the server is up, and where.
    println!("lego storage-server listening on {}", server.local_addr());
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lego storage-server: {e}");
            ExitCode::FAILURE
        }
    }
}
