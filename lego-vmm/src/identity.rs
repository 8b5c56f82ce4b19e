//! Who a vNode process is: its user and group ids, its capabilities, and the program it runs.
//!
//! Capabilities follow capabilities(7) for a process without file capabilities: root (real or
//! effective uid 0) gets the bounding set at `execve`, `setuid`-family calls drop and regain
//! them as Linux's `cap_emulate_setxuid` does, and privileged calls ask [`Creds::capable`]
//! instead of looking at the uid. A vNode's first process has the credentials of the VMM's
//! user: every capability for root, none otherwise.

use lego_proto::storage::Owner;

/// The program a process runs, as `execve` (or `lego run`) started it.
#[derive(Debug, Clone, Default)]
pub struct ExecImage {
    /// vNode path of the executable (`/proc/PID/exe`).
    pub exe: Vec<u8>,
    /// Arguments (`/proc/PID/cmdline`).
    pub argv: Vec<Vec<u8>>,
    /// Environment (`/proc/PID/environ`).
    pub envp: Vec<Vec<u8>>,
}

/// The highest capability number Linux knows (`CAP_CHECKPOINT_RESTORE`, Linux 5.9 on):
/// `/proc/sys/kernel/cap_last_cap`.
pub const CAP_LAST_CAP: u32 = 40;
/// Every capability.
pub const ALL_CAPS: u64 = (1 << (CAP_LAST_CAP + 1)) - 1;

/// Capability numbers the VMM checks (linux/capability.h).
pub mod cap {
    pub const CHOWN: u32 = 0;
    pub const DAC_OVERRIDE: u32 = 1;
    pub const DAC_READ_SEARCH: u32 = 2;
    pub const FOWNER: u32 = 3;
    pub const FSETID: u32 = 4;
    pub const SETGID: u32 = 6;
    pub const SETUID: u32 = 7;
    pub const SETPCAP: u32 = 8;
    pub const LINUX_IMMUTABLE: u32 = 9;
    pub const IPC_LOCK: u32 = 14;
    pub const IPC_OWNER: u32 = 15;
    pub const SYS_ADMIN: u32 = 21;
    pub const SYS_NICE: u32 = 23;
    pub const SYS_RESOURCE: u32 = 24;
    pub const MKNOD: u32 = 27;
    pub const MAC_OVERRIDE: u32 = 32;
}

/// The capabilities a change of the file-system uid to or from 0 takes away or gives back.
const FS_CAPS: u64 = 1 << cap::CHOWN
    | 1 << cap::DAC_OVERRIDE
    | 1 << cap::DAC_READ_SEARCH
    | 1 << cap::FOWNER
    | 1 << cap::FSETID
    | 1 << cap::LINUX_IMMUTABLE
    | 1 << cap::MKNOD
    | 1 << cap::MAC_OVERRIDE;

/// Securebits (linux/securebits.h), as `PR_SET_SECUREBITS` takes them.
pub mod secbit {
    /// Root gets no capabilities at `execve`.
    pub const NOROOT: u32 = 1 << 0;
    /// Changes of uid leave the capability sets alone.
    pub const NO_SETUID_FIXUP: u32 = 1 << 2;
    /// Capabilities survive a change of every uid away from 0 (`PR_SET_KEEPCAPS`).
    pub const KEEP_CAPS: u32 = 1 << 4;
    /// `PR_CAP_AMBIENT_RAISE` is refused.
    pub const NO_CAP_AMBIENT_RAISE: u32 = 1 << 6;
    /// The bits above and Linux 6.14's two `execveat(AT_EXECVE_CHECK)` ones (advisory, kept
    /// only): each bit's lock is the bit above it.
    pub const ALL: u32 = 0x55 | 1 << 8 | 1 << 10;
    /// The locks of [`ALL`].
    pub const LOCKS: u32 = ALL << 1;
}

/// A process's capability sets, securebits and no-new-privs flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub permitted: u64,
    pub effective: u64,
    pub inheritable: u64,
    pub bounding: u64,
    pub ambient: u64,
    pub securebits: u32,
    /// `PR_SET_NO_NEW_PRIVS` was set (inherited, never cleared).
    pub no_new_privs: bool,
}

impl Caps {
    /// The sets of a process with ids `uid` and `euid` just after `execve`, with the full
    /// bounding set.
    fn of(uid: u32, euid: u32) -> Caps {
        let mut c = Caps { permitted: 0, effective: 0, inheritable: 0, bounding: ALL_CAPS, ambient: 0, securebits: 0, no_new_privs: false };
        c.exec(uid, euid);
        c
    }

    /// The VMM process's own bounding, inheritable and ambient sets, securebits and
    /// no-new-privs flag (what a program it started natively would inherit), as a program
    /// with ids `uid` and `euid` has them after `execve`.
    fn of_host(uid: u32, euid: u32) -> Caps {
        // SAFETY: these prctl options only read the caller's own sets and flags.
        let prctl = |op: i32, a: u64, b: u64| unsafe { libc::prctl(op, a, b, 0u64, 0u64) };
        let set_of = |member: &dyn Fn(u64) -> bool| (0..=u64::from(CAP_LAST_CAP)).filter(|&c| member(c)).fold(0, |acc, c| acc | 1 << c);
        let bounding = set_of(&|c| prctl(libc::PR_CAPBSET_READ, c, 0) == 1);
        let ambient = set_of(&|c| prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_IS_SET as u64, c) == 1);
        let option = |op: i32| prctl(op, 0, 0);
        let mut c = Caps {
            permitted: 0,
            effective: 0,
            inheritable: host_inheritable(),
            bounding,
            ambient,
            securebits: u32::try_from(option(libc::PR_GET_SECUREBITS)).unwrap_or(0),
            no_new_privs: option(libc::PR_GET_NO_NEW_PRIVS) == 1,
        };
        c.exec(uid, euid);
        c
    }

    /// What `execve` of a file without capabilities or set-id bits makes of the sets of a
    /// process with ids `uid` and `euid` (capabilities(7), "Transformation of capabilities
    /// during execve()"): root (real or effective) gets its bounding and inheritable sets as
    /// permitted, effective only as effective root; everyone keeps the ambient set, permitted
    /// and effective.
    fn exec(&mut self, uid: u32, euid: u32) {
        let root = self.securebits & secbit::NOROOT == 0 && (uid == 0 || euid == 0);
        let privileged = if root { self.bounding | self.inheritable } else { 0 };
        self.permitted = privileged | self.ambient;
        self.effective = if root && euid == 0 { self.permitted } else { self.ambient };
        self.securebits &= !secbit::KEEP_CAPS;
    }

    /// Whether `cap` is in the effective set.
    pub fn has(&self, cap: u32) -> bool {
        cap <= CAP_LAST_CAP && self.effective & 1 << cap != 0
    }

    /// Linux's `cap_emulate_setxuid`: what a change of the real, effective and saved uids from
    /// `old` to `new` does to the sets.
    fn uids_changed(&mut self, old: [u32; 3], new: [u32; 3]) {
        if self.securebits & secbit::NO_SETUID_FIXUP != 0 {
            return;
        }
        if old.contains(&0) && !new.contains(&0) {
            if self.securebits & secbit::KEEP_CAPS == 0 {
                self.permitted = 0;
                self.effective = 0;
            }
            self.ambient = 0;
        }
        if old[1] == 0 && new[1] != 0 {
            self.effective = 0;
        }
        if old[1] != 0 && new[1] == 0 {
            self.effective = self.permitted;
        }
    }

    /// What a change of the file-system uid from `old` to `new` does: leaving 0 takes the
    /// file-system capabilities out of the effective set, coming back to it restores the
    /// permitted ones.
    fn fsuid_changed(&mut self, old: u32, new: u32) {
        if self.securebits & secbit::NO_SETUID_FIXUP != 0 {
            return;
        }
        if old == 0 && new != 0 {
            self.effective &= !FS_CAPS;
        }
        if old != 0 && new == 0 {
            self.effective |= self.permitted & FS_CAPS;
        }
    }

    /// `capset`'s rules: the new inheritable set within the old inheritable and permitted
    /// sets (the bounding set instead with `CAP_SETPCAP`) and within the old inheritable and
    /// bounding sets; the new permitted set within the old; the new effective set within the
    /// new permitted. The ambient set keeps what is both permitted and inheritable.
    pub fn set(&mut self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), crate::errno::Errno> {
        let (effective, permitted, inheritable) = (effective & ALL_CAPS, permitted & ALL_CAPS, inheritable & ALL_CAPS);
        let inheritable_limit = if self.has(cap::SETPCAP) { u64::MAX } else { self.inheritable | self.permitted };
        if inheritable & !inheritable_limit != 0
            || inheritable & !(self.inheritable | self.bounding) != 0
            || permitted & !self.permitted != 0
            || effective & !permitted != 0
        {
            return Err(crate::errno::Errno::EPERM);
        }
        (self.effective, self.permitted, self.inheritable) = (effective, permitted, inheritable);
        self.ambient &= permitted & inheritable;
        Ok(())
    }
}

/// The VMM process's inheritable set (0 if `capget` fails).
fn host_inheritable() -> u64 {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header { version: 0x2008_0522, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two `Data` entries (version 3) into our own array.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut Header, data.as_mut_ptr()) };
    if r != 0 {
        return 0;
    }
    u64::from(data[0].inheritable) | u64::from(data[1].inheritable) << 32
}

/// User and group ids, and capabilities.
#[derive(Debug, Clone, Copy)]
pub struct Creds {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    /// File-system user id: who owns what the process creates. It follows `euid` whenever that
    /// changes, and `setfsuid` sets it alone.
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    /// File-system group id, as `fsuid` for the group.
    pub fsgid: u32,
    /// Capability sets (kept up to date by the `set_*` methods).
    pub caps: Caps,
}

impl Creds {
    /// The credentials of the VMM process, which a vNode process starts with: its ids, and its
    /// capabilities as a program it ran would have them.
    pub fn of_host() -> Creds {
        // SAFETY: these calls only read the caller's credentials.
        let (uid, euid, gid, egid) = unsafe {
            (
                libc::getuid(),
                libc::geteuid(),
                libc::getgid(),
                libc::getegid(),
            )
        };
        Creds { caps: Caps::of_host(uid, euid), ..Creds::new((uid, euid), (gid, egid)) }
    }

    /// Real and effective ids `(uid, euid)` and `(gid, egid)`; the saved and file-system ids
    /// are the effective ones, as after `execve`.
    pub fn new((uid, euid): (u32, u32), (gid, egid): (u32, u32)) -> Creds {
        Creds {
            uid,
            euid,
            suid: euid,
            fsuid: euid,
            gid,
            egid,
            sgid: egid,
            fsgid: egid,
            caps: Caps::of(uid, euid),
        }
    }

    /// Whether the process has capability `cap` in its effective set (Linux's `capable`).
    pub fn capable(&self, cap: u32) -> bool {
        self.caps.has(cap)
    }

    /// Sets the real, effective and saved uids; the file-system uid follows the effective one.
    /// The capability sets change as Linux changes them.
    pub fn set_uids(&mut self, (uid, euid, suid): (u32, u32, u32)) {
        self.caps.uids_changed([self.uid, self.euid, self.suid], [uid, euid, suid]);
        (self.uid, self.euid, self.suid, self.fsuid) = (uid, euid, suid, euid);
    }

    /// Sets the file-system uid alone (`setfsuid`).
    pub fn set_fsuid(&mut self, fsuid: u32) {
        self.caps.fsuid_changed(self.fsuid, fsuid);
        self.fsuid = fsuid;
    }

    /// What `execve` does: the saved and file-system ids take the effective ones, and the
    /// capability sets are transformed ([`Caps`]).
    pub fn exec(&mut self) {
        (self.suid, self.fsuid, self.sgid, self.fsgid) = (self.euid, self.euid, self.egid, self.egid);
        self.caps.exec(self.uid, self.euid);
    }

    /// Who owns a file, directory, FIFO or symlink this process creates: its file-system ids
    /// (the file system gives a new object the group of a set-group-ID directory instead,
    /// [`Owner::in_dir`]).
    pub fn creator(&self) -> Owner {
        Owner {
            uid: self.fsuid,
            gid: self.fsgid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETUID: u64 = 1 << cap::SETUID;

    #[test]
    fn root_has_every_capability_and_others_none() {
        let root = Creds::new((0, 0), (0, 0));
        assert_eq!((root.caps.permitted, root.caps.effective), (ALL_CAPS, ALL_CAPS));
        assert!(root.capable(cap::SYS_ADMIN) && !root.capable(CAP_LAST_CAP + 1));
        let user = Creds::new((1000, 1000), (1000, 1000));
        assert_eq!((user.caps.permitted, user.caps.effective, user.caps.bounding), (0, 0, ALL_CAPS));
        // Real root, effective user: permitted, not effective.
        let half = Creds::new((0, 1000), (0, 0));
        assert_eq!((half.caps.permitted, half.caps.effective), (ALL_CAPS, 0));
    }

    #[test]
    fn uid_changes_drop_and_restore_capabilities() {
        let mut c = Creds::new((0, 0), (0, 0));
        c.set_uids((0, 1000, 0));
        assert_eq!((c.caps.permitted, c.caps.effective), (ALL_CAPS, 0), "effective root left");
        c.set_uids((0, 0, 0));
        assert_eq!(c.caps.effective, ALL_CAPS, "effective root regained");
        c.caps.ambient = 1 << cap::SETGID;
        c.set_uids((1000, 1000, 1000));
        assert_eq!((c.caps.permitted, c.caps.effective, c.caps.ambient), (0, 0, 0), "every uid left 0");

        let mut k = Creds::new((0, 0), (0, 0));
        k.caps.securebits |= secbit::KEEP_CAPS;
        k.caps.ambient = SETUID;
        k.set_uids((1000, 1000, 1000));
        assert_eq!((k.caps.permitted, k.caps.effective, k.caps.ambient), (ALL_CAPS, 0, 0), "keep-caps keeps permitted only");

        let mut f = Creds::new((0, 0), (0, 0));
        f.set_fsuid(1000);
        assert_eq!(f.caps.effective, ALL_CAPS & !FS_CAPS);
        assert!(!f.capable(cap::DAC_OVERRIDE) && !f.capable(cap::LINUX_IMMUTABLE) && f.capable(cap::SETUID));
        f.set_fsuid(0);
        assert_eq!(f.caps.effective, ALL_CAPS);

        let mut n = Creds::new((0, 0), (0, 0));
        n.caps.securebits |= secbit::NO_SETUID_FIXUP;
        n.set_uids((1000, 1000, 1000));
        assert_eq!(n.caps.effective, ALL_CAPS, "no fix-up: the sets stay");
    }

    #[test]
    fn execve_gives_root_its_bounding_set_and_keeps_the_ambient_one() {
        let mut c = Creds::new((0, 0), (0, 0));
        c.caps.bounding &= !SETUID;
        c.exec();
        assert_eq!((c.caps.permitted, c.caps.effective), (ALL_CAPS & !SETUID, ALL_CAPS & !SETUID));
        c.caps.securebits |= secbit::KEEP_CAPS;
        c.caps.inheritable = 1 << cap::SETGID;
        c.caps.ambient = 1 << cap::SETGID;
        c.set_uids((1000, 1000, 1000));
        c.caps.ambient = 1 << cap::SETGID;
        c.exec();
        let amb = 1 << cap::SETGID;
        assert_eq!((c.caps.permitted, c.caps.effective, c.caps.ambient), (amb, amb, amb));
        assert_eq!(c.caps.securebits & secbit::KEEP_CAPS, 0, "execve clears keep-caps");
        assert_eq!((c.suid, c.fsuid), (1000, 1000));
    }

    #[test]
    fn capset_follows_linuxs_rules() {
        let mut c = Creds::new((0, 0), (0, 0)).caps;
        let less = ALL_CAPS & !SETUID;
        assert_eq!(c.set(less, less, 0), Ok(()));
        assert_eq!(c.set(less, ALL_CAPS, 0), Err(crate::errno::Errno::EPERM), "permitted cannot grow");
        assert_eq!(c.set(ALL_CAPS, less, 0), Err(crate::errno::Errno::EPERM), "effective within permitted");
        // Inheritable within inheritable | permitted without CAP_SETPCAP...
        let no_setpcap = less & !(1 << cap::SETPCAP);
        assert_eq!(c.set(no_setpcap, no_setpcap, 0), Ok(()));
        assert_eq!(c.set(no_setpcap, no_setpcap, SETUID), Err(crate::errno::Errno::EPERM));
        // ...and the ambient set keeps only what stays permitted and inheritable.
        let mut a = Creds::new((0, 0), (0, 0)).caps;
        a.set(ALL_CAPS, ALL_CAPS, SETUID | 1).unwrap();
        a.ambient = SETUID | 1;
        a.set(ALL_CAPS & !1, ALL_CAPS & !1, SETUID | 1).unwrap();
        assert_eq!(a.ambient, SETUID);
    }
}
