//! `--transport tcp|rdma|auto`: the page path's transport, chosen once per peer before anything
//! connects, so that `rdma` without a device fails at once with one line naming the device and
//! the peer, and `auto` logs its fallback to TCP.

use lego_proto::rdma::select::{choose, probe, Chosen, TransportChoice};

/// The `--transport` option.
#[derive(clap::Args, Clone, Debug)]
pub struct TransportArgs {
    /// Transport of the page path: tcp, rdma (an error without a usable RDMA device), or auto
    /// (RDMA where possible, else TCP).
    #[arg(long, default_value_t = TransportChoice::Tcp, value_name = "tcp|rdma|auto")]
    pub transport: TransportChoice,
}

impl TransportArgs {
    /// Resolves the choice for the page path to `peers` (named in messages), logging it: under
    /// `rdma` without a usable device, the error.
    pub fn resolve(&self, peers: &[&str]) -> anyhow::Result<Chosen> {
        let peer = peers.join(", ");
        let chosen = choose(self.transport, &peer, |p| probe(None, p))?;
        tracing::info!(%peer, asked = %self.transport, transport = %chosen, "page path transport");
        Ok(chosen)
    }
}
