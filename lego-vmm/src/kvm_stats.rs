//! KVM's own counters of a VM and its vCPUs (the binary statistics of `KVM_GET_STATS_FD`,
//! Linux 5.14+): how often the guest exited, how many page faults KVM fixed in its shadow page
//! tables without any exit to the VMM, how many shadow pages it zapped. They show the part of a
//! run's time the VMM's own counters cannot see: on a shadow-paging KVM, a cleared accessed bit
//! or an invalidated frame costs the guest a fault in the host kernel on its next access.
//!
//! Only cumulative counters are kept (instant values, peaks and histograms are left out), so
//! the figures of several vCPUs add up.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use kvm_bindings::{kvm_stats_desc, kvm_stats_header, KVMIO, KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_TYPE_MASK};
use vmm_sys_util::ioctl::ioctl;
use vmm_sys_util::ioctl_io_nr;

ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);

/// Cumulative KVM counters by name, summed over the file descriptors they were read from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvmStats(pub BTreeMap<String, u64>);

impl KvmStats {
    /// Adds the cumulative counters of `fd`, a VM or vCPU file descriptor. A kernel without
    /// binary statistics (or a counter it does not keep) leaves the figures as they are: the
    /// counters are a diagnostic, never a reason to fail a run.
    pub fn add_from(&mut self, fd: &impl AsRawFd) -> std::io::Result<()> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new file descriptor, which
        // we own from here on (or a negative value, checked below).
        let raw = unsafe { ioctl(fd, KVM_GET_STATS_FD()) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let file = unsafe { File::from_raw_fd(raw) };
        for (name, value) in read_counters(&file)? {
            *self.0.entry(name).or_default() += value;
        }
        Ok(())
    }

    /// The counter `name` (0 when KVM does not keep it).
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }
}

/// The cumulative counters of one statistics file: a header, descriptors each followed by
/// its name, and the data they point into.
fn read_counters(file: &File) -> std::io::Result<Vec<(String, u64)>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("KVM statistics: {what}"));
    let mut h = [0u8; std::mem::size_of::<kvm_stats_header>()];
    file.read_exact_at(&mut h, 0)?;
    let word = |b: &[u8], i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    let (name_size, num_desc, desc_offset, data_offset) = (word(&h, 1), word(&h, 2), word(&h, 4), word(&h, 5));
    if name_size > 4096 || num_desc > 4096 {
        return Err(bad("implausible header"));
    }
    let desc_len = std::mem::size_of::<kvm_stats_desc>() + name_size as usize;
    let mut descs = vec![0u8; desc_len * num_desc as usize];
    file.read_exact_at(&mut descs, u64::from(desc_offset))?;
    let mut out = Vec::new();
    for d in descs.chunks_exact(desc_len) {
        let flags = word(d, 0);
        let size = u16::from_le_bytes([d[6], d[7]]);
        let offset = word(d, 2);
        if flags & KVM_STATS_TYPE_MASK != KVM_STATS_TYPE_CUMULATIVE || size == 0 {
            continue;
        }
        let name = &d[16..];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        let mut v = [0u8; 8];
        file.read_exact_at(&mut v, u64::from(data_offset) + u64::from(offset))?;
        out.push((String::from_utf8_lossy(name).into_owned(), u64::from_le_bytes(v)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_vm_and_vcpu_report_their_counters() {
        let Some(kvm) = crate::testing::kvm_or_skip() else { return };
        let vm = kvm.create_vm().expect("VM");
        let vcpu = vm.create_vcpu(0).expect("vCPU");
        let mut stats = KvmStats::default();
        stats.add_from(&vm).expect("VM statistics");
        stats.add_from(&vcpu).expect("vCPU statistics");
        // Every KVM with binary statistics keeps these two; a vCPU that never ran has no exits.
        assert!(stats.0.contains_key("exits"), "{stats:?}");
        assert!(stats.0.contains_key("remote_tlb_flush"), "{stats:?}");
        assert_eq!(stats.get("exits"), 0);
        assert_eq!(stats.get("no such counter"), 0);
    }
}
