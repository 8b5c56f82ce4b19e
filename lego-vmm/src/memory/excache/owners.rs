//! Where each page lives: the cached vRegion array (owner of each vRegion, §4.4.1), connections
//! to the owners, and which pages have a copy at their owner at all. A page that was never
//! flushed has none, so its first touch is served locally with zeroes (a p-local line, §4.4.2).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use lego_proto::sync::{CondvarExt, LockExt};

use lego_proto::global::{CopyState, VRegionCopies};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::rdma::select::Chosen;
use lego_proto::transport::Transport;
use lego_proto::ProtoError;

const CHUNK_PAGES: u64 = 1 << 15;
const CHUNK_WORDS: usize = (CHUNK_PAGES / 64) as usize;

/// One bit per page: set once the page has been flushed to its owner.
#[derive(Default, Clone)]
pub struct RemotePages {
    chunks: HashMap<u64, Box<[u64; CHUNK_WORDS]>>,
}

impl RemotePages {
    fn at(page: u64) -> (u64, usize, u64) {
        let n = page >> 12;
        (n / CHUNK_PAGES, ((n % CHUNK_PAGES) / 64) as usize, 1u64 << (n % 64))
    }

    /// Whether `page` has a copy at its owner.
    pub fn contains(&self, page: u64) -> bool {
        let (c, w, b) = Self::at(page);
        self.chunks.get(&c).is_some_and(|words| words[w] & b != 0)
    }

    /// Records that `page` now has a copy at its owner.
    pub fn insert(&mut self, page: u64) {
        let (c, w, b) = Self::at(page);
        self.chunks.entry(c).or_insert_with(|| Box::new([0; CHUNK_WORDS]))[w] |= b;
    }

    fn set(&mut self, page: u64, on: bool) {
        if on {
            self.insert(page);
        } else {
            let (c, w, b) = Self::at(page);
            if let Some(words) = self.chunks.get_mut(&c) {
                words[w] &= !b;
            }
        }
    }

    /// Forgets `[start, end)` (its pages were freed at the owners).
    pub fn clear(&mut self, start: u64, end: u64) {
        let mut page = start;
        while page < end {
            let (c, w, _) = Self::at(page);
            // Whole absent chunks and whole zero words are skipped quickly.
            if !self.chunks.contains_key(&c) {
                page = ((page >> 12) / CHUNK_PAGES + 1) * CHUNK_PAGES * 4096;
                continue;
            }
            if page.is_multiple_of(64 * 4096) && page + 64 * 4096 <= end {
                self.chunks.get_mut(&c).expect("checked")[w] = 0;
                page += 64 * 4096;
            } else {
                self.set(page, false);
                page += 4096;
            }
        }
    }

    /// Moves the bits of `[from, from+len)` to `[to, to+len)` (the ranges do not overlap).
    pub fn relocate(&mut self, from: u64, to: u64, len: u64) {
        let moved: Vec<u64> = (0..len / 4096).filter(|i| self.contains(from + i * 4096)).collect();
        self.clear(from, from + len);
        self.clear(to, to + len);
        for i in moved {
            self.insert(to + i * 4096);
        }
    }
}

/// Opens the page-path connection to the server at an address: the seam between the ExCache
/// and the network, so the miss path can be tested against pages kept in memory.
pub type Connector = Arc<dyn Fn(&str) -> Result<Box<dyn Transport>, ProtoError> + Send + Sync>;

/// The home named, as owner of a vRegion, a mem-server that is not among the process's servers.
#[derive(Debug, thiserror::Error)]
#[error("the home named an unknown mem-server {owner} as owner of vRegion {vregion}")]
pub struct UnknownOwner {
    /// The name the home gave.
    pub owner: String,
    /// The vRegion's index.
    pub vregion: u64,
}

/// A mem-server failed and some vRegion it held has no other copy: the process's memory is lost.
#[derive(Debug, thiserror::Error)]
#[error("mem-server {server} failed and vRegion {vregion} has no other copy{}", match (earlier, suspended) {
    (Some(e), false) => format!(" (its other mem-server {e} failed before)"),
    (Some(e), true) => format!(" (replication to its other mem-server {e} was suspended before: its backup log was full)"),
    (None, _) => String::new(),
})]
pub struct NoCopyLeft {
    /// The server that failed now.
    pub server: String,
    /// A vRegion it held alone.
    pub vregion: u64,
    /// The server that held the vRegion's other copy, if it failed earlier.
    pub earlier: Option<String>,
    /// The earlier one did not fail: replication to it was suspended.
    pub suspended: bool,
}

/// The vRegion array as cached by the pComponent, and the page-path connections to each owner:
/// as many as misses were ever fetched from it at once (one per faulting vCPU at most), each
/// used by one thread at a time.
///
/// Why [`Owners::set`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// The home named a server the process does not know.
    #[error(transparent)]
    Unknown(#[from] UnknownOwner),
    /// The server the home found failed held the last copy of a vRegion.
    #[error(transparent)]
    NoCopyLeft(#[from] NoCopyLeft),
}

/// Raised each time a replicated process loses a copy of a vRegion (a fail-over), so that the
/// lost copy is rebuilt soon ([`crate::memory::mm::Mm::repair`]) rather than at the process's
/// next memory call, which a program computing on the memory it has may never make.
#[derive(Default)]
pub struct CopyLost {
    /// (a copy was lost and not yet taken by [`CopyLost::wait`], no more losses will come).
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl CopyLost {
    fn raise(&self) {
        self.state.lock_unpoisoned().0 = true;
        self.changed.notify_all();
    }

    /// Says that no more losses will come (the process ended): a waiter returns `false`.
    pub fn close(&self) {
        self.state.lock_unpoisoned().1 = true;
        self.changed.notify_all();
    }

    /// A guard that calls [`CopyLost::close`] when dropped.
    pub fn closing(&self) -> Closing<'_> {
        Closing(self)
    }

    /// Waits for a loss not taken yet (`true`, and takes it) or for [`CopyLost::close`]
    /// (`false`).
    pub fn wait(&self) -> bool {
        let mut st = self.state.lock_unpoisoned();
        loop {
            match *st {
                (_, true) => return false,
                (true, false) => {
                    st.0 = false;
                    return true;
                }
                (false, false) => st = self.changed.wait_unpoisoned(st),
            }
        }
    }
}

/// Closes a [`CopyLost`] when dropped ([`CopyLost::closing`]).
pub struct Closing<'a>(&'a CopyLost);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Where the copies of each vRegion are and their state, published by [`Owners`] at each change
/// apart from the ExCache's lock, so that a report made while a rebuild holds the ExCache
/// shows the rebuild (`lego ps`).
#[derive(Default)]
pub struct CopyTable(Mutex<Vec<VRegionCopies>>);

impl CopyTable {
    /// The vRegions, by index.
    pub fn snapshot(&self) -> Vec<VRegionCopies> {
        self.0.lock_unpoisoned().clone()
    }
}

/// With replication (LegoOS §4.7) a vRegion also has a secondary, which every write-back
/// reaches too. A server found failed is *fenced*: never contacted again by this process, its
/// vRegions served by their secondaries, promoted ([`Owners::fail_over`]), and the home told
/// before its next request ([`Owners::take_unreported`]).
pub struct Owners {
    servers: Vec<String>,
    /// Idle connections, per owner.
    links: Vec<Vec<Box<dyn Transport>>>,
    by_vregion: HashMap<u64, usize>,
    secondaries: HashMap<u64, usize>,
    /// Servers found failed (fenced off).
    dead: Vec<bool>,
    /// Servers replication stopped to because their backup log was full.
    suspended: Vec<bool>,
    /// For a vRegion left with one copy by a failure: the server that failed.
    lost_copy: HashMap<u64, usize>,
    /// Copies lost that the home has not been told of: (vRegion, failed server).
    unreported: Vec<(u64, String)>,
    /// vRegions whose lost copy the home is rebuilding now.
    rebuilding: HashSet<u64>,
    /// The state of every vRegion's copies, for reports.
    table: Arc<CopyTable>,
    /// `table` is behind the owners the home named ([`Owners::set`]), until
    /// [`Owners::publish_if_stale`].
    stale: bool,
    /// Raised with each entry of `unreported`.
    copy_lost: Arc<CopyLost>,
    vregion_shift: u32,
    connect: Connector,
}

impl Owners {
    /// No vRegion owned yet; `servers` are the addresses owners are named by, reached through
    /// `connect`.
    pub fn new(servers: Vec<String>, vregion_size: u64, connect: Connector) -> Owners {
        let links = servers.iter().map(|_| Vec::new()).collect();
        let dead = vec![false; servers.len()];
        Owners {
            suspended: dead.clone(),
            servers,
            links,
            by_vregion: HashMap::new(),
            secondaries: HashMap::new(),
            dead,
            lost_copy: HashMap::new(),
            unreported: Vec::new(),
            rebuilding: HashSet::new(),
            table: Arc::default(),
            stale: false,
            copy_lost: Arc::default(),
            vregion_shift: vregion_size.trailing_zeros(),
            connect,
        }
    }

    /// Owners reached over TCP, as a pComponent of cluster `cluster`. The faulting thread polls
    /// for each reply before blocking ([`lego_proto::transport::TcpTransport::set_poll`]): it has nothing else to do.
    pub fn tcp(servers: Vec<String>, vregion_size: u64, cluster: u64, timeout: Duration) -> Owners {
        Owners::over(Chosen::Tcp, servers, vregion_size, cluster, timeout)
    }

    /// Owners reached over the `transport` chosen by `--transport` (see [`Chosen::connect`]).
    pub fn over(transport: Chosen, servers: Vec<String>, vregion_size: u64, cluster: u64, timeout: Duration) -> Owners {
        let hello = Hello::new(ComponentKind::Processor, cluster);
        let connect: Connector = Arc::new(move |addr: &str| transport.connect(addr, hello, timeout));
        Owners::new(servers, vregion_size, connect)
    }

    /// Records that `owner` owns vRegion `index`, with `secondary` as its second copy; unknown
    /// names are an error. The table of copies is published by [`Owners::publish_if_stale`]
    /// (once for all the owners of an answer: a fork's names every vRegion).
    ///
    /// A vRegion changes primary by a rebuild after a promotion, which makes the new copy the
    /// primary and the promoted server the secondary again (a role swap), or by a promotion
    /// the home made because it found the primary failed (during a memory call) before this
    /// process did. That server is failed over here too ([`Owners::fail_over`]), as if this
    /// process had found it failed, and the vRegion's lost copy is reported back, so that the
    /// home rebuilds it. Returns the failed server then, or the first vRegion left without a
    /// copy.
    pub fn set(&mut self, index: u64, owner: &str, secondary: Option<&str>) -> Result<Option<usize>, SetError> {
        let find = |name: &str| self.servers.iter().position(|s| s == name).ok_or_else(|| UnknownOwner { owner: name.to_string(), vregion: index });
        let i = find(owner)?;
        let s = secondary.map(find).transpose()?;
        let before = self.by_vregion.insert(index, i);
        match s {
            Some(s) => {
                self.rebuilding.remove(&index);
                self.secondaries.insert(index, s)
            }
            None => self.secondaries.remove(&index),
        };
        self.stale = true;
        match before {
            Some(old) if old != i && !self.dead[old] && s != Some(old) => {
                tracing::warn!(vregion = index, failed = %self.servers[old], promoted = owner, "the home promoted a secondary");
                self.lose_copy(index, old);
                self.fail_over(old)?;
                Ok(Some(old))
            }
            _ => Ok(None),
        }
    }

    /// The owner (server index) of the vRegion holding `page`.
    pub fn owner_of(&self, page: u64) -> Option<usize> {
        self.by_vregion.get(&(page >> self.vregion_shift)).copied()
    }

    /// The secondary (server index) of the vRegion holding `page`, if it has one.
    pub fn secondary_of(&self, page: u64) -> Option<usize> {
        self.secondaries.get(&(page >> self.vregion_shift)).copied()
    }

    /// The index of the server named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s == name)
    }

    /// Server `server` failed: it is fenced off (its idle connections closed, never used
    /// again); each vRegion it was the primary of is served by its secondary from now on, and
    /// each it was the secondary of keeps one copy. Returns how many vRegions changed primary,
    /// or the first vRegion left without any copy.
    pub fn fail_over(&mut self, server: usize) -> Result<usize, NoCopyLeft> {
        if !self.dead[server] {
            tracing::warn!(server = %self.servers[server], "mem-server failed: fenced off");
        }
        self.dead[server] = true;
        self.links[server].clear();
        let mut promoted = 0;
        let mut indexes: Vec<u64> = self.by_vregion.keys().copied().collect();
        indexes.sort_unstable();
        for index in indexes {
            if self.by_vregion[&index] == server {
                let Some(s) = self.secondaries.remove(&index) else {
                    let earlier = self.lost_copy.get(&index).copied();
                    return Err(NoCopyLeft {
                        server: self.servers[server].clone(),
                        vregion: index,
                        earlier: earlier.map(|e| self.servers[e].clone()),
                        suspended: earlier.is_some_and(|e| self.suspended[e]),
                    });
                };
                self.by_vregion.insert(index, s);
                promoted += 1;
            } else if self.secondaries.get(&index) == Some(&server) {
                self.secondaries.remove(&index);
            } else {
                continue;
            }
            self.lose_copy(index, server);
        }
        self.publish();
        Ok(promoted)
    }

    /// Replication to `server` stops because its backup log is full: every vRegion it is the
    /// secondary of keeps one copy (reported to the home, raising the repairer, as a lost copy
    /// is), and it stays the primary of those it serves. Returns whether it was suspended
    /// before.
    pub fn suspend(&mut self, server: usize) -> bool {
        let before = std::mem::replace(&mut self.suspended[server], true);
        let mut indexes: Vec<u64> = self.secondaries.iter().filter(|&(_, &s)| s == server).map(|(&i, _)| i).collect();
        indexes.sort_unstable();
        for index in indexes {
            self.secondaries.remove(&index);
            self.lose_copy(index, server);
        }
        self.publish();
        before
    }

    /// vRegion `index` lost its copy on `server`: the home is to be told, and the repairer is
    /// raised.
    fn lose_copy(&mut self, index: u64, server: usize) {
        self.lost_copy.insert(index, server);
        self.unreported.push((index, self.servers[server].clone()));
        self.copy_lost.raise();
    }

    /// Marks the lost copy of vRegion `index` as being rebuilt by the home (`on`) or no longer
    /// (the home found no server for it); a new secondary ends the rebuild by itself.
    pub fn rebuilding(&mut self, index: u64, on: bool) {
        if on {
            self.rebuilding.insert(index);
        } else {
            self.rebuilding.remove(&index);
        }
        self.publish();
    }

    /// The state of every vRegion's copies, updated at each change.
    pub fn copy_table(&self) -> Arc<CopyTable> {
        self.table.clone()
    }

    /// Publishes the table if owners were set since it was last published.
    pub fn publish_if_stale(&mut self) {
        if self.stale {
            self.publish();
        }
    }

    fn publish(&mut self) {
        self.stale = false;
        let mut list: Vec<VRegionCopies> = self
            .by_vregion
            .iter()
            .map(|(&index, &primary)| {
                let secondary = self.secondaries.get(&index).map(|&s| self.servers[s].clone());
                let state = match (&secondary, self.lost_copy.get(&index)) {
                    (Some(_), _) => CopyState::Replicated,
                    (None, None) => CopyState::Single,
                    (None, Some(_)) if self.rebuilding.contains(&index) => CopyState::Rebuilding,
                    (None, Some(&lost)) if self.suspended[lost] => CopyState::Suspended,
                    (None, Some(_)) => CopyState::Degraded,
                };
                VRegionCopies { index, primary: self.servers[primary].clone(), secondary, state }
            })
            .collect();
        list.sort_unstable_by_key(|v| v.index);
        *self.table.0.lock_unpoisoned() = list;
    }

    /// Whether any vRegion ever had a secondary (the process is replicated).
    pub fn replicated(&self) -> bool {
        !self.secondaries.is_empty() || !self.lost_copy.is_empty()
    }

    /// Whether server `server` was found failed.
    pub fn is_dead(&self, server: usize) -> bool {
        self.dead[server]
    }

    /// What is raised each time a copy is lost.
    pub fn copy_lost(&self) -> Arc<CopyLost> {
        self.copy_lost.clone()
    }

    /// The copies lost since the last call, (vRegion, failed server), for the home.
    pub fn take_unreported(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.unreported)
    }

    /// The first address past the vRegion holding `page`.
    pub fn vregion_end(&self, page: u64) -> u64 {
        ((page >> self.vregion_shift) + 1).checked_shl(self.vregion_shift).unwrap_or(u64::MAX)
    }

    /// Address of server `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.servers[i]
    }

    /// An idle page-path connection to server `i` (a new one if none is idle), for the caller
    /// alone until it gives it back with [`Owners::put_link`].
    pub fn take_link(&mut self, i: usize) -> Result<Box<dyn Transport>, ProtoError> {
        if self.dead[i] {
            return Err(ProtoError::Closed { peer: self.servers[i].clone() });
        }
        match self.links[i].pop() {
            Some(link) => Ok(link),
            None => (self.connect)(&self.servers[i]),
        }
    }

    /// Gives back a connection to server `i` taken with [`Owners::take_link`].
    pub fn put_link(&mut self, i: usize, link: Box<dyn Transport>) {
        if !self.dead[i] {
            self.links[i].push(link);
        }
    }

    /// Number of distinct owners in use.
    pub fn owners_in_use(&self) -> usize {
        let mut v: Vec<usize> = self.by_vregion.values().copied().collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_bits() {
        let mut r = RemotePages::default();
        for p in [0u64, 4096, 64 * 4096, (1 << 27) + 4096] {
            r.insert(p);
        }
        assert!(r.contains(4096) && !r.contains(8192));
        r.relocate(0, 1 << 30, 65 * 4096);
        assert!(!r.contains(0) && r.contains(1 << 30) && r.contains((1 << 30) + 64 * 4096));
        r.clear(0, 1 << 31);
        assert!(!r.contains(1 << 30) && !r.contains((1 << 27) + 4096));
    }

    /// Owners over servers a, b and c (never connected to) and 1 GiB vRegions.
    fn abc() -> Owners {
        let connect: Connector = Arc::new(|addr: &str| Err(ProtoError::Closed { peer: addr.to_string() }));
        Owners::new(vec!["a".into(), "b".into(), "c".into()], 1 << 30, connect)
    }

    #[test]
    fn each_lost_copy_is_raised_until_taken() {
        let mut o = abc();
        o.set(0, "a", Some("b")).unwrap();
        o.set(1, "c", Some("a")).unwrap();
        let lost = o.copy_lost();
        assert_eq!(o.fail_over(0).unwrap(), 1, "vRegion 0 is served by b now");
        assert_eq!((o.owner_of(0), o.secondary_of(1 << 30)), (Some(1), None));
        assert!(lost.wait(), "the losses were raised");
        assert_eq!(o.take_unreported(), vec![(0, "a".to_string()), (1, "a".to_string())]);
        let states: Vec<CopyState> = o.copy_table().snapshot().iter().map(|v| v.state).collect();
        assert_eq!(states, [CopyState::Degraded, CopyState::Degraded]);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _closing = lost.closing();
                std::thread::sleep(Duration::from_millis(20));
            });
            assert!(!lost.wait(), "taken already: the wait lasts until the close");
        });
        let gone = o.fail_over(1).unwrap_err();
        assert_eq!((gone.vregion, gone.earlier.as_deref()), (0, Some("a")), "b held the last copy of vRegion 0");
    }

    #[test]
    fn each_vregion_is_single_replicated_degraded_or_rebuilding() {
        let mut o = abc();
        let table = o.copy_table();
        let states = || table.snapshot().iter().map(|v| (v.index, v.primary.clone(), v.secondary.clone(), v.state)).collect::<Vec<_>>();
        o.set(2, "c", None).unwrap();
        o.set(0, "a", Some("b")).unwrap();
        o.set(1, "a", Some("c")).unwrap();
        assert!(table.snapshot().is_empty(), "not published yet");
        o.publish_if_stale();
        let (a, b, c) = (|| "a".to_string(), || "b".to_string(), || "c".to_string());
        assert_eq!(
            states(),
            [(0, a(), Some(b()), CopyState::Replicated), (1, a(), Some(c()), CopyState::Replicated), (2, c(), None, CopyState::Single)],
            "by index"
        );
        o.fail_over(0).unwrap();
        o.rebuilding(0, true);
        assert_eq!(states()[..2], [(0, b(), None, CopyState::Rebuilding), (1, c(), None, CopyState::Degraded)], "published at once");
        o.set(0, "b", Some("c")).unwrap();
        o.publish_if_stale();
        o.rebuilding(1, true);
        o.rebuilding(1, false);
        assert_eq!(states()[..2], [(0, b(), Some(c()), CopyState::Replicated), (1, c(), None, CopyState::Degraded)], "rebuilt; no server found for 1");
        // c's backup log is full: vRegion 0 keeps its copy on b alone, and c stays vRegion 1's
        // primary.
        assert!(!o.suspend(2) && o.suspend(2), "suspended once");
        assert_eq!(states()[..2], [(0, b(), None, CopyState::Suspended), (1, c(), None, CopyState::Degraded)]);
        assert!(!o.is_dead(2));
        assert!(o.fail_over(1).unwrap_err().to_string().contains("replication to its other mem-server c was suspended"));
    }

    #[test]
    fn a_promotion_by_the_home_fails_the_old_primary_over_here_too() {
        let mut o = abc();
        o.set(0, "a", Some("b")).unwrap();
        o.set(1, "a", Some("c")).unwrap();
        o.set(2, "c", Some("a")).unwrap();
        assert_eq!(o.set(0, "a", Some("c")).unwrap(), None, "a new secondary (a rebuild) is no promotion");
        assert_eq!(o.set(1, "c", Some("a")).unwrap(), None, "nor is a new primary with the old one as secondary");
        assert_eq!((o.owner_of(1 << 30), o.secondary_of(1 << 30), o.is_dead(0)), (Some(2), Some(0), false));
        o.set(1, "a", Some("c")).unwrap();
        // The home found a failed during a memory call and promoted vRegion 0's secondary.
        assert_eq!(o.set(0, "c", None).unwrap(), Some(0));
        assert!(o.is_dead(0));
        assert_eq!((o.owner_of(1 << 30), o.owner_of(2 << 30), o.secondary_of(2 << 30)), (Some(2), Some(2), None));
        assert_eq!(o.take_unreported(), vec![(0, "a".to_string()), (1, "a".to_string()), (2, "a".to_string())]);
        assert!(o.copy_lost().wait(), "the repairer is raised");
        assert_eq!(o.set(1, "c", None).unwrap(), None, "the home's own promotion of vRegion 1, made here already");
        assert!(matches!(o.set(3, "d", None), Err(SetError::Unknown(_))));
    }

}
