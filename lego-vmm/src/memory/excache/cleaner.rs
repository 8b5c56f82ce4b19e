//! The background cleaner (LegoOS's flush thread, Linux's kswapd): writes dirty lines back
//! before the CLOCK hand reaches them, so that a miss finds clean victims and fetches its line
//! alone, with the state lock let go, instead of writing victims back first.
//!
//! After each sweep it looks at the frames the next few sweeps will meet (skipping those the
//! very next one will: they may be evicted before a write-back could land). Lines accessed
//! since the last sweep are left alone under CLOCK, as they will get a second chance. A dirty
//! line's D bit is cleared, its frame invalidated and the line copied out, exactly as
//! [`State::clean`] does for a fork, then written back with the lock let go, pipelined per
//! owner over connections of the cleaner's own. Until the owner has it the line is marked as
//! being cleaned: sweeps pass it by and changes to the address space wait, so an older copy
//! can never overtake a newer one on its way to the owner.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use lego_proto::frame::MAX_RUN_PAGES;
use lego_proto::transport::RegisteredBuf;

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
        let batch = match st.dirty_ahead(mem, &mut buf) {
            Ok(batch) => batch,
            Err(e) => {
                drop(st);
                mem.fail(e.to_string());
                return;
            }
        };
        if batch.is_empty() {
            st = mem.work.wait(st).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let proc = st.proc;
        let mut links = Vec::new();
        let mut failure = None;
        for s in &batch {
            if links.iter().any(|&(o, _, _)| o == s.owner) {
                continue;
            }
            match st.owners.take_link(s.owner) {
                Ok(link) => links.push((s.owner, link, s.page)),
                Err(source) => {
                    failure = Some(MemError::Owner { what: "cleaning", page: s.page, server: st.owners.name(s.owner).to_string(), source });
                    break;
                }
            }
        }
        if failure.is_none() {
            drop(st);
            let sent: Vec<_> = links
                .iter_mut()
                .map(|(owner, link, _)| {
                    let pages: Vec<_> = batch.iter().filter(|s| s.owner == *owner).map(|s| (s.page, s.slot)).collect();
                    link.write_pages(proc, &pages, &buf)
                })
                .collect();
            st = mem.state();
            for (&(owner, _, page), r) in links.iter().zip(sent) {
                if let Err(source) = r {
                    failure = Some(MemError::Owner { what: "cleaning", page, server: st.owners.name(owner).to_string(), source });
                }
            }
        }
        for (owner, link, _) in links {
            st.owners.put_link(owner, link);
        }
        st.cleaned(&batch, failure.is_none());
        mem.settled.notify_all();
        if let Some(e) = failure {
            drop(st);
            mem.fail(e.to_string());
            return;
        }
    }
}

impl State {
    /// Picks the dirty lines the next sweeps will meet, as the module documentation says, and
    /// copies them into `buf` (at most [`MAX_RUN_PAGES`]); they are marked as being cleaned.
    fn dirty_ahead(&mut self, mem: &Shared, buf: &mut RegisteredBuf) -> Result<Vec<Staged>, MemError> {
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
                if word.fetch_and(!super::DIRTY, Ordering::AcqRel) & super::DIRTY != 0 {
                    picked.push((f, page));
                }
            }
        }
        self.invalidate_frames(mem, picked.iter().map(|&(f, _)| u64::from(f)).collect())?;
        let mut staged = Vec::with_capacity(picked.len());
        for (i, (f, page)) in picked.into_iter().enumerate() {
            let s = self.copy_out(mem, f, page, i, Some(&mut *buf))?;
            self.cleaning.insert(page);
            staged.push(s);
        }
        Ok(staged)
    }

    /// The cleaner's write-back of `batch` ended (`ok`: the owners have every line).
    fn cleaned(&mut self, batch: &[Staged], ok: bool) {
        for s in batch {
            self.cleaning.remove(&s.page);
            if ok {
                self.remote.insert(s.page);
                self.stats.cleaned += 1;
                self.stats.dirty_flushes += 1;
                self.stats.bytes_out += crate::layout::PAGE_SIZE;
            }
        }
    }
}
