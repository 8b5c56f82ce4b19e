//! Socket addresses as the guest passes them (`struct sockaddr_in`, `sockaddr_in6`,
//! `sockaddr_un`) and as the host takes them.
//!
//! The vNode network is IPv4 (virtual IPs). An `AF_INET6` socket is dual-stack over it, as a
//! Linux one is with `IPV6_V6ONLY` off: `::` is the IPv4 any address, `::1` the loopback, and
//! `::ffff:a.b.c.d` the IPv4 address `a.b.c.d`; every other IPv6 address is unreachable
//! (`ENETUNREACH`). Addresses it is shown come back in the same forms.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use crate::errno::{Errno, SysResult};

/// `sizeof(struct sockaddr_in)`.
pub const SOCKADDR_IN_LEN: usize = 16;
/// `sizeof(struct sockaddr_in6)`.
const SOCKADDR_IN6_LEN: usize = 28;
/// The shortest `sockaddr_in6` Linux takes (RFC 2133's, without `sin6_scope_id`).
const SOCKADDR_IN6_MIN: usize = 24;
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
/// is too short or too long, `EAFNOSUPPORT` for another family (as Linux's `inet` sockets do),
/// `ENETUNREACH` for an IPv6 address outside the vNode's network.
pub fn parse(domain: i32, raw: &[u8]) -> SysResult<SockAddr> {
    if raw.len() < 2 {
        return Err(Errno::EINVAL);
    }
    let family = i32::from(u16::from_le_bytes([raw[0], raw[1]]));
    // Linux checks an Internet address's length before its family.
    let shortest = match domain {
        libc::AF_INET => SOCKADDR_IN_LEN,
        libc::AF_INET6 => SOCKADDR_IN6_MIN,
        _ => 0,
    };
    if family != libc::AF_UNSPEC && raw.len() < shortest {
        return Err(Errno::EINVAL);
    }
    match family {
        libc::AF_UNSPEC => Ok(SockAddr::Unspec),
        libc::AF_INET if domain == libc::AF_INET => {
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            Ok(SockAddr::V4(SocketAddrV4::new(Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]), port)))
        }
        libc::AF_INET6 if domain == libc::AF_INET6 => {
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&raw[8..24]);
            Ok(SockAddr::V4(SocketAddrV4::new(v4_of(Ipv6Addr::from(ip))?, port)))
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

/// The IPv4 address an IPv6 one given to a dual-stack socket stands for.
fn v4_of(ip: Ipv6Addr) -> SysResult<Ipv4Addr> {
    if ip.is_unspecified() {
        Ok(Ipv4Addr::UNSPECIFIED)
    } else if ip.is_loopback() {
        Ok(Ipv4Addr::LOCALHOST)
    } else {
        ip.to_ipv4_mapped().ok_or(Errno(libc::ENETUNREACH))
    }
}

/// How a dual-stack socket shows the IPv4 address `ip`.
fn v6_of(ip: Ipv4Addr) -> Ipv6Addr {
    if ip.is_unspecified() {
        Ipv6Addr::UNSPECIFIED
    } else if ip.is_loopback() {
        Ipv6Addr::LOCALHOST
    } else {
        ip.to_ipv6_mapped()
    }
}

/// The guest bytes of `addr` for a socket of `domain` (a path name gets its terminating NUL,
/// as Linux reports it; an `AF_INET6` socket's addresses are `sockaddr_in6`).
pub fn encode(domain: i32, addr: &SockAddr) -> Vec<u8> {
    match addr {
        SockAddr::Unspec => (libc::AF_UNSPEC as u16).to_le_bytes().to_vec(),
        SockAddr::V4(a) if domain == libc::AF_INET6 => {
            let mut b = vec![0u8; SOCKADDR_IN6_LEN];
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_le_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[8..24].copy_from_slice(&v6_of(*a.ip()).octets());
            b
        }
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
        assert_eq!(parse(libc::AF_INET, &encode(libc::AF_INET, &a)), Ok(a));
        assert_eq!(parse(libc::AF_INET, &encode(libc::AF_INET, &SockAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1)))[..8]), Err(Errno::EINVAL));
        assert_eq!(parse(libc::AF_INET, &[10, 0, 0, 0]), Err(Errno::EINVAL), "the length is checked first");
        assert_eq!(parse(libc::AF_INET, &[10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Err(Errno(libc::EAFNOSUPPORT)));
        assert_eq!(parse(libc::AF_INET, &[1]), Err(Errno::EINVAL));
        assert_eq!(from_host_v4(&host_v4(SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 5))), SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 5));
    }

    #[test]
    fn inet6_is_dual_stack_over_ipv4() {
        let six = |ip: Ipv6Addr, port: u16| {
            let mut b = vec![0u8; SOCKADDR_IN6_LEN];
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_le_bytes());
            b[2..4].copy_from_slice(&port.to_be_bytes());
            b[8..24].copy_from_slice(&ip.octets());
            b
        };
        let v4 = |a: [u8; 4], port| SockAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), port));
        let vip = Ipv4Addr::new(10, 77, 0, 2);
        for (ip6, ip4) in [(Ipv6Addr::UNSPECIFIED, [0; 4]), (Ipv6Addr::LOCALHOST, [127, 0, 0, 1]), (vip.to_ipv6_mapped(), vip.octets())] {
            assert_eq!(parse(libc::AF_INET6, &six(ip6, 80)), Ok(v4(ip4, 80)), "{ip6}");
            assert_eq!(encode(libc::AF_INET6, &v4(ip4, 80)), six(ip6, 80), "{ip6}");
        }
        assert_eq!(parse(libc::AF_INET6, &six(Ipv6Addr::LOCALHOST, 1)[..SOCKADDR_IN6_MIN]), Ok(v4([127, 0, 0, 1], 1)));
        assert_eq!(parse(libc::AF_INET6, &six(Ipv6Addr::LOCALHOST, 1)[..20]), Err(Errno::EINVAL));
        let far = "2001:db8::1".parse().unwrap();
        assert_eq!(parse(libc::AF_INET6, &six(far, 80)), Err(Errno(libc::ENETUNREACH)));
        assert_eq!(parse(libc::AF_INET6, &encode(libc::AF_INET, &v4([1, 2, 3, 4], 5))), Err(Errno::EINVAL), "too short");
        let mut four = encode(libc::AF_INET, &v4([1, 2, 3, 4], 5));
        four.resize(SOCKADDR_IN6_LEN, 0);
        assert_eq!(parse(libc::AF_INET6, &four), Err(Errno(libc::EAFNOSUPPORT)));
        assert_eq!(parse(libc::AF_INET, &six(Ipv6Addr::LOCALHOST, 1)), Err(Errno(libc::EAFNOSUPPORT)));
    }

    #[test]
    fn unix_names() {
        let mut raw = (libc::AF_UNIX as u16).to_le_bytes().to_vec();
        raw.extend_from_slice(b"/tmp/s\0junk");
        assert_eq!(parse(libc::AF_UNIX, &raw), Ok(SockAddr::Unix(b"/tmp/s".to_vec())));
        assert_eq!(encode(libc::AF_UNIX, &SockAddr::Unix(b"/tmp/s".to_vec())), [&raw[..2], b"/tmp/s\0"].concat());
        let mut abs = (libc::AF_UNIX as u16).to_le_bytes().to_vec();
        abs.extend_from_slice(b"\0x");
        assert_eq!(parse(libc::AF_UNIX, &abs), Ok(SockAddr::Unix(b"\0x".to_vec())));
        assert_eq!(parse(libc::AF_UNIX, &[1u8; 200]), Err(Errno::EINVAL));
    }
}
