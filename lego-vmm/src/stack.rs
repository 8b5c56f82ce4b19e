//! The initial process stack, laid out exactly as Linux's `create_elf_tables` does: argc, argv,
//! envp and the auxiliary vector, with the strings, `AT_RANDOM` bytes and platform name above.

use crate::elf::ElfInfo;
use crate::errno::SysResult;
use crate::memory::mm::Mm;

/// Auxiliary vector keys (`<linux/auxvec.h>`).
pub mod at {
    pub const NULL: u64 = 0;
    pub const PHDR: u64 = 3;
    pub const PHENT: u64 = 4;
    pub const PHNUM: u64 = 5;
    pub const PAGESZ: u64 = 6;
    pub const BASE: u64 = 7;
    pub const FLAGS: u64 = 8;
    pub const ENTRY: u64 = 9;
    pub const UID: u64 = 11;
    pub const EUID: u64 = 12;
    pub const GID: u64 = 13;
    pub const EGID: u64 = 14;
    pub const PLATFORM: u64 = 15;
    pub const HWCAP: u64 = 16;
    pub const CLKTCK: u64 = 17;
    pub const SECURE: u64 = 23;
    pub const RANDOM: u64 = 25;
    pub const HWCAP2: u64 = 26;
    pub const EXECFN: u64 = 31;
    pub const SYSINFO_EHDR: u64 = 33;
}

/// What the process sees of its identity and CPU in the auxiliary vector.
pub struct AuxInfo {
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    /// CPUID.1:EDX, as Linux reports it in `AT_HWCAP`.
    pub hwcap: u64,
    pub random: [u8; 16],
}

impl AuxInfo {
    /// The auxiliary information of a new program run with `creds`, with fresh `AT_RANDOM`
    /// bytes; `None` if the host gives no random bytes.
    pub fn new(creds: &crate::identity::Creds) -> Option<AuxInfo> {
        let mut random = [0u8; 16];
        // SAFETY: `random` is a valid 16-byte buffer.
        let got = unsafe { libc::getrandom(random.as_mut_ptr().cast(), 16, 0) };
        (got == 16).then(|| AuxInfo {
            uid: creds.uid,
            euid: creds.euid,
            gid: creds.gid,
            egid: creds.egid,
            hwcap: crate::cpu::hwcap(),
            random,
        })
    }
}

/// Writes the initial stack below `mm.stack_top()` and returns the initial RSP; `interp_base`
/// is where the program interpreter was loaded (`AT_BASE`, 0 without one).
pub fn build(mm: &Mm, elf: &ElfInfo, interp_base: u64, argv: &[Vec<u8>], envp: &[Vec<u8>], execfn: &[u8], aux: &AuxInfo) -> SysResult<u64> {
    let mut sp = mm.stack_top();
    let mut push_bytes = |bytes: &[u8], nul: bool| -> SysResult<u64> {
        sp -= bytes.len() as u64 + u64::from(nul);
        mm.write_user(sp, bytes)?;
        if nul {
            mm.write_user(sp + bytes.len() as u64, &[0])?;
        }
        Ok(sp)
    };
    let execfn_at = push_bytes(execfn, true)?;
    let env_at: Vec<u64> = envp.iter().map(|e| push_bytes(e, true)).collect::<SysResult<_>>()?;
    let arg_at: Vec<u64> = argv.iter().map(|a| push_bytes(a, true)).collect::<SysResult<_>>()?;
    let platform_at = push_bytes(b"x86_64", true)?;
    let random_at = push_bytes(&aux.random, false)?;

    let auxv: [(u64, u64); 20] = [
        (at::SYSINFO_EHDR, crate::layout::VDSO_BASE),
        (at::HWCAP, aux.hwcap),
        (at::PAGESZ, 4096),
        (at::CLKTCK, 100),
        (at::PHDR, elf.phdr),
        (at::PHENT, 56),
        (at::PHNUM, elf.phnum),
        (at::BASE, interp_base),
        (at::FLAGS, 0),
        (at::ENTRY, elf.entry),
        (at::UID, u64::from(aux.uid)),
        (at::EUID, u64::from(aux.euid)),
        (at::GID, u64::from(aux.gid)),
        (at::EGID, u64::from(aux.egid)),
        (at::SECURE, 0),
        (at::RANDOM, random_at),
        (at::HWCAP2, 0),
        (at::EXECFN, execfn_at),
        (at::PLATFORM, platform_at),
        (at::NULL, 0),
    ];
    let words = 1 + arg_at.len() + 1 + env_at.len() + 1 + 2 * auxv.len();
    let rsp = (sp - 8 * words as u64) & !15;
    let mut table = Vec::with_capacity(words);
    table.push(argv.len() as u64);
    table.extend(&arg_at);
    table.push(0);
    table.extend(&env_at);
    table.push(0);
    for (k, v) in auxv {
        table.push(k);
        table.push(v);
    }
    let bytes: Vec<u8> = table.iter().flat_map(|w| w.to_le_bytes()).collect();
    mm.write_user(rsp, &bytes)?;
    Ok(rsp)
}
