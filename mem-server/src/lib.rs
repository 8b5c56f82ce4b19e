//! The memory component (LegoOS mComponent, paper §4.4): a server process that owns vRegions of
//! process address spaces and stores their pages, and is the home of processes whose memory
//! system calls it serves.
//!
//! - [`store`]: the pages, in a hash table from (process, page) to a frame.
//! - [`owner`]: the vRegions this server owns, with their vma trees.
//! - [`home`]: the memory system calls of the processes this server is home for.
//! - [`placement`]: which server owns a new vRegion when the home decides alone; `gmm`: asking
//!   the global memory manager instead.
//! - [`backup`]: the secondary copy of replicated vRegions, a log flushed to backup files.
//! - [`buffer_cache`]: file pages cached in front of the storage server (§4.5).
//! - `peers` and `server`: the network, as client of the other mem-servers and as server;
//!   `poll_gate`: whether page-path connections poll for their next request.
//! - `metrics`: the server's Prometheus metrics ([`MemServer::register_metrics`]).
//!
//! [`MemServer::bind`] then [`MemServer::run`] (the `lego mem-server` command) or
//! [`MemServer::spawn`] (a server on its own thread, for embedding and tests); the network front
//! is [`lego_proto::service`], shared with the storage server.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;

use lego_proto::frame::PAGE_SIZE;
use lego_proto::rdma::select::TransportChoice;
use lego_proto::service::Service;

pub mod buffer_cache;
pub mod space;
pub mod backup;
mod file_shards;
mod gmm;
pub mod home;
mod metrics;
pub mod owner;
mod peers;
mod poll_gate;
pub mod placement;
mod rdma;
mod server;
mod storage_link;
pub mod store;

/// How a mem-server is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Bytes of page frames the server may hold (rounded down to whole pages).
    pub capacity_bytes: u64,
    /// Cluster id: only peers with the same id are accepted.
    pub cluster: u64,
    /// The storage server behind the buffer cache; without one, file requests answer `EIO`.
    pub storage: Option<String>,
    /// Bytes of file pages the buffer cache may hold.
    pub buffer_cache_bytes: u64,
    /// Bytes of the backup log of the secondary copies this server keeps (`--replicas 2`),
    /// flushed to backup files on the storage server of each process's vNode, or on `storage`;
    /// with neither, a secondary copy is kept in the page store.
    pub backup_log_bytes: u64,
    /// The global manager, whose GMM chooses the owner of each new vRegion of the processes this
    /// server is home for; without one the home chooses.
    pub global_mgr: Option<String>,
    /// Transport of the page path besides TCP (`--transport`): RDMA needs a usable device.
    pub transport: TransportChoice,
}

/// Most page memory a server may hold: 16 TiB (the store indexes frames with 32 bits).
pub const MAX_CAPACITY: u64 = 1 << 44;

/// Default size of the buffer cache.
pub const DEFAULT_BUFFER_CACHE: u64 = 256 << 20;

/// Default size of the backup log.
pub const DEFAULT_BACKUP_LOG: u64 = 64 << 20;

impl Config {
    /// A server on `listen` with `capacity_bytes` of page frames in `cluster`, no storage server,
    /// the default buffer cache and no global manager.
    pub fn new(listen: impl Into<String>, capacity_bytes: u64, cluster: u64) -> Config {
        Config {
            listen: listen.into(),
            capacity_bytes,
            cluster,
            storage: None,
            buffer_cache_bytes: DEFAULT_BUFFER_CACHE,
            backup_log_bytes: DEFAULT_BACKUP_LOG,
            global_mgr: None,
            transport: TransportChoice::Tcp,
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The capacity is below one page, or above what the store can index.
    #[error("capacity of {0} bytes must be between one page (4 KiB) and 16 TiB")]
    Capacity(u64),
    /// The network front could not start.
    #[error(transparent)]
    Service(#[from] lego_proto::service::ServiceError),
    /// `--transport rdma` and no usable RDMA device.
    #[error(transparent)]
    Rdma(#[from] lego_proto::rdma::unavailable::RdmaUnavailable),
}

/// A bound, not yet running, mem-server.
pub struct MemServer {
    service: Service<rdma::Frames>,
    shared: Arc<server::Shared>,
}

/// The directory of this server's backup files: its host name and address, which stay the
/// same across its restarts, so that a restarted server removes what it left.
fn backup_dir_name(addr: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{addr}", host.trim()).chars().map(|c| if c.is_ascii_alphanumeric() || ".-".contains(c) { c } else { '_' }).collect()
}

/// A running mem-server on its own thread; dropping it stops the server.
pub type Handle = lego_proto::service::Handle;

impl MemServer {
    /// Checks `config` and binds the listening socket.
    pub fn bind(config: Config) -> Result<MemServer, ServerError> {
        let pages = config.capacity_bytes / PAGE_SIZE as u64;
        if pages == 0 || config.capacity_bytes > MAX_CAPACITY {
            return Err(ServerError::Capacity(config.capacity_bytes));
        }
        let gmm = config.global_mgr.map(|g| gmm::Gmm::new(g, config.cluster));
        let shared = Arc::new(server::Shared::new(pages, config.cluster, config.storage.clone(), config.buffer_cache_bytes, gmm));
        let for_conns = shared.clone();
        let page_path = rdma::PagePath::start(config.transport)?;
        let service = Service::bind("mem-server", &config.listen, shared.me(), &server::ACCEPTS, move |peer, _| {
            page_path.frames(&for_conns, peer)
        })?;
        let cluster = config.cluster;
        let connect = move |addr: &str| -> Box<dyn buffer_cache::Backing + Send> { Box::new(storage_link::StorageLink::new(Some(addr.to_string()), cluster)) };
        let slots = (config.backup_log_bytes / PAGE_SIZE as u64).max(1) as usize;
        shared.set_backup(backup::BackupLog::start(slots, &backup_dir_name(service.local_addr()), config.storage, Box::new(connect)));
        Ok(MemServer { service, shared })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.service.local_addr()
    }

    /// Serves on the calling thread until SIGTERM or SIGINT.
    pub fn run(self) -> Result<(), ServerError> {
        self.service.run().map_err(ServerError::from)
    }

    /// A probe of the server's load for heartbeats: page frames held and used, requests served.
    pub fn load_probe(&self) -> impl Fn() -> lego_proto::global::Load + Send + 'static {
        let shared = self.shared.clone();
        move || {
            let s = shared.stat();
            let (bytes_in, bytes_out) = shared.traffic().bytes();
            lego_proto::global::Load {
                capacity_bytes: s.capacity_pages * PAGE_SIZE as u64,
                used_bytes: s.used_pages * PAGE_SIZE as u64,
                requests: s.requests,
                threads: 0,
                vregions: s.vregions,
                bytes_in,
                bytes_out,
            }
        }
    }

    /// Registers the server's metrics (`lego_mem_*`, `lego_connections_*`) with `registry`, for
    /// [`lego_proto::metrics::serve`].
    pub fn register_metrics(&self, registry: &mut lego_proto::metrics::Registry) {
        registry.register_collector(Box::new(metrics::Metrics::new(self.shared.clone())));
        registry.register_collector(Box::new(self.service.connections()));
    }

    /// Serves on a thread of its own until the returned [`Handle`] is shut down or dropped.
    pub fn spawn(self) -> Result<Handle, ServerError> {
        self.service.spawn(|| ()).map_err(ServerError::from)
    }
}

