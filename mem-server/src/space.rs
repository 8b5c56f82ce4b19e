//! The vNodes' disk space as the buffer cache sees it, so that a write that would take a vNode
//! past its quota gets `ENOSPC` when the program writes, not later when the cache writes it
//! back (when the program may have closed the file and gone).
//!
//! A vNode's use is what its storage server holds ([`lego_proto::storage::FsStat::used_bytes`],
//! asked once, then kept up to date with the cache's own write-backs) plus what cached writes
//! added to its files and the cache has not written back yet (`pending`). Calls that free space
//! or add it on the storage server (unlink, rename, truncate, symlink) make the stored figure
//! stale: the next write that grows a file asks again. The storage server checks the quota
//! again on every write-back, so a write-back that another cache's writes took the room of
//! fails with `ENOSPC` there (reported to the file's next fsync or close), never passing the
//! quota.
//!
//! Shared by the shards of one mem-server ([`crate::file_shards`]); the lock is held only for
//! the arithmetic.

use lego_proto::sync::LockExt;
use std::collections::HashMap;
use std::sync::Mutex;

use lego_proto::storage::errno;


/// One vNode's space.
#[derive(Debug, Default)]
struct VnodeSpace {
    /// Its quota, as storage said.
    quota: Option<u64>,
    /// Bytes its storage server holds, if known and fresh.
    stored: Option<u64>,
    /// Bytes cached writes added to its files, not written back yet.
    pending: u64,
}

/// The space of the vNodes whose files the cache holds.
#[derive(Debug, Default)]
pub struct Space {
    vnodes: Mutex<HashMap<String, VnodeSpace>>,
}

impl Space {
    /// Whether the cache must ask storage for the vNode's quota and use before charging a
    /// write: nothing known yet, or a quota with a stale use.
    pub fn needs_refresh(&self, vnode: &str) -> bool {
        self.vnodes.lock_unpoisoned().get(vnode).is_none_or(|s| s.quota.is_some() && s.stored.is_none())
    }

    /// What storage answered to a statfs of the vNode.
    pub fn refresh(&self, vnode: &str, quota: Option<u64>, stored: u64) {
        let mut all = self.vnodes.lock_unpoisoned();
        let s = all.entry(vnode.to_string()).or_default();
        s.quota = quota;
        s.stored = Some(stored);
    }

    /// Charges `growth` bytes a cached write adds to the vNode's files: `ENOSPC` (and nothing
    /// charged) if that would pass its quota.
    pub fn charge(&self, vnode: &str, growth: u64) -> Result<(), i32> {
        let mut all = self.vnodes.lock_unpoisoned();
        let s = all.entry(vnode.to_string()).or_default();
        if let (Some(q), Some(stored)) = (s.quota, s.stored) {
            if stored.saturating_add(s.pending).saturating_add(growth) > q {
                return Err(errno::ENOSPC);
            }
        }
        s.pending += growth;
        Ok(())
    }

    /// `bytes` of growth were written back: storage holds them now.
    pub fn written(&self, vnode: &str, bytes: u64) {
        if let Some(s) = self.vnodes.lock_unpoisoned().get_mut(vnode) {
            s.pending = s.pending.saturating_sub(bytes);
            s.stored = s.stored.map(|n| n + bytes);
        }
    }

    /// `bytes` of growth went without reaching storage (the file was dropped from the cache).
    pub fn dropped(&self, vnode: &str, bytes: u64) {
        if let Some(s) = self.vnodes.lock_unpoisoned().get_mut(vnode) {
            s.pending = s.pending.saturating_sub(bytes);
        }
    }

    /// Bytes cached writes added to the vNode's files, not written back yet.
    pub fn pending(&self, vnode: &str) -> u64 {
        self.vnodes.lock_unpoisoned().get(vnode).map_or(0, |s| s.pending)
    }

    /// Storage's use of the vNode changed by a call the cache passed on: ask again when needed.
    pub fn stale(&self, vnode: &str) {
        if let Some(s) = self.vnodes.lock_unpoisoned().get_mut(vnode) {
            s.stored = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_charged_against_the_quota_until_written_back() {
        let s = Space::default();
        assert!(s.needs_refresh("v"));
        s.refresh("v", Some(100), 60);
        assert!(!s.needs_refresh("v"));
        s.charge("v", 30).unwrap();
        assert_eq!(s.charge("v", 11), Err(errno::ENOSPC));
        s.charge("v", 10).unwrap();
        s.written("v", 40);
        assert_eq!(s.charge("v", 1), Err(errno::ENOSPC), "written back: still used");
        s.stale("v");
        assert!(s.needs_refresh("v"));
        s.refresh("v", Some(100), 50);
        s.charge("v", 50).unwrap();
        s.dropped("v", 50);
        s.charge("v", 50).unwrap();
        s.refresh("w", None, 1 << 40);
        s.charge("w", u64::MAX / 2).unwrap();
        s.stale("w");
        assert!(!s.needs_refresh("w"), "no quota: nothing to ask");
    }
}
