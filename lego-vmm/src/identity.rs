//! Who a vNode process is: its user and group ids, and the program it runs.

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

/// User and group ids.
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
}

impl Creds {
    /// The credentials of the VMM process, which a vNode process starts with.
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
        Creds::new((uid, euid), (gid, egid))
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
        }
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
