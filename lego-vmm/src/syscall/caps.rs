//! Capabilities: `capget`, `capset` and the capability options of `prctl` (bounding set,
//! ambient set, securebits, keep-caps, no-new-privs), with Linux's rules and errors. The sets
//! themselves and what uid changes and `execve` do to them are in [`crate::identity`].

use super::sched::{on_thread, target};
use super::{Args, Cpu};
use crate::errno::{Errno, SysResult};
use crate::identity::{cap, secbit, Caps, CAP_LAST_CAP};
use crate::process::Process;

/// `_LINUX_CAPABILITY_VERSION_1`: one 32-bit word per set.
const VERSION_1: u32 = 0x1998_0330;
/// `_LINUX_CAPABILITY_VERSION_2` (deprecated) and `_3`: two words per set.
const VERSION_2: u32 = 0x2007_1026;
const VERSION_3: u32 = 0x2008_0522;

/// The words per set a header's version asks for; an unknown version is answered with the
/// preferred one written back and `EINVAL`.
fn words(p: &Process, header: u64) -> SysResult<usize> {
    match p.mm.read_u32(header)? {
        VERSION_1 => Ok(1),
        VERSION_2 | VERSION_3 => Ok(2),
        _ => {
            p.mm.write_user(header, &VERSION_3.to_le_bytes())?;
            Err(Errno::EINVAL)
        }
    }
}

/// `capget(header, data)`: the effective, permitted and inheritable sets of the thread the
/// header names (0: the caller), as `words` triples of 32-bit words. A null `data` with an
/// unknown version is how programs ask for the preferred version: it succeeds.
pub fn capget(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [header, data, ..] = a;
    let n = match words(p, header) {
        Err(Errno::EINVAL) if data == 0 => return Ok(0),
        r => r?,
    };
    let pid = p.mm.read_u32(header + 4)? as i32;
    if pid < 0 {
        return Err(Errno::EINVAL);
    }
    let caps = if pid == 0 { p.creds.caps } else {
        let t = target(p, cpu, pid as u64)?;
        on_thread(p, &t, |q, _| Ok(q.creds.caps))?
    };
    if data == 0 {
        return Ok(0);
    }
    let mut out = Vec::with_capacity(24);
    for w in 0..n {
        for set in [caps.effective, caps.permitted, caps.inheritable] {
            out.extend_from_slice(&((set >> (32 * w)) as u32).to_le_bytes());
        }
    }
    p.mm.write_user(data, &out).map(|()| 0)
}

/// `capset(header, data)`: sets the caller's own effective, permitted and inheritable sets
/// ([`Caps::set`] has the rules); another thread's: `EPERM`. Version 1 has only the low 32
/// capabilities: the high ones go.
pub fn capset(p: &mut Process, cpu: &mut Cpu<'_>, a: Args) -> SysResult<u64> {
    let [header, data, ..] = a;
    let n = words(p, header)?;
    let pid = p.mm.read_u32(header + 4)? as i32;
    if pid != 0 && pid != cpu.tid {
        return Err(Errno::EPERM);
    }
    let mut raw = vec![0u8; 12 * n];
    p.mm.read_user(data, &mut raw)?;
    let word = |i: usize| u64::from(u32::from_le_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]]));
    let set = |k: usize| (0..n).map(|w| word(3 * w + k) << (32 * w)).fold(0, |acc, v| acc | v);
    p.creds.caps.set(set(0), set(1), set(2)).map(|()| 0)
}

/// A capability number argument: `EINVAL` past the last one.
fn valid(c: u64) -> SysResult<u32> {
    if c <= u64::from(CAP_LAST_CAP) { Ok(c as u32) } else { Err(Errno::EINVAL) }
}

/// The capability options of `prctl` on the caller's sets.
pub fn prctl(caps: &mut Caps, a: Args) -> SysResult<u64> {
    let [option, arg2, arg3, arg4, arg5, ..] = a;
    match option as i32 {
        libc::PR_SET_NO_NEW_PRIVS => {
            if arg2 != 1 || arg3 | arg4 | arg5 != 0 {
                return Err(Errno::EINVAL);
            }
            caps.no_new_privs = true;
            Ok(0)
        }
        libc::PR_GET_NO_NEW_PRIVS => {
            if arg2 | arg3 | arg4 | arg5 != 0 {
                return Err(Errno::EINVAL);
            }
            Ok(u64::from(caps.no_new_privs))
        }
        libc::PR_CAPBSET_READ => Ok((caps.bounding >> valid(arg2)?) & 1),
        libc::PR_CAPBSET_DROP => {
            if !caps.has(cap::SETPCAP) {
                return Err(Errno::EPERM);
            }
            caps.bounding &= !(1 << valid(arg2)?);
            Ok(0)
        }
        libc::PR_GET_KEEPCAPS => Ok(u64::from(caps.securebits & secbit::KEEP_CAPS != 0)),
        libc::PR_SET_KEEPCAPS => {
            if arg2 > 1 {
                return Err(Errno::EINVAL);
            }
            if caps.securebits & secbit::KEEP_CAPS << 1 != 0 {
                return Err(Errno::EPERM);
            }
            caps.securebits = caps.securebits & !secbit::KEEP_CAPS | if arg2 == 1 { secbit::KEEP_CAPS } else { 0 };
            Ok(0)
        }
        libc::PR_GET_SECUREBITS => Ok(u64::from(caps.securebits)),
        libc::PR_SET_SECUREBITS => {
            let (old, new) = (caps.securebits, arg2);
            let locked = (old & secbit::LOCKS) >> 1;
            // A locked bit cannot change, a lock cannot go, unknown bits are refused, and all
            // of it needs CAP_SETPCAP.
            if u64::from((old ^ new as u32) & locked) != 0
                || u64::from(old & secbit::LOCKS) & !new != 0
                || new & !u64::from(secbit::ALL | secbit::LOCKS) != 0
                || !caps.has(cap::SETPCAP)
            {
                return Err(Errno::EPERM);
            }
            caps.securebits = new as u32;
            Ok(0)
        }
        libc::PR_CAP_AMBIENT => ambient(caps, arg2, arg3, arg4 | arg5),
        _ => Err(Errno::EINVAL),
    }
}

/// `prctl(PR_CAP_AMBIENT, op, cap, 0, 0)`: a capability can be raised into the ambient set
/// only while it is permitted and inheritable.
fn ambient(caps: &mut Caps, op: u64, c: u64, rest: u64) -> SysResult<u64> {
    const IS_SET: u64 = libc::PR_CAP_AMBIENT_IS_SET as u64;
    const RAISE: u64 = libc::PR_CAP_AMBIENT_RAISE as u64;
    const LOWER: u64 = libc::PR_CAP_AMBIENT_LOWER as u64;
    const CLEAR_ALL: u64 = libc::PR_CAP_AMBIENT_CLEAR_ALL as u64;
    if op == CLEAR_ALL {
        if c | rest != 0 {
            return Err(Errno::EINVAL);
        }
        caps.ambient = 0;
        return Ok(0);
    }
    let c = valid(c)?;
    if rest != 0 {
        return Err(Errno::EINVAL);
    }
    let bit = 1u64 << c;
    match op {
        IS_SET => Ok(u64::from(caps.ambient & bit != 0)),
        RAISE => {
            if caps.permitted & caps.inheritable & bit == 0 || caps.securebits & secbit::NO_CAP_AMBIENT_RAISE != 0 {
                return Err(Errno::EPERM);
            }
            caps.ambient |= bit;
            Ok(0)
        }
        LOWER => {
            caps.ambient &= !bit;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}
