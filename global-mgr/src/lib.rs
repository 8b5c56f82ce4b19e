//! The global process, memory and storage managers (LegoOS GPM/GMM/GSM, paper §4.6), in one
//! server process: `lego global-mgr`.
//!
//! - [`registry`]: the components (persisted in `STATE_DIR/registry.redb`, so a restart keeps
//!   them), their last heartbeat and load; a component that misses three heartbeats is down.
//! - [`placement`]: the GPM, GMM and GSM decisions: the pComponent of a new process, its
//!   mem-servers, the storage server of a vNode's mount, the mem-server caching its files.
//! - [`heartbeat`]: the component side: register, then report load at a fixed interval.
//! - [`endpoints`]: the vNodes' listening endpoints (virtual IP and port to host address).
//! - [`vnode_record`]: the versioned record a vNode is stored as.
//! - [`reclaim`]: releasing the memory of processes that ended abnormally, through their home.
//! - `metrics`: the manager's Prometheus metrics ([`GlobalMgr::register_metrics`]).
//!
//! The GSM tells a vNode's storage server about it (its mount and disk quota) when the vNode is
//! created, and again before the first placement of its processes after the manager starts;
//! the storage server keeps its mounts in its own index, so it refuses unknown vNodes even
//! before the manager reaches it after a restart.
//!
//! The managers keep only this approximate view, as §4.6 says; every fine-grained decision stays
//! with the components.

#![warn(missing_docs)]

use lego_proto::sync::LockExt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lego_proto::aio::{handle_control_only, FrameHandler};
use lego_proto::codec::{decode, encode};
use lego_proto::frame::Header;
use lego_proto::global::{GlobalReply, GlobalRequest};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::service::Service;

pub mod endpoints;
pub mod heartbeat;
mod metrics;
pub mod placement;
pub mod reclaim;
pub mod registry;
pub mod vnode_record;

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
    reclaimer: lego_proto::background::Background,
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
        let cluster = config.cluster;
        let service = Service::bind("global-mgr", &config.listen, me, &ACCEPTS, move |_, _| Conn {
            registry: for_conns.clone(),
            endpoints: endpoints.clone(),
            cluster,
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
    /// The cluster id, presented to storage servers.
    cluster: u64,
}

/// How long the GSM waits for a storage server it tells about a vNode.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

impl Conn {
    fn serve(&self, body: &[u8]) -> GlobalReply {
        let req: GlobalRequest = match decode(body) {
            Ok(r) => r,
            Err(e) => return GlobalReply::Failed(e.to_string()),
        };
        let mut reg = self.registry.lock_unpoisoned();
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
            GlobalRequest::CreateVnode { name, vip, mem_bytes, excache_bytes, settings } => {
                let v = match reg.create_vnode(&name, vip, mem_bytes, excache_bytes, settings) {
                    Ok(v) => v,
                    Err(e) => return GlobalReply::Failed(e.to_string()),
                };
                drop(reg);
                // A vNode its storage server refuses is not created: the user sees why and may
                // try again.
                if let Err(e) = self.mount(&v) {
                    let mut reg = self.registry.lock_unpoisoned();
                    if let Err(undo) = reg.remove_vnode(&v.name) {
                        tracing::error!(vnode = %v.name, "removing the vNode its storage server refused: {undo}");
                    }
                    return GlobalReply::Failed(format!("vNode {name} not created: {e}"));
                }
                GlobalReply::Vnode(v)
            }
            GlobalRequest::ListVnodes => GlobalReply::Vnodes(reg.vnodes()),
            GlobalRequest::Place { vnode } => match reg.place(&vnode) {
                Ok(p) => {
                    drop(reg);
                    // A run that keeps its files elsewhere (`--root`) needs no storage server:
                    // the placement stands, and a run that does use the mount meets the storage
                    // server's own error (unreachable, or a vNode it does not know). The GSM
                    // tries again at the next placement.
                    if let Err(e) = self.mount(&p.vnode) {
                        tracing::warn!(%vnode, "telling the storage server about the vNode: {e}");
                    }
                    GlobalReply::Placement(p)
                }
                Err(e) => GlobalReply::Failed(e.to_string()),
            },
            GlobalRequest::ChoosePcomp => GlobalReply::Pcomp(reg.choose_pcomp()),
            GlobalRequest::ChooseOwner { among, vregion_size } => GlobalReply::Owner(reg.choose_owner(&among, vregion_size)),
            GlobalRequest::Process(report) => {
                reg.report_process(*report);
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

    /// GSM: tells `v`'s storage server about it (its mount and quota), unless it was told since
    /// the manager started; called without the registry's lock, which other requests need
    /// while the storage server answers.
    fn mount(&self, v: &lego_proto::global::VnodeInfo) -> Result<(), lego_proto::storage::MountError> {
        let reg = || self.registry.lock_unpoisoned();
        let Some(storage) = v.storage.as_deref().filter(|_| reg().unmounted(v)) else { return Ok(()) };
        let me = Hello::new(ComponentKind::Global, self.cluster);
        let quota = lego_proto::storage::QuotaChange::Set(v.settings.disk_quota);
        lego_proto::storage::mount(storage, me, &v.name, quota, MOUNT_TIMEOUT)?;
        tracing::info!(vnode = %v.name, %storage, quota = ?v.settings.disk_quota, "storage server told about the vNode");
        reg().mounted(v);
        Ok(())
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, endpoints::Endpoints> {
        self.endpoints.lock_unpoisoned()
    }
}

impl FrameHandler for Conn {
    fn handle(&mut self, req: &Header, payload: &[u8], out: &mut Vec<u8>) {
        handle_control_only(req, payload, out, |body| encode(&self.serve(body)));
    }
}
