//! The global process, memory and storage managers (LegoOS GPM/GMM/GSM, paper §4.6), in one
//! server process: `lego global-mgr`.
//!
//! - [`registry`]: the components (persisted in `STATE_DIR/registry.redb`, so a restart keeps
//!   them), their last heartbeat and load; a component that misses three heartbeats is down.
//! - [`placement`]: the GPM, GMM and GSM decisions: the pComponent of a new process, its
//!   mem-servers, the storage server of a vNode's mount, the mem-server caching its files.
//! - [`heartbeat`]: the component side: register, then report load at a fixed interval.
//! - [`endpoints`]: the vNodes' listening endpoints (virtual IP and port to host address).
//! - [`reclaim`]: releasing the memory of processes that ended abnormally, through their home.
//! - `metrics`: the manager's Prometheus metrics ([`GlobalMgr::register_metrics`]).
//!
//! The managers keep only this approximate view, as §4.6 says; every fine-grained decision stays
//! with the components.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lego_proto::aio::{push_reply, FrameHandler};
use lego_proto::frame::{Header, Op, Status};
use lego_proto::global::{GlobalReply, GlobalRequest};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::{decode, encode};
use lego_proto::service::Service;

pub mod endpoints;
pub mod heartbeat;
mod metrics;
pub mod placement;
pub mod reclaim;
pub mod registry;

/// Default interval between heartbeats.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// How the global manager is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Directory of the persisted registry (created if missing).
    pub state_dir: PathBuf,
    /// Cluster id components must present.
    pub cluster: u64,
    /// Heartbeat interval components use; three missed ones mark a component down.
    pub heartbeat: Duration,
}

/// Why the global manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The registry could not be opened.
    #[error("registry in {dir}: {source}")]
    Registry {
        /// The state directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: registry::RegistryError,
    },
    /// The network front could not start.
    #[error(transparent)]
    Service(#[from] lego_proto::service::ServiceError),
    /// The reclaimer's thread could not start.
    #[error("starting the reclaimer: {0}")]
    Reclaimer(std::io::Error),
}

/// Kinds of peers the global manager talks to.
const ACCEPTS: [ComponentKind; 4] =
    [ComponentKind::Processor, ComponentKind::Memory, ComponentKind::Storage, ComponentKind::Client];

/// A bound, not yet running, global manager.
pub struct GlobalMgr {
    service: Service<Conn>,
    registry: Arc<Mutex<registry::Registry>>,
    reclaimer: reclaim::Reclaimer,
    reclaimed: Arc<reclaim::Figures>,
}

/// A running global manager on its own thread; dropping it stops the server.
pub type Handle = lego_proto::service::Handle;

impl GlobalMgr {
    /// Opens the registry and binds the listening socket.
    pub fn bind(config: Config) -> Result<GlobalMgr, ServerError> {
        let registry = registry::Registry::open(&config.state_dir, config.heartbeat)
            .map_err(|source| ServerError::Registry { dir: config.state_dir.clone(), source })?;
        let registry = Arc::new(Mutex::new(registry));
        let me = Hello::new(ComponentKind::Global, config.cluster);
        let for_conns = registry.clone();
        let endpoints = Arc::new(Mutex::new(endpoints::Endpoints::default()));
        let service = Service::bind("global-mgr", &config.listen, me, &ACCEPTS, move |_, _| Conn {
            registry: for_conns.clone(),
            endpoints: endpoints.clone(),
        })?;
        // A silent process is noticed within a tenth of a report interval of its deadline.
        let scan = config.heartbeat.min(lego_proto::global::PROCESS_REPORT_INTERVAL) / 10;
        let reclaimed = Arc::new(reclaim::Figures::default());
        let reclaimer = reclaim::start(registry.clone(), config.cluster, scan.max(Duration::from_millis(20)), reclaimed.clone())
            .map_err(ServerError::Reclaimer)?;
        Ok(GlobalMgr { service, registry, reclaimer, reclaimed })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.service.local_addr()
    }

    /// Serves on the calling thread until SIGTERM or SIGINT.
    pub fn run(self) -> Result<(), ServerError> {
        let GlobalMgr { service, reclaimer, .. } = self;
        let served = service.run().map_err(ServerError::from);
        drop(reclaimer);
        served
    }

    /// Registers the manager's metrics (`lego_global_*`, `lego_connections_*`) with `registry`,
    /// for [`lego_proto::metrics::serve`].
    pub fn register_metrics(&self, registry: &mut lego_proto::metrics::Registry) {
        registry.register_collector(Box::new(metrics::Metrics::new(self.registry.clone(), self.reclaimed.clone())));
        registry.register_collector(Box::new(self.service.connections()));
    }

    /// Serves on a thread of its own until the returned [`Handle`] is shut down or dropped.
    pub fn spawn(self) -> Result<Handle, ServerError> {
        let GlobalMgr { service, reclaimer, .. } = self;
        service.spawn(move || drop(reclaimer)).map_err(ServerError::from)
    }
}

/// One connection's frame handler.
struct Conn {
    registry: Arc<Mutex<registry::Registry>>,
    endpoints: Arc<Mutex<endpoints::Endpoints>>,
}

impl Conn {
    fn serve(&self, body: &[u8]) -> GlobalReply {
        let req: GlobalRequest = match decode(body) {
            Ok(r) => r,
            Err(e) => return GlobalReply::Failed(e.to_string()),
        };
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        match req {
            GlobalRequest::Register { role, addr, cores, fronts, load } => match reg.register(role, &addr, cores, fronts, load) {
                Ok(id) => {
                    tracing::info!(%role, %addr, id, "component registered");
                    GlobalReply::Registered { id }
                }
                Err(e) => GlobalReply::Failed(e.to_string()),
            },
            GlobalRequest::Heartbeat { id, load } => {
                if reg.heartbeat(id, load) {
                    GlobalReply::Ok
                } else {
                    GlobalReply::UnknownComponent
                }
            }
            GlobalRequest::List => GlobalReply::Components(reg.list()),
            GlobalRequest::CreateVnode { name, vip, mem_bytes, excache_bytes } => {
                match reg.create_vnode(&name, vip, mem_bytes, excache_bytes) {
                    Ok(v) => GlobalReply::Vnode(v),
                    Err(e) => GlobalReply::Failed(e.to_string()),
                }
            }
            GlobalRequest::ListVnodes => GlobalReply::Vnodes(reg.vnodes()),
            GlobalRequest::Place { vnode } => match reg.place(&vnode) {
                Ok(p) => GlobalReply::Placement(p),
                Err(e) => GlobalReply::Failed(e.to_string()),
            },
            GlobalRequest::ChoosePcomp => GlobalReply::Pcomp(reg.choose_pcomp()),
            GlobalRequest::ChooseOwner { among, vregion_size } => GlobalReply::Owner(reg.choose_owner(&among, vregion_size)),
            GlobalRequest::Process(report) => {
                reg.report_process(report);
                GlobalReply::Ok
            }
            GlobalRequest::Processes => GlobalReply::Processes(reg.processes()),
            GlobalRequest::RemoveVnode { name } => match reg.remove_vnode(&name) {
                Ok(()) => GlobalReply::Removed,
                Err(e) => GlobalReply::Failed(e.to_string()),
            },
            GlobalRequest::RegisterEndpoint { endpoint, host, vnode, owner } => {
                let live = reg.processes();
                let alive = |o: &lego_proto::global::EndpointOwner| live.iter().any(|p| p.who.pcomp == o.pcomp && p.who.pid == o.pid);
                if self.endpoints().register(endpoint, host, vnode, owner, alive) {
                    GlobalReply::Ok
                } else {
                    GlobalReply::EndpointTaken
                }
            }
            GlobalRequest::UnregisterEndpoint { endpoint } => {
                self.endpoints().unregister(&endpoint);
                GlobalReply::Ok
            }
            GlobalRequest::ResolveEndpoint { endpoint } => GlobalReply::EndpointAt(self.endpoints().resolve(&endpoint)),
            GlobalRequest::ReverseEndpoint { proto, host } => GlobalReply::EndpointOf(self.endpoints().reverse(proto, &host)),
            GlobalRequest::Endpoints => GlobalReply::Endpoints(self.endpoints().list()),
        }
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, endpoints::Endpoints> {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FrameHandler for Conn {
    fn handle(&mut self, req: &Header, payload: &[u8], out: &mut Vec<u8>) {
        match req.op {
            Op::Fetch | Op::Flush | Op::FlushFetch | Op::FetchRun => push_reply(out, &req.reply(Status::BadRequest), &[]),
            Op::RdmaConnect => push_reply(out, &req.reply(Status::NoRdma), &[]),
            Op::Control => {
                let body = encode(&self.serve(payload));
                let mut h = req.reply(Status::Ok);
                h.len = body.len() as u32;
                push_reply(out, &h, &body);
            }
        }
    }
}
