//! The component side of the global manager: register, then send the component's load at a
//! fixed interval, on a thread of its own. A global manager that is down or restarting is
//! retried every interval; one that forgot the component is registered with again.

use std::time::Duration;

use lego_proto::background::Background;
use lego_proto::codec::{decode, encode};
use lego_proto::global::{GlobalReply, GlobalRequest, Load, Role};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::transport::{TcpTransport, Transport};

/// What a component tells the global manager about itself.
pub struct Identity {
    /// What it is.
    pub role: Role,
    /// Where it listens.
    pub addr: String,
    /// Its CPU cores.
    pub cores: u32,
    /// For a mem-server, the storage server behind its buffer cache.
    pub fronts: Option<String>,
    /// Cluster id for the handshake.
    pub cluster: u64,
}

/// Heartbeats running on their own thread; dropping this stops them.
pub type Heartbeats = Background;

/// Starts sending `me`'s load (from `load`) to the global manager at `global` every `interval`.
pub fn start(
    global: String,
    me: Identity,
    interval: Duration,
    load: impl Fn() -> Load + Send + 'static,
) -> std::io::Result<Heartbeats> {
    Background::spawn("heartbeat", move |stop| {
        let kind = match me.role {
            Role::Processor => ComponentKind::Processor,
            Role::Memory => ComponentKind::Memory,
            Role::Storage => ComponentKind::Storage,
        };
        let hello = Hello::new(kind, me.cluster);
        let (mut conn, mut id): (Option<TcpTransport>, Option<u64>) = (None, None);
        let mut warned = false;
        loop {
            let req = match id {
                Some(id) => GlobalRequest::Heartbeat { id, load: load() },
                None => GlobalRequest::Register {
                    role: me.role,
                    addr: me.addr.clone(),
                    cores: me.cores,
                    fronts: me.fronts.clone(),
                    load: load(),
                },
            };
            let reply = (|| {
                let c = match &mut conn {
                    Some(c) => c,
                    None => conn.insert(TcpTransport::connect(&global, hello, interval.max(Duration::from_secs(1)))?),
                };
                decode::<GlobalReply>(&c.call(0, &encode(&req))?)
            })();
            match reply {
                Ok(GlobalReply::Registered { id: new }) => {
                    tracing::info!(global = %global, id = new, "registered with the global manager");
                    id = Some(new);
                    warned = false;
                }
                Ok(GlobalReply::Ok) => warned = false,
                Ok(GlobalReply::UnknownComponent) => id = None,
                Ok(other) => tracing::warn!(global = %global, "unexpected answer {other:?}"),
                Err(e) => {
                    conn = None;
                    if !warned {
                        tracing::warn!(global = %global, "global manager unreachable, retrying every {interval:?}: {e}");
                        warned = true;
                    }
                }
            }
            if stop.wait(interval) {
                return;
            }
        }
    })
}
