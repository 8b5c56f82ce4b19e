//! The registry of components: who they are (persisted, so a restart of the global manager
//! keeps it) and how they are doing (in memory: last heartbeat and load).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use lego_proto::global::{ComponentInfo, Load, Role};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// id -> bincode of [`Known`].
const COMPONENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("components");

/// Heartbeats a component may miss before it counts as down.
pub const MISSED_HEARTBEATS: u32 = 3;

/// Why the registry could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store failed.
    #[error("registry store: {0}")]
    Store(#[from] redb::Error),
    /// A stored record could not be read back.
    #[error("registry store: component {0} is unreadable")]
    Corrupt(u64),
}

/// What the registry persists of a component.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Known {
    role: Role,
    addr: String,
    cores: u32,
}

struct Component {
    known: Known,
    last_seen: Instant,
    load: Load,
    /// Requests per second between the last two heartbeats.
    rate: f64,
}

/// The registry.
pub struct Registry {
    db: Database,
    components: BTreeMap<u64, Component>,
    interval: Duration,
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
        txn.commit().map_err(store_err)?;
        let mut components = BTreeMap::new();
        {
            let txn = db.begin_read().map_err(store_err)?;
            let table = txn.open_table(COMPONENTS).map_err(store_err)?;
            for item in table.iter().map_err(store_err)? {
                let (id, v) = item.map_err(store_err)?;
                let known: Known = lego_proto::mm::decode(v.value()).map_err(|_| RegistryError::Corrupt(id.value()))?;
                components.insert(id.value(), Component { known, last_seen: Instant::now(), load: Load::default(), rate: 0.0 });
            }
        }
        Ok(Registry { db, components, interval })
    }

    /// Registers a component, or finds it again by role and address; returns its id.
    pub fn register(&mut self, role: Role, addr: &str, cores: u32, load: Load) -> Result<u64, RegistryError> {
        let known = Known { role, addr: addr.to_string(), cores };
        let id = match self.components.iter().find(|(_, c)| c.known.role == role && c.known.addr == addr) {
            Some((&id, _)) => id,
            None => self.components.keys().next_back().map_or(1, |last| last + 1),
        };
        if self.components.get(&id).map(|c| &c.known) != Some(&known) {
            let txn = self.db.begin_write().map_err(store_err)?;
            txn.open_table(COMPONENTS).map_err(store_err)?.insert(id, lego_proto::mm::encode(&known).as_slice()).map_err(store_err)?;
            txn.commit().map_err(store_err)?;
        }
        self.components.insert(id, Component { known, last_seen: Instant::now(), load, rate: 0.0 });
        Ok(id)
    }

    /// Records a heartbeat; `false` if the id is unknown.
    pub fn heartbeat(&mut self, id: u64, load: Load) -> bool {
        let Some(c) = self.components.get_mut(&id) else { return false };
        let elapsed = c.last_seen.elapsed().as_secs_f64();
        if elapsed > 0.0 && load.requests >= c.load.requests {
            c.rate = (load.requests - c.load.requests) as f64 / elapsed;
        }
        c.last_seen = Instant::now();
        c.load = load;
        true
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
                up: c.last_seen.elapsed() <= limit,
                last_seen_ms: c.last_seen.elapsed().as_millis() as u64,
                load: c.load,
                requests_per_s: c.rate,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path(), Duration::from_millis(20)).unwrap();
        let a = r.register(Role::Memory, "10.0.0.1:7070", 2, Load::default()).unwrap();
        let b = r.register(Role::Storage, "10.0.0.2:7080", 2, Load::default()).unwrap();
        assert_ne!(a, b);
        assert_eq!(r.register(Role::Memory, "10.0.0.1:7070", 4, Load::default()).unwrap(), a, "same role and address");
        drop(r);
        let mut r = Registry::open(dir.path(), Duration::from_millis(20)).unwrap();
        let list = r.list();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].id, list[0].cores, list[0].addr.as_str()), (a, 4, "10.0.0.1:7070"));
        assert!(r.heartbeat(b, Load { requests: 10, ..Load::default() }));
        assert!(!r.heartbeat(99, Load::default()));
    }

    #[test]
    fn silent_components_go_down_after_three_intervals() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(dir.path(), Duration::from_millis(20)).unwrap();
        let a = r.register(Role::Memory, "a:1", 1, Load::default()).unwrap();
        let b = r.register(Role::Memory, "b:1", 1, Load::default()).unwrap();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(20));
            r.heartbeat(a, Load::default());
        }
        let list = r.list();
        assert!(list.iter().find(|c| c.id == a).unwrap().up);
        assert!(!list.iter().find(|c| c.id == b).unwrap().up);
    }
}
