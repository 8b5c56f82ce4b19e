//! Where a vNode's memory lives: the `--mem-server` and `--excache*` options, and the embedded
//! mem-server `lego run` starts when no server is named.

use std::time::Duration;

use anyhow::Context;
use lego_vmm::memory::excache::{ExCacheConfig, MemoryConfig, Policy, DEFAULT_PREFETCH};

use crate::size::parse_size;

/// Replacement policy names.
#[derive(Clone, Copy, Debug, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyArg {
    /// First in, first out (LegoOS's default): lines leave in the order the hand meets them.
    Fifo,
    /// CLOCK: a line accessed since the hand last passed gets a second chance. The accessed
    /// bits are the ones KVM sets in the guest page tables, so every access counts. The usual
    /// approximation of LRU, which is what `lru` names too.
    #[value(alias = "lru")]
    #[serde(alias = "lru")]
    Clock,
}

/// Memory options shared by `lego run` and the benchmarks.
#[derive(clap::Args, Clone, Debug)]
pub struct MemoryArgs {
    /// Mem-servers holding the memory (ADDR[,ADDR...]). Default: an embedded mem-server in
    /// this process, on a loopback port.
    #[arg(long, value_delimiter = ',', value_name = "ADDR")]
    pub mem_server: Vec<String>,
    /// Most user memory resident in this pComponent at once (the ExCache) [default: the vNode's
    /// with --global-mgr, else 256M].
    #[arg(long, value_parser = crate::size::excache())]
    pub excache: Option<u64>,
    /// Lines per ExCache set (0: one set of all lines, fully associative).
    #[arg(long, default_value_t = 0)]
    pub excache_ways: usize,
    /// ExCache replacement policy.
    #[arg(long, value_enum, default_value = "clock")]
    pub excache_policy: PolicyArg,
    /// Most ExCache lines prefetched after a miss that continues a sequential stream of misses
    /// (at most 64, and at most a sixteenth of the ExCache); 0 turns prefetch off.
    #[arg(long, default_value_t = DEFAULT_PREFETCH, value_name = "LINES")]
    pub prefetch: u64,
    /// Run the ExCache's background cleaner, which writes dirty lines back before the CLOCK
    /// hand reaches them, so that misses find clean victims.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub excache_cleaner: bool,
    /// Size of a vRegion, the unit mem-servers own address space in.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub vregion_size: u64,
    /// Cluster id presented to the mem-servers.
    #[arg(long, default_value_t = 0, env = "LEGO_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: u64,
    /// Seconds to wait for a mem-server before giving the process up.
    #[arg(long, default_value_t = 30)]
    pub mem_timeout: u64,
    /// Copies of the process's memory: 2 gives every vRegion a secondary on another mem-server
    /// that every write-back reaches too, so the process survives the loss of one mem-server
    /// (LegoOS §4.7; needs at least two mem-servers).
    /// [default: the vNode's (`lego vnode create --replicas`), else 1]
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub replicas: Option<u8>,
    #[command(flatten)]
    pub transport: crate::transport::TransportArgs,
}

/// ExCache size when neither `--excache` nor a vNode gives one.
const DEFAULT_EXCACHE: u64 = 256 << 20;

/// An embedded mem-server, stopped when dropped.
pub type Embedded = Option<mem_server::Handle>;

impl MemoryArgs {
    /// The VMM's memory configuration, starting an embedded mem-server of `capacity` bytes (in
    /// front of the storage server `storage`, if any) when no server was named (keep the
    /// returned handle alive as long as the vNode runs).
    pub fn config(&self, capacity: u64, storage: Option<&str>) -> anyhow::Result<(MemoryConfig, Embedded)> {
        // Chosen before anything starts: `--transport rdma` without a device stops here.
        let peers: Vec<&str> = match self.mem_server.is_empty() {
            true => vec!["the embedded mem-server"],
            false => self.mem_server.iter().map(String::as_str).collect(),
        };
        let transport = self.transport.resolve(&peers)?;
        let (servers, embedded) = if self.mem_server.is_empty() {
            let config = mem_server::Config {
                storage: storage.map(str::to_string),
                transport: self.transport.transport,
                ..mem_server::Config::new("127.0.0.1:0", capacity, self.cluster_id)
            };
            let server = mem_server::MemServer::bind(config).context("starting the embedded mem-server")?;
            let handle = server.spawn().context("starting the embedded mem-server")?;
            (vec![handle.addr().to_string()], Some(handle))
        } else {
            (self.mem_server.clone(), None)
        };
        let policy = match self.excache_policy {
            PolicyArg::Fifo => Policy::Fifo,
            PolicyArg::Clock => Policy::Clock,
        };
        let config = MemoryConfig {
            servers,
            cluster: self.cluster_id,
            vregion_size: self.vregion_size,
            timeout: Duration::from_secs(self.mem_timeout.max(1)),
            replicas: self.replicas.unwrap_or(1),
            backup_storage: storage.map(str::to_string),
            excache: ExCacheConfig {
                bytes: self.excache.unwrap_or(DEFAULT_EXCACHE),
                ways: self.excache_ways,
                policy,
                prefetch: self.prefetch,
                cleaner: self.excache_cleaner,
            },
            transport,
        };
        Ok((config, embedded))
    }
}
