//! Which mem-server owns a new vRegion.
//!
//! In LegoOS the home asks the global memory manager (GMM, §4.6), which knows the physical space
//! and load of every mComponent. Until the global manager exists, the home decides itself from
//! the [`ServerStat`]s of the servers in the process's spec, through [`choose_owner`] alone; the
//! global manager takes this function over.

use std::cmp::Reverse;

use lego_proto::mm::ServerStat;

/// Chooses the owner of a new vRegion among `candidates` (server index, its statistics): the
/// most free frames first, then the fewest vRegions owned, then the fewest requests served
/// (load), then the lowest index. `None` when there is no candidate.
///
/// The global memory manager will take this decision over (it sees every mComponent, with
/// approximate but cluster-wide figures); callers must not rely on anything but "one of the
/// candidates".
pub fn choose_owner(candidates: &[(usize, ServerStat)]) -> Option<usize> {
    candidates
        .iter()
        .min_by_key(|(i, s)| (Reverse(s.capacity_pages.saturating_sub(s.used_pages)), s.vregions, s.requests, *i))
        .map(|(i, _)| *i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(capacity_pages: u64, used_pages: u64, vregions: u64, requests: u64) -> ServerStat {
        ServerStat { capacity_pages, used_pages, vregions, requests, ..ServerStat::default() }
    }

    #[test]
    fn most_free_then_fewest_vregions_then_load_then_index() {
        assert_eq!(choose_owner(&[]), None);
        let c = [(0, stat(100, 50, 0, 0)), (1, stat(100, 10, 9, 9)), (2, stat(50, 0, 0, 0))];
        assert_eq!(choose_owner(&c), Some(1), "most free frames wins");
        let c = [(0, stat(100, 0, 3, 0)), (1, stat(100, 0, 2, 50)), (2, stat(100, 0, 2, 40))];
        assert_eq!(choose_owner(&c), Some(2), "fewest vRegions, then load");
        let c = [(4, stat(100, 0, 1, 1)), (3, stat(100, 0, 1, 1))];
        assert_eq!(choose_owner(&c), Some(3), "ties go to the lowest index");
        let c = [(0, stat(10, 20, 0, 0)), (1, stat(0, 0, 5, 5))];
        assert_eq!(choose_owner(&c), Some(0), "over-full servers count as having nothing free");
    }
}
