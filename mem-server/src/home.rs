//! The home side of two-level memory management (LegoOS §4.4.1).
//!
//! The home of a process receives its memory system calls. It keeps only the vRegion array
//! (which server owns each vRegion and how many bytes are mapped in it, the free-space summary),
//! the spec and the brk; it chooses addresses and hands the fine-grained vma work to the owner of
//! each vRegion through [`Owners`], splitting every range at vRegion boundaries (a region may
//! span vRegions with different owners). The errnos are Linux's, as `lego-vmm`'s single-node
//! memory manager gives them.

use std::collections::{BTreeMap, BTreeSet};

use lego_proto::frame::PAGE_SIZE;
use lego_proto::mm::{Effect, MemCall, MemOutcome, OwnerCall, OwnerOutcome, ProcessSpec, ServerStat, VRegionOwner};
use lego_proto::vma::{Prot, Vma, VmaKind};

use crate::owner::{OwnerError, TAKE_MAX};
use crate::placement::choose_owner;
use crate::store::page_aligned;

const P: u64 = PAGE_SIZE as u64;

/// Smallest vRegion a process may ask for: smaller ones would make a large mapping cost one
/// owner call per few pages.
pub const MIN_VREGION_SIZE: u64 = 1 << 20;

/// `mmap(2)` and `mremap(2)` flags the home looks at (x86-64 values).
pub mod flags {
    /// `MAP_FIXED`.
    pub const MAP_FIXED: u32 = 0x10;
    /// `MAP_32BIT`.
    pub const MAP_32BIT: u32 = 0x40;
    /// `MAP_FIXED_NOREPLACE`.
    pub const MAP_FIXED_NOREPLACE: u32 = 0x10_0000;
    /// `MREMAP_MAYMOVE`.
    pub const MREMAP_MAYMOVE: u32 = 1;
    /// `MREMAP_FIXED`.
    pub const MREMAP_FIXED: u32 = 2;
    /// `MREMAP_DONTUNMAP`.
    pub const MREMAP_DONTUNMAP: u32 = 4;
}
use flags::*;

/// Why an owner could not do what the home asked.
#[derive(Debug, thiserror::Error)]
pub enum OwnerFailure {
    /// The owner answered with a refusal.
    #[error(transparent)]
    Refused(#[from] OwnerError),
    /// The owner could not be reached or answered nonsense.
    #[error("{0}")]
    Unreachable(String),
}

/// How the home reaches the owners of a process's vRegions: `owner` is an index into
/// [`ProcessSpec::servers`].
pub trait Owners {
    /// Hands one call to an owner.
    fn call(&mut self, owner: usize, proc: u64, call: OwnerCall) -> Result<OwnerOutcome, OwnerFailure>;
    /// Asks a server for its capacity and load.
    fn stat(&mut self, owner: usize) -> Result<ServerStat, OwnerFailure>;
    /// The global memory manager's owner for a new vRegion among `among`, if there is a manager
    /// and it chose one; otherwise the home chooses from [`Owners::stat`].
    fn gmm_owner(&mut self, _among: &[String], _vregion_size: u64) -> Option<String> {
        None
    }
}

/// A memory system call could not be served at all (the process must not go on as if it had).
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// An owner failed a call.
    #[error("mem-server {server} failed {what}: {failure}")]
    Owner {
        /// The owner's address.
        server: String,
        /// The call.
        what: &'static str,
        /// What went wrong.
        #[source]
        failure: OwnerFailure,
    },
    /// An owner answered a call with an outcome that does not fit it.
    #[error("mem-server {server} answered {what} with an unexpected outcome")]
    Unexpected {
        /// The owner's address.
        server: String,
        /// The call.
        what: &'static str,
    },
    /// No server could become the owner of a new vRegion.
    #[error("no mem-server can own vRegion {index}: none of the {tried} servers answered")]
    NoCandidate {
        /// The vRegion.
        index: u64,
        /// How many servers were asked.
        tried: usize,
    },
    /// The home's vRegion array and an owner disagree.
    #[error("vRegion {index} has no owner although it holds mapped memory")]
    Inconsistent {
        /// The vRegion.
        index: u64,
    },
}

/// A system call's failure: an errno for the program, or a failure of the home itself.
enum Fail {
    Errno(i32),
    Home(HomeError),
}

impl From<HomeError> for Fail {
    fn from(e: HomeError) -> Fail {
        Fail::Home(e)
    }
}

type CallResult<T> = Result<T, Fail>;

fn errno<T>(e: i32) -> CallResult<T> {
    Err(Fail::Errno(e))
}

fn page_ceil(x: u64) -> Option<u64> {
    x.checked_add(P - 1).map(|v| v & !(P - 1))
}

fn bytes(vmas: &[Vma]) -> u64 {
    vmas.iter().map(|v| v.end - v.start).sum()
}

fn call_name(c: &OwnerCall) -> &'static str {
    match c {
        OwnerCall::Adopt { .. } => "Adopt",
        OwnerCall::Place { .. } => "Place",
        OwnerCall::Map { .. } => "Map",
        OwnerCall::Unmap { .. } => "Unmap",
        OwnerCall::Protect { .. } => "Protect",
        OwnerCall::Discard { .. } => "Discard",
        OwnerCall::Regions { .. } => "Regions",
        OwnerCall::MovePages { .. } => "MovePages",
        OwnerCall::TakePages { .. } => "TakePages",
        OwnerCall::ReadPages { .. } => "ReadPages",
        OwnerCall::PutPages { .. } => "PutPages",
        OwnerCall::Release => "Release",
        OwnerCall::CopyOf { .. } => "CopyOf",
    }
}

/// One entry of the vRegion array.
#[derive(Clone, Copy, Debug)]
struct VRegion {
    /// Index into the spec's servers: the primary.
    owner: usize,
    /// The secondary (LegoOS §4.7), with `replicas: 2` while it is alive: every vma change goes
    /// to it too, and the pComponent writes every flushed line to both.
    secondary: Option<usize>,
    /// The primary is a secondary promoted after its primary was lost: its pages may be in a
    /// backup log and file, so the rebuild makes a new primary and makes it the secondary again.
    promoted: bool,
    /// Bytes mapped in the vRegion (the free-space summary).
    mapped: u64,
}

/// What a call changed, gathered as it goes.
#[derive(Default)]
struct Out {
    effects: Vec<Effect>,
    owners: Vec<VRegionOwner>,
}

/// The home's record of one process.
#[derive(Clone)]
pub struct HomeProcess {
    proc: u64,
    spec: ProcessSpec,
    vregions: BTreeMap<u64, VRegion>,
    brk_start: u64,
    brk: u64,
    /// vRegions whose primary or secondary changed during the current call (a copy lost), to be
    /// named in its outcome.
    changed: Vec<u64>,
    /// Servers found failed: never chosen again for the process.
    failed: BTreeSet<usize>,
}

impl HomeProcess {
    /// Checks the spec and records the process (nothing is mapped yet: see [`Self::start`]).
    /// An unusable spec (bad server index, vRegion size not a power of two of at least
    /// [`MIN_VREGION_SIZE`], unaligned or disordered bounds) is `EINVAL`.
    pub fn new(proc: u64, spec: ProcessSpec) -> Result<HomeProcess, i32> {
        let ok = !spec.servers.is_empty()
            && spec.home < spec.servers.len()
            && spec.vregion_size.is_power_of_two()
            && spec.vregion_size >= MIN_VREGION_SIZE
            && [spec.user_min, spec.mmap_top, spec.space_top, spec.stack.0, spec.stack.1].into_iter().all(page_aligned)
            && spec.user_min < spec.mmap_top
            && spec.mmap_top <= spec.space_top
            && spec.user_min <= spec.stack.0
            && spec.stack.0 < spec.stack.1
            && spec.stack.1 <= spec.space_top;
        if !ok {
            return Err(libc::EINVAL);
        }
        let brk = spec.user_min;
        if !(1..=2).contains(&spec.replicas) || spec.replicas == 2 && spec.servers.len() < 2 {
            return Err(libc::EINVAL);
        }
        Ok(HomeProcess { proc, spec, vregions: BTreeMap::new(), brk_start: brk, brk, changed: Vec::new(), failed: BTreeSet::new() })
    }

    /// The spec the process was created with.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// The owner (index into the spec's servers) of vRegion `index`, if it has one.
    pub fn owner_of(&self, index: u64) -> Option<usize> {
        self.vregions.get(&index).map(|v| v.owner)
    }

    /// The secondary of vRegion `index`, if it has one.
    pub fn secondary_of(&self, index: u64) -> Option<usize> {
        self.vregions.get(&index).and_then(|v| v.secondary)
    }

    /// Every server holding a copy of some vRegion of the process (primaries and secondaries),
    /// without repeats.
    pub fn owners(&self) -> BTreeSet<usize> {
        self.vregions.values().flat_map(|v| std::iter::once(v.owner).chain(v.secondary)).collect()
    }

    /// The pComponent found `server` failed and stopped using it for vRegion `index`
    /// ([`lego_proto::mm::Request::ReplicaLost`]): the secondary takes over if `server` was the
    /// primary; with `rebuild`, a new secondary gets a copy ([`Self::rebuild`]). Unknown names
    /// and vRegions change nothing. The outcome names the vRegion's owners.
    pub fn replica_lost(&mut self, index: u64, server: &str, rebuild: bool, o: &mut dyn Owners) -> MemOutcome {
        if let Some(i) = self.spec.servers.iter().position(|s| s == server) {
            self.lose(index, i);
        }
        if rebuild {
            self.rebuild(o, index);
        }
        self.changed.clear();
        MemOutcome { value: 0, effects: Vec::new(), owners: self.announce(index).into_iter().collect() }
    }

    /// Gives vRegion `index`, left with one copy, a second copy again on a server that did not
    /// fail (chosen as at adoption), through the home in bounded chunks: the surviving copy's
    /// regions, then its pages (`ReadPages`, `PutPages`). The pComponent holds its ExCache still
    /// meanwhile, so no write-back races the copy. A failure leaves the vRegion with one copy
    /// (logged).
    ///
    /// A lost secondary gets a new one, with a fresh backup log. A lost primary leaves the
    /// promoted secondary, whose pages are in its log and backup file: as LegoOS does, a new
    /// primary is rebuilt from them (its `ReadPages` reads the log, then the file), and the
    /// promoted server goes back to being the secondary.
    fn rebuild(&mut self, o: &mut dyn Owners, index: u64) {
        let Some(v) = self.vregions.get(&index).copied() else { return };
        if self.spec.replicas < 2 || v.secondary.is_some() {
            return;
        }
        let Some(s) = self.adopt_copy(o, index, v.owner, !v.promoted) else { return };
        let base = index * self.vs();
        let (start, end) = (base, base.saturating_add(self.vs()));
        let copied = (|| -> Result<(), HomeError> {
            let OwnerOutcome::Regions(Some(regions)) = self.owner_call(o, v.owner, OwnerCall::Regions { start, end })? else {
                return Err(self.unexpected(v.owner, "Regions"));
            };
            for vma in regions {
                self.owner_call(o, s, OwnerCall::Map { vma })?;
            }
            let mut at = start;
            loop {
                let OwnerOutcome::Pages { pages, more } = self.owner_call(o, v.owner, OwnerCall::ReadPages { start: at, end, max: TAKE_MAX })? else {
                    return Err(self.unexpected(v.owner, "ReadPages"));
                };
                let Some(&(last, _)) = pages.last() else { return Ok(()) };
                self.owner_call(o, s, OwnerCall::PutPages { pages })?;
                if !more {
                    return Ok(());
                }
                at = last + P;
            }
        })();
        match copied {
            Ok(()) => {
                if let Some(v) = self.vregions.get_mut(&index) {
                    if v.promoted {
                        tracing::info!(proc = self.proc, index, primary = %self.spec.servers[s], secondary = %self.spec.servers[v.owner], "vRegion rebuilt: a new primary, two copies again");
                        v.secondary = Some(v.owner);
                        v.owner = s;
                        v.promoted = false;
                    } else {
                        tracing::info!(proc = self.proc, index, secondary = %self.spec.servers[s], "vRegion rebuilt: two copies again");
                        v.secondary = Some(s);
                    }
                }
                self.changed.push(index);
            }
            Err(e) => {
                tracing::warn!(proc = self.proc, index, error = %e, "rebuilding a copy failed: one copy only");
                // Only this vRegion: the server may hold others of the process.
                let _ = self.owner_call(o, s, OwnerCall::Unmap { start, end });
            }
        }
    }

    /// Stops using server `server` for vRegion `index`: a lost primary is replaced by the
    /// secondary (promoted), a lost secondary leaves one copy.
    fn lose(&mut self, index: u64, server: usize) {
        self.failed.insert(server);
        let Some(v) = self.vregions.get_mut(&index) else { return };
        if v.owner == server {
            let Some(s) = v.secondary.take() else { return };
            tracing::warn!(proc = self.proc, index, lost = %self.spec.servers[server], promoted = %self.spec.servers[s], "primary lost; the secondary is the primary now");
            v.owner = s;
            v.promoted = true;
        } else if v.secondary == Some(server) {
            tracing::warn!(proc = self.proc, index, lost = %self.spec.servers[server], "secondary lost; one copy left");
            v.secondary = None;
        } else {
            return;
        }
        self.changed.push(index);
    }

    /// The announcement of vRegion `index`'s copies, for an outcome.
    fn announce(&self, index: u64) -> Option<VRegionOwner> {
        let v = self.vregions.get(&index)?;
        Some(VRegionOwner {
            index,
            owner: self.spec.servers[v.owner].clone(),
            secondary: v.secondary.map(|s| self.spec.servers[s].clone()),
        })
    }

    /// Adds the vRegions whose copies changed during the call to `out`.
    fn announce_changes(&mut self, out: &mut Out) {
        for index in std::mem::take(&mut self.changed) {
            if let Some(a) = self.announce(index) {
                out.owners.retain(|o| o.index != index);
                out.owners.push(a);
            }
        }
    }

    /// Hands `call` about vRegion `index` to its primary and, with `mirror`, to its secondary
    /// too; the primary's answer is returned. A primary that cannot be reached is replaced by
    /// the secondary (promoted) and the call goes there; a secondary that fails is dropped.
    fn vcall(&mut self, o: &mut dyn Owners, index: u64, call: OwnerCall, mirror: bool) -> Result<OwnerOutcome, HomeError> {
        let v = *self.vregions.get(&index).ok_or(HomeError::Inconsistent { index })?;
        let r = match self.owner_call(o, v.owner, call.clone()) {
            Err(HomeError::Owner { failure: OwnerFailure::Unreachable(why), .. }) if v.secondary.is_some() => {
                tracing::warn!(proc = self.proc, index, server = %self.spec.servers[v.owner], %why, "primary unreachable");
                self.lose(index, v.owner);
                return self.vcall(o, index, call, mirror);
            }
            r => r?,
        };
        if let (true, Some(s)) = (mirror, v.secondary) {
            if let Err(e) = self.owner_call(o, s, call) {
                tracing::warn!(proc = self.proc, index, error = %e, "the secondary failed a vma change");
                self.lose(index, s);
            }
        }
        Ok(r)
    }

    /// Maps the stack: the answer to `CreateProcess`.
    pub fn start(&mut self, o: &mut dyn Owners) -> Result<Result<MemOutcome, i32>, HomeError> {
        let (start, end) = self.spec.stack;
        let mut out = Out::default();
        let r = self.map_region(o, &mut out, start, end, Prot::RW, VmaKind::Stack).map(|()| 0);
        self.announce_changes(&mut out);
        finish(r.map_err(Fail::Home), out)
    }

    /// Process `child`, a copy of this one (fork): every owner copies this process's regions and
    /// pages to `child`. The outcome maps every region of the copy and names every owner. If an
    /// owner fails, the owners that copied release the copy again.
    pub fn fork(&self, child: u64, o: &mut dyn Owners) -> Result<Result<(HomeProcess, MemOutcome), i32>, HomeError> {
        let mut copy = HomeProcess { proc: child, ..self.clone() };
        let mut copied = Vec::new();
        let mut failed = None;
        for owner in self.owners() {
            match copy.owner_call(o, owner, OwnerCall::CopyOf { parent: self.proc }) {
                Ok(_) => copied.push(owner),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            for owner in copied {
                let _ = copy.owner_call(o, owner, OwnerCall::Release);
            }
            return match e {
                HomeError::Owner { failure: OwnerFailure::Refused(r), .. } => Ok(Err(r.errno())),
                e => Err(e),
            };
        }
        let mut out = Out::default();
        let indexes: Vec<u64> = copy.vregions.keys().copied().collect();
        for index in indexes {
            let start = index * self.vs();
            for vma in copy.regions(o, index, start, start + self.vs())? {
                out.effects.push(Effect::Map(vma));
            }
            out.owners.extend(copy.announce(index));
        }
        copy.changed.clear();
        Ok(Ok((copy, MemOutcome { value: 0, effects: out.effects, owners: out.owners })))
    }

    /// Serves one memory system call: `Ok(Err(errno))` is the call failing as Linux would,
    /// `Err` the home failing to serve it.
    pub fn call(&mut self, call: MemCall, o: &mut dyn Owners) -> Result<Result<MemOutcome, i32>, HomeError> {
        let mut out = Out::default();
        let r = match call {
            MemCall::Mmap { addr, len, prot, flags, kind } => self.mmap(o, &mut out, addr, len, prot, flags, kind),
            MemCall::Munmap { addr, len } => self.munmap(o, &mut out, addr, len).map(|()| 0),
            MemCall::Mprotect { addr, len, prot } => self.mprotect(o, &mut out, addr, len, prot).map(|()| 0),
            MemCall::Mremap { old, old_len, new_len, flags, new_addr } => {
                self.mremap(o, &mut out, old, old_len, new_len, flags, new_addr)
            }
            MemCall::Brk { want } => self.brk(o, &mut out, want),
            MemCall::SetBrkStart { addr } => self.set_brk_start(addr),
            MemCall::MadviseDontneed { addr, len } => self.madvise_dontneed(o, &mut out, addr, len).map(|()| 0),
        };
        self.announce_changes(&mut out);
        finish(r, out)
    }

    /// Releases the process at every owner. All are asked even if one fails; the first
    /// failure is returned.
    pub fn exit(&mut self, o: &mut dyn Owners) -> Result<(), HomeError> {
        let mut first = None;
        for owner in self.owners() {
            if let Err(e) = self.owner_call(o, owner, OwnerCall::Release) {
                tracing::warn!(proc = self.proc, error = %e, "releasing a process");
                first.get_or_insert(e);
            }
        }
        self.vregions.clear();
        first.map_or(Ok(()), Err)
    }

    fn vs(&self) -> u64 {
        self.spec.vregion_size
    }

    fn index(&self, addr: u64) -> u64 {
        addr / self.vs()
    }

    /// `[start, end)` clipped to vRegion `index`.
    fn clip(&self, index: u64, start: u64, end: u64) -> (u64, u64) {
        let base = index * self.vs();
        (start.max(base), end.min(base.saturating_add(self.vs())))
    }

    /// Owned vRegions overlapping `[start, end)` (non-empty), with the range clipped to each.
    fn owned_in(&self, start: u64, end: u64) -> Vec<(u64, VRegion, u64, u64)> {
        if start >= end {
            return Vec::new();
        }
        self.vregions
            .range(self.index(start)..=self.index(end - 1))
            .map(|(&i, &v)| {
                let (s, e) = self.clip(i, start, end);
                (i, v, s, e)
            })
            .collect()
    }

    fn owner_call(&self, o: &mut dyn Owners, owner: usize, call: OwnerCall) -> Result<OwnerOutcome, HomeError> {
        let what = call_name(&call);
        o.call(owner, self.proc, call).map_err(|failure| HomeError::Owner {
            server: self.spec.servers[owner].clone(),
            what,
            failure,
        })
    }

    fn unexpected(&self, owner: usize, what: &'static str) -> HomeError {
        HomeError::Unexpected { server: self.spec.servers[owner].clone(), what }
    }

    /// The regions of `[s, e)` inside owned vRegion `index`.
    fn regions(&mut self, o: &mut dyn Owners, index: u64, s: u64, e: u64) -> Result<Vec<Vma>, HomeError> {
        match self.vcall(o, index, OwnerCall::Regions { start: s, end: e }, false)? {
            OwnerOutcome::Regions(Some(v)) => Ok(v),
            _ => Err(self.unexpected_at(index, "Regions")),
        }
    }

    fn unexpected_at(&self, index: u64, what: &'static str) -> HomeError {
        match self.owner_of(index) {
            Some(owner) => self.unexpected(owner, what),
            None => HomeError::Inconsistent { index },
        }
    }

    /// The owner of vRegion `index`, choosing and telling one if it has none yet.
    fn adopt(&mut self, o: &mut dyn Owners, out: &mut Out, index: u64) -> Result<usize, HomeError> {
        if let Some(v) = self.vregions.get(&index) {
            return Ok(v.owner);
        }
        let servers = &self.spec.servers;
        // With two copies the primaries go to servers other than the home, which already
        // carries every memory call of the process: the page traffic goes elsewhere.
        let home = self.spec.home;
        let among: Vec<String> = if self.spec.replicas > 1 {
            servers.iter().enumerate().filter(|&(i, _)| i != home && !self.failed.contains(&i)).map(|(_, s)| s.clone()).collect()
        } else {
            servers.iter().enumerate().filter(|&(i, _)| !self.failed.contains(&i)).map(|(_, s)| s.clone()).collect()
        };
        let chosen = o.gmm_owner(&among, self.vs()).and_then(|addr| servers.iter().position(|s| *s == addr));
        let owner = match chosen {
            Some(i) => i,
            None => {
                let mut candidates = Vec::with_capacity(servers.len());
                for (i, server) in servers.iter().enumerate().filter(|(_, s)| among.contains(s)) {
                    match o.stat(i) {
                        Ok(s) => candidates.push((i, s)),
                        Err(e) => tracing::warn!(%server, error = %e, "no statistics, not a candidate"),
                    }
                }
                choose_owner(&candidates).ok_or(HomeError::NoCandidate { index, tried: servers.len() })?
            }
        };
        self.owner_call(o, owner, OwnerCall::Adopt { index, vregion_size: self.vs(), secondary: false, backup_storage: None })?;
        let secondary = if self.spec.replicas > 1 { self.adopt_copy(o, index, owner, true) } else { None };
        self.vregions.insert(index, VRegion { owner, secondary, promoted: false, mapped: 0 });
        out.owners.extend(self.announce(index));
        Ok(owner)
    }

    /// A second copy of vRegion `index` (a `secondary` one, or a new primary) on a server other
    /// than `owner`, chosen as owners are (by the GMM if there is one); `None` (the vRegion runs
    /// with one copy, logged) if no other server can take it.
    fn adopt_copy(&self, o: &mut dyn Owners, index: u64, owner: usize, secondary: bool) -> Option<usize> {
        let servers = &self.spec.servers;
        // Not the primary's server nor a failed one, and not the home while another can take it.
        let home = self.spec.home;
        let live: Vec<usize> = (0..servers.len()).filter(|&i| i != owner && !self.failed.contains(&i)).collect();
        let pick = if live.iter().any(|&i| i != home) { live.into_iter().filter(|&i| i != home).collect() } else { live };
        let others: Vec<String> = pick.into_iter().map(|i| servers[i].clone()).collect();
        let chosen = o.gmm_owner(&others, self.vs()).and_then(|addr| servers.iter().position(|s| *s == addr)).filter(|&i| others.contains(&servers[i]));
        let copy = chosen.or_else(|| {
            let candidates: Vec<_> = (0..servers.len()).filter(|&i| others.contains(&servers[i])).filter_map(|i| o.stat(i).ok().map(|s| (i, s))).collect();
            choose_owner(&candidates)
        });
        let adopted = copy.filter(|&s| match self.owner_call(o, s, OwnerCall::Adopt { index, vregion_size: self.vs(), secondary, backup_storage: self.spec.backup_storage.clone() }) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(proc = self.proc, index, error = %e, "no second copy");
                false
            }
        });
        if adopted.is_none() {
            tracing::warn!(proc = self.proc, index, "vRegion has no second copy: one copy only");
        }
        adopted
    }

    /// Whether nothing is mapped in `[start, end)`.
    fn is_free(&mut self, o: &mut dyn Owners, start: u64, end: u64) -> Result<bool, HomeError> {
        for (index, v, s, e) in self.owned_in(start, end) {
            if v.mapped == self.vs() {
                return Ok(false);
            }
            if v.mapped > 0 && !self.regions(o, index, s, e)?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The regions of `[start, end)`, clipped, or `None` if some of it is not mapped.
    fn covering(&mut self, o: &mut dyn Owners, start: u64, end: u64) -> Result<Option<Vec<Vma>>, HomeError> {
        let owned = self.owned_in(start, end);
        if start >= end {
            return Ok(Some(Vec::new()));
        }
        if (owned.len() as u64) < self.index(end - 1) - self.index(start) + 1 {
            return Ok(None);
        }
        let mut all = Vec::new();
        let mut at = start;
        for (index, v, s, e) in owned {
            if v.mapped == 0 {
                return Ok(None);
            }
            for r in self.regions(o, index, s, e)? {
                if r.start != at {
                    return Ok(None);
                }
                at = r.end;
                all.push(r);
            }
        }
        Ok((at == end).then_some(all))
    }

    /// Maps `[start, end)` over free space, giving owners to the vRegions that have none.
    fn map_region(
        &mut self,
        o: &mut dyn Owners,
        out: &mut Out,
        start: u64,
        end: u64,
        prot: Prot,
        kind: VmaKind,
    ) -> Result<(), HomeError> {
        for index in self.index(start)..=self.index(end - 1) {
            self.adopt(o, out, index)?;
            let (s, e) = self.clip(index, start, end);
            self.vcall(o, index, OwnerCall::Map { vma: Vma { start: s, end: e, prot, kind: kind.clone() } }, true)?;
            if let Some(v) = self.vregions.get_mut(&index) {
                v.mapped = (v.mapped + (e - s)).min(self.spec.vregion_size);
            }
        }
        out.effects.push(Effect::Map(Vma { start, end, prot, kind }));
        Ok(())
    }

    /// Removes whatever is mapped in `[start, end)` and its pages. Only the user part of the
    /// address space, `[user_min, space_top)`, can hold mappings, so the range is clipped to it
    /// first (as Linux unmaps nothing below `mmap_min_addr`): the effect describes no address
    /// the process could never map, whatever range a program asks for.
    fn unmap_range(&mut self, o: &mut dyn Owners, out: &mut Out, start: u64, end: u64) -> Result<(), HomeError> {
        let (start, end) = (start.max(self.spec.user_min), end.min(self.spec.space_top));
        if start >= end {
            return Ok(());
        }
        let mut removed_any = false;
        for (index, v, s, e) in self.owned_in(start, end) {
            if v.mapped == 0 {
                continue;
            }
            let removed = match self.vcall(o, index, OwnerCall::Unmap { start: s, end: e }, true)? {
                OwnerOutcome::Regions(Some(r)) => bytes(&r),
                _ => return Err(self.unexpected_at(index, "Unmap")),
            };
            removed_any |= removed > 0;
            if let Some(v) = self.vregions.get_mut(&index) {
                v.mapped = v.mapped.saturating_sub(removed);
            }
        }
        if removed_any {
            out.effects.push(Effect::Unmap { start, end });
        }
        Ok(())
    }

    fn check_user_range(&self, addr: u64, len: u64) -> CallResult<u64> {
        let Some(end) = addr.checked_add(len) else { return errno(libc::ENOMEM) };
        if addr < self.spec.user_min {
            return errno(libc::EPERM);
        }
        if end > self.spec.space_top {
            return errno(libc::ENOMEM);
        }
        Ok(end)
    }

    /// Chooses an address for `len` bytes: the hint if free, else the highest free gap below
    /// `mmap_top` and at or above the break, vRegion by vRegion from the top. A gap never spans
    /// a partly mapped vRegion and its neighbour; entirely free vRegions (unowned, or owned with
    /// nothing mapped) form runs that a mapping of any size may take.
    fn place(&mut self, o: &mut dyn Owners, hint: u64, len: u64, low_2g: bool) -> CallResult<u64> {
        if hint != 0 {
            if let Ok(end) = self.check_user_range(hint, len) {
                if self.is_free(o, hint, end)? {
                    return Ok(hint);
                }
            }
        }
        let high = if low_2g { self.spec.mmap_top.min(1 << 31) } else { self.spec.mmap_top };
        let Some(low) = page_ceil(self.brk.max(self.spec.user_min)) else { return errno(libc::ENOMEM) };
        if high <= low || high - low < len {
            return errno(libc::ENOMEM);
        }
        let vs = self.vs();
        // Top of the run of entirely free space being walked down, if any.
        let mut run_top: Option<u64> = None;
        // Everything in [cursor, high) has been looked at.
        let mut cursor = high;
        let fits = |top: u64, bottom: u64| (top - bottom >= len).then(|| top - len);
        let owned: Vec<(u64, VRegion)> = self.vregions.range(self.index(low)..=self.index(high - 1)).rev().map(|(&i, &v)| (i, v)).collect();
        for (index, v) in owned {
            let (wlow, whigh) = self.clip(index, low, high);
            if whigh < cursor {
                // Unowned vRegions between this one and the last: entirely free.
                if let Some(a) = fits(*run_top.get_or_insert(cursor), whigh) {
                    return Ok(a);
                }
            }
            if v.mapped == 0 {
                if let Some(a) = fits(*run_top.get_or_insert(whigh), wlow) {
                    return Ok(a);
                }
            } else {
                run_top = None;
                if len <= vs - v.mapped && whigh - wlow >= len {
                    match self.vcall(o, index, OwnerCall::Place { low: wlow, high: whigh, len }, false)? {
                        OwnerOutcome::Placed(Some(a)) => return Ok(a),
                        OwnerOutcome::Placed(None) => {}
                        _ => return Err(self.unexpected_at(index, "Place").into()),
                    }
                }
            }
            cursor = wlow;
        }
        if cursor > low {
            if let Some(a) = fits(run_top.unwrap_or(cursor), low) {
                return Ok(a);
            }
        }
        errno(libc::ENOMEM)
    }

    #[allow(clippy::too_many_arguments)]
    fn mmap(
        &mut self,
        o: &mut dyn Owners,
        out: &mut Out,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: u32,
        kind: VmaKind,
    ) -> CallResult<u64> {
        let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
        if len == 0 || !page_aligned(addr) && fixed {
            return errno(libc::EINVAL);
        }
        let Some(len) = page_ceil(len) else { return errno(libc::ENOMEM) };
        let start = if fixed {
            let end = self.check_user_range(addr, len)?;
            if flags & MAP_FIXED == 0 && !self.is_free(o, addr, end)? {
                return errno(libc::EEXIST);
            }
            self.unmap_range(o, out, addr, end)?;
            addr
        } else {
            self.place(o, addr & !(P - 1), len, flags & MAP_32BIT != 0)?
        };
        self.map_region(o, out, start, start + len, prot, kind)?;
        Ok(start)
    }

    fn munmap(&mut self, o: &mut dyn Owners, out: &mut Out, addr: u64, len: u64) -> CallResult<()> {
        if !page_aligned(addr) || len == 0 {
            return errno(libc::EINVAL);
        }
        let Some(end) = page_ceil(len).and_then(|l| addr.checked_add(l)) else { return errno(libc::EINVAL) };
        Ok(self.unmap_range(o, out, addr, end)?)
    }

    fn mprotect(&mut self, o: &mut dyn Owners, out: &mut Out, addr: u64, len: u64, prot: Prot) -> CallResult<()> {
        if !page_aligned(addr) || prot.0 & !7 != 0 {
            return errno(libc::EINVAL);
        }
        let Some(len) = page_ceil(len) else { return errno(libc::ENOMEM) };
        if len == 0 {
            return Ok(());
        }
        let Some(end) = addr.checked_add(len) else { return errno(libc::ENOMEM) };
        if self.covering(o, addr, end)?.is_none() {
            return errno(libc::ENOMEM);
        }
        for (index, _, s, e) in self.owned_in(addr, end) {
            match self.vcall(o, index, OwnerCall::Protect { start: s, end: e, prot }, true)? {
                OwnerOutcome::Regions(Some(_)) => {}
                _ => return Err(self.unexpected_at(index, "Protect").into()),
            }
        }
        out.effects.push(Effect::Protect { start: addr, end, prot });
        Ok(())
    }

    fn madvise_dontneed(&mut self, o: &mut dyn Owners, out: &mut Out, addr: u64, len: u64) -> CallResult<()> {
        if !page_aligned(addr) {
            return errno(libc::EINVAL);
        }
        let Some(end) = page_ceil(len).and_then(|l| addr.checked_add(l)) else { return errno(libc::EINVAL) };
        if end == addr {
            return Ok(());
        }
        if self.covering(o, addr, end)?.is_none() {
            return errno(libc::ENOMEM);
        }
        for (index, _, s, e) in self.owned_in(addr, end) {
            self.vcall(o, index, OwnerCall::Discard { start: s, end: e }, true)?;
        }
        out.effects.push(Effect::Discard { start: addr, end });
        Ok(())
    }

    fn set_brk_start(&mut self, addr: u64) -> CallResult<u64> {
        match page_ceil(addr) {
            Some(a) if (self.spec.user_min..self.spec.mmap_top).contains(&a) => {
                self.brk_start = a;
                self.brk = a;
                Ok(a)
            }
            _ => errno(libc::EINVAL),
        }
    }

    fn brk(&mut self, o: &mut dyn Owners, out: &mut Out, want: u64) -> CallResult<u64> {
        if want < self.brk_start || want >= self.spec.mmap_top {
            return Ok(self.brk);
        }
        let old_top = page_ceil(self.brk).unwrap_or(self.brk);
        let new_top = page_ceil(want).unwrap_or(want);
        if new_top > old_top {
            if !self.is_free(o, old_top, new_top)? {
                return Ok(self.brk);
            }
            self.map_region(o, out, old_top, new_top, Prot::RW, VmaKind::Heap)?;
        } else if new_top < old_top {
            self.unmap_range(o, out, new_top, old_top)?;
        }
        self.brk = want;
        Ok(want)
    }

    #[allow(clippy::too_many_arguments)]
    fn mremap(
        &mut self,
        o: &mut dyn Owners,
        out: &mut Out,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: u32,
        new_addr: u64,
    ) -> CallResult<u64> {
        if !page_aligned(old)
            || flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) != 0
            || flags & MREMAP_FIXED != 0 && flags & MREMAP_MAYMOVE == 0
        {
            return errno(libc::EINVAL);
        }
        let (Some(old_len), Some(new_len)) = (page_ceil(old_len), page_ceil(new_len)) else {
            return errno(libc::EINVAL);
        };
        if new_len == 0 || old_len == 0 || flags & MREMAP_DONTUNMAP != 0 {
            // As in lego-vmm: neither duplicating shared mappings nor keeping both is supported.
            return errno(libc::EINVAL);
        }
        let Some(old_end) = old.checked_add(old_len) else { return errno(libc::EFAULT) };
        // The old range must lie in one region: covered, with one protection and kind.
        let Some(pieces) = self.covering(o, old, old_end)? else { return errno(libc::EFAULT) };
        let Some(first) = pieces.first().cloned() else { return errno(libc::EFAULT) };
        if pieces.iter().any(|v| v.prot != first.prot || v.kind != first.kind) {
            return errno(libc::EFAULT);
        }
        let (prot, kind) = (first.prot, first.kind);
        if flags & MREMAP_FIXED == 0 {
            if new_len <= old_len {
                self.unmap_range(o, out, old + new_len, old_end)?;
                return Ok(old);
            }
            let Some(grow_end) = old.checked_add(new_len) else { return errno(libc::ENOMEM) };
            if grow_end <= self.spec.space_top && self.is_free(o, old_end, grow_end)? {
                self.map_region(o, out, old_end, grow_end, prot, kind)?;
                return Ok(old);
            }
            if flags & MREMAP_MAYMOVE == 0 {
                return errno(libc::ENOMEM);
            }
        }
        let dst = if flags & MREMAP_FIXED != 0 {
            if !page_aligned(new_addr) {
                return errno(libc::EINVAL);
            }
            let dst_end = self.check_user_range(new_addr, new_len)?;
            if new_addr < old_end && old < dst_end {
                return errno(libc::EINVAL);
            }
            self.unmap_range(o, out, new_addr, dst_end)?;
            new_addr
        } else {
            self.place(o, 0, new_len, false)?
        };
        self.map_region(o, out, dst, dst + new_len, prot, kind)?;
        let moved = old_len.min(new_len);
        self.move_pages(o, old, dst, moved)?;
        out.effects.push(Effect::Move { from: old, to: dst, len: moved });
        self.unmap_range(o, out, old, old_end)?;
        Ok(dst)
    }

    /// Moves the stored pages of `[from, from+len)` to `[to, to+len)` (both mapped), piece by
    /// piece, at the primaries and at the secondaries: within one server it re-keys them,
    /// between servers they pass through the home in bounded chunks. A secondary that fails
    /// the move, or that would miss the pages because the source has no secondary, is dropped.
    fn move_pages(&mut self, o: &mut dyn Owners, from: u64, to: u64, len: u64) -> Result<(), HomeError> {
        let vs = self.vs();
        let mut off = 0;
        while off < len {
            let (f, t) = (from + off, to + off);
            let seg = (len - off).min(vs - f % vs).min(vs - t % vs);
            let (fi, ti) = (self.index(f), self.index(t));
            let src = *self.vregions.get(&fi).ok_or(HomeError::Inconsistent { index: fi })?;
            let dst = *self.vregions.get(&ti).ok_or(HomeError::Inconsistent { index: ti })?;
            self.move_between(o, src.owner, dst.owner, f, t, seg)?;
            match (src.secondary, dst.secondary) {
                (Some(a), Some(b)) => {
                    if let Err(e) = self.move_between(o, a, b, f, t, seg) {
                        tracing::warn!(proc = self.proc, error = %e, "the secondaries failed a move");
                        self.lose(fi, a);
                        self.lose(ti, b);
                    }
                }
                (None, Some(b)) => self.lose(ti, b),
                _ => {}
            }
            off += seg;
        }
        Ok(())
    }

    /// Moves the stored pages of `[f, f+seg)` at server `src` to `[t, t+seg)` at server `dst`.
    fn move_between(&self, o: &mut dyn Owners, src: usize, dst: usize, f: u64, t: u64, seg: u64) -> Result<(), HomeError> {
        if src == dst {
            self.owner_call(o, src, OwnerCall::MovePages { from: f, to: t, len: seg })?;
            return Ok(());
        }
        loop {
            let take = OwnerCall::TakePages { start: f, end: f + seg, max: TAKE_MAX };
            let OwnerOutcome::Pages { mut pages, more } = self.owner_call(o, src, take)? else {
                return Err(self.unexpected(src, "TakePages"));
            };
            if pages.is_empty() {
                return Ok(());
            }
            for (a, _) in &mut pages {
                *a = *a - f + t;
            }
            self.owner_call(o, dst, OwnerCall::PutPages { pages })?;
            if !more {
                return Ok(());
            }
        }
    }
}

fn finish(r: CallResult<u64>, out: Out) -> Result<Result<MemOutcome, i32>, HomeError> {
    match r {
        Ok(value) => Ok(Ok(MemOutcome { value, effects: out.effects, owners: out.owners })),
        Err(Fail::Errno(e)) => Ok(Err(e)),
        Err(Fail::Home(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests;
