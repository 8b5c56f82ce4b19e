//! Socket addresses as the guest passes them (`struct sockaddr_in`, `struct sockaddr_un`) and
//! as the host takes them.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::errno::{Errno, SysResult};

/// `sizeof(struct sockaddr_in)`.
pub const SOCKADDR_IN_LEN: usize = 16;
/// Offset of `sun_path` in `struct sockaddr_un`.
const SUN_PATH_AT: usize = 2;
/// `sizeof(sun_path)`.
pub const SUN_PATH_LEN: usize = 108;

/// A socket address in the guest's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SockAddr {
    /// `AF_UNSPEC`: what a datagram socket connects to in order to disconnect.
    Unspec,
    /// An IPv4 address and port.
    V4(SocketAddrV4),
    /// An `AF_UNIX` name: a path, an abstract name (starting with a NUL byte), or nothing for an
    /// unnamed socket.
    Unix(Vec<u8>),
}

/// Parses the `len` bytes of a guest `struct sockaddr` for a socket of `domain`: `EINVAL` if it
/// is too short or too long, `EAFNOSUPPORT` for another family (as Linux's `inet` sockets do).
pub fn parse(domain: i32, raw: &[u8]) -> SysResult<SockAddr> {
    if raw.len() < 2 {
        return Err(Errno::EINVAL);
    }
    let family = i32::from(u16::from_le_bytes([raw[0], raw[1]]));
    match family {
        libc::AF_UNSPEC => Ok(SockAddr::Unspec),
        libc::AF_INET if domain == libc::AF_INET => {
            if raw.len() < SOCKADDR_IN_LEN {
                return Err(Errno::EINVAL);
            }
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            Ok(SockAddr::V4(SocketAddrV4::new(Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]), port)))
        }
        libc::AF_UNIX if domain == libc::AF_UNIX => {
            let path = &raw[SUN_PATH_AT..];
            if path.len() > SUN_PATH_LEN {
                return Err(Errno::EINVAL);
            }
            if path.first() == Some(&0) {
                return Ok(SockAddr::Unix(path.to_vec()));
            }
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            Ok(SockAddr::Unix(path[..end].to_vec()))
        }
        _ if domain == libc::AF_UNIX => Err(Errno::EINVAL),
        _ => Err(Errno(libc::EAFNOSUPPORT)),
    }
}

/// The guest bytes of `addr` (a path name gets its terminating NUL, as Linux reports it).
pub fn encode(addr: &SockAddr) -> Vec<u8> {
    match addr {
        SockAddr::Unspec => (libc::AF_UNSPEC as u16).to_le_bytes().to_vec(),
        SockAddr::V4(a) => {
            let mut b = vec![0u8; SOCKADDR_IN_LEN];
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_le_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
            b
        }
        SockAddr::Unix(name) => {
            let mut b = (libc::AF_UNIX as u16).to_le_bytes().to_vec();
            b.extend_from_slice(name);
            if !name.is_empty() && name[0] != 0 {
                b.push(0);
            }
            b
        }
    }
}

/// The host `sockaddr_in` of `a`.
pub fn host_v4(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
        sin_zero: [0; 8],
    }
}

/// The address in a host `sockaddr_in`.
pub fn from_host_v4(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(s.sin_addr.s_addr.to_ne_bytes()), u16::from_be(s.sin_port))
}

/// A host `sockaddr_un` holding the abstract name `name` (which starts with its NUL), and its
/// length; `ENAMETOOLONG` if it does not fit.
pub fn host_unix(name: &[u8]) -> SysResult<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: `sockaddr_un` is plain integers, for which all-zero is valid.
    let mut s: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    s.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.len() > s.sun_path.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    for (d, &b) in s.sun_path.iter_mut().zip(name) {
        *d = b as libc::c_char;
    }
    Ok((s, (SUN_PATH_AT + name.len()) as libc::socklen_t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_round_trip_and_errors() {
        let a = SockAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 8080));
        assert_eq!(parse(libc::AF_INET, &encode(&a)), Ok(a));
        assert_eq!(parse(libc::AF_INET, &encode(&SockAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1)))[..8]), Err(Errno::EINVAL));
        assert_eq!(parse(libc::AF_INET, &[10, 0, 0, 0]), Err(Errno(libc::EAFNOSUPPORT)));
        assert_eq!(parse(libc::AF_INET, &[1]), Err(Errno::EINVAL));
        assert_eq!(from_host_v4(&host_v4(SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 5))), SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 5));
    }

    #[test]
    fn unix_names() {
        let mut raw = (libc::AF_UNIX as u16).to_le_bytes().to_vec();
        raw.extend_from_slice(b"/tmp/s\0junk");
        assert_eq!(parse(libc::AF_UNIX, &raw), Ok(SockAddr::Unix(b"/tmp/s".to_vec())));
        assert_eq!(encode(&SockAddr::Unix(b"/tmp/s".to_vec())), [&raw[..2], b"/tmp/s\0"].concat());
        let mut abs = (libc::AF_UNIX as u16).to_le_bytes().to_vec();
        abs.extend_from_slice(b"\0x");
        assert_eq!(parse(libc::AF_UNIX, &abs), Ok(SockAddr::Unix(b"\0x".to_vec())));
        assert_eq!(parse(libc::AF_UNIX, &[1u8; 200]), Err(Errno::EINVAL));
    }
}
