//! The memory client of a vNode process (LegoOS §4.3.2, §4.4): everything between a guest
//! page fault or a memory system call and the mem-servers.
//!
//! - [`mm`]: the process's address space as the pComponent sees it; memory calls go to the
//!   home mem-server and their answers are applied here.
//! - [`excache`]: the ExCache, the data path of a miss (fault -> fetch -> install -> evict ->
//!   write back), with its frames, owners and prefetch streams.
//! - [`paging`]: the guest page-table entries that map resident lines onto frames.
//! - [`frame_pool`]: the frames themselves and their invalidation in KVM.
//! - [`shared`]: memory shared between the processes of a run (`MAP_SHARED` anonymous
//!   mappings), outside the ExCache.
//! - [`uffd`]: the userfaultfd write-protection the invalidation uses.
//!
//! Outside this module, code uses [`mm::Mm`] (memory calls, copies to and from guest
//! buffers), the [`excache::Pager`] a vCPU serves its page faults with, and the
//! configuration and statistics types.

pub mod excache;
pub mod frame_pool;
pub mod mm;
pub mod paging;
pub mod shared;
pub mod uffd;
