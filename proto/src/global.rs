//! Control messages between components and the global managers (LegoOS §4.6), carried in
//! [`crate::frame::Op::Control`] frames as bincode.
//!
//! A component registers once at start ([`GlobalRequest::Register`]) and then sends a
//! [`GlobalRequest::Heartbeat`] with its load at a fixed interval; the global manager marks a
//! component that misses three heartbeats as down. The managers keep only this approximate,
//! coarse view: every fine-grained decision stays with the components.

use serde::{Deserialize, Serialize};

/// What a component is, as the global manager records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A pComponent (`lego-vmm` host).
    Processor,
    /// A mem-server.
    Memory,
    /// A storage server.
    Storage,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Processor => "pcomp",
            Role::Memory => "mem-server",
            Role::Storage => "storage-server",
        })
    }
}

/// The load a component reports in each heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// Bytes the component can hold (memory frames, buffer cache, disk), 0 if not applicable.
    pub capacity_bytes: u64,
    /// Bytes of that in use.
    pub used_bytes: u64,
    /// Requests served since the component started.
    pub requests: u64,
    /// Guest threads running (pComponents).
    pub threads: u64,
    /// vRegions owned, over all processes (mem-servers).
    pub vregions: u64,
    /// Bytes of the frames received and sent since the component started (mem-servers: page
    /// traffic included).
    pub bytes_in: u64,
    /// See `bytes_in`.
    pub bytes_out: u64,
}

/// A request to the global manager.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GlobalRequest {
    /// A component introduces itself; the answer is its id ([`GlobalReply::Registered`]). The
    /// same role and address get the same id again after a restart of either side.
    /// `fronts`: for a mem-server, the storage server behind its buffer cache.
    Register { role: Role, addr: String, cores: u32, fronts: Option<String>, load: Load },
    /// A component is alive, with its current load.
    Heartbeat { id: u64, load: Load },
    /// The registry, for `lego ps`.
    List,
    /// Creates a vNode; with no `vip`, the manager assigns a free one in 10.77.0.0/16. The GSM
    /// tells the vNode's storage server about it (and its quota) before answering.
    CreateVnode { name: String, vip: Option<[u8; 4]>, mem_bytes: u64, excache_bytes: u64, settings: VnodeSettings },
    /// Every vNode, in id order.
    ListVnodes,
    /// Removes a vNode (its storage mount is left in place on the storage servers).
    RemoveVnode { name: String },
    /// Where a process of `vnode` should run its memory and files (GMM and GSM decisions).
    Place { vnode: String },
    /// Which pComponent should run a new process (the GPM decision): answered with
    /// [`GlobalReply::Pcomp`].
    ChoosePcomp,
    /// Which of the mem-servers `among` should own a new vRegion of `vregion_size` bytes (the GMM
    /// decision, asked by the process's home): answered with [`GlobalReply::Owner`].
    ChooseOwner { among: Vec<String>, vregion_size: u64 },
    /// A running process's figures, sent by its VMM every heartbeat interval and once more at
    /// exit (`exited`). Boxed: it is the biggest request by far (the same bytes on the wire).
    Process(Box<ProcessReport>),
    /// Every running process, for `lego ps` and `lego top`.
    Processes,
    /// A vNode socket of the process `owner` serves `endpoint` from the host address `host`
    /// (`bind` on the vIP): answered with `Ok`, or [`GlobalReply::EndpointTaken`] (unless the
    /// process that has it has stopped reporting: its endpoints are stale).
    RegisterEndpoint { endpoint: Endpoint, host: String, vnode: String, owner: EndpointOwner },
    /// The socket serving `endpoint` is closed.
    UnregisterEndpoint { endpoint: Endpoint },
    /// The host address serving `endpoint` (`connect`): answered with
    /// [`GlobalReply::EndpointAt`].
    ResolveEndpoint { endpoint: Endpoint },
    /// The endpoint the host socket at `host` serves (the source of a datagram): answered with
    /// [`GlobalReply::EndpointOf`].
    ReverseEndpoint { proto: NetProto, host: String },
    /// Every registered endpoint, for `lego ps`.
    Endpoints,
}

/// The transport protocol of a vNode endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NetProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A vNode endpoint: virtual IP, port, protocol (LegoOS §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// The protocol.
    pub proto: NetProto,
    /// The vNode's virtual IP.
    pub vip: [u8; 4],
    /// The virtual port.
    pub port: u16,
}

/// The process whose socket serves an endpoint, as its reports name it
/// ([`ProcessIdentity`]'s `pcomp` and `pid`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointOwner {
    /// Where it runs.
    pub pcomp: String,
    /// Host process id of its VMM.
    pub pid: u32,
}

/// A registered endpoint, as `lego ps` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The host address of the socket serving it.
    pub host: String,
    /// The vNode it belongs to.
    pub vnode: String,
    /// The process serving it.
    pub owner: EndpointOwner,
}

/// How often a running process reports ([`GlobalRequest::Process`]); the manager forgets one
/// that misses three reports (or three heartbeat intervals, if those are longer).
pub const PROCESS_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What a running vNode process reports about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    /// Which process.
    pub who: ProcessIdentity,
    /// Its ExCache figures.
    pub cache: ProcessFigures,
    /// The process has ended; this is its last report.
    pub exited: bool,
}

/// Which process a report is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// Where it runs: the pComponent's address, or `local:HOST` for a `lego run` in a shell.
    pub pcomp: String,
    /// Host process id of its VMM.
    pub pid: u32,
    /// Its vNode.
    pub vnode: String,
    /// The program.
    pub program: String,
    /// Its home mem-server.
    pub home: String,
    /// Milliseconds since the Unix epoch when it started.
    pub started_unix_ms: u64,
    /// Its process id inside the vNode (a run's processes share the VMM's `pid`).
    #[serde(default)]
    pub vpid: i32,
    /// The id the mem-servers know its memory by (0: not known), so that the global manager can
    /// reclaim the memory of a process that falls silent (see [`crate::mm::Request::Reclaim`]).
    #[serde(default)]
    pub mem_proc: u64,
    /// Every mem-server its memory may be on (the home among them): where the global manager
    /// releases it when the home itself is down.
    #[serde(default)]
    pub mem_servers: Vec<String>,
}

/// A process's ExCache figures: totals since it started, rates over the last report interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessFigures {
    /// ExCache capacity.
    pub excache_bytes: u64,
    /// ExCache lines in use, in bytes.
    pub resident_bytes: u64,
    /// Remote misses since it started.
    pub misses: u64,
    /// Evictions since it started.
    pub evictions: u64,
    /// Page bytes received from and sent to mem-servers since it started.
    pub bytes_in: u64,
    /// See `bytes_in`.
    pub bytes_out: u64,
    /// Remote misses per second over the last interval.
    pub misses_per_s: f64,
    /// Evictions per second over the last interval.
    pub evictions_per_s: f64,
    /// Median and 99th-percentile miss latency over the last interval (handler side, µs);
    /// `None` when the interval had no miss.
    pub miss_p50_us: Option<f64>,
    /// See `miss_p50_us`.
    pub miss_p99_us: Option<f64>,
    /// Page bytes written to secondaries since it started (replication, `--replicas 2`).
    #[serde(default)]
    pub replicated_bytes: u64,
    /// The vRegions the process has an owner for, by index: where their copies are and their
    /// state. At most [`MAX_LISTED_VREGIONS`], those not fully copied first.
    #[serde(default)]
    pub vregions: Vec<VRegionCopies>,
    /// How many of all its vRegions (listed or not) are in each state.
    #[serde(default)]
    pub copies: CopyCounts,
}

/// Most vRegions a process report lists (a few hundred KiB of its control message; a process
/// with small vRegions can own many more). [`ProcessFigures::copies`] counts them all.
pub const MAX_LISTED_VREGIONS: usize = 4096;

/// How many vRegions of a process are in each [`CopyState`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyCounts {
    /// [`CopyState::Single`].
    pub single: u64,
    /// [`CopyState::Replicated`].
    pub replicated: u64,
    /// [`CopyState::Degraded`].
    pub degraded: u64,
    /// [`CopyState::Rebuilding`].
    pub rebuilding: u64,
    /// [`CopyState::Suspended`].
    pub suspended: u64,
}

impl CopyCounts {
    /// The counts of `vregions`.
    pub fn of(vregions: &[VRegionCopies]) -> CopyCounts {
        let count = |state| vregions.iter().filter(|v| v.state == state).count() as u64;
        CopyCounts {
            single: count(CopyState::Single),
            replicated: count(CopyState::Replicated),
            degraded: count(CopyState::Degraded),
            rebuilding: count(CopyState::Rebuilding),
            suspended: count(CopyState::Suspended),
        }
    }

    /// All vRegions counted.
    pub fn total(&self) -> u64 {
        self.single + self.replicated + self.degraded + self.rebuilding + self.suspended
    }
}

/// What a report lists of `vregions` (by index): all of them, or, past
/// [`MAX_LISTED_VREGIONS`], those not fully copied first (degraded, rebuilding, suspended), then the
/// lowest indexes.
pub fn listed_vregions(mut vregions: Vec<VRegionCopies>) -> Vec<VRegionCopies> {
    if vregions.len() > MAX_LISTED_VREGIONS {
        vregions.sort_by_key(|v| (matches!(v.state, CopyState::Single | CopyState::Replicated), v.index));
        vregions.truncate(MAX_LISTED_VREGIONS);
    }
    vregions.sort_by_key(|v| v.index);
    vregions
}

/// Where the copies of one vRegion of a process are, as its pComponent knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VRegionCopies {
    /// The vRegion's index (its address divided by the vRegion size).
    pub index: u64,
    /// The mem-server that serves its misses.
    pub primary: String,
    /// The mem-server that holds its second copy, if it has one now.
    pub secondary: Option<String>,
    /// See [`CopyState`].
    pub state: CopyState,
}

/// The state of a vRegion's copies (LegoOS §4.7; `lego run --replicas`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyState {
    /// One copy, as asked (`--replicas 1`).
    Single,
    /// Two copies: every write-back reaches both.
    Replicated,
    /// One copy left by a mem-server's failure; the rebuild has not started.
    Degraded,
    /// One copy left by a mem-server's failure, being copied to a new secondary now.
    Rebuilding,
    /// One copy left because replication to the secondary was suspended (its backup log was
    /// full: its storage server slow or gone); the rebuild has not started.
    Suspended,
}

impl std::fmt::Display for CopyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CopyState::Single => "single",
            CopyState::Replicated => "replicated",
            CopyState::Degraded => "degraded",
            CopyState::Rebuilding => "rebuilding",
            CopyState::Suspended => "suspended",
        })
    }
}

/// The managers' placement for a new process of a vNode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The vNode.
    pub vnode: VnodeInfo,
    /// Mem-servers that are up, the preferred (least loaded, most free) first: the home and the
    /// owners of new vRegions are chosen among them.
    pub mem_servers: Vec<String>,
    /// The mem-server whose buffer cache holds the vNode's files, if its storage server is up and
    /// some mem-server that is up fronts it.
    pub cache: Option<String>,
}

/// A port of a vNode published on the host its process runs on (`--publish HOSTPORT:VPORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    /// The port on the pComponent host.
    pub host_port: u16,
    /// The vNode's TCP port.
    pub vport: u16,
}

/// Why a `--publish` value is not one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not HOSTPORT:VPORT (two port numbers)")]
pub struct BadPublish(String);

impl std::str::FromStr for PublishedPort {
    type Err = BadPublish;
    fn from_str(s: &str) -> Result<PublishedPort, BadPublish> {
        let bad = || BadPublish(s.to_string());
        let (h, v) = s.split_once(':').ok_or_else(bad)?;
        let host_port = h.parse().map_err(|_| bad())?;
        let vport = v.parse().map_err(|_| bad())?;
        if host_port == 0 || vport == 0 {
            return Err(bad());
        }
        Ok(PublishedPort { host_port, vport })
    }
}

impl std::fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host_port, self.vport)
    }
}

/// What a vNode's processes get unless `lego run` says otherwise, and its disk quota; set by
/// `lego vnode create` and stored with the vNode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnodeSettings {
    /// Most bytes of file data its storage mount may hold (`None`: no limit but the disk's).
    pub disk_quota: Option<u64>,
    /// Copies of its processes' memory (1 or 2, `--replicas`).
    pub replicas: u8,
    /// Ports published on the host of each of its processes (`--publish`).
    pub publish: Vec<PublishedPort>,
    /// Addresses outside the virtual IP space are reachable (`--egress`).
    pub egress: bool,
}

impl Default for VnodeSettings {
    fn default() -> VnodeSettings {
        VnodeSettings { disk_quota: None, replicas: 1, publish: Vec::new(), egress: false }
    }
}

/// A vNode (LegoOS §4.1): a named machine of its own, with a unique id and virtual IP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnodeInfo {
    /// Unique, never reused.
    pub id: u64,
    /// Its name (also the name of its storage mount).
    pub name: String,
    /// Its virtual IP, unique among vNodes.
    pub vip: [u8; 4],
    /// The storage server holding its mount (the GSM's choice when the vNode was created or
    /// first placed).
    pub storage: Option<String>,
    /// Address space of its processes.
    pub mem_bytes: u64,
    /// ExCache of its processes.
    pub excache_bytes: u64,
    /// Its quota and its processes' defaults.
    pub settings: VnodeSettings,
}

/// One registered component, as `lego ps` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// The id the global manager gave it.
    pub id: u64,
    /// What it is.
    pub role: Role,
    /// Where it listens.
    pub addr: String,
    /// CPU cores it reported.
    pub cores: u32,
    /// For a mem-server, the storage server behind its buffer cache.
    pub fronts: Option<String>,
    /// Whether it sent a heartbeat within the last three intervals.
    pub up: bool,
    /// Milliseconds since its last heartbeat (or registration), as seen by the manager.
    pub last_seen_ms: u64,
    /// The load of its last heartbeat.
    pub load: Load,
    /// Requests per second between its last two heartbeats.
    pub requests_per_s: f64,
    /// Bytes received per second between its last two heartbeats.
    pub bytes_in_per_s: f64,
    /// Bytes sent per second between its last two heartbeats.
    pub bytes_out_per_s: f64,
}

/// An answer of the global manager.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GlobalReply {
    /// The id of a registered component.
    Registered { id: u64 },
    /// The heartbeat was recorded.
    Ok,
    /// The id is unknown (the manager lost it): register again.
    UnknownComponent,
    /// Every registered component, in id order.
    Components(Vec<ComponentInfo>),
    /// The vNode that was created.
    Vnode(VnodeInfo),
    /// Every vNode, in id order.
    Vnodes(Vec<VnodeInfo>),
    /// The vNode was removed.
    Removed,
    /// Answer to `Place`.
    Placement(Placement),
    /// Answer to `ChoosePcomp`: the pComponent that is up with the fewest threads, if any.
    Pcomp(Option<String>),
    /// Answer to `ChooseOwner`: the least loaded of them that is up with a vRegion free, if any.
    Owner(Option<String>),
    /// Answer to `Processes`: every process that reported within the last three intervals,
    /// by pComponent and pid.
    Processes(Vec<ProcessReport>),
    /// Answer to `RegisterEndpoint`: another socket has the endpoint.
    EndpointTaken,
    /// Answer to `ResolveEndpoint`: the host address serving it, if any.
    EndpointAt(Option<String>),
    /// Answer to `ReverseEndpoint`: the endpoint the host address serves, if any.
    EndpointOf(Option<Endpoint>),
    /// Answer to `Endpoints`, in endpoint order.
    Endpoints(Vec<EndpointInfo>),
    /// The request could not be decoded or served (a duplicate name or VIP, an unknown vNode).
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_lists_at_most_its_share_of_vregions_the_degraded_first_and_fits_a_control_message() {
        let addr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        let all: Vec<VRegionCopies> = (0..3 * MAX_LISTED_VREGIONS as u64)
            .map(|index| {
                let state = if index % 5000 == 4999 { CopyState::Degraded } else { CopyState::Replicated };
                VRegionCopies { index, primary: addr.into(), secondary: Some(addr.into()), state }
            })
            .collect();
        let copies = CopyCounts::of(&all);
        assert_eq!((copies.degraded, copies.total()), (2, all.len() as u64));
        let listed = listed_vregions(all);
        assert_eq!(listed.len(), MAX_LISTED_VREGIONS);
        assert!(listed.windows(2).all(|w| w[0].index < w[1].index), "by index");
        assert_eq!(listed.iter().filter(|v| v.state == CopyState::Degraded).map(|v| v.index).collect::<Vec<_>>(), [4999, 9999]);
        let report = GlobalRequest::Process(Box::new(ProcessReport {
            who: ProcessIdentity::default(),
            cache: ProcessFigures { vregions: listed, copies, ..ProcessFigures::default() },
            exited: false,
        }));
        let bytes = crate::codec::encode(&report);
        assert!(bytes.len() < crate::frame::MAX_CONTROL_LEN / 2, "{} bytes", bytes.len());
        assert_eq!(crate::codec::decode::<GlobalRequest>(&bytes).unwrap(), report);
    }
}
