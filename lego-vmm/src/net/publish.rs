//! Publishing a vNode's TCP service on the pComponent host (`lego run --publish
//! HOSTPORT:VPORT`, as `docker run -p` does): a forwarder listens on the host port and carries
//! each connection to the vNode's own endpoint (vIP, VPORT), introducing the outside client
//! with a [`preamble`] as a vNode client would be.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{preamble, Net, Proto};

/// A published port: `HOSTPORT:VPORT` (the type a vNode stores its published ports as).
pub use lego_proto::global::{BadPublish, PublishedPort as Publish};

/// A running forwarder; dropping it stops taking new connections (those open go on until they
/// end).
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Listens on the host port of `p` (all addresses of the host) for the vNode of `net`.
    pub fn start(net: Arc<Net>, p: Publish) -> std::io::Result<Forwarder> {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, p.host_port))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new().name(format!("publish {}", p.host_port)).spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                match conn {
                    Ok(c) => {
                        let net = net.clone();
                        // A failed connection is the outside client's loss only.
                        let _ = std::thread::Builder::new().name("publish conn".into()).spawn(move || forward(&net, c, p.vport));
                    }
                    Err(e) => tracing::warn!("published port {}: {e}", p.host_port),
                }
            }
        })?;
        Ok(Forwarder { stop, addr, thread: Some(thread) })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accepting thread, which then sees the flag.
        let wake = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.addr.port());
        if TcpStream::connect_timeout(&wake, std::time::Duration::from_secs(1)).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Carries one outside connection to the vNode's port `vport`, both ways, until both ends
/// have finished.
fn forward(net: &Net, outside: TcpStream, vport: u16) {
    let from = match outside.peer_addr() {
        Ok(SocketAddr::V4(a)) => a,
        _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    };
    let target = match net.resolve(Proto::Tcp, SocketAddrV4::new(net.vip(), vport)) {
        Ok(Some(t)) => t,
        _ => {
            tracing::debug!(vport, "nothing listens on the published port in the vNode");
            return;
        }
    };
    let Ok(mut inside) = TcpStream::connect(target) else { return };
    let _ = inside.set_nodelay(true);
    if inside.write_all(&preamble::encode(from)).is_err() {
        return;
    }
    let (Ok(mut out_r), Ok(mut in_w)) = (outside.try_clone(), inside.try_clone()) else { return };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut out_r, &mut in_w);
        let _ = in_w.shutdown(Shutdown::Write);
    });
    let mut outside = outside;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match inside.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if outside.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = outside.shutdown(Shutdown::Write);
    let _ = up.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hostport_vport() {
        assert_eq!("8080:80".parse(), Ok(Publish { host_port: 8080, vport: 80 }));
        assert!("80".parse::<Publish>().is_err());
        assert!("0:80".parse::<Publish>().is_err());
        assert!("x:80".parse::<Publish>().is_err());
    }
}
