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

/// What a service does with a connection once the peer is authenticated.
type Serve = dyn Fn(TcpStream, SocketAddr, Hello) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// A bound, not yet running, server. `H` is the frame handler of each connection, or
/// [`Sessions`].
pub struct Service<H> {
    name: &'static str,
    listener: std::net::TcpListener,
    addr: SocketAddr,
    me: Hello,
    accepts: &'static [ComponentKind],
    serve: Arc<Serve>,
    kind: PhantomData<fn() -> H>,
}

/// The kind of a [`Service`] whose connections are blocking sessions.
pub struct Sessions;

fn bind_listener(listen: &str) -> Result<(std::net::TcpListener, SocketAddr), ServiceError> {
    let bind_err = |source| ServiceError::Bind { addr: listen.to_string(), source };
    let listener = std::net::TcpListener::bind(listen).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    Ok((listener, addr))
}

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
        let serve: Arc<Serve> = Arc::new(move |stream, peer, hello| Box::pin(frames(stream, peer, make(peer, hello))));
        Ok(Service { name, listener, addr, me, accepts, serve, kind: PhantomData })
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
        let serve: Arc<Serve> = Arc::new(move |stream: TcpStream, peer, hello| {
            let session = session.clone();
            Box::pin(async move {
                let stream = match stream.into_std().and_then(|s| s.set_nonblocking(false).map(|()| s)) {
                    Ok(s) => s,
                    Err(e) => return tracing::warn!(%peer, error = %e, "making the connection blocking"),
                };
                if let Err(e) = std::thread::Builder::new().name(format!("{name} {peer}")).spawn(move || session(stream, peer, hello)) {
                    tracing::warn!(%peer, error = %e, "starting a session thread");
                }
            })
        });
        Ok(Service { name, listener, addr, me, accepts, serve, kind: PhantomData })
    }
}

impl<H> Service<H> {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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
            accept_loop(listener, self.me, self.accepts, self.serve, stop).await;
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
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(self.listener)?
        };
        let Service { name, addr, me, accepts, serve, .. } = self;
        let thread = std::thread::Builder::new().name(format!("{name} {addr}")).spawn(move || {
            rt.block_on(accept_loop(listener, me, accepts, serve, async move {
                // A dropped sender stops the server just as a sent stop does.
                let _ = stop_rx.await;
            }));
            rt.shutdown_timeout(Duration::from_secs(1));
            on_stop();
        })?;
        Ok(Handle { name, addr, stop: Some(stop_tx), thread: Some(thread) })
    }
}

fn runtime(name: &str, workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    b.enable_all().thread_name(name).build()
}

/// A server running on its own thread; dropping it stops the server.
pub struct Handle {
    name: &'static str,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its thread: no new connection is accepted afterwards, the
    /// existing ones are closed, and the `on_stop` given to [`Service::spawn`] has run.
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

/// Accepts connections until `stop` completes.
async fn accept_loop(
    listener: TcpListener,
    me: Hello,
    accepts: &'static [ComponentKind],
    serve: Arc<Serve>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(connection(stream, peer, me, accepts, serve.clone()));
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
async fn connection(mut stream: TcpStream, peer: SocketAddr, me: Hello, accepts: &'static [ComponentKind], serve: Arc<Serve>) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "TCP_NODELAY");
    }
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept_handshake(&mut stream, me, accepts)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "handshake refused");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "no handshake within {} s", HANDSHAKE_TIMEOUT.as_secs());
            return;
        }
    };
    tracing::debug!(%peer, kind = %hello.kind, "connected");
    serve(stream, peer, hello).await;
}

/// Request frames until the peer leaves or misbehaves.
async fn frames<H: FrameHandler>(mut stream: TcpStream, peer: SocketAddr, mut handler: H) {
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
