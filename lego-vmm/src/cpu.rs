//! vCPU setup for a CPL3 program in long mode, and decoding of VM exits into guest events.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs, kvm_xcrs, Msrs, kvm_msr_entry, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};

use crate::error::VmmError;
use crate::layout::*;

const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_SFMASK: u32 = 0xc000_0084;
const MSR_FS_BASE: u32 = 0xc000_0100;
const MSR_GS_BASE: u32 = 0xc000_0101;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_AM: u64 = 1 << 18;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_SCE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// RFLAGS bits `sysret` takes from R11 (as the CPU masks them).
const SYSRET_RFLAGS_MASK: u64 = 0x3c_7fd7;
/// RFLAGS cleared on `syscall` entry: TF, IF, DF, IOPL, NT, AC, as Linux sets `SFMASK`.
const SFMASK: u64 = 0x4_7700;

/// What a VM exit means for the vNode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEvent {
    /// The program executed `syscall`.
    Syscall,
    /// The program raised exception `vector`; its frame is on the kernel stack.
    Exception(u8),
    /// User code did port I/O itself (`out` or `in` at CPL3, or a jump into a stub): a
    /// privileged instruction, #GP on Linux.
    UserPortIo(u16),
    /// The vCPU was kicked out of the guest because a signal waits for its thread (see
    /// [`crate::kick`]); the registers are where it stopped.
    Kicked,
    /// Anything else: a VMM or KVM problem, never a guest fault.
    Unexpected(String),
}

/// RFLAGS.IF, which `syscall` (through `SFMASK`) and the interrupt gates clear; user code
/// cannot clear it (`cli` and `popf` need IOPL 3).
const RFLAGS_IF: u64 = 1 << 9;

/// The registers [`check_origin`] looks at, as they were at the exit.
#[derive(Debug, Clone, Copy)]
pub struct ExitState {
    /// RIP at the exit.
    pub rip: u64,
    /// RSP at the exit.
    pub rsp: u64,
    /// RFLAGS at the exit.
    pub rflags: u64,
    /// The code selector at the exit (its low bits are the CPL).
    pub cs: u16,
    /// The vCPU's index in its VM (which kernel stack an exception switches to).
    pub vcpu: u32,
}

/// A stub exit is genuine only if the stub was entered the way the CPU enters it, not by a
/// user jump or call to its address (the stub page is user-executable, see `layout.rs`); any
/// other write to a stub port is the program executing `out` itself: a privileged
/// instruction, #GP on Linux.
/// - RIP must be just past that port's own stub instruction.
/// - The syscall stub: IF must be clear, as `syscall` clears it through `SFMASK`. (CS cannot
///   tell: on this nested PVM, `syscall` reaches LSTAR without leaving user mode.)
/// - An exception stub: the CPU went through the interrupt gate to CPL0 and switched to the
///   vCPU's own kernel stack, so RSP is just below the frame it pushed there.
pub fn check_origin(event: GuestEvent, port: Option<u16>, at: &ExitState) -> GuestEvent {
    let genuine = match event {
        GuestEvent::Syscall => at.rip == SYSCALL_ENTRY + STUB_OUT_LEN && at.rflags & RFLAGS_IF == 0,
        GuestEvent::Exception(v) => {
            // RIP, CS, RFLAGS, RSP, SS, and the error code if the vector has one.
            let frame = if crate::sysmem::has_error_code(v) { 48 } else { 40 };
            at.rip == EXCEPTION_STUBS + 16 * u64::from(v) + STUB_OUT_LEN
                && at.cs & 3 == 0
                && at.vcpu < MAX_VCPUS
                && at.rsp == vcpu_kstack_top(at.vcpu) - frame
        }
        e => return e,
    };
    if genuine {
        event
    } else {
        GuestEvent::UserPortIo(port.unwrap_or_default())
    }
}

/// The port of an `out` exit.
pub fn exit_port(exit: &VcpuExit<'_>) -> Option<u16> {
    match exit {
        VcpuExit::IoOut(port, _) => Some(*port),
        _ => None,
    }
}

/// Decodes an exit. Pure, so every case can be tested without KVM.
pub fn decode_exit(exit: &VcpuExit<'_>) -> GuestEvent {
    match exit {
        VcpuExit::IoOut(SYSCALL_PORT, _) => GuestEvent::Syscall,
        VcpuExit::IoOut(port, _)
            if (EXCEPTION_PORT_BASE..EXCEPTION_PORT_BASE + u16::from(NUM_VECTORS)).contains(port) =>
        {
            GuestEvent::Exception((port - EXCEPTION_PORT_BASE) as u8)
        }
        // Only the stub ports and the benchmark port are open to the guest (`sysmem::io_bitmap`),
        // and no stub reads a port: anything else there is the program's own `out` or `in`.
        VcpuExit::IoOut(port, _) | VcpuExit::IoIn(port, _) => GuestEvent::UserPortIo(*port),
        VcpuExit::Hlt => GuestEvent::Unexpected("halt in a CPL0 stub".into()),
        VcpuExit::Shutdown => GuestEvent::Unexpected("triple fault".into()),
        VcpuExit::FailEntry(reason, cpu) => GuestEvent::Unexpected(format!("entry failure {reason:#x} on cpu {cpu}")),
        VcpuExit::InternalError => GuestEvent::Unexpected("KVM internal error".into()),
        VcpuExit::MemoryFault { gpa, flags, .. } => {
            GuestEvent::Unexpected(format!("host memory fault at guest address {gpa:#x} (flags {flags:#x})"))
        }
        other => GuestEvent::Unexpected(format!("unexpected exit {other:?}")),
    }
}

/// User-mode code segment.
pub fn user_cs() -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: USER_CS,
        type_: 11,
        present: 1,
        dpl: 3,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// User-mode data/stack segment.
pub fn user_ds() -> kvm_segment {
    kvm_segment { selector: USER_DS, type_: 3, db: 1, l: 0, ..user_cs() }
}

/// Returns to user mode as `sysret` would: RIP from RCX, RFLAGS from R11, user CS/SS.
pub fn emulate_sysret(regs: &mut kvm_regs, sregs: &mut kvm_sregs) {
    regs.rip = regs.rcx;
    regs.rflags = (regs.r11 & SYSRET_RFLAGS_MASK) | 2;
    sregs.cs = user_cs();
    sregs.ss = user_ds();
}

/// Host XCR0 (the feature set the host kernel enabled for XSAVE).
fn host_xcr0() -> u64 {
    let leaf1 = std::arch::x86_64::__cpuid(1);
    if leaf1.ecx & (1 << 27) == 0 {
        return 0; // no OSXSAVE
    }
    // SAFETY: OSXSAVE is set, so XGETBV is enabled; reading XCR0 has no side effects.
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

/// CPUID.1:EDX, the value Linux puts in `AT_HWCAP` on x86-64.
pub fn hwcap() -> u64 {
    u64::from(std::arch::x86_64::__cpuid(1).edx)
}

/// Configures a fresh vCPU, number `index` of its VM: host CPUID, then [`reset_vcpu`].
pub fn setup_vcpu(kvm: &Kvm, vcpu: &VcpuFd, index: u32, cr3: u64, entry: u64, rsp: u64) -> Result<(), VmmError> {
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(VmmError::kvm("GET_SUPPORTED_CPUID"))?;
    vcpu.set_cpuid2(&cpuid).map_err(VmmError::kvm("SET_CPUID2"))?;
    crate::vdso::align_tsc(vcpu);
    reset_vcpu(kvm, vcpu, index, cr3, entry, rsp)
}

/// Puts vCPU `index` (fresh, or one a thread that ended left behind) in the state a new thread
/// starts in: XCR0 as the host's, long mode with our descriptor tables, its own TSS and the page
/// tables at `cr3`, the syscall MSRs, a clean FPU, and user mode at `entry` with stack `rsp`.
pub fn reset_vcpu(kvm: &Kvm, vcpu: &VcpuFd, index: u32, cr3: u64, entry: u64, rsp: u64) -> Result<(), VmmError> {
    if index >= MAX_VCPUS {
        return Err(VmmError::Config(format!("vCPU {index}: a vNode process has at most {MAX_VCPUS}")));
    }
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(VmmError::kvm("GET_SUPPORTED_CPUID"))?;
    let supported_xcr0 = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0xd && e.index == 0)
        .map(|e| u64::from(e.eax) | (u64::from(e.edx) << 32))
        .unwrap_or(0);
    let xcr0 = host_xcr0() & supported_xcr0;
    let mut sregs = vcpu.get_sregs().map_err(VmmError::kvm("GET_SREGS"))?;
    sregs.cs = user_cs();
    sregs.ss = user_ds();
    sregs.ds = user_ds();
    sregs.es = user_ds();
    sregs.fs = user_ds();
    sregs.gs = user_ds();
    sregs.tr = kvm_segment {
        base: vcpu_tss(index),
        limit: crate::sysmem::TSS_LIMIT as u32,
        selector: TSS_SEL,
        type_: 11,
        present: 1,
        s: 0,
        ..Default::default()
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = 7 * 8 - 1;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = u16::from(NUM_VECTORS) * 16 - 1;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | if xcr0 != 0 { CR4_OSXSAVE } else { 0 };
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
    vcpu.set_sregs(&sregs).map_err(VmmError::kvm("SET_SREGS"))?;

    if xcr0 != 0 {
        let mut xcrs = kvm_xcrs { nr_xcrs: 1, ..Default::default() };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = xcr0;
        vcpu.set_xcrs(&xcrs).map_err(VmmError::kvm("SET_XCRS"))?;
    }

    let entries = [
        (MSR_STAR, (u64::from(KERNEL_DS) << 48) | (u64::from(KERNEL_CS) << 32)),
        (MSR_LSTAR, SYSCALL_ENTRY),
        (MSR_SFMASK, SFMASK),
        (MSR_FS_BASE, 0),
        (MSR_GS_BASE, 0),
    ]
    .map(|(index, data)| kvm_msr_entry { index, data, ..Default::default() });
    let msrs = Msrs::from_entries(&entries).map_err(|e| VmmError::GuestCrashed(format!("MSR list: {e:?}")))?;
    let n = vcpu.set_msrs(&msrs).map_err(VmmError::kvm("SET_MSRS"))?;
    if n != entries.len() {
        return Err(VmmError::GuestCrashed(format!("KVM accepted only {n} of {} MSRs", entries.len())));
    }

    let mut fpu = vcpu.get_fpu().map_err(VmmError::kvm("GET_FPU"))?;
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    vcpu.set_fpu(&fpu).map_err(VmmError::kvm("SET_FPU"))?;

    let regs = kvm_regs { rip: entry, rsp, rflags: 0x202, ..Default::default() };
    vcpu.set_regs(&regs).map_err(VmmError::kvm("SET_REGS"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_decode() {
        assert_eq!(decode_exit(&VcpuExit::IoOut(SYSCALL_PORT, &[0])), GuestEvent::Syscall);
        assert_eq!(decode_exit(&VcpuExit::IoOut(EXCEPTION_PORT_BASE + 14, &[0])), GuestEvent::Exception(14));
        assert_eq!(decode_exit(&VcpuExit::IoOut(BENCH_PORT, &[0])), GuestEvent::UserPortIo(BENCH_PORT));
        let port = EXCEPTION_PORT_BASE + 32;
        assert_eq!(decode_exit(&VcpuExit::IoOut(port, &[0])), GuestEvent::UserPortIo(port));
        assert_eq!(decode_exit(&VcpuExit::IoIn(SYSCALL_PORT, &mut [0])), GuestEvent::UserPortIo(SYSCALL_PORT));
        assert!(matches!(decode_exit(&VcpuExit::Hlt), GuestEvent::Unexpected(_)));
    }

    #[test]
    fn stub_ports_written_from_user_mode_are_not_trusted() {
        let syscall_rip = SYSCALL_ENTRY + STUB_OUT_LEN;
        let user = ExitState { rip: syscall_rip, rsp: 0x7fff_0000, rflags: 0x202, cs: USER_CS, vcpu: 1 };
        let syscall = ExitState { rflags: 0x2, ..user };
        assert_eq!(check_origin(GuestEvent::Syscall, Some(SYSCALL_PORT), &syscall), GuestEvent::Syscall);
        let elsewhere = ExitState { rip: 0x401002, ..syscall };
        assert_eq!(check_origin(GuestEvent::Syscall, Some(SYSCALL_PORT), &elsewhere), GuestEvent::UserPortIo(SYSCALL_PORT));
        // A call to the syscall stub's address: IF is still set.
        assert_eq!(check_origin(GuestEvent::Syscall, Some(SYSCALL_PORT), &user), GuestEvent::UserPortIo(SYSCALL_PORT));

        let pf_rip = EXCEPTION_STUBS + 16 * 14 + STUB_OUT_LEN;
        let pf = ExitState { rip: pf_rip, rsp: vcpu_kstack_top(1) - 48, rflags: 0x2, cs: KERNEL_CS, vcpu: 1 };
        assert_eq!(check_origin(GuestEvent::Exception(14), Some(0x2e), &pf), GuestEvent::Exception(14));
        let de = ExitState { rip: EXCEPTION_STUBS + STUB_OUT_LEN, rsp: vcpu_kstack_top(1) - 40, ..pf };
        assert_eq!(check_origin(GuestEvent::Exception(0), Some(0x20), &de), GuestEvent::Exception(0));
        // The page-fault port reached from the syscall stub's address is not a page fault.
        let wrong_stub = ExitState { rip: syscall_rip, ..pf };
        assert_eq!(check_origin(GuestEvent::Exception(14), Some(0x2e), &wrong_stub), GuestEvent::UserPortIo(0x2e));
        // A call to an exception stub from user code: user CS, the user's stack.
        let called = ExitState { rip: pf_rip, rsp: 0x7fff_0000, rflags: 0x202, cs: USER_CS, vcpu: 1 };
        assert_eq!(check_origin(GuestEvent::Exception(14), Some(0x2e), &called), GuestEvent::UserPortIo(0x2e));
        // Even with RSP set to where the frame would be, or on another vCPU's kernel stack.
        let forged = ExitState { rsp: vcpu_kstack_top(1) - 48, ..called };
        assert_eq!(check_origin(GuestEvent::Exception(14), Some(0x2e), &forged), GuestEvent::UserPortIo(0x2e));
        let other_stack = ExitState { rsp: vcpu_kstack_top(0) - 48, ..pf };
        assert_eq!(check_origin(GuestEvent::Exception(14), Some(0x2e), &other_stack), GuestEvent::UserPortIo(0x2e));
    }

    #[test]
    fn sysret_takes_rip_and_flags_from_rcx_r11() {
        let mut regs = kvm_regs { rcx: 0x401000, r11: 0xffff_ffff_ffff_ffff, ..Default::default() };
        let mut sregs = kvm_sregs::default();
        emulate_sysret(&mut regs, &mut sregs);
        assert_eq!(regs.rip, 0x401000);
        assert_eq!(regs.rflags, SYSRET_RFLAGS_MASK | 2);
        assert_eq!((sregs.cs.selector, sregs.cs.dpl, sregs.ss.selector), (USER_CS, 3, USER_DS));
    }
}
