//! The background cleaner (LegoOS's flush thread, Linux's kswapd): writes dirty lines back
//! before the CLOCK hand reaches them, so that a miss finds clean victims and fetches its line
//! alone, with the state lock let go, instead of writing victims back first.
//!
//! After each sweep it looks at the frames the next few sweeps will meet (skipping those the
//! very next one will: they may be evicted before a write-back could land). Lines accessed
//! since the last sweep are left alone under CLOCK, as they will get a second chance. A dirty
//! line's D bit is cleared, its frame invalidated and the line copied out, in the order
//! [`State::clean`] follows for a fork, then written back, pipelined per owner over
//! connections of the cleaner's own. From the moment its D bit is cleared until the owner has
//! it, the line is marked as being cleaned: sweeps pass it by and changes to the address space
//! wait, so its frame keeps it and an older copy can never overtake a newer one on its way to
//! the owner. That is what lets the cleaner drop the state lock across the invalidation (the
//! slow part: a few ioctls per run of frames) and the write-back; the copy itself is made
//! under the lock, like every VMM access to a frame.

use lego_proto::sync::CondvarExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use lego_proto::frame::MAX_RUN_PAGES;
use lego_proto::transport::{RegisteredBuf, Slot};

use super::{MemError, Shared, Staged, State};

/// Starts the cleaner of the cache sharing `mem`; it ends when [`Shared::stop`] is set.
pub(super) fn spawn(mem: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("excache-cleaner".into()).spawn(move || run(&mem))
}

fn run(mem: &Shared) {
    let mut buf = RegisteredBuf::new(MAX_RUN_PAGES as usize);
    let mut st = mem.state();
    loop {
        if mem.stop.load(Ordering::Acquire) || mem.failed.load(Ordering::Acquire) {
            return;
        }
        let picked = match st.dirty_ahead(mem) {
            Ok(picked) => picked,
            Err(e) => {
                drop(st);
                mem.fail(e.to_string());
                return;
            }
        };
        if picked.is_empty() {
            st = mem.work.wait_unpoisoned(st);
            continue;
        }
        // The invalidation (a few ioctls per run of frames, the slow part) needs no lock: the
        // lines are marked as being cleaned, so their frames keep them until `cleaned`.
        drop(st);
        let invalidated = super::invalidate_runs(&mem.pool, picked.iter().map(|&(f, _, _)| u64::from(f)).collect());
        st = mem.state();
        let batch = match invalidated.map_err(MemError::Invalidate).and_then(|runs| st.copy_cleaning(mem, &picked, runs, &mut buf)) {
            Ok(batch) => batch,
            Err(e) => {
                st.cleaned(picked.iter().map(|&(_, page, _)| page), false);
                drop(st);
                mem.fail(e.to_string());
                return;
            }
        };
        let proc = st.proc;
        // Each line goes to its owner and, with replication, to its secondary, all at once.
        let mut targets: Vec<(usize, Vec<(u64, Slot)>)> = Vec::new();
        for s in &batch {
            for server in st.owners.owner_of(s.page).into_iter().chain(st.owners.secondary_of(s.page)) {
                match targets.iter_mut().find(|(o, _)| *o == server) {
                    Some((_, v)) => v.push((s.page, s.slot)),
                    None => targets.push((server, vec![(s.page, s.slot)])),
                }
            }
        }
        let mut links = Vec::new();
        let mut failures = Vec::new();
        for (server, pages) in targets {
            match st.owners.take_link(server) {
                Ok(link) => links.push((server, link, pages)),
                Err(source) => failures.push(MemError::Owner { what: "cleaning", page: pages[0].0, server: st.owners.name(server).to_string(), source }),
            }
        }
        if failures.is_empty() {
            drop(st);
            // All the writes go out before any reply is awaited.
            let pending: Vec<_> = links.iter_mut().map(|(_, link, pages)| link.start_writes(proc, pages, &buf)).collect();
            let sent: Vec<_> = links.iter_mut().zip(pending).map(|((_, link, _), p)| p.and_then(|p| link.finish_writes(p))).collect();
            st = mem.state();
            for ((server, _, pages), r) in links.iter().zip(sent) {
                if let Err(source) = r {
                    failures.push(MemError::Owner { what: "cleaning", page: pages[0].0, server: st.owners.name(*server).to_string(), source });
                }
            }
        }
        let replicas: u64 = links.iter().map(|(_, _, p)| p.len() as u64).sum::<u64>() - batch.len() as u64;
        for (server, link, _) in links {
            st.owners.put_link(server, link);
        }
        // A failed server is failed over and the batch stays dirty, to be written again to
        // the owners as they are now; a failure nothing can recover from ends the memory.
        let mut fatal = None;
        for e in &failures {
            match st.recover(e) {
                Ok(true) => {}
                Ok(false) => fatal = fatal.or(Some(e.to_string())),
                Err(lost) => fatal = fatal.or(Some(lost.to_string())),
            }
        }
        let ok = failures.is_empty();
        if !ok && fatal.is_none() {
            if let Err(e) = st.redirty(mem, &batch) {
                fatal = Some(e.to_string());
            }
        }
        if ok {
            st.stats.replicated += replicas;
            st.log_full_since = None;
        }
        st.cleaned(batch.iter().map(|s| s.page), ok);
        mem.settled.notify_all();
        if let Some(e) = fatal {
            drop(st);
            mem.fail(e);
            return;
        }
    }
}

impl State {
    /// Picks the dirty lines the next sweeps will meet, as the module documentation says (at
    /// most [`MAX_RUN_PAGES`]), clears their D bits and marks them as being cleaned. Returns
    /// their frames, pages and entries before; their frames still need an invalidation before
    /// the copy.
    fn dirty_ahead(&mut self, mem: &Shared) -> Result<Vec<(u32, u64, super::Pte)>, MemError> {
        let mut picked = Vec::new();
        for set in 0..self.frames.sets() {
            let next = self.frames.batch(set);
            for f in self.frames.ahead(set, next, 3 * next) {
                if picked.len() == MAX_RUN_PAGES as usize {
                    break;
                }
                let Some(page) = self.frames.page(f) else { continue };
                if self.fetching.contains(&page) || self.cleaning.contains(&page) {
                    continue;
                }
                let word = self.pt.entry(&mem.sys, page).ok_or(MemError::LostEntry(page))?;
                let pte = super::Pte(word.load(Ordering::Acquire));
                if !pte.present() || !pte.dirty() || (self.policy == super::Policy::Clock && pte.accessed()) {
                    continue;
                }
                let old = super::Pte::update(word, super::Pte::cleaned);
                if old.dirty() {
                    self.cleaning.insert(page);
                    picked.push((f, page, old));
                }
            }
        }
        Ok(picked)
    }

    /// Marks the lines of `batch` dirty again (their write-back failed over: they go again).
    fn redirty(&mut self, mem: &Shared, batch: &[Staged]) -> Result<(), MemError> {
        for s in batch {
            let word = self.pt.entry(&mem.sys, s.page).ok_or(MemError::LostEntry(s.page))?;
            word.fetch_or(super::DIRTY, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Copies the `picked` lines, whose frames were invalidated since (in `runs` runs), into
    /// `buf`: a write after the invalidation set D again, one before it is in the copy. A line
    /// installed dirty on a prediction and unwritten since is clean already: it is let go.
    fn copy_cleaning(&mut self, mem: &Shared, picked: &[(u32, u64, super::Pte)], runs: u64, buf: &mut RegisteredBuf) -> Result<Vec<Staged>, MemError> {
        self.stats.invalidations += runs;
        let mut batch = Vec::with_capacity(picked.len());
        for &(f, page, old) in picked {
            if self.unwritten(mem, f, page, old)? {
                self.cleaning.remove(&page);
            } else {
                batch.push(self.copy_out(mem, f, page, batch.len(), Some(&mut *buf))?);
            }
        }
        Ok(batch)
    }

    /// The cleaner's write-back of `pages` ended (`ok`: the owners have every line).
    fn cleaned(&mut self, pages: impl Iterator<Item = u64>, ok: bool) {
        for page in pages {
            self.cleaning.remove(&page);
            if ok {
                self.remote.insert(page);
                self.stats.cleaned += 1;
                self.stats.dirty_flushes += 1;
                self.stats.bytes_out += crate::layout::PAGE_SIZE;
            }
        }
    }
}
