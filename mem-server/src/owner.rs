//! The owner side of two-level memory management (LegoOS §4.4.1): the vRegions this server has
//! adopted, each with its vma tree, and the pages stored in them.
//!
//! Page requests are served only for pages inside an adopted vRegion and inside a mapped region
//! of it; anything else is refused, never answered with wrong data.
//!
//! The pages of a vRegion adopted as a secondary copy go to the [`BackupLog`] when the server
//! has one (a storage server to flush it to), to the page store otherwise; every call reaches
//! whichever holds them.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use lego_proto::frame::{Status, PAGE_SIZE};
use lego_proto::mm::{OwnerCall, OwnerOutcome};
use lego_proto::vma::VmaList;

use crate::backup::{BackupError, BackupLog};
use crate::store::{page_aligned as aligned, Page, PageBatch, PageStore};

const P: u64 = PAGE_SIZE as u64;

/// Most pages one [`OwnerCall::TakePages`] answer carries, so that it stays well inside a
/// control frame.
pub const TAKE_MAX: u32 = 128;

/// Why an owner call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// A range lies outside every vRegion this server adopted for the process.
    #[error("the range is not in a vRegion this server owns")]
    NotOwner,
    /// The call made no sense (unaligned or empty range, bad vRegion size...).
    #[error("invalid owner call")]
    Invalid,
    /// No frame (or backup-log slot) is left for the pages handed over.
    #[error("out of frames")]
    NoSpace,
    /// Pages in a backup file could not be read back.
    #[error("the backup file could not be read")]
    Backup,
}

impl OwnerError {
    /// The errno a home reports for this refusal.
    pub fn errno(self) -> i32 {
        match self {
            OwnerError::NotOwner | OwnerError::Invalid => libc::EINVAL,
            OwnerError::NoSpace => libc::ENOMEM,
            OwnerError::Backup => libc::EIO,
        }
    }
}

/// The vRegions one process has on this server.
#[derive(Clone)]
struct ProcRegions {
    vregion_size: u64,
    /// vRegion index -> its vma tree.
    regions: HashMap<u64, VmaList>,
    /// vRegions whose pages are in the backup log (adopted as secondaries).
    logged: HashSet<u64>,
}

/// Adopted vRegions, the page store and the backup log.
pub struct Owner {
    store: PageStore,
    backup: Option<BackupLog>,
    procs: HashMap<u64, ProcRegions>,
}

/// Where the pages of one vRegion are.
enum Pages<'a> {
    Store(&'a mut PageStore),
    Log(&'a BackupLog),
}

impl Owner {
    /// An owner with room for `capacity_pages` frames, and no backup log.
    pub fn new(capacity_pages: u64) -> Owner {
        Owner { store: PageStore::new(capacity_pages), backup: None, procs: HashMap::new() }
    }

    /// Keeps the pages of the vRegions adopted as secondaries from now on in `log`.
    pub fn set_backup(&mut self, log: BackupLog) {
        self.backup = Some(log);
    }

    /// The page store.
    pub fn store(&self) -> &PageStore {
        &self.store
    }

    /// The backup log, if the server has one.
    pub fn backup(&self) -> Option<&BackupLog> {
        self.backup.as_ref()
    }

    /// The log holding the pages of the vRegion of `addr`, if it is a logged one.
    fn log_of(&self, proc: u64, addr: u64) -> Option<&BackupLog> {
        let p = self.procs.get(&proc)?;
        p.logged.contains(&(addr / p.vregion_size)).then_some(self.backup.as_ref()).flatten()
    }

    /// Where the pages of the vRegion of `addr` are.
    fn pages(&mut self, proc: u64, addr: u64) -> Pages<'_> {
        let logged = self.procs.get(&proc).is_some_and(|p| p.logged.contains(&(addr / p.vregion_size)));
        match (&self.backup, logged) {
            (Some(log), true) => Pages::Log(log),
            _ => Pages::Store(&mut self.store),
        }
    }

    /// Frees the pages of `[start, end)` (inside one vRegion).
    fn free_pages(&mut self, proc: u64, start: u64, end: u64) {
        match self.pages(proc, start) {
            Pages::Store(s) => {
                s.free_range(proc, start, end);
            }
            Pages::Log(l) => l.free_range(proc, start, end),
        }
    }

    /// The page at `addr`, from wherever it is (`None`: never written).
    fn read_page(&self, proc: u64, addr: u64) -> Result<Option<Cow<'_, Page>>, Status> {
        match self.log_of(proc, addr) {
            Some(log) => log.read(proc, addr).map(|p| p.map(|p| Cow::Owned(*p))).map_err(|e| {
                tracing::error!(proc, addr, "{e}");
                Status::Internal
            }),
            None => Ok(self.store.read(proc, addr).map(Cow::Borrowed)),
        }
    }

    /// vRegions adopted, over all processes.
    pub fn vregions(&self) -> u64 {
        self.procs.values().map(|p| p.regions.len() as u64).sum()
    }

    /// The vma tree of the adopted vRegion holding all of `[start, end)` (`end` may be the
    /// vRegion's end).
    fn region(&mut self, proc: u64, start: u64, end: u64) -> Result<&mut VmaList, OwnerError> {
        if !aligned(start) || !aligned(end) || start >= end {
            return Err(OwnerError::Invalid);
        }
        let p = self.procs.get_mut(&proc).ok_or(OwnerError::NotOwner)?;
        let index = start / p.vregion_size;
        if (end - 1) / p.vregion_size != index {
            return Err(OwnerError::NotOwner);
        }
        p.regions.get_mut(&index).ok_or(OwnerError::NotOwner)
    }

    /// Checks that a page request for `addr` may be served: `NotOwner` outside adopted
    /// vRegions, `BadRequest` when unaligned or outside every region.
    fn check_page(&self, proc: u64, addr: u64) -> Result<(), Status> {
        if !aligned(addr) {
            return Err(Status::BadRequest);
        }
        let p = self.procs.get(&proc).ok_or(Status::NotOwner)?;
        let vmas = p.regions.get(&(addr / p.vregion_size)).ok_or(Status::NotOwner)?;
        vmas.find(addr).map(|_| ()).ok_or(Status::BadRequest)
    }

    /// A page to send back: the stored one, or `None` for a page never written (zeroes).
    pub fn fetch(&self, proc: u64, addr: u64) -> Result<Option<Cow<'_, Page>>, Status> {
        self.check_page(proc, addr)?;
        self.read_page(proc, addr)
    }

    /// Up to `n` contiguous pages from `addr` for a prefetch: stops before the first page that
    /// may not be served (outside the vRegions or the mapped regions). Fails like [`Owner::fetch`]
    /// if the first page may not be served.
    pub fn fetch_run(&self, proc: u64, addr: u64, n: u64) -> Result<Vec<Option<Cow<'_, Page>>>, Status> {
        self.check_page(proc, addr)?;
        let servable = (0..n).map(|i| addr.checked_add(i * P)).take_while(|a| a.is_some_and(|a| self.check_page(proc, a).is_ok()));
        servable.flatten().map(|a| self.read_page(proc, a)).collect()
    }

    /// Stores a flushed page (`data` must be one page). A secondary whose backup log is full
    /// answers [`Status::LogFull`].
    pub fn flush(&mut self, proc: u64, addr: u64, data: &[u8]) -> Result<(), Status> {
        self.check_page(proc, addr)?;
        let page: &Page = data.try_into().map_err(|_| Status::BadRequest)?;
        match self.pages(proc, addr) {
            Pages::Store(s) => s.write(proc, addr, page).map_err(|_| Status::NoSpace),
            Pages::Log(l) => l.write(proc, addr, page).map_err(|_| Status::LogFull),
        }
    }

    /// Moves the pages of `[from, from+len)` to `[to, to+len)`, each range inside one vRegion
    /// of this owner: re-keyed where both are kept alike, else handed from one to the other.
    fn move_pages(&mut self, proc: u64, from: u64, to: u64, len: u64) -> Result<(), OwnerError> {
        match (self.log_of(proc, from).is_some(), self.log_of(proc, to).is_some()) {
            (false, false) => self.store.rekey(proc, from, to, len),
            (true, true) => self.log_of(proc, from).map_or((), |l| l.rekey(proc, from, to, len)),
            _ => {
                self.free_pages(proc, to, to + len);
                loop {
                    let (pages, more) = self.take_pages(proc, from, from + len, TAKE_MAX as usize)?;
                    let moved: Vec<(u64, Vec<u8>)> = pages.into_iter().map(|(a, p)| (a - from + to, p)).collect();
                    self.put_pages(proc, &moved)?;
                    if !more {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands out (and frees) up to `max` stored pages of `[start, end)` (inside one vRegion).
    fn take_pages(&mut self, proc: u64, start: u64, end: u64, max: usize) -> Result<PageBatch, OwnerError> {
        match self.pages(proc, start) {
            Pages::Store(s) => Ok(s.take(proc, start, end, max)),
            Pages::Log(l) => l.take(proc, start, end, max).map_err(backup_failed),
        }
    }

    /// Serves one call of the home.
    pub fn call(&mut self, proc: u64, call: OwnerCall) -> Result<OwnerOutcome, OwnerError> {
        use OwnerOutcome::*;
        Ok(match call {
            OwnerCall::Adopt { index, vregion_size, secondary, backup_storage } => {
                self.adopt(proc, index, vregion_size, secondary, backup_storage)?;
                Done
            }
            OwnerCall::Place { low, high, len } => {
                if len == 0 || !aligned(len) {
                    return Err(OwnerError::Invalid);
                }
                Placed(self.region(proc, low, high)?.find_free_top_down(len, low, high))
            }
            OwnerCall::Map { vma } => {
                let vmas = self.region(proc, vma.start, vma.end)?;
                vmas.remove(vma.start, vma.end);
                let (start, end) = (vma.start, vma.end);
                vmas.insert(vma);
                self.free_pages(proc, start, end);
                Done
            }
            OwnerCall::Unmap { start, end } => {
                let removed = self.region(proc, start, end)?.remove(start, end);
                self.free_pages(proc, start, end);
                Regions(Some(removed))
            }
            OwnerCall::Protect { start, end, prot } => {
                if prot.0 & !7 != 0 {
                    return Err(OwnerError::Invalid);
                }
                Regions(self.region(proc, start, end)?.protect(start, end, prot))
            }
            OwnerCall::Discard { start, end } => {
                self.region(proc, start, end)?;
                self.free_pages(proc, start, end);
                Done
            }
            OwnerCall::Regions { start, end } => Regions(Some(self.region(proc, start, end)?.clipped(start, end))),
            OwnerCall::MovePages { from, to, len } => {
                let (from_end, to_end) = (
                    from.checked_add(len).ok_or(OwnerError::Invalid)?,
                    to.checked_add(len).ok_or(OwnerError::Invalid)?,
                );
                self.region(proc, from, from_end)?;
                self.region(proc, to, to_end)?;
                self.move_pages(proc, from, to, len)?;
                Done
            }
            OwnerCall::TakePages { start, end, max } => {
                self.region(proc, start, end)?;
                let (pages, more) = self.take_pages(proc, start, end, max.clamp(1, TAKE_MAX) as usize)?;
                OwnerOutcome::Pages { pages, more }
            }
            OwnerCall::ReadPages { start, end, max } => {
                self.region(proc, start, end)?;
                let max = max.clamp(1, TAKE_MAX) as usize;
                let (pages, more) = match self.log_of(proc, start) {
                    Some(log) => log.copy_out(proc, start, end, max).map_err(backup_failed)?,
                    None => self.store.copy_out(proc, start, end, max),
                };
                OwnerOutcome::Pages { pages, more }
            }
            OwnerCall::PutPages { pages } => {
                self.put_pages(proc, &pages)?;
                Done
            }
            OwnerCall::Release => {
                self.procs.remove(&proc);
                self.store.release(proc);
                if let Some(log) = &self.backup {
                    log.release(proc);
                }
                Done
            }
            OwnerCall::CopyOf { parent } => {
                if parent == proc {
                    return Err(OwnerError::Invalid);
                }
                let regions = self.procs.get(&parent).ok_or(OwnerError::NotOwner)?.clone();
                self.store.copy_process(parent, proc).map_err(|_| OwnerError::NoSpace)?;
                if let Some(log) = &self.backup {
                    if log.copy_process(parent, proc).is_err() {
                        self.store.release(proc);
                        return Err(OwnerError::NoSpace);
                    }
                }
                self.procs.insert(proc, regions);
                Done
            }
        })
    }

    /// Adopts vRegion `index`; a secondary's pages go to the backup log if there is one and a
    /// storage server for the process's files (`backup_storage`, or the server's own). A
    /// vRegion adopted already stays as it was.
    fn adopt(&mut self, proc: u64, index: u64, vregion_size: u64, secondary: bool, backup_storage: Option<String>) -> Result<(), OwnerError> {
        let fits = index.checked_add(1).and_then(|n| n.checked_mul(vregion_size)).is_some();
        if !vregion_size.is_power_of_two() || vregion_size < P || !fits {
            return Err(OwnerError::Invalid);
        }
        let p = self.procs.entry(proc).or_insert_with(|| ProcRegions { vregion_size, regions: HashMap::new(), logged: HashSet::new() });
        if p.vregion_size != vregion_size {
            return Err(OwnerError::Invalid);
        }
        if let std::collections::hash_map::Entry::Vacant(v) = p.regions.entry(index) {
            v.insert(VmaList::default());
            if secondary && self.backup.as_ref().is_some_and(|l| l.assign(proc, backup_storage)) {
                p.logged.insert(index);
            }
        }
        Ok(())
    }

    /// Stores pages handed over from another owner: all or none.
    fn put_pages(&mut self, proc: u64, pages: &[(u64, Vec<u8>)]) -> Result<(), OwnerError> {
        // New frames the store needs, and pages that go to the log (each may take a slot).
        let (mut frames, mut logged) = (0, 0);
        for (addr, data) in pages {
            if data.len() != PAGE_SIZE {
                return Err(OwnerError::Invalid);
            }
            match self.check_page(proc, *addr) {
                Ok(()) => {}
                Err(Status::NotOwner) => return Err(OwnerError::NotOwner),
                Err(_) => return Err(OwnerError::Invalid),
            }
            match self.log_of(proc, *addr) {
                Some(_) => logged += 1,
                None => frames += u64::from(self.store.read(proc, *addr).is_none()),
            }
        }
        if !self.store.can_hold(frames) || self.backup.as_ref().is_some_and(|l| logged > 0 && !l.can_take(logged)) {
            return Err(OwnerError::NoSpace);
        }
        for (addr, data) in pages {
            let page: &Page = data.as_slice().try_into().map_err(|_| OwnerError::Invalid)?;
            match self.pages(proc, *addr) {
                Pages::Store(s) => s.write(proc, *addr, page).map_err(|_| OwnerError::NoSpace)?,
                Pages::Log(l) => l.write(proc, *addr, page).map_err(|_| OwnerError::NoSpace)?,
            }
        }
        Ok(())
    }
}

/// A backup file that could not be read, as an owner's refusal.
fn backup_failed(e: BackupError) -> OwnerError {
    tracing::error!("{e}");
    OwnerError::Backup
}

#[cfg(test)]
mod tests {
    use super::*;
    use lego_proto::vma::{Prot, Vma, VmaKind};

    const VS: u64 = 16 << 20;

    fn vma(start: u64, end: u64) -> Vma {
        Vma { start, end, prot: Prot::RW, kind: VmaKind::Anon }
    }

    fn owner_with_region() -> Owner {
        let mut o = Owner::new(64);
        o.call(1, OwnerCall::Adopt { index: 2, vregion_size: VS, secondary: false, backup_storage: None }).unwrap();
        o.call(1, OwnerCall::Map { vma: vma(2 * VS + 0x1000, 2 * VS + 0x5000) }).unwrap();
        o
    }

    #[test]
    fn pages_outside_adopted_vregions_are_not_owned() {
        let mut o = owner_with_region();
        let page = [3u8; PAGE_SIZE];
        assert_eq!(o.flush(1, 2 * VS + 0x1000, &page), Ok(()));
        assert_eq!(o.fetch(1, 2 * VS + 0x1000).unwrap().unwrap()[0], 3);
        assert_eq!(o.fetch(1, 3 * VS + 0x1000).err(), Some(Status::NotOwner));
        assert_eq!(o.fetch(2, 2 * VS + 0x1000).err(), Some(Status::NotOwner), "another process");
        assert_eq!(o.flush(1, VS, &page), Err(Status::NotOwner));
        assert_eq!(o.call(1, OwnerCall::Map { vma: vma(3 * VS, 3 * VS + 0x1000) }), Err(OwnerError::NotOwner));
        assert_eq!(
            o.call(1, OwnerCall::Map { vma: vma(3 * VS - 0x1000, 3 * VS + 0x1000) }),
            Err(OwnerError::NotOwner),
            "a range crossing the vRegion's end"
        );
    }

    #[test]
    fn pages_outside_regions_are_bad_requests() {
        let mut o = owner_with_region();
        let page = [3u8; PAGE_SIZE];
        assert_eq!(o.fetch(1, 2 * VS + 0x6000).err(), Some(Status::BadRequest), "unmapped");
        assert_eq!(o.fetch(1, 2 * VS + 0x1001).err(), Some(Status::BadRequest), "unaligned");
        assert_eq!(o.flush(1, 2 * VS, &page), Err(Status::BadRequest));
        assert_eq!(o.flush(1, 2 * VS + 0x1000, &page[..100]), Err(Status::BadRequest));
        assert!(o.fetch(1, 2 * VS + 0x2000).unwrap().is_none(), "mapped, never written: zeroes");
        assert_eq!(o.store().used_pages(), 0);
    }

    #[test]
    fn fetch_runs_stop_at_the_end_of_the_region() {
        let mut o = owner_with_region();
        o.flush(1, 2 * VS + 0x2000, &[7u8; PAGE_SIZE]).unwrap();
        let run = o.fetch_run(1, 2 * VS + 0x1000, 8).unwrap();
        assert_eq!(run.len(), 4, "the region is 0x1000..0x5000");
        assert!(run[0].is_none() && run[1].as_ref().unwrap()[0] == 7 && run[2].is_none());
        assert_eq!(o.fetch_run(1, 2 * VS + 0x4000, 1).unwrap().len(), 1);
        assert_eq!(o.fetch_run(1, 2 * VS + 0x5000, 4).err(), Some(Status::BadRequest));
        assert_eq!(o.fetch_run(2, 2 * VS + 0x1000, 4).err(), Some(Status::NotOwner));
    }

    #[test]
    fn unmap_discard_and_protect() {
        let mut o = owner_with_region();
        let base = 2 * VS;
        let page = [9u8; PAGE_SIZE];
        for a in [0x1000, 0x2000, 0x4000] {
            o.flush(1, base + a, &page).unwrap();
        }
        o.call(1, OwnerCall::Discard { start: base + 0x1000, end: base + 0x2000 }).unwrap();
        assert!(o.fetch(1, base + 0x1000).unwrap().is_none());
        let removed = o.call(1, OwnerCall::Unmap { start: base + 0x3000, end: base + 0x6000 }).unwrap();
        assert_eq!(removed, OwnerOutcome::Regions(Some(vec![vma(base + 0x3000, base + 0x5000)])));
        assert_eq!(o.fetch(1, base + 0x4000).err(), Some(Status::BadRequest));
        assert_eq!(o.store().used_pages(), 1);
        let hole = o.call(1, OwnerCall::Protect { start: base + 0x1000, end: base + 0x4000, prot: Prot::READ });
        assert_eq!(hole, Ok(OwnerOutcome::Regions(None)));
        let old = o.call(1, OwnerCall::Protect { start: base + 0x1000, end: base + 0x2000, prot: Prot::READ });
        assert_eq!(old, Ok(OwnerOutcome::Regions(Some(vec![vma(base + 0x1000, base + 0x2000)]))));
        assert_eq!(
            o.call(1, OwnerCall::Place { low: base, high: base + VS, len: 0x1000 }),
            Ok(OwnerOutcome::Placed(Some(base + VS - 0x1000)))
        );
        o.call(1, OwnerCall::Release).unwrap();
        assert_eq!((o.store().used_pages(), o.vregions()), (0, 0));
        assert_eq!(o.fetch(1, base + 0x2000).err(), Some(Status::NotOwner));
    }

    #[test]
    fn pages_move_between_and_within_owners() {
        let mut o = owner_with_region();
        let base = 2 * VS;
        o.flush(1, base + 0x1000, &[1u8; PAGE_SIZE]).unwrap();
        o.flush(1, base + 0x2000, &[2u8; PAGE_SIZE]).unwrap();
        o.call(1, OwnerCall::Map { vma: vma(base + 0x10000, base + 0x14000) }).unwrap();
        o.call(1, OwnerCall::MovePages { from: base + 0x1000, to: base + 0x10000, len: 0x4000 }).unwrap();
        assert_eq!(o.fetch(1, base + 0x11000).unwrap().unwrap()[0], 2);
        let OwnerOutcome::Pages { pages, more } =
            o.call(1, OwnerCall::TakePages { start: base + 0x10000, end: base + 0x14000, max: 1 }).unwrap()
        else {
            panic!("not pages")
        };
        assert!(more);
        assert_eq!(pages[0].0, base + 0x10000);
        assert!(o.fetch(1, base + 0x10000).unwrap().is_none(), "taken pages are freed");
        let mut other = Owner::new(1);
        other.call(1, OwnerCall::Adopt { index: 0, vregion_size: VS, secondary: false, backup_storage: None }).unwrap();
        let put = |o: &mut Owner, addr: u64| o.call(1, OwnerCall::PutPages { pages: vec![(addr, vec![5; PAGE_SIZE])] });
        assert_eq!(put(&mut other, 0x1000), Err(OwnerError::Invalid), "not mapped there");
        other.call(1, OwnerCall::Map { vma: vma(0x1000, 0x3000) }).unwrap();
        put(&mut other, 0x1000).unwrap();
        assert_eq!(put(&mut other, 0x2000), Err(OwnerError::NoSpace));
        assert_eq!(other.fetch(1, 0x1000).unwrap().unwrap()[0], 5);
        assert_eq!(other.call(1, OwnerCall::Adopt { index: 1, vregion_size: VS * 2, secondary: false, backup_storage: None }), Err(OwnerError::Invalid));
    }

    /// A vRegion adopted as a secondary keeps its pages in the backup log, not in frames; every
    /// call reaches them there, pages move between it and a primary vRegion of the same
    /// server, and a full log refuses a write with `LogFull`.
    #[test]
    fn a_secondary_keeps_its_pages_in_the_backup_log() {
        let (log, storage) = crate::backup::testing::log(3);
        // Storage down from the start: every page written stays in the log.
        storage.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut o = Owner::new(64);
        o.set_backup(log);
        let (sec, pri) = (2 * VS, 3 * VS);
        o.call(1, OwnerCall::Adopt { index: 2, vregion_size: VS, secondary: true, backup_storage: None }).unwrap();
        o.call(1, OwnerCall::Adopt { index: 3, vregion_size: VS, secondary: false, backup_storage: None }).unwrap();
        o.call(1, OwnerCall::Map { vma: vma(sec, sec + 0x8000) }).unwrap();
        o.call(1, OwnerCall::Map { vma: vma(pri, pri + 0x8000) }).unwrap();
        o.flush(1, sec, &[1u8; PAGE_SIZE]).unwrap();
        o.flush(1, sec + 0x1000, &[2u8; PAGE_SIZE]).unwrap();
        assert_eq!(o.store().used_pages(), 0, "no frame for the secondary's pages");
        assert_eq!(o.fetch(1, sec + 0x1000).unwrap().unwrap()[0], 2);
        let read = o.call(1, OwnerCall::ReadPages { start: sec, end: sec + 0x8000, max: 8 }).unwrap();
        assert_eq!(read, OwnerOutcome::Pages { pages: vec![(sec, vec![1; PAGE_SIZE]), (sec + 0x1000, vec![2; PAGE_SIZE])], more: false });
        o.call(1, OwnerCall::MovePages { from: sec, to: pri, len: 0x2000 }).unwrap();
        assert_eq!((o.store().used_pages(), o.fetch(1, pri).unwrap().unwrap()[0]), (2, 1), "moved into frames");
        assert!(o.fetch(1, sec).unwrap().is_none());
        o.call(1, OwnerCall::MovePages { from: pri, to: sec + 0x4000, len: 0x2000 }).unwrap();
        assert_eq!((o.store().used_pages(), o.fetch(1, sec + 0x5000).unwrap().unwrap()[0]), (0, 2), "and back into the log");
        o.flush(1, sec + 0x6000, &[3u8; PAGE_SIZE]).unwrap();
        assert_eq!(o.flush(1, sec + 0x7000, &[4u8; PAGE_SIZE]), Err(Status::LogFull), "three slots, all unflushed");
        let put = |addr: u64| OwnerCall::PutPages { pages: vec![(addr, vec![4; PAGE_SIZE])] };
        assert_eq!(o.call(1, put(sec + 0x7000)), Err(OwnerError::NoSpace));
        assert_eq!(o.call(1, put(pri + 0x7000)), Ok(OwnerOutcome::Done), "pages for frames need no slot");
        assert_eq!(o.call(2, OwnerCall::CopyOf { parent: 1 }), Err(OwnerError::NoSpace), "a fork needs slots too");
        assert!(o.fetch(2, sec + 0x6000).is_err(), "a failed fork leaves nothing");
        o.call(1, OwnerCall::Release).unwrap();
        assert_eq!(o.backup().unwrap().used_slots(), 0, "released");
    }
}
