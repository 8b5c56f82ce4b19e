//! The page path's transport on the server side: TCP always, and RDMA too when
//! `--transport rdma|auto` finds a device (with the `rdma` feature): the connections' frame
//! handlers then also answer the RDMA set-up request, and a polling thread serves the sessions.

use std::net::SocketAddr;
use std::sync::Arc;

use lego_proto::rdma::select::{choose, probe, TransportChoice};
use lego_proto::rdma::unavailable::RdmaUnavailable;

use crate::server::{Conn, Shared};

/// What a connection is served by.
#[cfg(feature = "rdma")]
pub(crate) type Frames = lego_proto::rdma::server::RdmaFrames<Conn>;
/// What a connection is served by.
#[cfg(not(feature = "rdma"))]
pub(crate) type Frames = Conn;

/// The server's page-path transports.
pub(crate) struct PagePath {
    #[cfg(feature = "rdma")]
    rdma: Option<Arc<lego_proto::rdma::server::RdmaServer>>,
}

impl PagePath {
    /// Resolves `choice`: `rdma` without a usable device is an error, `auto` falls back to TCP
    /// only (and logs it).
    pub(crate) fn start(choice: TransportChoice) -> Result<PagePath, RdmaUnavailable> {
        let chosen = choose(choice, "its clients", |peer| probe(None, peer))?;
        tracing::info!(asked = %choice, transport = %chosen, "mem-server page path");
        #[cfg(feature = "rdma")]
        {
            use lego_proto::rdma::select::Chosen;
            let rdma = match chosen {
                Chosen::Tcp => None,
                Chosen::Rdma(d) | Chosen::Auto(d) => {
                    let server = lego_proto::rdma::server::RdmaServer::start(d.device().clone(), "mem-server");
                    let why = |e: std::io::Error| RdmaUnavailable::Unusable { device: d.name.clone(), why: e.to_string(), peer: "its clients".into() };
                    Some(server.map_err(why)?)
                }
            };
            Ok(PagePath { rdma })
        }
        #[cfg(not(feature = "rdma"))]
        {
            let _ = chosen;
            Ok(PagePath {})
        }
    }

    /// The handler of a new connection from `peer`.
    pub(crate) fn frames(&self, shared: &Arc<Shared>, peer: SocketAddr) -> Frames {
        let conn = Conn::new(shared.clone());
        #[cfg(feature = "rdma")]
        {
            let shared = shared.clone();
            let make: lego_proto::rdma::server::MakeHandler = Arc::new(move || Box::new(Conn::new(shared.clone())));
            lego_proto::rdma::server::RdmaFrames::new(conn, self.rdma.clone(), make, peer.to_string())
        }
        #[cfg(not(feature = "rdma"))]
        {
            let _ = peer;
            conn
        }
    }
}
