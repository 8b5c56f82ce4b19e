//! Errors of the VMM itself (never of the guest program: those are errnos or signals).

use crate::elf::ElfError;

/// Why a vNode could not be created or run.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// `/dev/kvm` is missing or unusable.
    #[error("KVM is not available ({0}): lego needs read/write access to /dev/kvm")]
    KvmUnavailable(String),
    /// A KVM ioctl failed.
    #[error("KVM {op} failed: {source}")]
    Kvm {
        op: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Host memory for the guest could not be reserved.
    #[error("cannot reserve {size} bytes of guest memory: {reason}")]
    Memory { size: u64, reason: String },
    /// The program cannot be read.
    #[error("{path}: {source}")]
    Program {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The program is not an x86-64 Linux executable lego can run.
    #[error("{path}: {source}")]
    BadElf {
        path: String,
        #[source]
        source: ElfError,
    },
    /// A mem-server could not be reached, refused, or failed while the process ran.
    #[error("memory server: {0}")]
    MemoryServer(String),
    /// The vNode's remote files could not be reached.
    #[error("storage: {0}")]
    Storage(#[from] crate::fs::remote::ConnectError),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The guest CPU did something the VMM cannot continue from (a VMM or KVM bug, not a guest
    /// fault: guest faults become signals).
    #[error("vCPU stopped unexpectedly: {0}")]
    GuestCrashed(String),
}

impl VmmError {
    pub(crate) fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
        move |source| VmmError::Kvm { op, source }
    }
}
