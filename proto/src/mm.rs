//! Control messages of memory management (LegoOS §4.4.1), carried in [`crate::frame::Op::Control`]
//! frames as bincode.
//!
//! Two levels: a pComponent sends the memory system calls of a process to its *home* mem-server
//! ([`Request::CreateProcess`], [`Request::Mem`]); the home keeps the vRegion array (owner and free
//! space of each vRegion), chooses addresses, and hands the fine-grained vma work inside each vRegion
//! to its *owner* ([`Request::Owner`]), which keeps a vma tree and the pages. The home's answer to a
//! system call lists the [`Effect`]s the pComponent applies to its cached regions and page tables,
//! and the owners of any vRegions that got one, so that misses and flushes go straight to them.

use serde::{Deserialize, Serialize};

use crate::vma::{Prot, Vma, VmaKind};

/// Shape of a new process's address space, sent by the pComponent when it picks a home.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Every mem-server the home may place vRegions on (`host:port`), the home itself included.
    pub servers: Vec<String>,
    /// Which of `servers` the home itself is.
    pub home: usize,
    /// Bytes per vRegion (a power of two; 1 GiB by default).
    pub vregion_size: u64,
    /// Lowest address a mapping may have.
    pub user_min: u64,
    /// End of the address space: nothing is mapped at or above it.
    pub space_top: u64,
    /// Upper end of the area non-fixed `mmap` places regions in (just below the stack gap).
    pub mmap_top: u64,
    /// The main stack, mapped read-write at creation.
    pub stack: (u64, u64),
    /// Copies of each vRegion (1 or 2): with 2, every vRegion gets a secondary on another
    /// mem-server that receives every write-back and every vma change (LegoOS §4.7).
    pub replicas: u8,
    /// The storage server of the process's vNode, where its secondaries keep their backup
    /// files; `None`: each secondary's own.
    pub backup_storage: Option<String>,
}

/// A memory system call, already validated for argument shape by nothing: the home validates
/// everything and answers with the errno Linux would give.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemCall {
    /// `mmap(addr, len, prot, flags)`; `kind` says what the region holds (the pComponent copies a
    /// private file mapping's contents in itself).
    Mmap { addr: u64, len: u64, prot: Prot, flags: u32, kind: VmaKind },
    /// `munmap(addr, len)`.
    Munmap { addr: u64, len: u64 },
    /// `mprotect(addr, len, prot)`.
    Mprotect { addr: u64, len: u64, prot: Prot },
    /// `mremap(old, old_len, new_len, flags, new_addr)`.
    Mremap { old: u64, old_len: u64, new_len: u64, flags: u32, new_addr: u64 },
    /// `brk(want)`: the value is the new (or unchanged) break, never an error.
    Brk { want: u64 },
    /// Sets where the heap starts (just after the executable image), before the program runs.
    SetBrkStart { addr: u64 },
    /// `madvise(addr, len, MADV_DONTNEED)`.
    MadviseDontneed { addr: u64, len: u64 },
}

/// A change the pComponent applies to its view of the address space, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// A new region over space that is free by now (earlier effects removed what was there).
    Map(Vma),
    /// `[start, end)` is no longer mapped; its pages are gone at the owners.
    Unmap { start: u64, end: u64 },
    /// `[start, end)` (fully mapped) now has protection `prot`.
    Protect { start: u64, end: u64, prot: Prot },
    /// `[start, end)` stays mapped but reads back as zeroes; its pages are gone at the owners.
    Discard { start: u64, end: u64 },
    /// The owners' pages of `[from, from+len)` now live at `[to, to+len)`. The pComponent flushed
    /// its dirty lines of the old range before asking, and moves its record of which pages exist
    /// remotely.
    Move { from: u64, to: u64, len: u64 },
}

/// The owner of one vRegion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VRegionOwner {
    /// vRegion number (address / vregion_size).
    pub index: u64,
    /// Address of the owning mem-server (the primary), as in [`ProcessSpec::servers`].
    pub owner: String,
    /// Address of the secondary, which the pComponent writes every flushed line to as well.
    pub secondary: Option<String>,
}

/// The home's answer to a [`MemCall`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemOutcome {
    /// The system call's return value.
    pub value: u64,
    /// What changed, in order.
    pub effects: Vec<Effect>,
    /// vRegions that got an owner (or a new one) during the call.
    pub owners: Vec<VRegionOwner>,
}

/// Fine-grained vma work the home hands to the owner of a vRegion. Every range lies inside one
/// vRegion the owner has adopted; anything else is refused with [`crate::frame::Status::NotOwner`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OwnerCall {
    /// Become the owner of vRegion `index` of the process (size from the spec). With
    /// `secondary`, as its secondary copy (`--replicas 2`): its pages go to a bounded log
    /// flushed to a backup file on `backup_storage` (the vNode's storage server) or else the
    /// server's own (LegoOS §4.7); with neither, they are kept in memory as a primary's are.
    Adopt { index: u64, vregion_size: u64, secondary: bool, backup_storage: Option<String> },
    /// The highest free gap of `len` bytes in `[low, high)` (inside the vRegion), top-down.
    Place { low: u64, high: u64, len: u64 },
    /// Insert a region; whatever overlapped it is removed first and its pages freed.
    Map { vma: Vma },
    /// Remove `[start, end)` and free its pages.
    Unmap { start: u64, end: u64 },
    /// Change protection of `[start, end)` (must be fully mapped, else nothing changes).
    Protect { start: u64, end: u64, prot: Prot },
    /// Free the pages of `[start, end)`, keeping the regions.
    Discard { start: u64, end: u64 },
    /// The regions overlapping `[start, end)`, clipped to it.
    Regions { start: u64, end: u64 },
    /// Re-key the pages of `[from, from+len)` to `[to, to+len)`; both ranges are this owner's.
    MovePages { from: u64, to: u64, len: u64 },
    /// Hand out (and free) the stored pages of `[start, end)`, at most `max` of them.
    TakePages { start: u64, end: u64, max: u32 },
    /// Copies of the stored pages of `[start, end)`, at most `max` of them, lowest first, which
    /// stay stored (the rebuild of a secondary).
    ReadPages { start: u64, end: u64, max: u32 },
    /// Store pages handed over from another owner.
    PutPages { pages: Vec<(u64, Vec<u8>)> },
    /// Forget the process: its regions and pages in every vRegion this server owns.
    Release,
    /// Make the process (named in the frame header) a copy of process `parent` on this server:
    /// the same vRegions and regions, and a copy of every stored page (a fork).
    CopyOf { parent: u64 },
}

/// An owner's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OwnerOutcome {
    /// Done, nothing to report.
    Done,
    /// Answer to [`OwnerCall::Place`].
    Placed(Option<u64>),
    /// Regions: removed ones for `Unmap`, old ones for `Protect` (`None` on a hole), current
    /// ones for `Regions`.
    Regions(Option<Vec<Vma>>),
    /// Answer to [`OwnerCall::TakePages`]: pages and whether more remain.
    Pages { pages: Vec<(u64, Vec<u8>)>, more: bool },
}

/// Load and capacity of a mem-server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServerStat {
    /// Frames the server may hold (`--capacity` / 4 KB).
    pub capacity_pages: u64,
    /// Frames in use.
    pub used_pages: u64,
    /// vRegions owned, over all processes.
    pub vregions: u64,
    /// Processes this server is home for.
    pub homed: u64,
    /// Requests served since start.
    pub requests: u64,
    /// The storage server behind this server's buffer cache, if any.
    pub storage: Option<String>,
}

/// A control request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// pComponent -> home: become the home of the process named in the frame header and map its
    /// stack. Answered with [`Reply::Mem`] (value 0, the stack's `Map` effect and owner).
    CreateProcess(ProcessSpec),
    /// pComponent -> home: a memory system call.
    Mem(MemCall),
    /// pComponent -> home: the process ended; release it everywhere.
    ExitProcess,
    /// pComponent -> home: the pComponent found mem-server `server` failed and stopped using it
    /// for vRegion `index`: if it was the primary, the secondary is the primary now; if it was
    /// the secondary, the vRegion has one copy left. The home never asks `server` about the
    /// process again (it is fenced off). Sent before any other request, with the pComponent's
    /// ExCache held still, so that the home and the pComponent agree on every owner. With
    /// `rebuild`, the home gives the vRegion a new secondary on another server and copies the
    /// primary's regions and pages to it. Answered with [`Reply::Mem`]: the vRegion's owners.
    ReplicaLost { index: u64, server: String, rebuild: bool },
    /// pComponent -> the home of process `parent`: become the home of the process named in the
    /// frame header, a copy of `parent` (fork). The owners copy the pages among themselves; no
    /// page travels to the pComponent, which flushed `parent`'s dirty lines first. Answered with
    /// [`Reply::Mem`]: a `Map` effect for every region and the owner of every vRegion.
    ForkProcess { parent: u64 },
    /// home -> owner.
    Owner(OwnerCall),
    /// Anyone: capacity and load.
    Stat,
    /// pComponent -> the mem-server caching a file: a file request, served by its buffer cache
    /// in front of the storage server (LegoOS §4.5).
    File(crate::storage::StorageRequest),
    /// pComponent -> the mem-server caching a file: the file was closed after a write; write its
    /// dirty pages back to storage (without fsync). Answered with [`Reply::File`].
    FileClosed { vnode: String, path: Vec<u8> },
    /// pComponent -> home: the process named in the header is alive (its lease, renewed every
    /// report interval on a connection of its own). Answered with [`Reply::Done`], or status
    /// `UnknownProcess` if the home no longer has it (it was reclaimed).
    Renew,
    /// global manager -> home: the process named in the header stopped reporting; release its
    /// memory here and at every owner and secondary, unless it renewed its lease within the
    /// last `silent_ms` milliseconds (then the answer is [`Reply::Alive`] and nothing changes).
    /// Answered with [`Reply::Done`] once released, or status `UnknownProcess` if the home has
    /// no such process.
    Reclaim { silent_ms: u64 },
}

/// A control reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// `ExitProcess` succeeded.
    Done,
    /// A memory system call's result: the outcome, or a positive errno.
    Mem(Result<MemOutcome, i32>),
    /// An owner call's result, or a positive errno.
    Owner(Result<OwnerOutcome, i32>),
    /// Answer to `Stat`.
    Stat(ServerStat),
    /// The request could not be served at all (a peer unreachable, an unknown process...).
    Failed(String),
    /// Answer to `File` and `FileClosed` (`Done` or an errno for the latter).
    File(crate::storage::StorageReply),
    /// Answer to `Reclaim`: the process renewed its lease `renewed_ms_ago` milliseconds ago, so
    /// it is alive and keeps its memory.
    Alive { renewed_ms_ago: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let r = Request::Mem(MemCall::Mmap { addr: 0, len: 4096, prot: Prot::RW, flags: 0x22, kind: VmaKind::Anon });
        assert_eq!(decode::<Request>(&encode(&r)).unwrap(), r);
        let o = Reply::Mem(Ok(MemOutcome {
            value: 7,
            effects: vec![Effect::Unmap { start: 0, end: 4096 }],
            owners: vec![VRegionOwner { index: 1, owner: "127.0.0.1:1".into(), secondary: None }],
        }));
        assert_eq!(decode::<Reply>(&encode(&o)).unwrap(), o);
    }

    proptest! {
        /// Garbage never panics the decoder nor makes it allocate without bound.
        #[test]
        fn garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Reply>(&bytes);
        }
    }
}
