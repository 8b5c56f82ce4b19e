//! The memory component (LegoOS mComponent, paper §4.4): a server process that owns vRegions of
//! process address spaces and stores their pages, and is the home of processes whose memory
//! system calls it serves.
//!
//! - [`store`]: the pages, in a hash table from (process, page) to a frame.
//! - [`owner`]: the vRegions this server owns, with their vma trees.
//! - [`home`]: the memory system calls of the processes this server is home for.
//! - [`placement`]: which server owns a new vRegion.
//! - [`buffer_cache`]: file pages cached in front of the storage server (§4.5).
//! - `peers` and `server`: the network, as client of the other mem-servers and as server.
//!
//! [`MemServer::bind`] then [`MemServer::run`] (the `lego mem-server` command) or
//! [`MemServer::spawn`] (a server on its own thread, for embedding and tests).

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use lego_proto::frame::PAGE_SIZE;

pub mod buffer_cache;
pub mod home;
pub mod owner;
mod peers;
pub mod placement;
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
}

/// Default size of the buffer cache.
pub const DEFAULT_BUFFER_CACHE: u64 = 256 << 20;

impl Config {
    /// A server on `listen` with `capacity_bytes` of page frames in `cluster`, no storage server
    /// and the default buffer cache.
    pub fn new(listen: impl Into<String>, capacity_bytes: u64, cluster: u64) -> Config {
        Config { listen: listen.into(), capacity_bytes, cluster, storage: None, buffer_cache_bytes: DEFAULT_BUFFER_CACHE }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The capacity is below one page, or above what the store can index.
    #[error("capacity of {0} bytes must be between one page (4 KiB) and 16 TiB")]
    Capacity(u64),
    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime or the server thread could not be started.
    #[error("starting the server runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A bound, not yet running, mem-server.
pub struct MemServer {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    shared: Arc<server::Shared>,
}

impl MemServer {
    /// Checks `config` and binds the listening socket.
    pub fn bind(config: Config) -> Result<MemServer, ServerError> {
        let pages = config.capacity_bytes / PAGE_SIZE as u64;
        if pages == 0 || pages > u64::from(u32::MAX) {
            return Err(ServerError::Capacity(config.capacity_bytes));
        }
        let bind_err = |source| ServerError::Bind { addr: config.listen.clone(), source };
        let listener = std::net::TcpListener::bind(&config.listen).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let shared = server::Shared::new(pages, config.cluster, config.storage, config.buffer_cache_bytes);
        Ok(MemServer { listener, addr, shared: Arc::new(shared) })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves on the calling thread, forever (until the process is killed).
    pub fn run(self) -> Result<(), ServerError> {
        let rt = runtime(None)?;
        tracing::info!(addr = %self.addr, "mem-server listening");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(self.listener).map_err(ServerError::Runtime)?;
            server::accept_loop(listener, self.shared, std::future::pending()).await;
            Ok(())
        })
    }

    /// Serves on a thread of its own until the returned [`Handle`] is shut down or dropped.
    pub fn spawn(self) -> Result<Handle, ServerError> {
        let rt = runtime(Some(2))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(self.listener).map_err(ServerError::Runtime)?
        };
        let (addr, shared) = (self.addr, self.shared);
        let thread = std::thread::Builder::new()
            .name(format!("mem-server {addr}"))
            .spawn(move || {
                rt.block_on(server::accept_loop(listener, shared, async move {
                    // A dropped sender stops the server just as a sent stop does.
                    let _ = stop_rx.await;
                }));
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(ServerError::Runtime)?;
        Ok(Handle { addr, stop: Some(stop_tx), thread: Some(thread) })
    }
}

fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, ServerError> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    b.enable_all().thread_name("mem-server").build().map_err(ServerError::Runtime)
}

/// A running mem-server on its own thread; dropping it stops the server.
pub struct Handle {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread: no new connection is accepted afterwards and
    /// the existing ones are closed.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The receiver is gone only if the server thread already ended.
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(addr = %self.addr, "the mem-server thread panicked");
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Locks `m`, going on with the data if a thread panicked while holding it (every critical
/// section leaves the data consistent before anything that could panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
