//! `lego mem-server`: a memory component.

use lego_proto::global::Role;

use crate::size::parse_size;

/// Options of `lego mem-server`.
#[derive(clap::Args)]
pub struct MemServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: String,
    /// Most page memory to hold (e.g. 4G).
    #[arg(long, value_parser = crate::size::mem_server_capacity())]
    capacity: u64,
    /// The storage server whose files this server caches (`host:port`).
    #[arg(long)]
    storage_server: Option<String>,
    /// Most file data the buffer cache holds (at least 1M).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    buffer_cache: u64,
    /// Size of the backup log of the secondary copies this server keeps (`lego run --replicas
    /// 2`), flushed to backup files on the storage server; when it is full, replication to this
    /// server stops for the processes that fill it.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    backup_log: u64,
    #[command(flatten)]
    transport: crate::transport::TransportArgs,
    #[command(flatten)]
    join: crate::global::JoinArgs,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
}

/// Serves until killed.
pub fn run(args: MemServerArgs) -> anyhow::Result<()> {
    let config = mem_server::Config {
        storage: args.storage_server.clone(),
        buffer_cache_bytes: args.buffer_cache,
        backup_log_bytes: args.backup_log,
        transport: args.transport.transport,
        ..mem_server::Config::new(args.listen, args.capacity, args.join.cluster_id)
    };
    let server = mem_server::MemServer::bind(config)?;
    let _heartbeats = args.join.join(Role::Memory, server.local_addr().to_string(), args.storage_server, server.load_probe())?;
    let _metrics = args.metrics.serve("mem-server", |r| server.register_metrics(r))?;
    crate::announce("mem-server", server.local_addr());
    Ok(server.run()?)
}
