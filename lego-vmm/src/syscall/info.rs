//! System information: uname, sysinfo, getrandom.

use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::process::Process;

pub fn uname(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    // SAFETY: an all-zero utsname is valid; uname fills it.
    let mut host: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `host` is a valid, writable utsname.
    if unsafe { libc::uname(&mut host) } != 0 {
        return Err(Errno::last());
    }
    let field = |f: &[libc::c_char]| -> [u8; 65] {
        let mut out = [0u8; 65];
        for (o, c) in out.iter_mut().zip(f.iter().take(64)) {
            *o = *c as u8;
        }
        out
    };
    let mut node = [0u8; 65];
    let name = p.hostname.as_bytes();
    node[..name.len().min(64)].copy_from_slice(&name[..name.len().min(64)]);
    let mut buf = Vec::with_capacity(6 * 65);
    buf.extend_from_slice(&field(&host.sysname));
    buf.extend_from_slice(&node);
    buf.extend_from_slice(&field(&host.release));
    buf.extend_from_slice(&field(&host.version));
    buf.extend_from_slice(&field(&host.machine));
    let mut domain = [0u8; 65];
    domain[..6].copy_from_slice(b"(none)");
    buf.extend_from_slice(&domain);
    p.mm.write_user(a[0], &buf).map(|()| 0)
}

/// `sysinfo`: the vNode's figures, the same as its `/proc` shows ([`crate::pseudo::sysinfo`]).
pub fn sysinfo(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    p.mm.write_user(a[0], &crate::pseudo::sysinfo(p)).map(|()| 0)
}

pub fn getrandom(p: &mut Process, _: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [addr, len, flags, ..] = a;
    if flags & !7 != 0 {
        return Err(Errno::EINVAL);
    }
    // Linux returns at most 32 MiB - 1 per call.
    let len = len.min((32 << 20) - 1) as usize;
    if !p.mm.user_accessible(addr, len as u64, true) {
        return Err(Errno::EFAULT);
    }
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), len - done, 0) };
        if n < 0 {
            let e = Errno::last();
            if e == Errno::EINTR {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    p.mm.write_user(addr, &buf).map(|()| len as u64)
}
