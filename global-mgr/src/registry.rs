//! The registry: the components, who they are (persisted, so a restart of the global manager
//! keeps it) and how they are doing (in memory: last heartbeat and load); the vNodes
//! (persisted); and the running processes' last reports (in memory: a process lives no longer
//! than the manager's view of it matters).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use std::net::Ipv4Addr;

use lego_proto::global::{ComponentInfo, Load, Placement, ProcessIdentity, ProcessReport, Role, VnodeInfo, VnodeSettings, PROCESS_REPORT_INTERVAL};

use crate::{placement, vnode_record};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// id -> bincode of [`Known`].
const COMPONENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("components");
/// vNode name -> a versioned vNode record ([`vnode_record`]).
const VNODES: TableDefinition<&str, &[u8]> = TableDefinition::new("vnodes");
/// Counters that only grow ("vnode_id": the last vNode id given out).
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// Heartbeats a component may miss before it counts as down.
pub const MISSED_HEARTBEATS: u32 = 3;

/// Why the registry could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store failed.
    #[error("registry store: {0}")]
    Store(#[from] redb::Error),
    /// A stored record could not be read back.
    #[error("registry store: record {0} is unreadable")]
    Corrupt(String),
    /// A vNode request that cannot be granted.
    #[error("{0}")]
    Vnode(String),
}

/// What the registry persists of a component.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Known {
    role: Role,
    addr: String,
    cores: u32,
    fronts: Option<String>,
}

struct Component {
    known: Known,
    last_seen: Instant,
    load: Load,
    /// Requests, bytes in and bytes out per second between the last two heartbeats.
    rates: [f64; 3],
}

/// The registry.
pub struct Registry {
    db: Database,
    components: BTreeMap<u64, Component>,
    vnodes: BTreeMap<String, VnodeInfo>,
    /// (vNode, storage server, quota) told to that storage server since the registry opened
    /// (see [`Registry::unmounted`]).
    mounted: BTreeSet<(String, String, Option<u64>)>,
    /// (pComponent, pid) -> last report and when it came.
    /// By pComponent, VMM host pid and process id in the vNode.
    processes: BTreeMap<(String, u32, i32), (ProcessReport, Instant)>,
    interval: Duration,
    /// Heartbeats received since the registry was opened.
    heartbeats: u64,
    /// Registrations since the registry was opened.
    registrations: u64,
    /// Processes placed on a pComponent (its id) that its process reports do not show yet, and
    /// when: the GPM counts them as threads it runs, whatever its heartbeats said meanwhile.
    placed: Vec<(u64, Instant)>,
    /// When a process was last placed on each pComponent (its id).
    placed_at: BTreeMap<u64, Instant>,
}

fn store_err<E: Into<redb::Error>>(e: E) -> RegistryError {
    RegistryError::Store(e.into())
}

impl Registry {
    /// Opens (or creates) the registry in `dir`; components are down after missing
    /// [`MISSED_HEARTBEATS`] heartbeats of `interval`. Components known from before count as
    /// just seen, so they are down only if they stay silent.
    pub fn open(dir: &Path, interval: Duration) -> Result<Registry, RegistryError> {
        std::fs::create_dir_all(dir).map_err(|e| store_err(redb::Error::Io(e)))?;
        let db = Database::create(dir.join("registry.redb")).map_err(store_err)?;
        let txn = db.begin_write().map_err(store_err)?;
        txn.open_table(COMPONENTS).map_err(store_err)?;
        txn.open_table(VNODES).map_err(store_err)?;
        txn.open_table(COUNTERS).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        let (mut components, mut vnodes) = (BTreeMap::new(), BTreeMap::new());
        let mut older = Vec::new();
        {
            let txn = db.begin_read().map_err(store_err)?;
            let table = txn.open_table(COMPONENTS).map_err(store_err)?;
            for item in table.iter().map_err(store_err)? {
                let (id, v) = item.map_err(store_err)?;
                let known: Known =
                    lego_proto::codec::decode(v.value()).map_err(|_| RegistryError::Corrupt(format!("component {}", id.value())))?;
                components.insert(id.value(), Component { known, last_seen: Instant::now(), load: Load::default(), rates: [0.0; 3] });
            }
            let table = txn.open_table(VNODES).map_err(store_err)?;
            for item in table.iter().map_err(store_err)? {
                let (name, v) = item.map_err(store_err)?;
                let (info, version) = vnode_record::decode(v.value())
                    .map_err(|e| RegistryError::Corrupt(format!("vNode {}: {e}", name.value())))?;
                if version < vnode_record::CURRENT {
                    older.push(info.clone());
                }
                vnodes.insert(name.value().to_string(), info);
            }
        }
        if !older.is_empty() {
            // Rewritten in the current version at once, so the table holds one version only.
            tracing::info!(count = older.len(), version = vnode_record::CURRENT, "migrating vNode records");
            let txn = db.begin_write().map_err(store_err)?;
            {
                let mut table = txn.open_table(VNODES).map_err(store_err)?;
                for info in &older {
                    table.insert(info.name.as_str(), vnode_record::encode(info).as_slice()).map_err(store_err)?;
                }
            }
            txn.commit().map_err(store_err)?;
        }
        Ok(Registry {
            db,
            components,
            vnodes,
            mounted: BTreeSet::new(),
            processes: BTreeMap::new(),
            interval,
            heartbeats: 0,
            registrations: 0,
            placed: Vec::new(),
            placed_at: BTreeMap::new(),
        })
    }

    /// Registers a component, or finds it again by role and address; returns its id.
    pub fn register(&mut self, role: Role, addr: &str, cores: u32, fronts: Option<String>, load: Load) -> Result<u64, RegistryError> {
        let known = Known { role, addr: addr.to_string(), cores, fronts };
        let id = match self.components.iter().find(|(_, c)| c.known.role == role && c.known.addr == addr) {
            Some((&id, _)) => id,
            None => self.components.keys().next_back().map_or(1, |last| last + 1),
        };
        if self.components.get(&id).map(|c| &c.known) != Some(&known) {
            let txn = self.db.begin_write().map_err(store_err)?;
            txn.open_table(COMPONENTS).map_err(store_err)?.insert(id, lego_proto::codec::encode(&known).as_slice()).map_err(store_err)?;
            txn.commit().map_err(store_err)?;
        }
        self.components.insert(id, Component { known, last_seen: Instant::now(), load, rates: [0.0; 3] });
        self.registrations += 1;
        Ok(id)
    }

    /// Records a heartbeat; `false` if the id is unknown.
    pub fn heartbeat(&mut self, id: u64, load: Load) -> bool {
        self.heartbeats += 1;
        let Some(c) = self.components.get_mut(&id) else { return false };
        let elapsed = c.last_seen.elapsed().as_secs_f64();
        let counts = |l: &Load| [l.requests, l.bytes_in, l.bytes_out];
        for ((rate, now), before) in c.rates.iter_mut().zip(counts(&load)).zip(counts(&c.load)) {
            // A restarted component counts from zero again: no rate until its next heartbeat.
            if elapsed > 0.0 && now >= before {
                *rate = (now - before) as f64 / elapsed;
            }
        }
        c.last_seen = Instant::now();
        c.load = load;
        true
    }

    /// Creates a vNode with a new id and the given or the first free virtual IP.
    pub fn create_vnode(
        &mut self,
        name: &str,
        vip: Option<[u8; 4]>,
        mem_bytes: u64,
        excache_bytes: u64,
        settings: VnodeSettings,
    ) -> Result<VnodeInfo, RegistryError> {
        let refuse = |m: String| Err(RegistryError::Vnode(m));
        if lego_proto::storage::check_vnode(name).is_err() {
            return refuse(format!("vNode name {name:?} must be 1-64 bytes of [A-Za-z0-9._-]"));
        }
        if !(1..=2).contains(&settings.replicas) {
            return refuse(format!("replicas must be 1 or 2, not {}", settings.replicas));
        }
        if settings.disk_quota == Some(0) {
            return refuse("a disk quota of 0 bytes leaves no room for any file".into());
        }
        let mut host_ports = BTreeSet::new();
        for p in &settings.publish {
            if p.host_port == 0 || p.vport == 0 {
                return refuse(format!("published port {p}: ports are 1-65535"));
            }
            if !host_ports.insert(p.host_port) {
                return refuse(format!("host port {} is published twice", p.host_port));
            }
        }
        if self.vnodes.contains_key(name) {
            return refuse(format!("vNode {name} exists"));
        }
        let taken = |ip: [u8; 4]| self.vnodes.values().any(|v| v.vip == ip);
        let vip = match vip {
            Some(ip) if taken(ip) => return refuse(format!("virtual IP {} is taken", Ipv4Addr::from(ip))),
            Some(ip) => ip,
            None => match (1..=0xfffeu32).map(|n| [10, 77, (n >> 8) as u8, n as u8]).find(|&ip| ip[3] != 0 && ip[3] != 255 && !taken(ip)) {
                Some(ip) => ip,
                None => return refuse("no free virtual IP left in 10.77.0.0/16".into()),
            },
        };
        let storage = placement::storage(&self.list());
        let txn = self.db.begin_write().map_err(store_err)?;
        let id = {
            let mut counters = txn.open_table(COUNTERS).map_err(store_err)?;
            let id = counters.get("vnode_id").map_err(store_err)?.map_or(0, |v| v.value()) + 1;
            counters.insert("vnode_id", id).map_err(store_err)?;
            id
        };
        let info = VnodeInfo { id, name: name.to_string(), vip, storage, mem_bytes, excache_bytes, settings };
        txn.open_table(VNODES).map_err(store_err)?.insert(name, vnode_record::encode(&info).as_slice()).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        self.vnodes.insert(name.to_string(), info.clone());
        Ok(info)
    }

    fn save_vnode(&mut self, info: VnodeInfo) -> Result<(), RegistryError> {
        let txn = self.db.begin_write().map_err(store_err)?;
        txn.open_table(VNODES).map_err(store_err)?.insert(info.name.as_str(), vnode_record::encode(&info).as_slice()).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        self.vnodes.insert(info.name.clone(), info);
        Ok(())
    }

    /// Where a new process of `vnode` runs its memory and files. A vNode created while no
    /// storage server was up gets its storage server now, once and for good.
    pub fn place(&mut self, vnode: &str) -> Result<Placement, RegistryError> {
        let mut info = self.vnodes.get(vnode).cloned().ok_or_else(|| RegistryError::Vnode(format!("no vNode {vnode}")))?;
        let components = self.list();
        if info.storage.is_none() {
            if let Some(storage) = placement::storage(&components) {
                info.storage = Some(storage);
                self.save_vnode(info.clone())?;
            }
        }
        let cache = info.storage.as_deref().and_then(|s| placement::cache(&components, s, vnode));
        Ok(Placement { mem_servers: placement::mem_servers(&components), cache, vnode: info })
    }

    /// Whether the GSM must tell `v`'s storage server about it (its mount and quota) before
    /// a process uses its files: not yet told since the registry opened. Telling again after a
    /// restart of either side is harmless (the storage server keeps its mounts in its index).
    pub fn unmounted(&self, v: &VnodeInfo) -> bool {
        v.storage.as_ref().is_some_and(|s| !self.mounted.contains(&(v.name.clone(), s.clone(), v.settings.disk_quota)))
    }

    /// Records that `v`'s storage server was told about it.
    pub fn mounted(&mut self, v: &VnodeInfo) {
        if let Some(s) = &v.storage {
            self.mounted.insert((v.name.clone(), s.clone(), v.settings.disk_quota));
        }
    }

    /// GPM: the pComponent for a new process, the one that is up with the fewest threads (of
    /// equally loaded ones, the one placed on least recently). A
    /// process placed counts as one more thread there until the pComponent reports it (or, if
    /// it never does, for [`Registry::process_silence`]), and a process it reported as at
    /// least one thread: a heartbeat sent before its VMM started would otherwise hide it, and
    /// processes started in quick succession would pile up on one pComponent.
    pub fn choose_pcomp(&mut self) -> Option<String> {
        let grace = self.process_silence();
        self.placed.retain(|(_, at)| at.elapsed() < grace);
        let mut list = self.list();
        for c in &mut list {
            let placed = self.placed.iter().filter(|(id, _)| *id == c.id).count() as u64;
            let reported = self.processes.keys().filter(|(pcomp, ..)| *pcomp == c.addr).count() as u64;
            c.load.threads = c.load.threads.max(reported) + placed;
        }
        let id = placement::pcomp(&list, |id| self.placed_at.get(&id).copied())?;
        // The field is only computed when the event is enabled.
        tracing::debug!(loads = ?list.iter().filter(|c| c.role == Role::Processor).map(|c| (&c.addr, c.load.threads)).collect::<Vec<_>>(), chosen = id, "GPM placement");
        self.placed.push((id, Instant::now()));
        self.placed_at.insert(id, Instant::now());
        self.components.get(&id).map(|c| c.known.addr.clone())
    }

    /// GMM: the owner of a new vRegion among the mem-servers `among` (addresses), if one is up
    /// with a vRegion free. Its vRegion count goes up by one until its next heartbeat, so the
    /// vRegions of one burst of allocations spread.
    pub fn choose_owner(&mut self, among: &[String], vregion_size: u64) -> Option<String> {
        let id = placement::vregion_owner(&self.list(), among, vregion_size)?;
        let c = self.components.get_mut(&id)?;
        c.load.vregions += 1;
        Some(c.known.addr.clone())
    }

    /// Records a process's report; its last one (`exited`) removes it.
    /// A pComponent's first report of a process settles one placement made there.
    pub fn report_process(&mut self, report: ProcessReport) {
        let key = (report.who.pcomp.clone(), report.who.pid, report.who.vpid);
        if report.exited {
            self.processes.remove(&key);
            return;
        }
        if !self.processes.contains_key(&key) {
            let on = self.components.iter().find(|(_, c)| c.known.addr == report.who.pcomp).map(|(&id, _)| id);
            if let Some(i) = on.and_then(|id| self.placed.iter().position(|(p, _)| *p == id)) {
                self.placed.remove(i);
            }
        }
        self.processes.insert(key, (report, Instant::now()));
    }

    /// How long a process may stay silent before it counts as ended: [`MISSED_HEARTBEATS`]
    /// intervals of heartbeats or of process reports, whichever is longer.
    pub fn process_silence(&self) -> Duration {
        self.interval.max(PROCESS_REPORT_INTERVAL) * MISSED_HEARTBEATS
    }

    /// The processes that reported within [`Registry::process_silence`]; the others (their VMM
    /// was killed, or its host is gone) are not listed, and [`Registry::take_silent`] hands them
    /// to the reclaimer.
    pub fn processes(&self) -> Vec<ProcessReport> {
        let limit = self.process_silence();
        self.processes.values().filter(|(_, seen)| seen.elapsed() <= limit).map(|(r, _)| r.clone()).collect()
    }

    /// Forgets the processes silent for longer than [`Registry::process_silence`] without a
    /// last report, and returns who they were: their memory is to be reclaimed.
    pub fn take_silent(&mut self) -> Vec<ProcessIdentity> {
        let limit = self.process_silence();
        let mut silent = Vec::new();
        self.processes.retain(|_, (r, seen)| {
            let keep = seen.elapsed() <= limit;
            if !keep {
                silent.push(r.who.clone());
            }
            keep
        });
        silent
    }

    /// Whether the process `who` names reports (again).
    pub fn reporting(&self, who: &ProcessIdentity) -> bool {
        self.processes.contains_key(&(who.pcomp.clone(), who.pid, who.vpid))
    }

    /// Whether the component of `role` at `addr` is registered and has missed
    /// [`MISSED_HEARTBEATS`] heartbeats.
    pub fn is_down(&self, role: Role, addr: &str) -> bool {
        let limit = self.interval * MISSED_HEARTBEATS;
        self.components.values().any(|c| c.known.role == role && c.known.addr == addr && c.last_seen.elapsed() > limit)
    }

    /// Removes a vNode.
    pub fn remove_vnode(&mut self, name: &str) -> Result<(), RegistryError> {
        if !self.vnodes.contains_key(name) {
            return Err(RegistryError::Vnode(format!("no vNode {name}")));
        }
        let txn = self.db.begin_write().map_err(store_err)?;
        txn.open_table(VNODES).map_err(store_err)?.remove(name).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        self.vnodes.remove(name);
        self.mounted.retain(|(v, _, _)| v != name);
        Ok(())
    }

    /// Every vNode, in id order.
    pub fn vnodes(&self) -> Vec<VnodeInfo> {
        let mut v: Vec<VnodeInfo> = self.vnodes.values().cloned().collect();
        v.sort_by_key(|v| v.id);
        v
    }

    /// Heartbeats and registrations received since the registry was opened.
    pub fn received(&self) -> (u64, u64) {
        (self.heartbeats, self.registrations)
    }

    /// Every component, in id order.
    pub fn list(&self) -> Vec<ComponentInfo> {
        let limit = self.interval * MISSED_HEARTBEATS;
        self.components
            .iter()
            .map(|(&id, c)| ComponentInfo {
                id,
                role: c.known.role,
                addr: c.known.addr.clone(),
                cores: c.known.cores,
                fronts: c.known.fronts.clone(),
                up: c.last_seen.elapsed() <= limit,
                last_seen_ms: c.last_seen.elapsed().as_millis() as u64,
                load: c.load,
                requests_per_s: c.rates[0],
                bytes_in_per_s: c.rates[1],
                bytes_out_per_s: c.rates[2],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lego_proto::global::{ProcessFigures, ProcessIdentity};

    #[test]
    fn ids_are_stable_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path(), Duration::from_millis(20)).unwrap();
        let a = r.register(Role::Memory, "10.0.0.1:7070", 2, None, Load::default()).unwrap();
        let b = r.register(Role::Storage, "10.0.0.2:7080", 2, None, Load::default()).unwrap();
        assert_ne!(a, b);
        assert_eq!(r.register(Role::Memory, "10.0.0.1:7070", 4, None, Load::default()).unwrap(), a, "same role and address");
        drop(r);
        let mut r = Registry::open(dir.path(), Duration::from_millis(20)).unwrap();
        let list = r.list();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].id, list[0].cores, list[0].addr.as_str()), (a, 4, "10.0.0.1:7070"));
        assert!(r.heartbeat(b, Load { requests: 10, ..Load::default() }));
        assert!(!r.heartbeat(99, Load::default()));
    }

    #[test]
    fn vnodes_get_unique_ids_and_vips_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path(), Duration::from_secs(1)).unwrap();
        let a = r.create_vnode("a", None, 1 << 30, 1 << 26, VnodeSettings::default()).unwrap();
        let b = r.create_vnode("b", Some([10, 0, 0, 9]), 1 << 30, 1 << 26, VnodeSettings::default()).unwrap();
        assert_eq!(a.vip, [10, 77, 0, 1]);
        assert!(r.create_vnode("a", None, 1, 1, VnodeSettings::default()).is_err(), "duplicate name");
        assert!(r.create_vnode("c", Some([10, 0, 0, 9]), 1, 1, VnodeSettings::default()).is_err(), "duplicate VIP");
        assert!(r.create_vnode("../x", None, 1, 1, VnodeSettings::default()).is_err(), "bad name");
        r.remove_vnode("a").unwrap();
        assert!(r.remove_vnode("a").is_err());
        drop(r);
        let mut r = Registry::open(dir.path(), Duration::from_secs(1)).unwrap();
        assert_eq!(r.vnodes(), vec![b.clone()]);
        let c = r.create_vnode("c", None, 1, 1, VnodeSettings::default()).unwrap();
        assert!(c.id > b.id, "ids are never reused");
        assert_eq!(c.vip, [10, 77, 0, 1], "a removed vNode's VIP is free again");
    }

    #[test]
    fn settings_are_checked_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path(), Duration::from_secs(1)).unwrap();
        let port = |host_port, vport| lego_proto::global::PublishedPort { host_port, vport };
        let bad = [
            VnodeSettings { replicas: 3, ..VnodeSettings::default() },
            VnodeSettings { disk_quota: Some(0), ..VnodeSettings::default() },
            VnodeSettings { publish: vec![port(8080, 80), port(8080, 81)], ..VnodeSettings::default() },
            VnodeSettings { publish: vec![port(0, 80)], ..VnodeSettings::default() },
        ];
        for s in bad {
            assert!(r.create_vnode("x", None, 1, 1, s.clone()).is_err(), "{s:?}");
        }
        let s = VnodeSettings { disk_quota: Some(1 << 20), replicas: 2, publish: vec![port(8080, 80)], egress: true };
        let v = r.create_vnode("x", None, 1, 1, s.clone()).unwrap();
        drop(r);
        let r = Registry::open(dir.path(), Duration::from_secs(1)).unwrap();
        assert_eq!(r.vnodes(), vec![v.clone()]);
        assert_eq!(r.vnodes()[0].settings, s);
        assert!(!r.unmounted(&v), "no storage server yet: nothing to tell");
    }

    /// A registry written by the builds before vNode settings (a version 1 record) opens, the
    /// vNode keeps everything it had and gets the default settings, and its record is rewritten
    /// in the current version.
    #[test]
    fn a_version_1_vnode_record_loads_and_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join("registry.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(VNODES).unwrap().insert("demo", vnode_record::tests::v1_bytes().as_slice()).unwrap();
            txn.open_table(COUNTERS).unwrap().insert("vnode_id", 3).unwrap();
            txn.commit().unwrap();
        }
        let mut r = Registry::open(dir.path(), Duration::from_secs(1)).unwrap();
        let v = r.vnodes().remove(0);
        assert_eq!((v.id, v.name.as_str(), v.vip, v.storage.as_deref()), (3, "demo", [10, 77, 0, 3], Some("127.0.0.1:7080")));
        assert_eq!((v.mem_bytes, v.excache_bytes, &v.settings), (1 << 30, 1 << 26, &VnodeSettings::default()));
        assert!(r.unmounted(&v), "its storage server is told once the manager runs");
        r.mounted(&v);
        assert!(!r.unmounted(&v));
        let next = r.create_vnode("next", None, 1, 1, VnodeSettings::default()).unwrap();
        assert_eq!((next.id, next.vip), (4, [10, 77, 0, 1]));
        drop(r);
        let db = Database::create(dir.path().join("registry.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let stored = txn.open_table(VNODES).unwrap().get("demo").unwrap().unwrap().value().to_vec();
        assert_eq!(vnode_record::decode(&stored).unwrap(), (v, vnode_record::CURRENT), "rewritten in the current version");
    }

    fn report(pcomp: &str, pid: u32, exited: bool) -> ProcessReport {
        let who = ProcessIdentity { pcomp: pcomp.into(), pid, ..ProcessIdentity::default() };
        ProcessReport { who, cache: ProcessFigures::default(), exited }
    }

    #[test]
    fn processes_are_listed_until_they_exit_or_fall_silent() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path(), Duration::from_millis(20)).unwrap();
        r.report_process(report("p:1", 10, false));
        r.report_process(report("p:1", 11, false));
        r.report_process(report("p:2", 10, false));
        r.report_process(report("p:1", 11, true));
        let child = ProcessReport { who: ProcessIdentity { vpid: 2, ..report("p:2", 10, false).who }, ..report("p:2", 10, false) };
        r.report_process(child);
        let pids: Vec<_> = r.processes().iter().map(|p| (p.who.pcomp.clone(), p.who.pid, p.who.vpid)).collect();
        assert_eq!(pids, [("p:1".to_string(), 10, 0), ("p:2".to_string(), 10, 0), ("p:2".to_string(), 10, 2)], "a run's processes apart");
        r.processes.get_mut(&("p:1".to_string(), 10, 0)).unwrap().1 -= PROCESS_REPORT_INTERVAL * (MISSED_HEARTBEATS + 1);
        assert_eq!(r.processes().len(), 2, "the silent one is not listed");
        let silent = r.take_silent();
        assert_eq!(silent.iter().map(|w| (w.pcomp.as_str(), w.pid)).collect::<Vec<_>>(), [("p:1", 10)], "and handed over once");
        assert!(!r.reporting(&silent[0]) && r.take_silent().is_empty());
        assert_eq!(r.processes().len(), 2);
    }

    #[test]
    fn the_gmm_spreads_a_burst_of_vregions() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path(), Duration::from_secs(1)).unwrap();
        let load = Load { capacity_bytes: 2 << 30, ..Load::default() };
        r.register(Role::Memory, "a:1", 2, None, load).unwrap();
        r.register(Role::Memory, "b:1", 2, None, load).unwrap();
        let among = ["a:1".to_string(), "b:1".to_string()];
        let picks: Vec<_> = (0..5).map(|_| r.choose_owner(&among, 1 << 30)).collect();
        let s = |a: &str| Some(a.to_string());
        assert_eq!(picks, [s("a:1"), s("b:1"), s("a:1"), s("b:1"), None], "two 1 GiB slots each");
    }

    #[test]
    fn the_gpm_spreads_quick_successive_processes() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path(), Duration::from_secs(1)).unwrap();
        assert_eq!(r.choose_pcomp(), None, "no pComponent");
        r.register(Role::Processor, "a:1", 2, None, Load::default()).unwrap();
        let b = r.register(Role::Processor, "b:1", 2, None, Load::default()).unwrap();
        let picks: Vec<_> = (0..4).map(|_| r.choose_pcomp().unwrap()).collect();
        assert_eq!(picks, ["a:1", "b:1", "a:1", "b:1"]);
        // A heartbeat sent before b's VMMs started does not hide the two placed there.
        r.heartbeat(b, Load::default());
        assert_eq!(r.choose_pcomp().as_deref(), Some("a:1"));
        // Once b reports them they count as reported, even before a heartbeat of b counts
        // their threads: 2 on b against 3 placements on a.
        r.report_process(report("b:1", 10, false));
        r.report_process(report("b:1", 11, false));
        assert_eq!(r.choose_pcomp().as_deref(), Some("b:1"));
        r.heartbeat(b, Load { threads: 3, ..Load::default() });
        assert_eq!(r.choose_pcomp().as_deref(), Some("a:1"), "b: 3 threads and one placement, a: 3 placements");
    }

    /// A short process that ended before it ever reported (its placement still counts) must
    /// not make the next two processes, started together, pile up on one pComponent: equal
    /// loads take turns.
    #[test]
    fn equally_loaded_pcomps_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path(), Duration::from_secs(1)).unwrap();
        r.register(Role::Processor, "a:1", 2, None, Load::default()).unwrap();
        r.register(Role::Processor, "b:1", 2, None, Load::default()).unwrap();
        assert_eq!(r.choose_pcomp().as_deref(), Some("a:1"));
        assert_eq!(r.choose_pcomp().as_deref(), Some("b:1"), "b's process never reports");
        r.report_process(report("a:1", 10, false));
        r.report_process(report("a:1", 10, true));
        assert_eq!(r.choose_pcomp().as_deref(), Some("a:1"));
        assert_eq!(r.choose_pcomp().as_deref(), Some("b:1"), "one each: b was placed on before a");
    }

    /// The race tests/cluster.rs met under load: a's first process reports (settling its
    /// placement) before a's heartbeats count its threads; the next process still goes to b.
    #[test]
    fn a_reported_process_counts_before_its_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path(), Duration::from_secs(1)).unwrap();
        r.register(Role::Processor, "a:1", 2, None, Load::default()).unwrap();
        r.register(Role::Processor, "b:1", 2, None, Load::default()).unwrap();
        assert_eq!(r.choose_pcomp().as_deref(), Some("a:1"));
        r.report_process(report("a:1", 10, false));
        assert_eq!(r.choose_pcomp().as_deref(), Some("b:1"));
    }

    #[test]
    fn rates_come_from_the_last_two_heartbeats() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path(), Duration::from_secs(1)).unwrap();
        let a = r.register(Role::Memory, "a:1", 1, None, Load::default()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        r.heartbeat(a, Load { requests: 100, bytes_in: 4096 * 100, bytes_out: 4096 * 50, ..Load::default() });
        let c = r.list().remove(0);
        assert!((c.requests_per_s - 1000.0).abs() < 300.0, "100 requests in about 0.1 s: {c:?}");
        assert!(c.bytes_in_per_s > 1.5 * c.bytes_out_per_s && c.bytes_out_per_s > 0.0, "{c:?}");
        // A restarted component counts from zero: the rates wait for its next heartbeat.
        r.heartbeat(a, Load::default());
        assert!(r.list()[0].requests_per_s > 0.0);
    }

    #[test]
    fn silent_components_go_down_after_three_intervals() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path(), Duration::from_millis(20)).unwrap();
        let a = r.register(Role::Memory, "a:1", 1, None, Load::default()).unwrap();
        let b = r.register(Role::Memory, "b:1", 1, None, Load::default()).unwrap();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(20));
            r.heartbeat(a, Load::default());
        }
        let list = r.list();
        assert!(list.iter().find(|c| c.id == a).unwrap().up);
        assert!(!list.iter().find(|c| c.id == b).unwrap().up);
    }
}
