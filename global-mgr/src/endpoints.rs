//! The endpoint table of the cluster's vNodes (LegoOS §5.2): which host socket serves each
//! virtual (IP, port, protocol). It lives only in memory: endpoints belong to running
//! processes, which register them again when they bind after a restart of the manager.

use std::collections::BTreeMap;

use lego_proto::global::{Endpoint, EndpointInfo, NetProto};

/// The table.
#[derive(Default)]
pub struct Endpoints {
    by_endpoint: BTreeMap<Endpoint, (String, String)>,
}

impl Endpoints {
    /// Records that `host` serves `endpoint` for `vnode`; false if another socket has it.
    pub fn register(&mut self, endpoint: Endpoint, host: String, vnode: String) -> bool {
        if self.by_endpoint.contains_key(&endpoint) {
            return false;
        }
        self.by_endpoint.insert(endpoint, (host, vnode));
        true
    }

    /// Forgets `endpoint`.
    pub fn unregister(&mut self, endpoint: &Endpoint) {
        self.by_endpoint.remove(endpoint);
    }

    /// The host address serving `endpoint`.
    pub fn resolve(&self, endpoint: &Endpoint) -> Option<String> {
        self.by_endpoint.get(endpoint).map(|(h, _)| h.clone())
    }

    /// The endpoint the host address `host` serves.
    pub fn reverse(&self, proto: NetProto, host: &str) -> Option<Endpoint> {
        self.by_endpoint.iter().find(|(e, (h, _))| e.proto == proto && h == host).map(|(e, _)| *e)
    }

    /// Every endpoint, in order.
    pub fn list(&self) -> Vec<EndpointInfo> {
        self.by_endpoint.iter().map(|(e, (h, v))| EndpointInfo { endpoint: *e, host: h.clone(), vnode: v.clone() }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_socket_per_endpoint() {
        let mut t = Endpoints::default();
        let e = Endpoint { proto: NetProto::Tcp, vip: [10, 77, 0, 1], port: 80 };
        assert!(t.register(e, "10.0.0.1:40000".into(), "web".into()));
        assert!(!t.register(e, "10.0.0.1:40001".into(), "web".into()));
        assert!(t.register(Endpoint { proto: NetProto::Udp, ..e }, "10.0.0.1:40001".into(), "web".into()));
        assert_eq!(t.resolve(&e).as_deref(), Some("10.0.0.1:40000"));
        assert_eq!(t.reverse(NetProto::Tcp, "10.0.0.1:40000"), Some(e));
        assert_eq!(t.list().len(), 2);
        t.unregister(&e);
        assert_eq!(t.resolve(&e), None);
    }
}
