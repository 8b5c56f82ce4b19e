//! Sizes on the command line.

/// Why a size was refused. Callers name the value: clap says "invalid value '4X' for
/// '--mem <MEM>'", a config error "mem_server.capacity = \"4X\"".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number with an optional unit.
    #[error("not a size (use e.g. 512M, 4G)")]
    NotASize,
    /// More than 2^64 - 1 bytes.
    #[error("too large")]
    TooLarge,
    /// Outside the option's range, or not in whole 4 KiB pages.
    #[error("must be a multiple of 4K from {} to {}", show(*.min), show(*.max))]
    OutOfRange {
        /// The smallest size accepted.
        min: u64,
        /// The largest size accepted.
        max: u64,
    },
}

/// Parses `4096`, `64K`, `512M`, `4G`, `1T` (binary units; an optional `iB`/`B` suffix).
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim().trim_end_matches("iB").trim_end_matches('B');
    let (num, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num.trim().parse().map_err(|_| SizeError::NotASize)?;
    n.checked_mul(1 << shift).ok_or(SizeError::TooLarge)
}

/// A value parser for sizes from `min` to `max` bytes (both multiples of 4 KiB) in whole 4 KiB
/// pages: what clap reports for anything else ("invalid value '0' for '--mem <MEM>': ...") names
/// the option and the range, and exits 2 like any other usage error.
pub fn pages_between(min: u64, max: u64) -> impl Fn(&str) -> Result<u64, SizeError> + Clone + Send + Sync + 'static {
    move |s| {
        let n = parse_size(s)?;
        if (min..=max).contains(&n) && n.is_multiple_of(4096) {
            Ok(n)
        } else {
            Err(SizeError::OutOfRange { min, max })
        }
    }
}

/// `--mem`: a vNode's user address space, as the VMM accepts it.
pub fn vnode_mem() -> impl Fn(&str) -> Result<u64, SizeError> + Clone + Send + Sync + 'static {
    use lego_vmm::layout::{MAX_USER_MEM, MIN_USER_MEM};
    pages_between(MIN_USER_MEM, MAX_USER_MEM)
}

/// `--excache`: from the smallest ExCache the VMM accepts to the largest address space.
pub fn excache() -> impl Fn(&str) -> Result<u64, SizeError> + Clone + Send + Sync + 'static {
    use lego_vmm::layout::{MAX_USER_MEM, PAGE_SIZE};
    pages_between(lego_vmm::memory::excache::MIN_LINES * PAGE_SIZE, MAX_USER_MEM)
}

/// `--capacity` of a mem-server: one page to [`mem_server::MAX_CAPACITY`].
pub fn mem_server_capacity() -> impl Fn(&str) -> Result<u64, SizeError> + Clone + Send + Sync + 'static {
    pages_between(4096, mem_server::MAX_CAPACITY)
}

/// `n` bytes as the largest binary unit that divides it (`64M`, `1T`, `4K`, `100`).
fn show(n: u64) -> String {
    match ["T", "G", "M", "K"].iter().zip([40, 30, 20, 10]).find(|&(_, shift)| n != 0 && n.trailing_zeros() >= shift) {
        Some((unit, shift)) => format!("{}{unit}", n >> shift),
        None => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{pages_between, parse_size, show};

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn ranges() {
        let mem = pages_between(64 << 20, 1 << 40);
        assert_eq!(mem("64M"), Ok(64 << 20));
        assert_eq!(mem("1T"), Ok(1 << 40));
        for bad in ["0", "1", "63M", "100T", "65537K"] {
            assert_eq!(mem(bad).unwrap_err().to_string(), "must be a multiple of 4K from 64M to 1T", "{bad}");
        }
        assert_eq!(mem("lots").unwrap_err().to_string(), "not a size (use e.g. 512M, 4G)");
        assert_eq!((show(0), show(4096), show(1536 << 20), show(12345)), ("0".into(), "4K".into(), "1536M".into(), "12345".into()));
    }
}
