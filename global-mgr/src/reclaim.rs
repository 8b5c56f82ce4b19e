//! Reclamation of the memory of processes that ended abnormally (their VMM was killed, or the
//! pComponent running it was lost): a process that stops reporting for
//! [`Registry::process_silence`] without a last report is handed here, and the manager tells
//! its home to release it ([`Request::Reclaim`]), which releases it at every owner and
//! secondary.
//!
//! Silence alone is no proof of death: the reports of a live process may be lost (its
//! pComponent cut off from the manager, the manager overloaded). So the home decides: it
//! releases only if the process did not renew its lease with the home ([`Request::Renew`],
//! sent by the VMM on a connection of its own) within the same silence; otherwise it answers
//! [`Reply::Alive`] and the manager asks again when the lease could lapse at the earliest, until
//! the process reports again or its lease lapses. A home that is down (three heartbeats missed) cannot answer: then the
//! manager releases the process at each of its other mem-servers itself; the process cannot
//! make a memory call without its home anyway, and owners refuse any page request of a
//! released process, so a process that was only cut off ends with an error, never wrong data.

use lego_proto::sync::LockExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lego_proto::background::Background;
use lego_proto::codec::{decode, encode};
use lego_proto::frame::Status;
use lego_proto::global::{ProcessIdentity, Role};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::{OwnerCall, Reply, Request};
use lego_proto::transport::{TcpTransport, Transport};
use lego_proto::ProtoError;

use crate::registry::{Registry, MISSED_HEARTBEATS};

/// How long a mem-server may take to answer a reclamation (the home releases the process at
/// every owner before it answers).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What reclamation has done since the manager started, for its metrics.
#[derive(Debug, Default)]
pub struct Figures {
    /// Processes whose memory was released.
    pub reclaimed: AtomicU64,
    /// Requests a home refused because the process had renewed its lease.
    pub refused_alive: AtomicU64,
}

/// A silent process whose memory is not released yet.
struct Pending {
    who: ProcessIdentity,
    /// A refusal or a failure was logged already.
    logged: bool,
    /// No attempt before this: when the lease the home last reported could lapse at the
    /// earliest, or an interval after a failed attempt.
    next: Instant,
}

/// What one attempt came to.
enum Outcome {
    /// Released.
    Released,
    /// The home had no record of it: it ended normally and its last report was lost, or the
    /// home restarted. Its other mem-servers were told to release it, in case.
    Unknown,
    /// The home refused: the process renewed its lease this many milliseconds ago.
    Alive(u64),
    /// The home could not be asked, and is not down: asked again at the next scan.
    Later(String),
}

/// Starts scanning `registry` for silent processes every `scan`, as a manager of `cluster`;
/// dropping the handle stops it.
pub fn start(registry: Arc<Mutex<Registry>>, cluster: u64, scan: Duration, figures: Arc<Figures>) -> std::io::Result<Background> {
    Background::spawn("reclaim", move |stop| {
        let hello = Hello::new(ComponentKind::Global, cluster);
        let mut pending: Vec<Pending> = Vec::new();
        loop {
            let (silence, fresh) = {
                let mut reg = registry.lock_unpoisoned();
                pending.retain(|p| !reg.reporting(&p.who));
                (reg.process_silence(), reg.take_silent())
            };
            let now = Instant::now();
            pending.extend(fresh.into_iter().filter(|w| w.mem_proc != 0).map(|who| Pending { who, logged: false, next: now }));
            pending.retain_mut(|p| {
                if Instant::now() < p.next {
                    return true;
                }
                let why = match attempt(&registry, hello, &p.who, silence) {
                    Outcome::Released => {
                        figures.reclaimed.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                    Outcome::Unknown => return false,
                    Outcome::Alive(ms) => {
                        figures.refused_alive.fetch_add(1, Ordering::Relaxed);
                        p.next = Instant::now() + silence.saturating_sub(Duration::from_millis(ms)).max(scan);
                        format!("alive: it renewed its lease with its home {ms} ms ago")
                    }
                    Outcome::Later(why) => {
                        p.next = Instant::now() + silence / MISSED_HEARTBEATS;
                        why
                    }
                };
                if !p.logged {
                    tracing::warn!(pcomp = %p.who.pcomp, pid = p.who.pid, vpid = p.who.vpid, home = %p.who.home, "not reclaimed yet: {why}");
                    p.logged = true;
                }
                true
            });
            if stop.wait(scan) {
                return;
            }
        }
    })
}

/// One control call to the mem-server at `addr` about process `proc`.
fn call(addr: &str, hello: Hello, proc: u64, req: &Request) -> Result<Reply, ProtoError> {
    let mut t = TcpTransport::connect(addr, hello, CALL_TIMEOUT)?;
    decode(&t.call(proc, &encode(req))?)
}

/// Asks `who`'s home to reclaim it; releases it at its other mem-servers if the home is down.
fn attempt(registry: &Mutex<Registry>, hello: Hello, who: &ProcessIdentity, silence: Duration) -> Outcome {
    let silent_ms = silence.as_millis() as u64;
    let outcome = match call(&who.home, hello, who.mem_proc, &Request::Reclaim { silent_ms }) {
        Ok(Reply::Done) => {
            tracing::info!(pcomp = %who.pcomp, pid = who.pid, vpid = who.vpid, home = %who.home, "reclaimed the memory of a silent process");
            return Outcome::Released;
        }
        Ok(Reply::Alive { renewed_ms_ago }) => return Outcome::Alive(renewed_ms_ago),
        // The home has no such process: it ended normally, or the home restarted and its
        // owners may still hold pages; releasing them there again is harmless.
        Err(ProtoError::Remote { status: Status::UnknownProcess, .. }) => Outcome::Unknown,
        Ok(other) => Outcome::Later(format!("the home {} answered {other:?}", who.home)),
        Err(e) => Outcome::Later(format!("the home: {e}")),
    };
    if let Outcome::Later(why) = &outcome {
        let down = registry.lock_unpoisoned().is_down(Role::Memory, &who.home);
        if !down {
            return Outcome::Later(why.clone());
        }
    }
    for server in who.mem_servers.iter().filter(|s| **s != who.home) {
        match call(server, hello, who.mem_proc, &Request::Owner(OwnerCall::Release)) {
            Ok(Reply::Owner(Ok(_))) => {}
            other => {
                tracing::warn!(%server, pid = who.pid, vpid = who.vpid, "releasing a silent process: {other:?}")
            }
        }
    }
    match outcome {
        Outcome::Unknown => {
            tracing::info!(pcomp = %who.pcomp, pid = who.pid, vpid = who.vpid, home = %who.home, "a silent process unknown to its home: released at its other mem-servers, in case");
            Outcome::Unknown
        }
        _ => {
            tracing::info!(pcomp = %who.pcomp, pid = who.pid, vpid = who.vpid, home = %who.home, "reclaimed a silent process at its mem-servers (its home is down)");
            Outcome::Released
        }
    }
}
