//! The RDMA page path (LegoOS §5.2). The parts that need no RDMA device are compiled always:
//!
//! - [`ring`]: the request ring and its credits.
//! - [`layout`]: where requests, replies and stamps lie in the registered regions.
//! - [`params`]: the connection-parameter exchange that follows the TCP handshake, and the rule
//!   that a queue pair reaches RTS only toward an authenticated peer.
//! - [`select`]: choosing between TCP and RDMA (`--transport tcp|rdma|auto`), probing the device.
//! - [`unavailable`]: why RDMA cannot be used toward a peer.
//!
//! Behind the `rdma` feature, through rdma-core's libibverbs:
//!
//! - [`verbs`]: owners of the device, registered regions and RC queue pairs.
//! - [`client`]: [`client::RdmaTransport`], the page path of a pComponent over RDMA.
//! - [`server`]: the server's polling thread and the handler that sets sessions up.

pub mod layout;
pub mod params;
pub mod ring;
pub mod select;
pub mod unavailable;

#[cfg(feature = "rdma")]
pub mod client;
#[cfg(feature = "rdma")]
pub mod server;
#[cfg(feature = "rdma")]
pub mod verbs;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::aio::{push_reply, FrameHandler};
    use crate::frame::{Header, Status};
    use crate::handshake::{ComponentKind, Hello};
    use crate::service::Service;
    use crate::transport::TcpTransport;

    use super::layout::SlotLayout;
    use super::params::ConnectParams;

    /// A server without an RDMA page path (as every server is without the feature).
    struct NoRdma;

    impl FrameHandler for NoRdma {
        fn handle(&mut self, req: &Header, _: &[u8], out: &mut Vec<u8>) {
            push_reply(out, &req.reply(Status::NoRdma), &[]);
        }
    }

    #[test]
    fn parameters_cross_only_after_the_handshake_and_a_server_without_rdma_says_so() {
        static ACCEPTS: [ComponentKind; 1] = [ComponentKind::Processor];
        let service = Service::bind("rdma-test", "127.0.0.1:0", Hello::new(ComponentKind::Memory, 7), &ACCEPTS, |_, _| NoRdma).unwrap();
        let handle = service.spawn(|| {}).unwrap();
        let addr = handle.addr().to_string();
        let timeout = Duration::from_secs(5);
        // A peer of another cluster is refused by the handshake: it never gets to send parameters.
        let refused = TcpTransport::connect(&addr, Hello::new(ComponentKind::Processor, 8), timeout).err().expect("refused");
        assert!(refused.to_string().contains("cluster mismatch"), "{refused}");
        let layout = SlotLayout::new(4).unwrap();
        let mine = ConnectParams { lid: 1, gid: [0; 16], qpn: 5, psn: 6, rkey: 7, addr: 4096, len: layout.client_len() as u64, slots: 4, mtu: 3 };
        let mut t = TcpTransport::connect(&addr, Hello::new(ComponentKind::Processor, 7), timeout).unwrap();
        let e = t.rdma_connect(&mine).unwrap_err().to_string();
        assert!(e.contains(&addr) && e.contains("over RDMA"), "{e}");
        // The refusal left the connection in step.
        assert!(t.rdma_connect(&mine).is_err());
        handle.shutdown();
    }
}
