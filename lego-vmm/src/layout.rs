//! The guest address space of a vNode.
//!
//! User memory is identity mapped: guest-virtual address == guest-physical address, in one memslot
//! `[0, mem_size)`. VMM-private structures (descriptor tables, the CPL0 stubs, the kernel stack
//! the CPU pushes exception frames on, page tables) live in a second memslot at [`SYS_BASE`],
//! mapped supervisor-only, so user code can neither read nor write them. The one exception is
//! the stub page: on this nested PVM, code reached by `syscall` runs with user-mode page
//! permissions, so the stubs (a few `out` instructions, nothing secret) are user-executable and
//! read-only.

/// Size of a page and of an ExCache line.
pub const PAGE_SIZE: u64 = 4096;

/// Guest-physical (and guest-virtual) base of the VMM-private memslot. User memory must lie below.
pub const SYS_BASE: u64 = 1 << 40;
/// Largest user memory a vNode may have.
pub const MAX_USER_MEM: u64 = SYS_BASE;
/// Smallest user memory a vNode may have.
pub const MIN_USER_MEM: u64 = 64 << 20;

/// Global descriptor table.
pub const GDT_ADDR: u64 = SYS_BASE;
/// Interrupt descriptor table (vectors 0..[`NUM_VECTORS`]).
pub const IDT_ADDR: u64 = SYS_BASE + 0x1000;
/// Page with the CPL0 stubs; the only executable VMM-private page, and the only one user mode
/// can reach (read and execute).
pub const STUB_PAGE: u64 = SYS_BASE + 0x3000;
/// The vDSO's data page (`[vvar]`): user-readable, written by the VMM ([`crate::vdso`]).
pub const VVAR_PAGE: u64 = SYS_BASE + 0x4000;
/// The vDSO image (`[vdso]`, `AT_SYSINFO_EHDR`): user-readable and executable, right above
/// its data page.
pub const VDSO_BASE: u64 = VVAR_PAGE + PAGE_SIZE;
/// Pages reserved for the vDSO image.
pub const VDSO_PAGES: u64 = 2;

/// Whether the VMM-private page at `va` is reachable from user mode, and if so whether it is
/// executable: the stub page and the vDSO image are, the vDSO data page is read-only.
pub const fn user_sys_page(va: u64) -> Option<bool> {
    if va == STUB_PAGE || (va >= VDSO_BASE && va < VDSO_BASE + VDSO_PAGES * PAGE_SIZE) {
        Some(true)
    } else if va == VVAR_PAGE {
        Some(false)
    } else {
        None
    }
}

/// Length of the `out imm8, al` instruction each stub starts with: a genuine stub exit has RIP
/// just past it.
pub const STUB_OUT_LEN: u64 = 2;
/// `LSTAR`: the `syscall` entry stub.
pub const SYSCALL_ENTRY: u64 = STUB_PAGE;
/// Exception stub of vector `v` is at `EXCEPTION_STUBS + 16 * v`.
pub const EXCEPTION_STUBS: u64 = STUB_PAGE + 0x100;
/// Per-vCPU structures. vCPU `i` has its own 64-bit TSS at [`vcpu_tss`]`(i)` (only `rsp0` and
/// the I/O bitmap are used) and, above it in the same slot, the stack the CPU pushes its
/// exception frames on (`TSS.rsp0` = [`vcpu_kstack_top`]`(i)`): vCPUs that fault at the same
/// time must not share one.
pub const VCPU_AREA: u64 = SYS_BASE + 0x10000;
/// Bytes of [`VCPU_AREA`] per vCPU: a TSS and its I/O bitmap (113 bytes), and room for an
/// exception frame (48 bytes at most).
pub const VCPU_SLOT: u64 = 1024;
/// Most vCPUs a vNode process has (threads alive at once).
pub const MAX_VCPUS: u32 = 256;
/// First page of the page-table pool.
pub const PT_POOL: u64 = VCPU_AREA + MAX_VCPUS as u64 * VCPU_SLOT;

/// The TSS of vCPU `i`.
pub const fn vcpu_tss(i: u32) -> u64 {
    VCPU_AREA + i as u64 * VCPU_SLOT
}

/// The top of vCPU `i`'s exception stack.
pub const fn vcpu_kstack_top(i: u32) -> u64 {
    VCPU_AREA + (i as u64 + 1) * VCPU_SLOT
}

/// I/O port the syscall stub writes to: one exit per system call.
pub const SYSCALL_PORT: u16 = 0x10;
/// Port the bare-exit benchmark guest writes to from CPL3.
pub const BENCH_PORT: u16 = 0x11;
/// Exception stub of vector `v` writes to port `EXCEPTION_PORT_BASE + v`.
pub const EXCEPTION_PORT_BASE: u16 = 0x20;
/// Number of exception vectors with a gate in the IDT.
pub const NUM_VECTORS: u8 = 32;

/// Kernel code selector (what `syscall` and exception gates load).
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data/stack selector (RPL 3).
pub const USER_DS: u16 = 0x18 | 3;
/// User 64-bit code selector (RPL 3).
pub const USER_CS: u16 = 0x20 | 3;
/// Task register selector.
pub const TSS_SEL: u16 = 0x28;

/// Nothing is ever mapped below this address (Linux `mmap_min_addr`).
pub const USER_MIN: u64 = 0x10000;
/// Load bias of position-independent (static-PIE) executables.
pub const PIE_BASE: u64 = 0x0100_0000;
/// Maximum stack size (`RLIMIT_STACK`); the whole stack is mapped at start.
pub const STACK_MAX: u64 = 8 << 20;
/// Gap between the top of the mmap area and the stack.
pub const STACK_GAP: u64 = 1 << 20;

/// Rounds `x` down to a page boundary.
pub const fn page_floor(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

/// Rounds `x` up to a page boundary; `None` on overflow.
pub const fn page_ceil(x: u64) -> Option<u64> {
    match x.checked_add(PAGE_SIZE - 1) {
        Some(v) => Some(v & !(PAGE_SIZE - 1)),
        None => None,
    }
}
