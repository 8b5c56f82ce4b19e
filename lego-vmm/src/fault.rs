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

/// Maps exception `vector` (with its frame and CR2) to a signal as Linux's trap handlers do;
/// `None` for vectors a user program cannot raise.
pub fn classify(vector: u8, frame: &Frame, cr2: u64) -> Option<Fault> {
    let rip = frame.rip;
    let unmapped = frame.error_code & 1 == 0 && cr2 < SYS_BASE;
    let (signal, code, addr, what) = match vector {
        0 => (libc::SIGFPE, FPE_INTDIV, rip, "divide error".to_string()),
        1 => (libc::SIGTRAP, TRAP_TRACE, rip, "debug trap".to_string()),
        3 => (libc::SIGTRAP, SI_KERNEL, 0, "breakpoint".to_string()),
        4 => (libc::SIGSEGV, SI_KERNEL, 0, "overflow trap".to_string()),
        5 => (libc::SIGSEGV, SI_KERNEL, 0, "bound range exceeded".to_string()),
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
        let f = classify(14, &Frame { error_code: 6, rip: 0x401000, ..Default::default() }, 0x10).unwrap();
        assert_eq!(f.signal, libc::SIGSEGV);
        assert_eq!(f.detail, "page fault at address 0x10 (write, address not mapped), rip 0x401000");
        assert_eq!((f.code, f.addr), (SEGV_MAPERR, 0x10));
        let f = classify(14, &Frame { error_code: 7, rip: 1, ..Default::default() }, 0x7000).unwrap();
        assert!(f.detail.contains("write, access not permitted"));
        assert_eq!((f.code, f.addr), (SEGV_ACCERR, 0x7000));
    }

    #[test]
    fn exception_signals_match_linux() {
        let fr = Frame::default();
        assert_eq!(classify(0, &fr, 0).unwrap().signal, libc::SIGFPE);
        assert_eq!(classify(6, &fr, 0).unwrap().signal, libc::SIGILL);
        let div = classify(0, &Frame { rip: 0x401234, ..fr }, 0).unwrap();
        assert_eq!((div.code, div.addr), (FPE_INTDIV, 0x401234));
        assert_eq!(classify(13, &fr, 0).unwrap().signal, libc::SIGSEGV);
        assert_eq!(classify(8, &fr, 0), None);
    }
}
