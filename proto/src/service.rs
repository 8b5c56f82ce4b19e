//! A server component's network front, shared by the mem-server and the storage server: a bound
//! listener, a tokio runtime, and per connection the handshake followed by the frame loop of
//! [`crate::aio::serve`] with a handler made for that connection.
//!
//! A service either answers request frames ([`Service::bind`]: the mem-server, storage server
//! and global manager) or hands each authenticated connection, as a blocking socket, to a
//! session function on a thread of its own ([`Service::bind_sessions`]: the pComponent's run
//! sessions, which stream a program's input and output both ways).
//!
//! [`Service::run`] serves on the calling thread (the `lego mem-server` / `lego storage-server`
//! commands); [`Service::spawn`] serves on a thread of its own until its [`Handle`] is shut down
//! or dropped (embedded servers and tests).

use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::aio::{accept_handshake, serve, FrameHandler};
use crate::error::ProtoError;
use crate::handshake::{ComponentKind, Hello};

/// How long a new connection may take to introduce itself.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a server's network front could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
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

/// What a service does with a connection once the peer is authenticated; the connection counts
/// as open as long as the [`OpenConnection`] lives.
type Serve = dyn Fn(TcpStream, SocketAddr, Hello, OpenConnection) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// A bound, not yet running, server. `H` is the frame handler of each connection, or
/// [`Sessions`].
pub struct Service<H> {
    name: &'static str,
    listener: std::net::TcpListener,
    addr: SocketAddr,
    me: Hello,
    accepts: &'static [ComponentKind],
    serve: Arc<Serve>,
    connections: Arc<Connections>,
    kind: PhantomData<fn() -> H>,
}

/// The kind of a [`Service`] whose connections are blocking sessions.
pub struct Sessions;

impl<H: FrameHandler + 'static> Service<H> {
    /// Binds `listen` for a server called `name` (for logs and thread names) that introduces
    /// itself as `me`, accepts peers of the `accepts` kinds, and serves each connection's request
    /// frames with a handler from `make`.
    pub fn bind(
        name: &'static str,
        listen: &str,
        me: Hello,
        accepts: &'static [ComponentKind],
        make: impl Fn(SocketAddr, Hello) -> H + Send + Sync + 'static,
    ) -> Result<Service<H>, ServiceError> {
        let (listener, addr) = bind_listener(listen)?;
        let serve: Arc<Serve> = Arc::new(move |stream, peer, hello, open| Box::pin(frames(stream, peer, make(peer, hello), open)));
        Ok(Service { name, listener, addr, me, accepts, serve, connections: Arc::default(), kind: PhantomData })
    }
}

impl Service<Sessions> {
    /// Binds `listen` like [`Service::bind`], but runs `session` on a thread of its own for each
    /// authenticated connection, with the connection as a blocking socket; the connection closes
    /// when `session` returns.
    pub fn bind_sessions(
        name: &'static str,
        listen: &str,
        me: Hello,
        accepts: &'static [ComponentKind],
        session: impl Fn(std::net::TcpStream, SocketAddr, Hello) + Send + Sync + 'static,
    ) -> Result<Service<Sessions>, ServiceError> {
        let (listener, addr) = bind_listener(listen)?;
        let session = Arc::new(session);
        let serve: Arc<Serve> = Arc::new(move |stream: TcpStream, peer, hello, open| {
            let session = session.clone();
            Box::pin(async move {
                let stream = match stream.into_std().and_then(|s| s.set_nonblocking(false).map(|()| s)) {
                    Ok(s) => s,
                    Err(e) => return tracing::warn!(%peer, error = %e, "making the connection blocking"),
                };
                let run = move || {
                    session(stream, peer, hello);
                    drop(open);
                };
                if let Err(e) = std::thread::Builder::new().name(format!("{name} {peer}")).spawn(run) {
                    tracing::warn!(%peer, error = %e, "starting a session thread");
                }
            })
        });
        Ok(Service { name, listener, addr, me, accepts, serve, connections: Arc::default(), kind: PhantomData })
    }
}

impl<H> Service<H> {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's connection counts, for its metrics.
    pub fn connections(&self) -> Arc<Connections> {
        self.connections.clone()
    }

    /// Serves on the calling thread until SIGTERM or SIGINT, then closes every connection and
    /// returns, so the caller can make its state durable (`lego down` stops servers this way).
    pub fn run(self) -> Result<(), ServiceError> {
        self.serve_here().map_err(ServiceError::Runtime)
    }

    fn serve_here(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = runtime(self.name, None)?;
        tracing::info!(addr = %self.addr, "{} listening", self.name);
        let name = self.name;
        rt.block_on(async move {
            let listener = TcpListener::from_std(self.listener)?;
            let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
            let stop = async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::info!("{name} stopping");
            };
            accept_loop(listener, self.me, self.accepts, self.serve, self.connections, stop).await;
            Ok::<(), std::io::Error>(())
        })?;
        rt.shutdown_timeout(Duration::from_secs(1));
        Ok(())
    }

    /// Serves on a thread of its own until the returned [`Handle`] is shut down or dropped, then
    /// runs `on_stop` on that thread once every connection is closed.
    pub fn spawn(self, on_stop: impl FnOnce() + Send + 'static) -> Result<Handle, ServiceError> {
        self.spawn_thread(on_stop).map_err(ServiceError::Runtime)
    }

    fn spawn_thread(self, on_stop: impl FnOnce() + Send + 'static) -> std::io::Result<Handle> {
        let rt = runtime(self.name, Some(2))?;
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(self.listener)?
        };
        let Service { name, addr, me, accepts, serve, connections, .. } = self;
        Handle::spawn(name, addr, rt, move |stop| accept_loop(listener, me, accepts, serve, connections, stop), on_stop)
    }
}

/// Binds a non-blocking listening socket on `listen`.
pub(crate) fn bind_listener(listen: &str) -> Result<(std::net::TcpListener, SocketAddr), ServiceError> {
    let bind_err = |source| ServiceError::Bind { addr: listen.to_string(), source };
    let listener = std::net::TcpListener::bind(listen).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    Ok((listener, addr))
}

/// A tokio runtime for a server called `name`, with `workers` threads (default: one per core).
pub(crate) fn runtime(name: &str, workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    b.enable_all().thread_name(name).build()
}

/// Completes when a server spawned with [`Handle::spawn`] is to stop.
pub(crate) type Stop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A server running on its own thread; dropping it stops the server.
pub struct Handle {
    name: &'static str,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// Runs the future `serve` makes on `rt`, on a thread of its own named after `name` and
    /// `addr`, until the returned handle is shut down or dropped: that completes the future
    /// `serve` was given, which must then end. `on_stop` runs on that thread afterwards.
    pub(crate) fn spawn<F: std::future::Future<Output = ()>>(
        name: &'static str,
        addr: SocketAddr,
        rt: tokio::runtime::Runtime,
        serve: impl FnOnce(Stop) -> F + Send + 'static,
        on_stop: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Handle> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name(format!("{name} {addr}")).spawn(move || {
            rt.block_on(serve(Box::pin(async move {
                // A dropped sender stops the server just as a sent stop does.
                let _ = stop_rx.await;
            })));
            rt.shutdown_timeout(Duration::from_secs(1));
            on_stop();
        })?;
        Ok(Handle { name, addr, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread: no new connection is accepted afterwards, the
    /// existing ones are closed, and the `on_stop` given to [`Service::spawn`] (if any) has run.
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
                tracing::error!(addr = %self.addr, "the {} thread panicked", self.name);
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Connections of one server since it started: the figures of its `lego_connections_*`
/// metrics (its [`crate::metrics::Collector`] is in [`crate::metrics`]).
#[derive(Debug, Default)]
pub struct Connections {
    pub(crate) accepted: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) refused: AtomicU64,
}

impl Connections {
    /// Counts a connection open until the returned guard is dropped.
    fn opened(self: &Arc<Self>) -> OpenConnection {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }
}

/// One open connection, counted in [`Connections`] while it lives.
struct OpenConnection(Arc<Connections>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until `stop` completes.
async fn accept_loop(
    listener: TcpListener,
    me: Hello,
    accepts: &'static [ComponentKind],
    serve: Arc<Serve>,
    connections: Arc<Connections>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(connection(stream, peer, me, accepts, serve.clone(), connections.opened()));
                }
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// One connection: handshake, then what the service does with it.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    me: Hello,
    accepts: &'static [ComponentKind],
    serve: Arc<Serve>,
    open: OpenConnection,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "TCP_NODELAY");
    }
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_handshake(&mut stream, me, accepts)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "handshake refused");
            open.0.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "no handshake within {} s", HANDSHAKE_TIMEOUT.as_secs());
            open.0.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    tracing::debug!(%peer, kind = %hello.kind, "connected");
    serve(stream, peer, hello, open).await;
}

/// Request frames until the peer leaves or misbehaves; the connection counts as open until then.
async fn frames<H: FrameHandler>(mut stream: TcpStream, peer: SocketAddr, mut handler: H, _open: OpenConnection) {
    match serve(&mut stream, &mut handler).await {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        // A client that goes away with requests in flight resets the connection: not an error.
        Err(ProtoError::Io { source, .. })
            if matches!(source.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) =>
        {
            tracing::debug!(%peer, "connection reset by the client")
        }
        Err(e) => tracing::warn!(%peer, error = %e, "closing the connection"),
    }
}
