//! The storage component (LegoOS sComponent, paper §4.5): a stateless file server where every
//! request carries the vNode, the full path and the offset.
//!
//! - [`store`]: the files of every vNode: a hash table from (vNode, full path) to the file's
//!   attributes, persisted in an index, with each regular file's bytes in a host file named by
//!   its inode number.
//! - `server`: the network side (handshake, frames, one [`lego_proto::storage::StorageRequest`]
//!   per control frame).
//! - `metrics`: the server's Prometheus metrics ([`StorageServer::register_metrics`]).
//!
//! [`StorageServer::bind`] then [`StorageServer::run`] (the `lego storage-server` command) or
//! [`StorageServer::spawn`] (a server on its own thread, for embedding and tests).
//!
//! # Layout of the storage directory
//!
//! ```text
//! DIR/index.redb                     the index: (vNode, full path) -> attributes, per-vNode id counter
//! DIR/journal.<gen>                  the write-ahead journal of index changes not yet in the index
//! DIR/vnodes/<vnode>/data/<ino>      the bytes of one regular file
//! ```
//!
//! Guest paths never name host files: a file's bytes live in a file named by its inode number,
//! under the directory of the vNode named in the request, so no path a vNode sends can reach
//! another vNode's files (or anything else on the host). Renaming is an index update.
//!
//! # Index and journal
//!
//! The whole index is kept in memory (a hash table per vNode, plus each directory's children in
//! creation order for readdir and rmdir) and is what requests are served from. Each change is
//! appended to the journal (`journal`) before the reply, and written to
//! [redb](https://docs.rs/redb) (an embedded copy-on-write B-tree whose commits are atomic) in
//! one durable commit at each checkpoint. redb is read only at start, after the journal is
//! replayed into it.
//!
//! # Durability
//!
//! - A reply, once sent, survives `kill -9` of the server: its journal record was written with
//!   `write(2)`, which the kernel keeps after the process dies, and a write's bytes were
//!   `pwrite`n to the data file before it.
//! - `Fsync` syncs the file's bytes and its data directory, then the journal; `SyncFs` runs
//!   `syncfs(2)` on the vNode's data directory, then syncs the journal: what they cover survives
//!   power loss.
//! - At start the journal is replayed, host files no entry refers to are removed and files
//!   longer than their entry are cut to it, so an entry never shows bytes written after its last
//!   journalled size. Files whose entry is removed are deleted only after a checkpoint made the
//!   removal durable in the index, so a crash can never leave an entry whose bytes are gone.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use lego_proto::service::Service;

mod metrics;
mod journal;
mod record;
mod server;
pub mod store;

/// How a storage server is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Directory holding the index and the files of every vNode (created if missing).
    pub dir: PathBuf,
    /// Cluster id: only peers with the same id are accepted.
    pub cluster: u64,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The storage directory or its index could not be opened.
    #[error("opening the storage in {dir}: {source}")]
    Store {
        /// The configured directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: store::StoreError,
    },
    /// The network front could not start.
    #[error(transparent)]
    Service(#[from] lego_proto::service::ServiceError),
}

/// A bound, not yet running, storage server.
pub struct StorageServer {
    service: Service<server::Conn>,
    shared: Arc<server::Shared>,
    dir: PathBuf,
}

/// A running storage server on its own thread; dropping it stops the server.
pub type Handle = lego_proto::service::Handle;

impl StorageServer {
    /// Opens (or creates) the storage in `config.dir`, recovering from a crash if need be, and
    /// binds the listening socket.
    pub fn bind(config: Config) -> Result<StorageServer, ServerError> {
        let store = store::Store::open(&config.dir)
            .map_err(|source| ServerError::Store { dir: config.dir.clone(), source })?;
        let shared = Arc::new(server::Shared::new(store, config.cluster));
        let for_conns = shared.clone();
        let service = Service::bind("storage-server", &config.listen, shared.me(), &server::ACCEPTS, move |peer, _| {
            server::Conn::new(for_conns.clone(), peer)
        })?;
        Ok(StorageServer { service, shared, dir: config.dir })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.service.local_addr()
    }

    /// Serves on the calling thread until SIGTERM or SIGINT, then checkpoints every change into
    /// the index.
    pub fn run(self) -> Result<(), ServerError> {
        let shared = self.shared;
        self.service.run().map_err(ServerError::from)?;
        shared.sync();
        Ok(())
    }

    /// A probe of the server's load for heartbeats: the disk holding the storage directory
    /// (capacity and use), the requests served so far, and the file bytes written (in) and read
    /// (out).
    pub fn load_probe(&self) -> impl Fn() -> lego_proto::global::Load + Send + 'static {
        let (shared, dir) = (self.shared.clone(), self.dir.clone());
        move || {
            let (capacity_bytes, used_bytes) = disk_usage(&dir).unwrap_or((0, 0));
            let t = shared.traffic();
            lego_proto::global::Load {
                capacity_bytes,
                used_bytes,
                requests: shared.requests(),
                bytes_in: t.written_bytes,
                bytes_out: t.read_bytes,
                ..Default::default()
            }
        }
    }

    /// Registers the server's metrics (`lego_storage_*`, `lego_connections_*`) with `registry`,
    /// for [`lego_proto::metrics::serve`].
    pub fn register_metrics(&self, registry: &mut lego_proto::metrics::Registry) {
        registry.register_collector(Box::new(metrics::Metrics::new(self.shared.clone(), self.dir.clone())));
        registry.register_collector(Box::new(self.service.connections()));
    }

    /// Serves on a thread of its own until the returned [`Handle`] is shut down or dropped.
    /// Shutting down makes every change durable and closes the index, so another server may then
    /// open the same directory.
    pub fn spawn(self) -> Result<Handle, ServerError> {
        let shared = self.shared;
        self.service.spawn(move || shared.sync()).map_err(ServerError::from)
    }
}

/// Capacity and used bytes of the file system holding `dir`.
pub(crate) fn disk_usage(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value for statvfs(2) to overwrite.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and outlives the call; `st` is a live, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frag = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frag, (st.f_blocks - st.f_bfree) as u64 * frag))
}

