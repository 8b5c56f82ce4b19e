//! The endpoint table of the cluster's vNodes (LegoOS §5.2): which host socket serves each
//! virtual (IP, port, protocol). It lives only in memory: endpoints belong to running
//! processes. A process that is killed cannot unregister its endpoints; they are stale once it
//! has stopped reporting, and another socket may then take them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lego_proto::global::{Endpoint, EndpointInfo, EndpointOwner, NetProto, PROCESS_REPORT_INTERVAL};

/// How long a new endpoint is kept even though its process has not reported yet (its first
/// report comes one interval after it starts).
const GRACE: Duration = PROCESS_REPORT_INTERVAL.saturating_mul(3);

struct Entry {
    host: String,
    vnode: String,
    owner: EndpointOwner,
    since: Instant,
}

/// The table.
#[derive(Default)]
pub struct Endpoints {
    by_endpoint: BTreeMap<Endpoint, Entry>,
}

impl Endpoints {
    /// Records that `host` serves `endpoint` for the process `owner` of `vnode`; false if a
    /// live process has it (`alive` says which processes are).
    pub fn register(&mut self, endpoint: Endpoint, host: String, vnode: String, owner: EndpointOwner, alive: impl Fn(&EndpointOwner) -> bool) -> bool {
        if let Some(e) = self.by_endpoint.get(&endpoint) {
            if e.since.elapsed() < GRACE || alive(&e.owner) {
                return false;
            }
            tracing::info!(?endpoint, owner = ?e.owner, "a stale endpoint is taken over");
        }
        self.by_endpoint.insert(endpoint, Entry { host, vnode, owner, since: Instant::now() });
        true
    }

    /// Forgets `endpoint`.
    pub fn unregister(&mut self, endpoint: &Endpoint) {
        self.by_endpoint.remove(endpoint);
    }

    /// The host address serving `endpoint`.
    pub fn resolve(&self, endpoint: &Endpoint) -> Option<String> {
        self.by_endpoint.get(endpoint).map(|e| e.host.clone())
    }

    /// The endpoint the host address `host` serves.
    pub fn reverse(&self, proto: NetProto, host: &str) -> Option<Endpoint> {
        self.by_endpoint.iter().find(|(k, e)| k.proto == proto && e.host == host).map(|(k, _)| *k)
    }

    /// Every endpoint, in order.
    pub fn list(&self) -> Vec<EndpointInfo> {
        self.by_endpoint
            .iter()
            .map(|(k, e)| EndpointInfo { endpoint: *k, host: e.host.clone(), vnode: e.vnode.clone(), owner: e.owner.clone() })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_socket_per_endpoint_until_its_process_is_gone() {
        let mut t = Endpoints::default();
        let e = Endpoint { proto: NetProto::Tcp, vip: [10, 77, 0, 1], port: 80 };
        let owner = EndpointOwner { pcomp: "p".into(), pid: 7 };
        let dead = |_: &EndpointOwner| false;
        assert!(t.register(e, "10.0.0.1:40000".into(), "web".into(), owner.clone(), dead));
        assert!(!t.register(e, "10.0.0.1:40001".into(), "web".into(), owner.clone(), dead), "a young endpoint is kept");
        assert!(t.register(Endpoint { proto: NetProto::Udp, ..e }, "10.0.0.1:40001".into(), "web".into(), owner.clone(), dead));
        assert_eq!(t.resolve(&e).as_deref(), Some("10.0.0.1:40000"));
        assert_eq!(t.reverse(NetProto::Tcp, "10.0.0.1:40000"), Some(e));
        assert_eq!(t.list().len(), 2);
        if let Some(entry) = t.by_endpoint.get_mut(&e) {
            entry.since = Instant::now() - GRACE;
        }
        assert!(!t.register(e, "10.0.0.1:40002".into(), "web".into(), owner.clone(), |_| true), "its process is alive");
        assert!(t.register(e, "10.0.0.1:40002".into(), "web".into(), owner, dead), "its process stopped reporting");
        assert_eq!(t.resolve(&e).as_deref(), Some("10.0.0.1:40002"));
        t.unregister(&e);
        assert_eq!(t.resolve(&e), None);
    }
}
