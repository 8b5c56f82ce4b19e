//! The coarse decisions of the global managers (LegoOS §4.6), as pure functions of the registry:
//! which pComponent runs a new process (GPM), which mem-servers it should use (GMM), which storage server holds a new vNode's
//! mount and which mem-server caches its files (GSM). Only components that are up are chosen.

use lego_proto::global::{ComponentInfo, Role};
use lego_proto::storage::vnode_hash;

fn up(components: &[ComponentInfo], role: Role) -> impl Iterator<Item = &ComponentInfo> {
    components.iter().filter(move |c| c.role == role && c.up)
}

fn free(c: &ComponentInfo) -> u64 {
    c.load.capacity_bytes.saturating_sub(c.load.used_bytes)
}

/// GMM: the mem-servers that are up, most free memory first, then the least busy, so that a
/// second mem-server never sits idle while the first fills (LegoOS issue #10).
pub fn mem_servers(components: &[ComponentInfo]) -> Vec<String> {
    let mut m: Vec<&ComponentInfo> = up(components, Role::Memory).collect();
    m.sort_by(|a, b| free(b).cmp(&free(a)).then(a.requests_per_s.total_cmp(&b.requests_per_s)).then(a.id.cmp(&b.id)));
    m.into_iter().map(|c| c.addr.clone()).collect()
}

/// GPM: the pComponent for a new process: the one that is up running the fewest guest threads,
/// then the one a process was placed on least recently (`placed_at` tells when, `None` for
/// never), so that equally loaded pComponents take turns, then the lowest id. Returns its id.
pub fn pcomp<T: Ord>(components: &[ComponentInfo], placed_at: impl Fn(u64) -> Option<T>) -> Option<u64> {
    up(components, Role::Processor).min_by_key(|c| (c.load.threads, placed_at(c.id), c.id)).map(|c| c.id)
}

/// GMM: the owner of a new vRegion of `vregion_size` bytes among the mem-servers `among`: of
/// those that are up and have a vRegion free (fewer vRegions than capacity / vRegion size), the
/// one owning the fewest vRegions, then the most free memory, then the least busy. Spreading
/// by vRegions owned keeps a second mem-server from sitting idle while the first fills (LegoOS
/// issue #10). Returns its id.
pub fn vregion_owner(components: &[ComponentInfo], among: &[String], vregion_size: u64) -> Option<u64> {
    let slots = |c: &ComponentInfo| (c.load.capacity_bytes / vregion_size.max(1)).max(1);
    up(components, Role::Memory)
        .filter(|c| among.contains(&c.addr) && c.load.vregions < slots(c))
        .min_by(|a, b| {
            a.load.vregions.cmp(&b.load.vregions).then(free(b).cmp(&free(a))).then(a.requests_per_s.total_cmp(&b.requests_per_s)).then(a.id.cmp(&b.id))
        })
        .map(|c| c.id)
}

/// GSM: the storage server for a new vNode's mount: the one that is up with the most free space.
pub fn storage(components: &[ComponentInfo]) -> Option<String> {
    up(components, Role::Storage).max_by(|a, b| free(a).cmp(&free(b)).then(b.id.cmp(&a.id))).map(|c| c.addr.clone())
}

/// GSM: the mem-server caching `vnode`'s files on `storage`: among the mem-servers that are up
/// and front that storage server, one chosen by the vNode's name, so that every process of the
/// vNode uses the same cache while the set of mem-servers stays the same.
pub fn cache(components: &[ComponentInfo], storage: &str, vnode: &str) -> Option<String> {
    let mut m: Vec<&ComponentInfo> =
        up(components, Role::Memory).filter(|c| c.fronts.as_deref() == Some(storage)).collect();
    m.sort_by_key(|c| c.id);
    m.get((vnode_hash(vnode) % m.len().max(1) as u64) as usize).map(|c| c.addr.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lego_proto::global::Load;

    fn c(id: u64, role: Role, up: bool, free_mib: u64, fronts: Option<&str>) -> ComponentInfo {
        ComponentInfo {
            id,
            role,
            addr: format!("h{id}:1"),
            cores: 2,
            fronts: fronts.map(str::to_string),
            up,
            last_seen_ms: 0,
            load: Load { capacity_bytes: 1 << 40, used_bytes: (1 << 40) - (free_mib << 20), ..Load::default() },
            requests_per_s: 0.0,
            bytes_in_per_s: 0.0,
            bytes_out_per_s: 0.0,
        }
    }

    #[test]
    fn the_freest_mem_server_comes_first_and_down_ones_never() {
        let all = [c(1, Role::Memory, true, 100, None), c(2, Role::Memory, true, 900, None), c(3, Role::Memory, false, 5000, None)];
        assert_eq!(mem_servers(&all), ["h2:1", "h1:1"]);
    }

    #[test]
    fn new_vregions_go_to_the_member_owning_fewest_with_a_slot_free() {
        let with = |id, up, vregions| {
            let mut m = c(id, Role::Memory, up, 4096, None);
            m.load.capacity_bytes = 4 << 30;
            m.load.vregions = vregions;
            m
        };
        let all = [with(1, true, 2), with(2, true, 1), with(3, false, 0), with(4, true, 0)];
        let among = |ids: &[u64]| ids.iter().map(|i| format!("h{i}:1")).collect::<Vec<_>>();
        assert_eq!(vregion_owner(&all, &among(&[1, 2, 3]), 1 << 30), Some(2), "fewest owned among the process's servers, and up");
        assert_eq!(vregion_owner(&all, &among(&[1, 2, 3, 4]), 1 << 30), Some(4));
        assert_eq!(vregion_owner(&all, &among(&[1, 2]), 2 << 30), Some(2), "1 has both of its 2 GiB slots taken");
        assert_eq!(vregion_owner(&all, &among(&[1]), 2 << 30), None, "no slot free");
        assert_eq!(vregion_owner(&all, &among(&[3]), 1 << 30), None, "down");
    }

    #[test]
    fn storage_and_cache_choices() {
        let all = [
            c(1, Role::Storage, true, 10, None),
            c(2, Role::Storage, true, 50, None),
            c(3, Role::Storage, false, 900, None),
            c(4, Role::Memory, true, 1, Some("h2:1")),
            c(5, Role::Memory, true, 1, Some("h1:1")),
            c(6, Role::Memory, false, 1, Some("h2:1")),
        ];
        assert_eq!(storage(&all).as_deref(), Some("h2:1"));
        assert_eq!(cache(&all, "h2:1", "any").as_deref(), Some("h4:1"), "the only up mem-server fronting h2");
        assert_eq!(cache(&all, "h3:1", "any"), None);
        assert_eq!(storage(&[]), None);
    }
}
