//! `lego-vmm`: the pComponent of lego. It runs an unmodified x86-64 Linux program (static, or
//! dynamically linked with its interpreter read from the vNode's files) as a KVM guest in user
//! mode (CPL3); `syscall` enters a one-instruction CPL0 stub that exits to the VMM, which acts
//! as LegoOS's process monitor and Linux state layer.
//!
//! Data flow of one system call: guest `syscall` -> stub `out` -> [`vnode`] run loop ->
//! [`syscall::handle`] against the [`process::Process`] state, which returns a
//! [`syscall::Control`] (a value, or a thread to start, an exit, an exec, a signal return) that
//! the run loop acts on -> `sysret` emulated by writing RIP/RFLAGS/CS/SS back through KVM sync
//! regs.
//!
//! Memory: the guest's memory lives on mem-servers; only the [`excache`] is resident here, and
//! memory system calls go to the process's home mem-server through [`mm::Mm`].

pub mod anonfd;
pub mod bench;
pub mod cpu;
pub mod delivery;
pub mod elf;
pub mod epoll;
pub mod errno;
pub mod error;
pub mod fault;
pub mod fdtable;
pub mod fifo;
pub mod fs;
pub mod futex;
pub mod hostcpu;
pub mod hostsig;
pub mod identity;
pub mod kick;
pub mod kvm_stats;
pub mod layout;
pub mod loader;
pub mod locks;
pub mod mapstate;
pub mod memory;
pub mod mqueue;
pub mod net;
pub mod pcomp;
pub mod pipe;
pub mod proctable;
pub mod pseudo;
pub mod pty;
pub mod process;
pub mod scm_rights;
pub mod signal;
pub mod stack;
pub mod syscall;
pub mod sysmem;
pub mod sysv;
pub mod threads;
pub mod timers;
pub mod vdso;
#[cfg(test)]
mod testing;
pub mod vnode;

pub use error::VmmError;
pub use vnode::{Files, Program, RunReport, Vnode, VnodeConfig};
