//! `lego storage-server`: a storage component.

use std::path::PathBuf;

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
    #[command(flatten)]
    join: crate::global::JoinArgs,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
}

/// Serves until killed.
pub fn run(args: StorageServerArgs) -> anyhow::Result<()> {
    let config = storage_server::Config { listen: args.listen, dir: args.dir, cluster: args.join.cluster_id };
    let server = storage_server::StorageServer::bind(config)?;
    let _heartbeats = args.join.join(Role::Storage, server.local_addr().to_string(), None, server.load_probe())?;
    let _metrics = args.metrics.serve("storage-server", |r| server.register_metrics(r))?;
    crate::announce("storage-server", server.local_addr());
    Ok(server.run()?)
}
