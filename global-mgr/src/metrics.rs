//! The global manager's Prometheus metrics, read from the registry at each scrape.

use lego_proto::sync::LockExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use lego_proto::global::Role;
use lego_proto::metrics::{counter, gauge, gauges, Collector, DescriptorEncoder};

use crate::reclaim::Figures;
use crate::registry::Registry;

/// The collector of the manager's metrics.
pub(crate) struct Metrics(Arc<Mutex<Registry>>, Arc<Figures>);

impl Metrics {
    pub(crate) fn new(registry: Arc<Mutex<Registry>>, reclaimed: Arc<Figures>) -> Metrics {
        Metrics(registry, reclaimed)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("global-mgr metrics")
    }
}

impl Collector for Metrics {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut e;
        let (components, vnodes, (heartbeats, registrations)) = {
            let reg = self.0.lock_unpoisoned();
            (reg.list(), reg.vnodes().len(), reg.received())
        };
        // Every role and state, zeros included, so that each series exists from the start.
        let roles = [Role::Processor, Role::Memory, Role::Storage];
        let names = roles.map(|r| r.to_string());
        let (mut labels, mut counts) = (Vec::new(), Vec::new());
        for (role, name) in roles.iter().zip(&names) {
            for (state, up) in [("up", true), ("down", false)] {
                labels.push([("role", name.as_str()), ("state", state)]);
                counts.push(components.iter().filter(|c| c.role == *role && c.up == up).count() as u64);
            }
        }
        let samples: Vec<_> = labels.iter().zip(counts).map(|(l, n)| (&l[..], n)).collect();
        gauges(e, "lego_global_components", "Registered components, by role and state (down: three heartbeats missed).", &samples)?;
        gauge(e, "lego_global_vnodes", "vNodes.", vnodes as u64)?;
        counter(e, "lego_global_heartbeats", "Heartbeats received since start.", heartbeats)?;
        counter(e, "lego_global_registrations", "Component registrations since start (a restarted component registers again).", registrations)?;
        let reclaimed = self.1.reclaimed.load(Ordering::Relaxed);
        counter(e, "lego_global_reclaimed_processes", "Silent processes whose memory was released at their mem-servers.", reclaimed)?;
        let alive = self.1.refused_alive.load(Ordering::Relaxed);
        counter(e, "lego_global_reclaims_refused", "Reclamations a home refused because the process had renewed its lease.", alive)
    }
}
