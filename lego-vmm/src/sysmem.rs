//! VMM-private guest memory: descriptor tables, CPL0 stubs, the exception stack and the pool the
//! page tables are allocated from. None of it is mapped for user mode but the stubs and the
//! vDSO ([`crate::layout::user_sys_page`]).

use std::sync::atomic::AtomicU64;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::error::VmmError;
use crate::layout::*;

/// The VMM-private memslot.
pub struct SysMem {
    mem: GuestMemoryMmap,
    size: u64,
    /// Host address of the slot's start.
    host: u64,
}

/// `out imm8, al` followed by `hlt`: the whole of a CPL0 stub. The VMM does not resume a stub
/// (it sets the registers the thread goes on with), so the `hlt` is only reached if it has a
/// bug, and then shows up as a clear error.
fn stub(port: u16) -> [u8; 3] {
    [0xe6, port as u8, 0xf4]
}

/// Vector of the page fault.
pub const PAGE_FAULT: u8 = 14;

/// Offset of the I/O permission bitmap in the TSS.
const IO_BITMAP_OFFSET: u64 = 104;
/// Ports covered by the bitmap (everything above is closed).
const IO_BITMAP_PORTS: usize = 64;
/// TSS limit: the 104-byte TSS, the bitmap and its terminating 0xff byte.
pub const TSS_LIMIT: u64 = IO_BITMAP_OFFSET + (IO_BITMAP_PORTS / 8) as u64;

/// Bitmap (0 = open) opening the syscall port, the benchmark port and the exception ports.
fn io_bitmap() -> [u8; IO_BITMAP_PORTS / 8 + 1] {
    let mut map = [0xffu8; IO_BITMAP_PORTS / 8 + 1];
    let open = [SYSCALL_PORT, BENCH_PORT]
        .into_iter()
        .chain((0..u16::from(NUM_VECTORS)).map(|v| EXCEPTION_PORT_BASE + v));
    for port in open {
        map[usize::from(port) / 8] &= !(1 << (port % 8));
    }
    map
}

/// Exception vectors for which the CPU pushes an error code.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

impl SysMem {
    /// Reserves the memslot, sized for the page tables of `user_mem` bytes of user memory, and
    /// writes the GDT, IDT, TSS and stubs.
    pub fn new(user_mem: u64) -> Result<SysMem, VmmError> {
        // Leaf tables for every 2 MiB of user memory, directories for every 1 GiB, plus slack for
        // the upper levels and the mapping of this slot itself.
        let leaves = user_mem.div_ceil(2 << 20);
        let pt_pages = leaves + user_mem.div_ceil(1 << 30) + leaves / 256 + 64;
        let size = (PT_POOL - SYS_BASE) + pt_pages * PAGE_SIZE;
        let region = MmapRegion::build(
            None,
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
        .map_err(|e| VmmError::Memory { size, reason: e.to_string() })?;
        let region = GuestRegionMmap::new(region, GuestAddress(SYS_BASE))
            .ok_or_else(|| VmmError::Memory { size, reason: "bad region".into() })?;
        let mem = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| VmmError::Memory { size, reason: e.to_string() })?;
        let host = {
            use vm_memory::GuestMemoryBackend;
            mem.get_host_address(GuestAddress(SYS_BASE))
                .map_err(|e| VmmError::Memory { size, reason: e.to_string() })? as u64
        };
        let sys = SysMem { mem, size, host };
        sys.write_descriptor_tables();
        Ok(sys)
    }

    fn write_descriptor_tables(&self) {
        // GDT: null, kernel code64, kernel data, user data, user code64, TSS (two slots). The
        // accessed bit is preset so the CPU never writes to the table. The TSS descriptor names
        // vCPU 0's TSS; each vCPU's task register is loaded with its own (`cpu::reset_vcpu`),
        // and nothing reloads it from the table.
        let tss0 = vcpu_tss(0);
        let tss_lo = TSS_LIMIT
            | ((tss0 & 0xff_ffff) << 16)
            | (0x89u64 << 40)
            | (((tss0 >> 24) & 0xff) << 56);
        let gdt: [u64; 7] = [
            0,
            0x0020_9b00_0000_0000,
            0x0000_9300_0000_0000,
            0x0000_f300_0000_0000,
            0x0020_fb00_0000_0000,
            tss_lo,
            tss0 >> 32,
        ];
        for (i, d) in gdt.iter().enumerate() {
            self.write_u64(GDT_ADDR + 8 * i as u64, *d);
        }
        // IDT: one interrupt gate per exception vector, each to its own stub. #BP and #OF are
        // reachable from user mode (int3 / into), as on Linux.
        for v in 0..NUM_VECTORS {
            let handler = EXCEPTION_STUBS + 16 * u64::from(v);
            let dpl3 = matches!(v, 3 | 4);
            let type_attr: u64 = if dpl3 { 0xee } else { 0x8e };
            let lo = (handler & 0xffff)
                | (u64::from(KERNEL_CS) << 16)
                | (type_attr << 40)
                | (((handler >> 16) & 0xffff) << 48);
            self.write_u64(IDT_ADDR + 16 * u64::from(v), lo);
            self.write_u64(IDT_ADDR + 16 * u64::from(v) + 8, handler >> 32);
            let port = EXCEPTION_PORT_BASE + u16::from(v);
            self.write_bytes(handler, &stub(port));
        }
        // One TSS per vCPU: rsp0 at offset 4 (its own exception stack), then the I/O permission
        // bitmap. The syscall stub runs with user privileges on this KVM, so the stub ports are
        // open in the bitmap. User code can therefore reach them too; the run loop tells the two
        // apart by RIP (see `cpu::check_origin`) and treats a user `out` as the #GP it would be
        // on Linux.
        for i in 0..MAX_VCPUS {
            let tss = vcpu_tss(i);
            self.write_u64(tss + 4, vcpu_kstack_top(i));
            self.write_bytes(tss + 102, &(IO_BITMAP_OFFSET as u16).to_le_bytes());
            self.write_bytes(tss + IO_BITMAP_OFFSET, &io_bitmap());
        }
        self.write_bytes(SYSCALL_ENTRY, &stub(SYSCALL_PORT));
    }

    /// The guest memory of the slot.
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Size of the slot in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host address of the slot (for the memslot ioctl).
    pub fn host_addr(&self) -> u64 {
        self.host
    }

    /// The page-table pool, `[first, end)`: zeroed pages for [`crate::memory::paging::PageTables`].
    pub fn pt_pool(&self) -> (u64, u64) {
        (PT_POOL, SYS_BASE + self.size)
    }

    /// The aligned u64 at guest-physical `gpa`, for entries the guest (through KVM) updates
    /// too: page-table entries, whose A and D bits KVM sets with atomic operations.
    ///
    /// # Panics
    /// If `gpa` is outside the slot or unaligned: callers pass entries of tables they allocated.
    pub fn word(&self, gpa: u64) -> &AtomicU64 {
        assert!(gpa >= SYS_BASE && gpa + 8 <= SYS_BASE + self.size && gpa.is_multiple_of(8), "sysmem word {gpa:#x}");
        // SAFETY: the address lies inside the slot's mapping (asserted), which lives as long as
        // `self`, and is 8-byte aligned; the guest and KVM access it concurrently, which is why
        // it is only ever accessed atomically through this reference.
        unsafe { &*((self.host + (gpa - SYS_BASE)) as *const AtomicU64) }
    }

    /// Reads a u64 at a guest-physical address inside the slot (0 outside: callers only pass
    /// addresses they allocated).
    pub fn read_u64(&self, gpa: u64) -> u64 {
        // Page-table walks read aligned words on the miss path: one atomic load, no look-up.
        if gpa >= SYS_BASE && gpa + 8 <= SYS_BASE + self.size && gpa.is_multiple_of(8) {
            return self.word(gpa).load(std::sync::atomic::Ordering::Acquire);
        }
        self.mem.read_obj(GuestAddress(gpa)).unwrap_or(0)
    }

    /// Writes a u64 at a guest-physical address inside the slot.
    pub fn write_u64(&self, gpa: u64, val: u64) {
        let r = self.mem.write_obj(val, GuestAddress(gpa));
        debug_assert!(r.is_ok(), "sysmem write outside the slot at {gpa:#x}");
    }

    /// Writes bytes at a guest-physical address inside the slot.
    pub fn write_bytes(&self, gpa: u64, bytes: &[u8]) {
        let r = self.mem.write_slice(bytes, GuestAddress(gpa));
        debug_assert!(r.is_ok(), "sysmem write outside the slot at {gpa:#x}");
    }
}
