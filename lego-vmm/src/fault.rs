//! Guest exceptions, turned into the signals Linux would send.

use crate::layout::SYS_BASE;

/// What a guest exception means for the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub signal: i32,
    /// `si_code`, as Linux's trap handlers set it.
    pub code: i32,
    /// `si_addr`: the faulting address, the faulting instruction, or 0.
    pub addr: u64,
    /// One-line description with the address and RIP.
    pub detail: String,
}

/// The exception frame the CPU pushed on the kernel stack.
#[derive(Debug, Clone, Copy, Default)]
pub struct Frame {
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
}

/// `si_code` values of faults (Linux uapi siginfo.h).
const SI_KERNEL: i32 = 0x80;
const FPE_INTDIV: i32 = 1;
const ILL_ILLOPN: i32 = 2;
const SEGV_MAPERR: i32 = 1;
const SEGV_ACCERR: i32 = 2;
const BUS_ADRALN: i32 = 1;
const TRAP_TRACE: i32 = 2;

/// Whether `insn`, the bytes at a faulting RIP, is an instruction the CPU faults with #GP
/// where this nested PVM raises #UD: `int imm8` through a gate user mode may not use (every
/// vector but 3 and 4), and, on Intel (AMD has them #UD in long mode), `sysenter` and
/// `sysexit` (`IA32_SYSENTER_CS` is 0, and `sysexit` needs CPL0). With `lock`, all are #UD.
fn gp_not_ud(insn: &[u8], intel: bool) -> bool {
    const PREFIXES: [u8; 10] = [0xf2, 0xf3, 0x2e, 0x36, 0x3e, 0x26, 0x64, 0x65, 0x66, 0x67];
    let mut bytes = insn.iter().skip_while(|b| PREFIXES.contains(b));
    let mut op = bytes.next();
    if op.is_some_and(|b| b & 0xf0 == 0x40) {
        op = bytes.next(); // a REX prefix, last before the opcode
    }
    match (op, bytes.next()) {
        (Some(0xcd), Some(_)) => true,
        (Some(0x0f), Some(0x34 | 0x35)) => intel,
        _ => false,
    }
}

/// Whether the host CPU is Intel's.
fn intel() -> bool {
    let id = std::arch::x86_64::__cpuid(0);
    (id.ebx, id.edx, id.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e) // "GenuineIntel"
}

/// Maps exception `vector` (with its frame and CR2) to a signal as Linux's trap handlers do;
/// `None` for vectors a user program cannot raise. `insn` is what user memory holds at the
/// faulting RIP (up to 15 bytes); only #UD looks at it.
pub fn classify(vector: u8, frame: &Frame, cr2: u64, insn: &[u8]) -> Option<Fault> {
    let rip = frame.rip;
    if rip >= SYS_BASE {
        // User code ran into the stub page (user-executable, see `layout.rs`), where Linux has
        // nothing mapped: whatever the bytes there did, Linux faults on fetching them.
        let detail = format!("page fault at address {rip:#x} (instruction fetch, address not mapped), rip {rip:#x}");
        return Some(Fault { signal: libc::SIGSEGV, code: SEGV_MAPERR, addr: rip, detail });
    }
    let unmapped = frame.error_code & 1 == 0 && cr2 < SYS_BASE;
    let (signal, code, addr, what) = match vector {
        0 => (libc::SIGFPE, FPE_INTDIV, rip, "divide error".to_string()),
        1 => (libc::SIGTRAP, TRAP_TRACE, rip, "debug trap".to_string()),
        3 => (libc::SIGTRAP, SI_KERNEL, 0, "breakpoint".to_string()),
        4 => (libc::SIGSEGV, SI_KERNEL, 0, "overflow trap".to_string()),
        5 => (libc::SIGSEGV, SI_KERNEL, 0, "bound range exceeded".to_string()),
        // The #GP the CPU raises (`int 0x80` too, as on a 64-bit-only Linux).
        6 if gp_not_ud(insn, intel()) => (libc::SIGSEGV, SI_KERNEL, 0, "general protection fault".to_string()),
        6 => (libc::SIGILL, ILL_ILLOPN, rip, "invalid opcode".to_string()),
        11 => (libc::SIGBUS, SI_KERNEL, 0, "segment not present".to_string()),
        12 => (libc::SIGBUS, SI_KERNEL, 0, "stack segment fault".to_string()),
        13 => (libc::SIGSEGV, SI_KERNEL, 0, "general protection fault".to_string()),
        14 => {
            let code = if unmapped { SEGV_MAPERR } else { SEGV_ACCERR };
            (libc::SIGSEGV, code, cr2, describe_page_fault(frame.error_code, cr2))
        }
        16 => (libc::SIGFPE, SI_KERNEL, rip, "x87 floating-point exception".to_string()),
        17 => (libc::SIGBUS, BUS_ADRALN, 0, "alignment check".to_string()),
        19 => (libc::SIGFPE, SI_KERNEL, rip, "SIMD floating-point exception".to_string()),
        _ => return None,
    };
    Some(Fault { signal, code, addr, detail: format!("{what}, rip {rip:#x}") })
}

/// The #GP of user code doing port I/O itself (or jumping into a stub), RIP just past the
/// instruction: `SIGSEGV` as Linux sends it.
pub fn port_io(port: u16, rip: u64) -> Fault {
    let detail = format!("general protection fault (I/O to port {port:#x}), rip {rip:#x}");
    Fault { signal: libc::SIGSEGV, code: SI_KERNEL, addr: 0, detail }
}

fn describe_page_fault(err: u64, addr: u64) -> String {
    let access = if err & (1 << 4) != 0 {
        "instruction fetch"
    } else if err & 2 != 0 {
        "write"
    } else {
        "read"
    };
    let why = if err & 1 == 0 && addr < SYS_BASE {
        "address not mapped"
    } else {
        "access not permitted"
    };
    format!("page fault at address {addr:#x} ({access}, {why})")
}

/// Name of a signal (`SIGSEGV`), for messages.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_faults_name_address_access_and_rip() {
        let f = classify(14, &Frame { error_code: 6, rip: 0x401000, ..Default::default() }, 0x10, &[]).unwrap();
        assert_eq!(f.signal, libc::SIGSEGV);
        assert_eq!(f.detail, "page fault at address 0x10 (write, address not mapped), rip 0x401000");
        assert_eq!((f.code, f.addr), (SEGV_MAPERR, 0x10));
        let f = classify(14, &Frame { error_code: 7, rip: 1, ..Default::default() }, 0x7000, &[]).unwrap();
        assert!(f.detail.contains("write, access not permitted"));
        assert_eq!((f.code, f.addr), (SEGV_ACCERR, 0x7000));
    }

    #[test]
    fn exception_signals_match_linux() {
        let fr = Frame::default();
        assert_eq!(classify(0, &fr, 0, &[]).unwrap().signal, libc::SIGFPE);
        assert_eq!(classify(6, &fr, 0, &[]).unwrap().signal, libc::SIGILL);
        let div = classify(0, &Frame { rip: 0x401234, ..fr }, 0, &[]).unwrap();
        assert_eq!((div.code, div.addr), (FPE_INTDIV, 0x401234));
        assert_eq!(classify(13, &fr, 0, &[]).unwrap().signal, libc::SIGSEGV);
        assert_eq!(classify(8, &fr, 0, &[]), None);
        // `int N` (#UD on this PVM) is the #GP it is on Linux; `lock int` and `ud2` are not.
        for insn in [&[0xcd, 0x80][..], &[0xcd, 0x0d, 0x90], &[0x66, 0x48, 0xcd, 0x20]] {
            assert_eq!(classify(6, &fr, 0, insn).unwrap().signal, libc::SIGSEGV, "{insn:x?}");
        }
        for insn in [&[0xf0, 0xcd, 0x80][..], &[0x0f, 0x0b], &[0xcd], &[]] {
            assert_eq!(classify(6, &fr, 0, insn).unwrap().signal, libc::SIGILL, "{insn:x?}");
        }
        assert!(gp_not_ud(&[0x0f, 0x34], true) && !gp_not_ud(&[0x0f, 0x34], false));
        // Anything user code does in the stub page is a fetch fault there, as on Linux.
        let stub = Frame { rip: crate::layout::STUB_PAGE + 0x102, ..fr };
        for v in [0, 6, 13, 14] {
            let f = classify(v, &stub, 0, &[]).unwrap();
            assert_eq!((f.signal, f.code, f.addr), (libc::SIGSEGV, SEGV_MAPERR, stub.rip));
        }
    }
}
