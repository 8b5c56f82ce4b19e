//! The home against in-memory owners: three real [`Owner`]s reached without a network.

use super::*;
use crate::owner::Owner;
use lego_proto::frame::Status;

const VS: u64 = 16 << 20;
const TOP: u64 = 64 * VS;
const MMAP_TOP: u64 = 60 * VS;
const USER_MIN: u64 = 0x10000;
const PROC: u64 = 42;
const MAYMOVE: u32 = MREMAP_MAYMOVE;

struct Fake {
    owners: Vec<Owner>,
    /// What the global memory manager answers, if there is one.
    gmm: Option<String>,
}

impl Owners for Fake {
    fn call(&mut self, owner: usize, proc: u64, call: OwnerCall) -> Result<OwnerOutcome, OwnerFailure> {
        Ok(self.owners[owner].call(proc, call)?)
    }
    fn stat(&mut self, owner: usize) -> Result<ServerStat, OwnerFailure> {
        let o = &self.owners[owner];
        Ok(ServerStat {
            capacity_pages: o.store().capacity_pages(),
            used_pages: o.store().used_pages(),
            vregions: o.vregions(),
            ..ServerStat::default()
        })
    }
    fn gmm_owner(&mut self, _: &[String], _: u64) -> Option<String> {
        self.gmm.clone()
    }
}

fn spec() -> ProcessSpec {
    ProcessSpec {
        servers: vec!["a".into(), "b".into(), "c".into()],
        home: 0,
        vregion_size: VS,
        user_min: USER_MIN,
        space_top: TOP,
        mmap_top: MMAP_TOP,
        stack: (TOP - VS / 2, TOP),
        replicas: 1,
        backup_storage: None,
    }
}

/// A started process and its owners; the stack's vRegion (63) went to owner 0.
fn setup() -> (HomeProcess, Fake) {
    let mut f = Fake { owners: (0..3).map(|_| Owner::new(1 << 16)).collect(), gmm: None };
    let mut h = HomeProcess::new(PROC, spec()).unwrap();
    let out = h.start(&mut f).unwrap().unwrap();
    assert_eq!(out.owners, vec![VRegionOwner { index: 63, owner: "a".into(), secondary: None }]);
    assert_eq!(
        out.effects,
        vec![Effect::Map(Vma { start: TOP - VS / 2, end: TOP, prot: Prot::RW, kind: VmaKind::Stack })]
    );
    (h, f)
}

fn ok(h: &mut HomeProcess, f: &mut Fake, call: MemCall) -> MemOutcome {
    h.call(call.clone(), f).unwrap().unwrap_or_else(|e| panic!("{call:?} failed with errno {e}"))
}

fn err(h: &mut HomeProcess, f: &mut Fake, call: MemCall) -> i32 {
    match h.call(call.clone(), f).unwrap() {
        Ok(o) => panic!("{call:?} succeeded: {o:?}"),
        Err(e) => e,
    }
}

fn mmap(addr: u64, len: u64, flags: u32) -> MemCall {
    MemCall::Mmap { addr, len, prot: Prot::RW, flags, kind: VmaKind::Anon }
}

fn anon(start: u64, end: u64) -> Vma {
    Vma { start, end, prot: Prot::RW, kind: VmaKind::Anon }
}

/// Writes a page through the owner of its vRegion, as a pComponent flush would.
fn write(h: &HomeProcess, f: &mut Fake, addr: u64, byte: u8) {
    let owner = h.owner_of(addr / VS).expect("owned");
    f.owners[owner].flush(PROC, addr, &[byte; PAGE_SIZE]).unwrap();
}

/// Reads a page through its owner (0 for a page never written); checks the others refuse it.
fn read(h: &HomeProcess, f: &Fake, addr: u64) -> u8 {
    let owner = h.owner_of(addr / VS).expect("owned");
    for (i, o) in f.owners.iter().enumerate().filter(|(i, _)| *i != owner) {
        assert_eq!(o.fetch(PROC, addr).err(), Some(Status::NotOwner), "server {i} answered for {addr:#x}");
    }
    f.owners[owner].fetch(PROC, addr).unwrap().map_or(0, |p| p[0])
}

fn regions_at(f: &mut Fake, owner: usize, start: u64, end: u64) -> Vec<Vma> {
    match f.owners[owner].call(PROC, OwnerCall::Regions { start, end }).unwrap() {
        OwnerOutcome::Regions(Some(r)) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn mmap_places_top_down_and_spreads_vregions_over_owners() {
    let (mut h, mut f) = setup();
    let a = ok(&mut h, &mut f, mmap(0, 4096, 0));
    assert_eq!(a.value, MMAP_TOP - 4096);
    assert_eq!(a.owners, vec![VRegionOwner { index: 59, owner: "b".into(), secondary: None }]);
    let b = ok(&mut h, &mut f, mmap(0, 8192, 0));
    assert_eq!(b.value, MMAP_TOP - 3 * 4096, "placed by the owner inside the same vRegion");
    assert!(b.owners.is_empty());
    // A whole vRegion does not fit in 59's summary: the next one down.
    let c = ok(&mut h, &mut f, mmap(0, VS, 0));
    assert_eq!((c.value, c.owners.len()), (58 * VS, 1));
    assert_eq!(h.owner_of(58), Some(2));
    // Larger than a vRegion: a run of entirely free vRegions, each with its own owner.
    let d = ok(&mut h, &mut f, mmap(0, 2 * VS + VS / 2, 0));
    assert_eq!(d.value, 55 * VS + VS / 2);
    assert_eq!(d.effects, vec![Effect::Map(anon(55 * VS + VS / 2, 58 * VS))]);
    let owners: Vec<usize> = (55..58).map(|i| h.owner_of(i).unwrap()).collect();
    assert_eq!(owners, vec![0, 1, 2]);
    // Pages live at the owner of their vRegion, and only there.
    for (i, addr) in [55 * VS + VS / 2, 56 * VS, 57 * VS + 0x5000, MMAP_TOP - 4096].into_iter().enumerate() {
        write(&h, &mut f, addr, i as u8 + 1);
        assert_eq!(read(&h, &f, addr), i as u8 + 1);
    }
    assert_eq!(read(&h, &f, 56 * VS + 4096), 0, "never written: zeroes");
    // A free hint is taken as is; a taken one is not.
    assert_eq!(ok(&mut h, &mut f, mmap(20 * VS, 4096, 0)).value, 20 * VS);
    assert_eq!(ok(&mut h, &mut f, mmap(20 * VS, 4096, 0)).value, MMAP_TOP - 4 * 4096);
}

#[test]
fn mmap_errors() {
    let (mut h, mut f) = setup();
    assert_eq!(err(&mut h, &mut f, mmap(0, 0, 0)), libc::EINVAL);
    assert_eq!(err(&mut h, &mut f, mmap(0x20001, 4096, MAP_FIXED)), libc::EINVAL);
    assert_eq!(err(&mut h, &mut f, mmap(0x1000, 4096, MAP_FIXED)), libc::EPERM);
    assert_eq!(err(&mut h, &mut f, mmap(TOP - 4096, 8192, MAP_FIXED)), libc::ENOMEM);
    assert_eq!(err(&mut h, &mut f, mmap(0, MMAP_TOP, 0)), libc::ENOMEM);
    assert_eq!(err(&mut h, &mut f, mmap(0, u64::MAX, 0)), libc::ENOMEM);
    // Fill everything below mmap_top but one vRegion's worth: one run of free vRegions.
    let big = ok(&mut h, &mut f, mmap(0, MMAP_TOP - USER_MIN - VS, 0));
    assert_eq!(big.value, USER_MIN + VS);
    assert_eq!(big.owners.len(), 59);
    assert_eq!(err(&mut h, &mut f, mmap(0, VS + 4096, 0)), libc::ENOMEM);
    assert_eq!(ok(&mut h, &mut f, mmap(0, VS - USER_MIN, 0)).value, USER_MIN, "vRegion 0, unowned");
    assert_eq!(ok(&mut h, &mut f, mmap(0, 4096, 0)).value, USER_MIN + VS - 4096, "placed by vRegion 1's owner");
    assert_eq!(err(&mut h, &mut f, mmap(0, USER_MIN, 0)), libc::ENOMEM, "one page short");
    assert_eq!(ok(&mut h, &mut f, mmap(0, USER_MIN - 4096, 0)).value, VS);
    assert_eq!(err(&mut h, &mut f, mmap(0, 4096, 0)), libc::ENOMEM, "full");
    assert_eq!(err(&mut h, &mut f, mmap(10 * VS - 4096, 8192, MAP_FIXED_NOREPLACE)), libc::EEXIST);
    assert_eq!(ok(&mut h, &mut f, mmap(10 * VS - 4096, 8192, MAP_FIXED)).effects.len(), 2, "replaced");
}

#[test]
fn the_gmm_choice_comes_first_and_an_unknown_one_is_ignored() {
    let (mut h, mut f) = setup();
    f.gmm = Some("c".into());
    let out = ok(&mut h, &mut f, mmap(0, VS, 0));
    assert_eq!(out.owners.iter().map(|o| o.owner.as_str()).collect::<Vec<_>>(), ["c"], "the GMM's pick, not the emptiest");
    f.gmm = Some("not one of the process's servers".into());
    let out = ok(&mut h, &mut f, mmap(0, VS, 0));
    assert_eq!(out.owners.len(), 1);
    assert_ne!(out.owners[0].owner, "c", "the home's own choice: c already owns one more vRegion than b");
}

#[test]
fn fixed_mapping_replaces_across_owners() {
    let (mut h, mut f) = setup();
    let base = ok(&mut h, &mut f, mmap(0, 2 * VS, 0)).value;
    assert_eq!(base, 58 * VS);
    assert_ne!(h.owner_of(58), h.owner_of(59));
    for a in [59 * VS - 4096, 59 * VS, 59 * VS + 4096] {
        write(&h, &mut f, a, 7);
    }
    let out = ok(
        &mut h,
        &mut f,
        MemCall::Mmap { addr: 59 * VS - 4096, len: 8192, prot: Prot::READ, flags: MAP_FIXED, kind: VmaKind::Anon },
    );
    assert_eq!(out.value, 59 * VS - 4096);
    assert_eq!(
        out.effects,
        vec![
            Effect::Unmap { start: 59 * VS - 4096, end: 59 * VS + 4096 },
            Effect::Map(Vma { start: 59 * VS - 4096, end: 59 * VS + 4096, prot: Prot::READ, kind: VmaKind::Anon }),
        ]
    );
    assert_eq!(read(&h, &f, 59 * VS - 4096), 0, "replaced pages are gone");
    assert_eq!(read(&h, &f, 59 * VS), 0);
    assert_eq!(read(&h, &f, 59 * VS + 4096), 7, "the page after the replaced range stays");
    let o59 = h.owner_of(59).unwrap();
    assert_eq!(
        regions_at(&mut f, o59, 59 * VS, 59 * VS + 8192).iter().map(|v| v.prot).collect::<Vec<_>>(),
        vec![Prot::READ, Prot::RW]
    );
}

#[test]
fn munmap_mprotect_madvise_split_across_owners() {
    let (mut h, mut f) = setup();
    let base = ok(&mut h, &mut f, mmap(0, 2 * VS, 0)).value;
    let (lo, hi) = (h.owner_of(58).unwrap(), h.owner_of(59).unwrap());
    let mid = 59 * VS;
    for a in [mid - 8192, mid - 4096, mid, mid + 4096] {
        write(&h, &mut f, a, 3);
    }
    // madvise(DONTNEED) across the boundary: the pages go, the regions stay.
    let out = ok(&mut h, &mut f, MemCall::MadviseDontneed { addr: mid - 4096, len: 8192 });
    assert_eq!(out.effects, vec![Effect::Discard { start: mid - 4096, end: mid + 4096 }]);
    assert_eq!(
        (read(&h, &f, mid - 8192), read(&h, &f, mid - 4096), read(&h, &f, mid), read(&h, &f, mid + 4096)),
        (3, 0, 0, 3)
    );
    // mprotect across the boundary.
    let out = ok(&mut h, &mut f, MemCall::Mprotect { addr: mid - 4096, len: 8192, prot: Prot::READ });
    assert_eq!(out.effects, vec![Effect::Protect { start: mid - 4096, end: mid + 4096, prot: Prot::READ }]);
    assert_eq!(regions_at(&mut f, lo, mid - 4096, mid)[0].prot, Prot::READ);
    assert_eq!(regions_at(&mut f, hi, mid, mid + 4096)[0].prot, Prot::READ);
    assert_eq!(regions_at(&mut f, hi, mid + 4096, mid + 8192)[0].prot, Prot::RW);
    // munmap across the boundary.
    let out = ok(&mut h, &mut f, MemCall::Munmap { addr: mid - 8192, len: 3 * 4096 });
    assert_eq!(out.effects, vec![Effect::Unmap { start: mid - 8192, end: mid + 4096 }]);
    assert_eq!(regions_at(&mut f, lo, base, mid), vec![anon(base, mid - 8192)]);
    assert_eq!(regions_at(&mut f, hi, mid, mid + 8192), vec![anon(mid + 4096, mid + 8192)]);
    assert_eq!(f.owners[lo].fetch(PROC, mid - 8192).err(), Some(Status::BadRequest), "unmapped now");
    assert_eq!(read(&h, &f, mid + 4096), 3);
    // Over the hole: ENOMEM, and nothing changes.
    assert_eq!(
        err(&mut h, &mut f, MemCall::Mprotect { addr: mid - 12288, len: 5 * 4096, prot: Prot::NONE }),
        libc::ENOMEM
    );
    assert_eq!(regions_at(&mut f, lo, mid - 12288, mid - 8192)[0].prot, Prot::RW);
    assert_eq!(err(&mut h, &mut f, MemCall::MadviseDontneed { addr: mid - 8192, len: 4096 }), libc::ENOMEM);
    assert_eq!(err(&mut h, &mut f, MemCall::Mprotect { addr: 3 * VS, len: 4096, prot: Prot::READ }), libc::ENOMEM);
    assert_eq!(err(&mut h, &mut f, MemCall::Mprotect { addr: base, len: 4096, prot: Prot(8) }), libc::EINVAL);
    assert_eq!(err(&mut h, &mut f, MemCall::Munmap { addr: base + 1, len: 4096 }), libc::EINVAL);
    assert_eq!(err(&mut h, &mut f, MemCall::Munmap { addr: base, len: 0 }), libc::EINVAL);
    // Unmapping nothing is fine and changes nothing.
    assert!(ok(&mut h, &mut f, MemCall::Munmap { addr: 3 * VS, len: 4096 }).effects.is_empty());
}

#[test]
fn munmap_is_clipped_to_the_user_part() {
    let (mut h, mut f) = setup();
    ok(&mut h, &mut f, mmap(USER_MIN, 0x10000, MAP_FIXED));
    // From below USER_MIN over a mapping: only the user part is unmapped, and only it is named.
    let out = ok(&mut h, &mut f, MemCall::Munmap { addr: 0x8000, len: 0x10000 });
    assert_eq!(out.effects, vec![Effect::Unmap { start: USER_MIN, end: 0x18000 }]);
    assert_eq!(regions_at(&mut f, h.owner_of(0).unwrap(), 0, VS), vec![anon(0x18000, 0x20000)]);
    // Wholly below USER_MIN, or past the top: nothing to do, no effect.
    assert!(ok(&mut h, &mut f, MemCall::Munmap { addr: 0, len: USER_MIN }).effects.is_empty());
    assert!(ok(&mut h, &mut f, MemCall::Munmap { addr: TOP, len: 4096 }).effects.is_empty());
    // Through the top of the space: stops at the top.
    let out = ok(&mut h, &mut f, MemCall::Munmap { addr: TOP - 4096, len: 1 << 40 });
    assert_eq!(out.effects, vec![Effect::Unmap { start: TOP - 4096, end: TOP }]);
}

#[test]
fn mremap_grow_shrink_and_errors() {
    let (mut h, mut f) = setup();
    let a = 30 * VS - 8192;
    ok(&mut h, &mut f, mmap(a, 8192, MAP_FIXED));
    write(&h, &mut f, a, 1);
    write(&h, &mut f, a + 4096, 2);
    // Grows in place, into the next vRegion (a new owner).
    let out = ok(&mut h, &mut f, MemCall::Mremap { old: a, old_len: 8192, new_len: 4 * 4096, flags: 0, new_addr: 0 });
    assert_eq!(out.value, a);
    assert_eq!(out.effects, vec![Effect::Map(anon(30 * VS, 30 * VS + 8192))]);
    assert_eq!(out.owners.len(), 1);
    // Shrinks: the tail's pages go.
    write(&h, &mut f, 30 * VS, 3);
    let out = ok(&mut h, &mut f, MemCall::Mremap { old: a, old_len: 4 * 4096, new_len: 4096, flags: 0, new_addr: 0 });
    assert_eq!((out.value, out.effects), (a, vec![Effect::Unmap { start: a + 4096, end: a + 4 * 4096 }]));
    assert_eq!(read(&h, &f, a), 1);
    ok(&mut h, &mut f, mmap(a + 4096, 4096, MAP_FIXED));
    assert_eq!(read(&h, &f, a + 4096), 0, "remapped tail reads zeroes");
    let o30 = h.owner_of(30).unwrap();
    assert_eq!(f.owners[o30].fetch(PROC, 30 * VS).err(), Some(Status::BadRequest), "unmapped");
    assert_eq!(f.owners[o30].store().used_pages(), 0, "and its page freed");
    // Blocked without MAYMOVE.
    let grow = MemCall::Mremap { old: a, old_len: 4096, new_len: 3 * 4096, flags: 0, new_addr: 0 };
    assert_eq!(err(&mut h, &mut f, grow), libc::ENOMEM);
    let e = |flags, old, old_len, new_len| MemCall::Mremap { old, old_len, new_len, flags, new_addr: 0 };
    assert_eq!(err(&mut h, &mut f, e(MAYMOVE, 5 * VS, 4096, 8192)), libc::EFAULT, "not mapped");
    assert_eq!(err(&mut h, &mut f, e(MAYMOVE, a, 4 * 4096, 8 * 4096)), libc::EFAULT, "past the region");
    assert_eq!(err(&mut h, &mut f, e(MREMAP_FIXED, a, 4096, 8192)), libc::EINVAL);
    assert_eq!(err(&mut h, &mut f, e(MAYMOVE | MREMAP_DONTUNMAP, a, 4096, 8192)), libc::EINVAL);
    assert_eq!(err(&mut h, &mut f, e(MAYMOVE, a, 4096, 0)), libc::EINVAL);
    assert_eq!(err(&mut h, &mut f, e(MAYMOVE, a + 1, 4096, 8192)), libc::EINVAL);
    let overlap =
        MemCall::Mremap { old: a, old_len: 4096, new_len: 8192, flags: MAYMOVE | MREMAP_FIXED, new_addr: a - 4096 };
    assert_eq!(err(&mut h, &mut f, overlap), libc::EINVAL);
}

#[test]
fn mremap_moves_pages_within_and_across_owners() {
    let (mut h, mut f) = setup();
    // A region spanning vRegions 20 and 21, pages on both sides.
    let a = 21 * VS - 4096;
    ok(&mut h, &mut f, mmap(a, 3 * 4096, MAP_FIXED));
    // Something right after it, so that it cannot grow in place.
    ok(&mut h, &mut f, mmap(a + 3 * 4096, 4096, MAP_FIXED));
    for i in 0..3 {
        write(&h, &mut f, a + i * 4096, 10 + i as u8);
    }
    let (o20, o21) = (h.owner_of(20).unwrap(), h.owner_of(21).unwrap());
    assert_ne!(o20, o21);
    // To vRegion 21: its pages are re-keyed by their owner, vRegion 20's page crosses owners.
    let to = 21 * VS + 0x10000;
    let out = ok(
        &mut h,
        &mut f,
        MemCall::Mremap { old: a, old_len: 3 * 4096, new_len: 4 * 4096, flags: MAYMOVE | MREMAP_FIXED, new_addr: to },
    );
    assert_eq!(out.value, to);
    assert_eq!(
        out.effects,
        vec![
            Effect::Map(anon(to, to + 4 * 4096)),
            Effect::Move { from: a, to, len: 3 * 4096 },
            Effect::Unmap { start: a, end: a + 3 * 4096 },
        ]
    );
    assert_eq!((0..4).map(|i| read(&h, &f, to + i * 4096)).collect::<Vec<_>>(), vec![10, 11, 12, 0]);
    assert_eq!(f.owners[o20].fetch(PROC, a).err(), Some(Status::BadRequest), "old range unmapped");
    // Across owners, to a fresh vRegion.
    let out = ok(
        &mut h,
        &mut f,
        MemCall::Mremap {
            old: to,
            old_len: 4 * 4096,
            new_len: 4 * 4096,
            flags: MAYMOVE | MREMAP_FIXED,
            new_addr: 40 * VS,
        },
    );
    assert_eq!(out.value, 40 * VS);
    let o40 = h.owner_of(40).unwrap();
    assert_ne!(o40, o21);
    assert_eq!((0..4).map(|i| read(&h, &f, 40 * VS + i * 4096)).collect::<Vec<_>>(), vec![10, 11, 12, 0]);
    assert_eq!(f.owners[o21].store().used_pages(), 0, "the pages left the old owner");
    // More pages than one TakePages chunk, moved by a non-fixed mremap that must move.
    let big = (TAKE_MAX as u64 + 5) * 4096;
    let src = ok(&mut h, &mut f, mmap(45 * VS, big, MAP_FIXED)).value;
    ok(&mut h, &mut f, mmap(src + big, 4096, MAP_FIXED));
    for i in 0..TAKE_MAX as u64 + 5 {
        write(&h, &mut f, src + i * 4096, i as u8);
    }
    let out =
        ok(&mut h, &mut f, MemCall::Mremap { old: src, old_len: big, new_len: 2 * big, flags: MAYMOVE, new_addr: 0 });
    let dst = out.value;
    assert_eq!(dst, MMAP_TOP - 2 * big);
    assert_ne!(h.owner_of(dst / VS), h.owner_of(45));
    for i in 0..TAKE_MAX as u64 + 5 {
        assert_eq!(read(&h, &f, dst + i * 4096), i as u8);
    }
    assert_eq!(f.owners[h.owner_of(45).unwrap()].store().used_pages(), 0);
}

#[test]
fn brk_grows_and_shrinks_the_heap() {
    let (mut h, mut f) = setup();
    let start = ok(&mut h, &mut f, MemCall::SetBrkStart { addr: 0x40_0123 }).value;
    assert_eq!(start, 0x40_1000);
    let brk = |h: &mut HomeProcess, f: &mut Fake, want| ok(h, f, MemCall::Brk { want });
    let out = brk(&mut h, &mut f, start + 0x2100);
    assert_eq!(out.value, start + 0x2100);
    assert_eq!(out.effects, vec![Effect::Map(Vma { start, end: start + 0x3000, prot: Prot::RW, kind: VmaKind::Heap })]);
    write(&h, &mut f, start + 0x2000, 9);
    assert_eq!(brk(&mut h, &mut f, start - 1).value, start + 0x2100, "below the start: unchanged");
    assert_eq!(brk(&mut h, &mut f, MMAP_TOP).value, start + 0x2100, "at mmap_top: unchanged");
    let out = brk(&mut h, &mut f, start + 0x1000);
    assert_eq!(out.effects, vec![Effect::Unmap { start: start + 0x1000, end: start + 0x3000 }]);
    assert_eq!(brk(&mut h, &mut f, start + 0x3000).value, start + 0x3000);
    assert_eq!(read(&h, &f, start + 0x2000), 0, "shrinking dropped the page");
    // A mapping in the way stops the heap.
    ok(&mut h, &mut f, mmap(start + 0x5000, 4096, MAP_FIXED));
    assert_eq!(brk(&mut h, &mut f, start + 0x8000).value, start + 0x3000);
    // mmap never places below the break.
    assert_eq!(err(&mut h, &mut f, MemCall::SetBrkStart { addr: 0x100 }), libc::EINVAL);
}

#[test]
fn exit_releases_at_every_owner() {
    let (mut h, mut f) = setup();
    let a = ok(&mut h, &mut f, mmap(0, 3 * VS, 0)).value;
    write(&h, &mut f, a, 1);
    assert_eq!(h.owners().len(), 3);
    h.exit(&mut f).unwrap();
    for o in &f.owners {
        assert_eq!((o.vregions(), o.store().used_pages()), (0, 0));
    }
}

#[test]
fn bad_specs_are_refused() {
    let bad = [
        ProcessSpec { servers: vec![], ..spec() },
        ProcessSpec { home: 3, ..spec() },
        ProcessSpec { vregion_size: 3 << 20, ..spec() },
        ProcessSpec { vregion_size: 64 << 10, ..spec() },
        ProcessSpec { mmap_top: TOP + VS, ..spec() },
        ProcessSpec { stack: (TOP, TOP), ..spec() },
        ProcessSpec { user_min: 0x1001, ..spec() },
    ];
    for s in bad {
        assert_eq!(HomeProcess::new(1, s.clone()).err(), Some(libc::EINVAL), "{s:?}");
    }
}

#[test]
fn unreachable_owner_fails_the_call_not_the_home() {
    struct Down(Fake);
    impl Owners for Down {
        fn call(&mut self, owner: usize, proc: u64, call: OwnerCall) -> Result<OwnerOutcome, OwnerFailure> {
            if owner == 1 {
                return Err(OwnerFailure::Unreachable("connection refused".into()));
            }
            self.0.call(owner, proc, call)
        }
        fn stat(&mut self, owner: usize) -> Result<ServerStat, OwnerFailure> {
            self.0.stat(owner)
        }
    }
    let (mut h, f) = setup();
    let mut d = Down(f);
    let e = h.call(mmap(0, 4096, 0), &mut d).unwrap_err();
    assert!(e.to_string().contains("mem-server b failed Adopt"), "{e}");
}

#[test]
fn runs_of_free_vregions_stop_at_partly_mapped_ones() {
    let (mut h, mut f) = setup();
    ok(&mut h, &mut f, mmap(58 * VS + VS / 2, 4096, MAP_FIXED));
    // 59 is free but too small alone; 58 is in the way: the run below it is taken.
    assert_eq!(ok(&mut h, &mut f, mmap(0, VS + VS / 2, 0)).value, 56 * VS + VS / 2);
    // A small one goes to the highest gap: the free vRegion 59.
    assert_eq!(ok(&mut h, &mut f, mmap(0, 4096, 0)).value, MMAP_TOP - 4096);
}

mod model {
    use super::*;
    use proptest::prelude::*;

    const V: u64 = 1 << 20;
    const CHUNK: u64 = 64 << 10;
    const BASE: u64 = 8 * V;
    const CHUNKS: u64 = 64;

    proptest! {
        /// Random fixed mappings, unmappings, protections and discards over four 1 MiB vRegions
        /// with three owners agree, chunk by chunk, with a plain model of the address space;
        /// MAP_FIXED_NOREPLACE (which trusts the home's free-space summary) agrees too.
        #[test]
        fn home_and_owners_agree_with_a_model(ops in proptest::collection::vec((0u8..5, 0..CHUNKS, 1u64..24), 1..40)) {
            let mut f = Fake { owners: (0..3).map(|_| Owner::new(1 << 12)).collect(), gmm: None };
            let mut h = HomeProcess::new(PROC, ProcessSpec { vregion_size: V, ..spec() }).unwrap();
            h.start(&mut f).unwrap().unwrap();
            let mut model = [None::<Prot>; CHUNKS as usize];
            for (op, s, n) in ops {
                let e = (s + n).min(CHUNKS);
                let (addr, len) = (BASE + s * CHUNK, (e - s) * CHUNK);
                let all_mapped = (s..e).all(|c| model[c as usize].is_some());
                let none_mapped = (s..e).all(|c| model[c as usize].is_none());
                let r = match op {
                    0 => h.call(mmap(addr, len, MAP_FIXED), &mut f),
                    1 => h.call(MemCall::Munmap { addr, len }, &mut f),
                    2 => h.call(MemCall::Mprotect { addr, len, prot: Prot::READ }, &mut f),
                    3 => h.call(MemCall::MadviseDontneed { addr, len }, &mut f),
                    _ => h.call(mmap(addr, len, MAP_FIXED_NOREPLACE), &mut f),
                }.unwrap();
                match op {
                    0 => { prop_assert!(r.is_ok()); (s..e).for_each(|c| model[c as usize] = Some(Prot::RW)); }
                    1 => { prop_assert!(r.is_ok()); (s..e).for_each(|c| model[c as usize] = None); }
                    2 => {
                        prop_assert_eq!(r.is_ok(), all_mapped);
                        if all_mapped { (s..e).for_each(|c| model[c as usize] = Some(Prot::READ)); }
                    }
                    3 => prop_assert_eq!(r.is_ok(), all_mapped),
                    _ => {
                        prop_assert_eq!(r.clone().err(), (!none_mapped).then_some(libc::EEXIST));
                        if none_mapped { (s..e).for_each(|c| model[c as usize] = Some(Prot::RW)); }
                    }
                }
            }
            for c in 0..CHUNKS {
                let a = BASE + c * CHUNK;
                let found = h.owner_of(a / V).and_then(|o| regions_at(&mut f, o, a, a + CHUNK).first().map(|v| v.prot));
                prop_assert_eq!(found, model[c as usize], "chunk {}", c);
            }
        }
    }
}

/// With two replicas every vRegion gets a primary and a secondary on two servers other than the
/// home, every vma change reaches both, and a lost primary is replaced by its secondary.
#[test]
fn replicas_mirror_vma_changes_and_fail_over() {
    let mut f = Fake { owners: (0..3).map(|_| Owner::new(1 << 16)).collect(), gmm: None };
    let mut h = HomeProcess::new(PROC, ProcessSpec { replicas: 2, ..spec() }).unwrap();
    let out = h.start(&mut f).unwrap().unwrap();
    let stack = &out.owners[0];
    assert_ne!(stack.owner, "a", "the primary is not the home");
    let secondary = stack.secondary.clone().expect("a secondary");
    assert!(secondary != stack.owner && secondary != "a", "{stack:?}");
    let (p, s) = (h.owner_of(63).unwrap(), h.secondary_of(63).unwrap());
    let a = ok(&mut h, &mut f, mmap(TOP - VS, 8192, MAP_FIXED)).value;
    ok(&mut h, &mut f, MemCall::Mprotect { addr: a, len: 4096, prot: Prot(1) });
    let regions = |f: &mut Fake, i: usize| f.owners[i].call(PROC, OwnerCall::Regions { start: TOP - VS, end: TOP }).unwrap();
    assert_eq!(regions(&mut f, p), regions(&mut f, s), "the secondary's vma tree is the primary's");
    // The primary is unreachable: the home promotes the secondary and says so.
    struct Down(Fake, usize);
    impl Owners for Down {
        fn call(&mut self, owner: usize, proc: u64, call: OwnerCall) -> Result<OwnerOutcome, OwnerFailure> {
            if owner == self.1 {
                return Err(OwnerFailure::Unreachable("connection refused".into()));
            }
            self.0.call(owner, proc, call)
        }
        fn stat(&mut self, owner: usize) -> Result<ServerStat, OwnerFailure> {
            self.0.stat(owner)
        }
    }
    let mut d = Down(f, p);
    let out = h.call(MemCall::Munmap { addr: a, len: 4096 }, &mut d).unwrap().unwrap();
    assert_eq!(out.owners, vec![VRegionOwner { index: 63, owner: secondary.clone(), secondary: None }]);
    assert_eq!((h.owner_of(63), h.secondary_of(63)), (Some(s), None));
    // A pComponent's report of a lost copy for a vRegion with one copy left changes nothing.
    h.replica_lost(63, "a", false, &mut d);
    assert_eq!((h.owner_of(63), h.secondary_of(63)), (Some(s), None));
}

/// A vRegion left with one copy gets a second one on another server holding the survivor's
/// regions and pages: after a lost primary, a new primary, and the promoted secondary is the
/// secondary again (as LegoOS rebuilds a primary from the secondary's log and backup file);
/// after a lost secondary, a new secondary.
#[test]
fn a_lost_copy_is_rebuilt_on_another_server() {
    let mut f = Fake { owners: (0..4).map(|_| Owner::new(1 << 16)).collect(), gmm: None };
    let servers = vec!["a".into(), "b".into(), "c".into(), "d".into()];
    let mut h = HomeProcess::new(PROC, ProcessSpec { replicas: 2, servers, ..spec() }).unwrap();
    h.start(&mut f).unwrap().unwrap();
    let (p, s) = (h.owner_of(63).unwrap(), h.secondary_of(63).unwrap());
    let page = TOP - 4096;
    for i in [p, s] {
        f.owners[i].call(PROC, OwnerCall::PutPages { pages: vec![(page, vec![7; 4096])] }).unwrap();
    }
    let name = |i: usize| ["a", "b", "c", "d"][i].to_string();
    let out = h.replica_lost(63, &name(p), true, &mut f);
    let fresh = h.owner_of(63).expect("an owner");
    assert!(![p, s].contains(&fresh), "not on a failed server nor on the survivor");
    assert_eq!(out.owners, vec![VRegionOwner { index: 63, owner: name(fresh), secondary: Some(name(s)) }]);
    let regions = |f: &mut Fake, i: usize| f.owners[i].call(PROC, OwnerCall::Regions { start: TOP - VS, end: TOP }).unwrap();
    assert_eq!(regions(&mut f, s), regions(&mut f, fresh));
    let read = |f: &mut Fake, i: usize| f.owners[i].call(PROC, OwnerCall::ReadPages { start: TOP - VS, end: TOP, max: 8 }).unwrap();
    assert_eq!(read(&mut f, fresh), OwnerOutcome::Pages { pages: vec![(page, vec![7; 4096])], more: false });
    // Now the secondary is lost: the primary stays, and the last server left takes a copy.
    let out = h.replica_lost(63, &name(s), true, &mut f);
    let last = h.secondary_of(63).expect("rebuilt");
    assert!(![p, s, fresh].contains(&last));
    assert_eq!(out.owners, vec![VRegionOwner { index: 63, owner: name(fresh), secondary: Some(name(last)) }]);
    assert_eq!(read(&mut f, last), read(&mut f, fresh));
}
