//! Choosing the transport of the page path: `--transport tcp|rdma|auto`.
//!
//! `tcp` is the default. `rdma` needs an RDMA device on this host with an active port, and fails
//! at once (one line naming the device looked for and the peer) when there is none; `auto` takes
//! RDMA when it can and otherwise falls back to TCP, saying why in the log.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::ProtoError;
use crate::handshake::Hello;
use crate::transport::{TcpTransport, Transport, DEFAULT_POLL};

use super::unavailable::RdmaUnavailable;

/// The transport asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportChoice {
    /// TCP (the default).
    #[default]
    Tcp,
    /// RDMA, or an error.
    Rdma,
    /// RDMA where both sides can, else TCP.
    Auto,
}

/// A `--transport` value that names no transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?} (tcp, rdma or auto)")]
pub struct UnknownTransport(pub String);

impl FromStr for TransportChoice {
    type Err = UnknownTransport;
    fn from_str(s: &str) -> Result<TransportChoice, UnknownTransport> {
        match s {
            "tcp" => Ok(TransportChoice::Tcp),
            "rdma" => Ok(TransportChoice::Rdma),
            "auto" => Ok(TransportChoice::Auto),
            other => Err(UnknownTransport(other.to_string())),
        }
    }
}

impl fmt::Display for TransportChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportChoice::Tcp => "tcp",
            TransportChoice::Rdma => "rdma",
            TransportChoice::Auto => "auto",
        })
    }
}

/// A usable local RDMA device (only a build with the `rdma` feature finds one).
#[derive(Clone)]
pub struct LocalDevice {
    /// Its name (e.g. `mlx5_0`).
    pub name: String,
    #[cfg(feature = "rdma")]
    device: std::sync::Arc<super::verbs::Device>,
}

impl fmt::Debug for LocalDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalDevice({})", self.name)
    }
}

#[cfg(feature = "rdma")]
impl LocalDevice {
    /// The opened device.
    pub fn device(&self) -> &std::sync::Arc<super::verbs::Device> {
        &self.device
    }
}

/// Opens the RDMA device `wanted` (or any, if `None`) and checks that its port is active, for a
/// connection to `peer`.
pub fn probe(wanted: Option<&str>, peer: &str) -> Result<LocalDevice, RdmaUnavailable> {
    #[cfg(feature = "rdma")]
    {
        let device = super::verbs::Device::open(wanted, peer)?;
        Ok(LocalDevice { name: device.name.clone(), device })
    }
    #[cfg(not(feature = "rdma"))]
    {
        let _ = wanted;
        Err(RdmaUnavailable::NotBuilt { peer: peer.to_string() })
    }
}

/// The transport a connection to `peer` uses.
#[derive(Clone, Debug, Default)]
pub enum Chosen {
    /// TCP.
    #[default]
    Tcp,
    /// RDMA through a device.
    Rdma(LocalDevice),
    /// RDMA through a device to the servers that serve it, TCP to the others (`auto`).
    Auto(LocalDevice),
}

impl fmt::Display for Chosen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chosen::Tcp => f.write_str("tcp"),
            Chosen::Rdma(d) => write!(f, "rdma ({})", d.name),
            Chosen::Auto(d) => write!(f, "rdma ({}) where the server serves it, else tcp", d.name),
        }
    }
}

impl Chosen {
    /// Connects to the server at `addr` for the page path, introducing this side as `me`. Over
    /// TCP the caller polls for each reply ([`TcpTransport::set_poll`]): it has nothing else to do.
    pub fn connect(&self, addr: &str, me: Hello, timeout: Duration) -> Result<Box<dyn Transport>, ProtoError> {
        match self {
            Chosen::Tcp => {
                let mut t = TcpTransport::connect(addr, me, timeout)?;
                t.set_poll(DEFAULT_POLL);
                Ok(Box::new(t))
            }
            #[cfg(feature = "rdma")]
            Chosen::Rdma(d) => {
                let t = super::client::RdmaTransport::connect(addr, me, timeout, &d.device, super::client::DEFAULT_SLOTS)?;
                Ok(Box::new(t))
            }
            #[cfg(feature = "rdma")]
            Chosen::Auto(d) => match Chosen::Rdma(d.clone()).connect(addr, me, timeout) {
                // The server is up but has no RDMA page path: TCP to it.
                Err(e @ ProtoError::Remote { status: crate::frame::Status::NoRdma, .. }) => {
                    tracing::info!(peer = addr, reason = %e, "transport auto: using TCP");
                    Chosen::Tcp.connect(addr, me, timeout)
                }
                other => other,
            },
            // Without the feature no `LocalDevice` can be made.
            #[cfg(not(feature = "rdma"))]
            Chosen::Rdma(d) | Chosen::Auto(d) => Err(ProtoError::Refused(format!("{} needs RDMA support, which this build lacks", d.name))),
        }
    }
}

/// Resolves `choice` for a connection to `peer`, with `probe` telling whether RDMA can be used:
/// `rdma` fails with its error, `auto` logs it and takes TCP.
pub fn choose(
    choice: TransportChoice,
    peer: &str,
    probe: impl FnOnce(&str) -> Result<LocalDevice, RdmaUnavailable>,
) -> Result<Chosen, RdmaUnavailable> {
    if choice == TransportChoice::Tcp {
        return Ok(Chosen::Tcp);
    }
    let rdma = |d| if choice == TransportChoice::Auto { Chosen::Auto(d) } else { Chosen::Rdma(d) };
    match probe(peer).map(rdma) {
        Err(e) if choice == TransportChoice::Auto => {
            tracing::info!(%peer, reason = %e, "transport auto: using TCP");
            Ok(Chosen::Tcp)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdma::unavailable::DEVICE_GLOB;

    fn none(peer: &str) -> Result<LocalDevice, RdmaUnavailable> {
        Err(RdmaUnavailable::NoDevice { device: DEVICE_GLOB.into(), why: "none listed".into(), peer: peer.into() })
    }

    #[test]
    fn parse_and_print() {
        for c in [TransportChoice::Tcp, TransportChoice::Rdma, TransportChoice::Auto] {
            assert_eq!(c.to_string().parse::<TransportChoice>(), Ok(c));
        }
        assert!("ib".parse::<TransportChoice>().unwrap_err().to_string().contains("tcp, rdma or auto"));
    }

    #[test]
    fn rdma_fails_naming_device_and_peer_and_auto_falls_back() {
        let e = choose(TransportChoice::Rdma, "10.0.0.9:7070", none).unwrap_err().to_string();
        assert!(e.contains(DEVICE_GLOB) && e.contains("10.0.0.9:7070"), "{e}");
        assert!(!e.contains('\n'));
        assert!(matches!(choose(TransportChoice::Auto, "10.0.0.9:7070", none), Ok(Chosen::Tcp)));
        assert!(matches!(choose(TransportChoice::Tcp, "p", |_| unreachable!("tcp never probes")), Ok(Chosen::Tcp)));
    }

    #[test]
    fn the_real_probe_on_this_host() {
        let have = std::fs::read_dir("/dev/infiniband")
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("uverbs")))
            .unwrap_or(false);
        match probe(None, "peer:1") {
            Ok(d) => assert!(have, "found {d:?} without {DEVICE_GLOB}"),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("peer:1"), "{e}");
                if !have {
                    eprintln!("no {DEVICE_GLOB} here: the probe said {e}");
                }
            }
        }
    }
}
