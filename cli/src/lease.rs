//! The leases a run's processes hold with their home mem-servers: every
//! [`PROCESS_REPORT_INTERVAL`], for each running process of the run, a [`Request::Renew`] to its
//! home, on a connection of this thread's own. The global manager reclaims the memory of a
//! process that stops reporting only through its home, which refuses while the lease is fresh
//! (see `global_mgr::reclaim`): so a process whose reports to the manager are lost keeps its
//! memory. The renewals go straight to the homes and never wait on the manager.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use lego_proto::background::Background;
use lego_proto::codec::encode;
use lego_proto::frame::Status;
use lego_proto::global::PROCESS_REPORT_INTERVAL;
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::Request;
use lego_proto::transport::{TcpTransport, Transport};
use lego_proto::ProtoError;
use lego_vmm::proctable::ProcTable;

/// Starts renewing the leases of the processes in `procs`, as a pComponent of `cluster`.
/// Dropping the handle stops them.
pub fn start(cluster: u64, procs: Arc<ProcTable>) -> std::io::Result<Background> {
    Background::spawn("memory lease", move |stop| {
        let hello = Hello::new(ComponentKind::Processor, cluster);
        // vNode pid -> (memory id, home): fixed for the life of a process.
        let mut known: BTreeMap<i32, (u64, String)> = BTreeMap::new();
        let mut links: HashMap<String, TcpTransport> = HashMap::new();
        loop {
            // A process's lease starts fresh when its home creates it: the first renewal is
            // due an interval later, when the process no longer starts up.
            if stop.wait(PROCESS_REPORT_INTERVAL) {
                return;
            }
            let running = procs.running_pids(0);
            known.retain(|pid, _| running.contains(pid));
            for pid in &running {
                if !known.contains_key(pid) {
                    if let Some(v) = procs.view(*pid) {
                        known.insert(*pid, (v.memory.0, v.memory.1));
                    }
                }
            }
            for (pid, (proc, home)) in &known {
                let renewed = (|| {
                    let link = match links.get_mut(home) {
                        Some(l) => l,
                        None => links.entry(home.clone()).or_insert(TcpTransport::connect(home, hello, PROCESS_REPORT_INTERVAL)?),
                    };
                    link.call(*proc, &encode(&Request::Renew)).map(|_| ())
                })();
                match renewed {
                    Ok(()) => {}
                    // Gone at the home: it ended (and released its memory) meanwhile, or the
                    // global manager reclaimed it; then its next page request is refused.
                    Err(ProtoError::Remote { status: Status::UnknownProcess, .. }) => {
                        tracing::debug!(pid, %home, "the home no longer has the process's memory");
                    }
                    Err(e) => {
                        links.remove(home);
                        tracing::warn!(pid, %home, "renewing the process's memory lease: {e}");
                    }
                }
            }
        }
    })
}
