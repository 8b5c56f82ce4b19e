//! The character devices of `/dev`.

use crate::errno::{Errno, SysResult};

/// A device node of `/dev`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Null,
    Zero,
    Full,
    Random,
    Urandom,
    Tty,
    /// The pseudo-terminal multiplexer: opening it makes a new pty ([`crate::pty`]).
    Ptmx,
}

impl Device {
    /// Every device, in `ls /dev` order.
    pub const ALL: [Device; 7] = [
        Device::Full,
        Device::Null,
        Device::Ptmx,
        Device::Random,
        Device::Tty,
        Device::Urandom,
        Device::Zero,
    ];

    /// Its name in `/dev`.
    pub fn name(self) -> &'static [u8] {
        match self {
            Device::Null => b"null",
            Device::Zero => b"zero",
            Device::Full => b"full",
            Device::Random => b"random",
            Device::Urandom => b"urandom",
            Device::Tty => b"tty",
            Device::Ptmx => b"ptmx",
        }
    }

    /// `(major, minor)` as on Linux.
    fn number(self) -> (u32, u32) {
        match self {
            Device::Null => (1, 3),
            Device::Zero => (1, 5),
            Device::Full => (1, 7),
            Device::Random => (1, 8),
            Device::Urandom => (1, 9),
            Device::Tty => (5, 0),
            Device::Ptmx => (5, 2),
        }
    }

    /// `st_rdev` (glibc's `makedev`).
    pub fn rdev(self) -> u64 {
        let (major, minor) = self.number();
        libc::makedev(major, minor)
    }

    /// Its inode in `/dev`.
    pub fn ino(self) -> u64 {
        let (major, minor) = self.number();
        0x100 + u64::from(major) * 16 + u64::from(minor)
    }

    /// `read(2)`: nothing from `null`, zeroes from `zero` and `full`, random bytes from
    /// `random` and `urandom` (the host's generator).
    pub fn read(self, buf: &mut [u8]) -> SysResult<usize> {
        match self {
            Device::Null => Ok(0),
            Device::Zero | Device::Full => {
                buf.fill(0);
                Ok(buf.len())
            }
            Device::Random | Device::Urandom => {
                // SAFETY: `buf` is valid for `buf.len()` writable bytes.
                let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    return Err(Errno::last());
                }
                Ok(n as usize)
            }
            // Opened as host terminals; never read through here.
            Device::Tty | Device::Ptmx => Err(Errno(libc::ENXIO)),
        }
    }

    /// `write(2)`: everything is taken (and dropped) but by `full`, which is full.
    pub fn write(self, buf: &[u8]) -> SysResult<usize> {
        match self {
            Device::Full => Err(Errno(libc::ENOSPC)),
            Device::Tty | Device::Ptmx => Err(Errno(libc::ENXIO)),
            _ => Ok(buf.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_behave_as_linux_ones() {
        let mut b = [7u8; 64];
        assert_eq!(Device::Null.read(&mut b), Ok(0));
        assert_eq!(Device::Zero.read(&mut b), Ok(64));
        assert!(b.iter().all(|&x| x == 0));
        assert_eq!(Device::Urandom.read(&mut b), Ok(64));
        assert!(
            b.iter().any(|&x| x != 0),
            "64 random bytes are not all zero"
        );
        assert_eq!(Device::Full.write(b"x"), Err(Errno(libc::ENOSPC)));
        assert_eq!(Device::Null.write(b"abc"), Ok(3));
        // /dev/null is 1:3, /dev/tty 5:0 in `ls -l`.
        assert_eq!(Device::Null.rdev(), 0x103);
        assert_eq!(Device::Tty.rdev(), 0x500);
    }
}
