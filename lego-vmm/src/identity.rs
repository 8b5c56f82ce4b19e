//! Who a vNode process is: its user and group ids, and the program it runs.

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
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
}

impl Creds {
    /// The credentials of the VMM process, which a vNode process starts with.
    pub fn of_host() -> Creds {
        // SAFETY: these calls only read the caller's credentials.
        unsafe {
            Creds {
                uid: libc::getuid(),
                euid: libc::geteuid(),
                suid: libc::geteuid(),
                gid: libc::getgid(),
                egid: libc::getegid(),
                sgid: libc::getegid(),
            }
        }
    }
}
