//! Guest exceptions, turned into the signals Linux would send.

use crate::layout::SYS_BASE;

/// What a guest exception means for the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub signal: i32,
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

/// Maps exception `vector` (with its frame and CR2) to a signal as Linux's trap handlers do;
/// `None` for vectors a user program cannot raise.
pub fn classify(vector: u8, frame: &Frame, cr2: u64) -> Option<Fault> {
    let rip = frame.rip;
    let (signal, what) = match vector {
        0 => (libc::SIGFPE, "divide error".to_string()),
        1 => (libc::SIGTRAP, "debug trap".to_string()),
        3 => (libc::SIGTRAP, "breakpoint".to_string()),
        4 => (libc::SIGSEGV, "overflow trap".to_string()),
        5 => (libc::SIGSEGV, "bound range exceeded".to_string()),
        6 => (libc::SIGILL, "invalid opcode".to_string()),
        11 => (libc::SIGBUS, "segment not present".to_string()),
        12 => (libc::SIGBUS, "stack segment fault".to_string()),
        13 => (libc::SIGSEGV, "general protection fault".to_string()),
        14 => (libc::SIGSEGV, describe_page_fault(frame.error_code, cr2)),
        16 => (libc::SIGFPE, "x87 floating-point exception".to_string()),
        17 => (libc::SIGBUS, "alignment check".to_string()),
        19 => (libc::SIGFPE, "SIMD floating-point exception".to_string()),
        _ => return None,
    };
    Some(Fault { signal, detail: format!("{what}, rip {rip:#x}") })
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
        let f = classify(14, &Frame { error_code: 7, rip: 1, ..Default::default() }, 0x7000).unwrap();
        assert!(f.detail.contains("write, access not permitted"));
    }

    #[test]
    fn exception_signals_match_linux() {
        let fr = Frame::default();
        assert_eq!(classify(0, &fr, 0).unwrap().signal, libc::SIGFPE);
        assert_eq!(classify(6, &fr, 0).unwrap().signal, libc::SIGILL);
        assert_eq!(classify(13, &fr, 0).unwrap().signal, libc::SIGSEGV);
        assert_eq!(classify(8, &fr, 0), None);
    }
}
