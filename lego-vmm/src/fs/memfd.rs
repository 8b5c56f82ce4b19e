//! An anonymous file in the VMM's memory (`memfd_create`): no name in any file system, gone
//! when its last descriptor and mapping are.

use lego_proto::sync::LockExt;
use std::sync::{Mutex, MutexGuard};

use super::{DirEntry, File, SetAttr, Stat, TimeSet, Timespec};
use crate::errno::{Errno, SysResult};

/// The bytes of a memfd.
pub struct MemFile {
    data: Mutex<Vec<u8>>,
    /// Largest size: its bytes are the VMM's memory, so no more than the vNode's memory.
    max: u64,
    /// What `fchmod`, `fchown` and `futimens` change.
    meta: Mutex<Meta>,
    /// Its inode number, unique in the run (a shared mapping finds its object by it).
    ino: u64,
}

/// The attributes of a memfd.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: Timespec,
    mtime: Timespec,
    ctime: Timespec,
}

/// The current time.
fn now() -> Timespec {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timespec { sec: now.as_secs() as i64, nsec: i64::from(now.subsec_nanos()) }
}

impl MemFile {
    /// An empty file with inode number `ino` owned by `uid`/`gid`, at most `max` bytes long.
    pub fn new(ino: u64, max: u64, uid: u32, gid: u32) -> MemFile {
        let created = now();
        let meta = Meta { mode: 0o777, uid, gid, atime: created, mtime: created, ctime: created };
        MemFile { data: Mutex::new(Vec::new()), max, meta: Mutex::new(meta), ino }
    }

    fn meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock_unpoisoned()
    }

    fn data(&self) -> MutexGuard<'_, Vec<u8>> {
        self.data.lock_unpoisoned()
    }
}

impl File for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> SysResult<usize> {
        let d = self.data();
        let Ok(at) = usize::try_from(offset) else {
            return Ok(0);
        };
        if at >= d.len() {
            return Ok(0);
        }
        let n = buf.len().min(d.len() - at);
        buf[..n].copy_from_slice(&d[at..at + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> SysResult<usize> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.max)
            .ok_or(Errno::EFBIG)?;
        let mut d = self.data();
        if d.len() < end as usize {
            d.resize(end as usize, 0);
        }
        d[offset as usize..end as usize].copy_from_slice(buf);
        Ok(buf.len())
    }

    fn stat(&self) -> SysResult<Stat> {
        let size = self.data().len() as u64;
        let m = self.meta();
        Ok(Stat {
            // The shmem file system's anonymous device.
            dev: 0x1,
            ino: self.ino,
            mode: libc::S_IFREG | m.mode,
            nlink: 1,
            uid: m.uid,
            gid: m.gid,
            size,
            blksize: 4096,
            blocks: size.div_ceil(512),
            atime: m.atime,
            mtime: m.mtime,
            ctime: m.ctime,
            ..Stat::default()
        })
    }

    fn set_len(&self, len: u64) -> SysResult<()> {
        if len > self.max {
            return Err(Errno::EFBIG);
        }
        self.data().resize(len as usize, 0);
        Ok(())
    }

    fn sync(&self, _data_only: bool) -> SysResult<()> {
        Ok(())
    }

    fn read_dir(&self, _pos: u64, _max: usize) -> SysResult<Vec<DirEntry>> {
        Err(Errno::ENOTDIR)
    }

    fn set_attr(&self, attr: SetAttr) -> SysResult<()> {
        let now = now();
        let mut m = self.meta();
        match attr {
            SetAttr::Mode(mode) => m.mode = mode & 0o7777,
            SetAttr::Owner { uid, gid } => {
                m.uid = uid.unwrap_or(m.uid);
                m.gid = gid.unwrap_or(m.gid);
            }
            SetAttr::Times { atime, mtime } => {
                let pick = |t: TimeSet, old: Timespec| match t {
                    TimeSet::Omit => old,
                    TimeSet::Now => now,
                    TimeSet::At(t) => t,
                };
                m.atime = pick(atime, m.atime);
                m.mtime = pick(mtime, m.mtime);
            }
        }
        m.ctime = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_reads_back_and_truncates() {
        let f = MemFile::new(1, 1 << 20, 0, 0);
        assert_eq!(f.write_at(b"abc", 5), Ok(3));
        let mut b = [9u8; 10];
        assert_eq!(f.read_at(&mut b, 0), Ok(8));
        assert_eq!(&b[..8], b"\0\0\0\0\0abc");
        f.set_len(2).unwrap();
        assert_eq!(f.stat().unwrap().size, 2);
        assert_eq!(f.read_at(&mut b, 7), Ok(0));
        assert_eq!(f.write_at(b"x", 1 << 20), Err(Errno::EFBIG));
        assert_eq!(f.set_len((1 << 20) + 1), Err(Errno::EFBIG));
        let other = Box::new(MemFile::new(2, 1 << 20, 0, 0));
        assert_ne!(other.stat().unwrap().ino, f.stat().unwrap().ino);
    }

    #[test]
    fn attributes_change_and_omit_keeps() {
        let f = MemFile::new(1, 1 << 20, 0, 0);
        f.set_attr(SetAttr::Mode(0o640)).unwrap();
        f.set_attr(SetAttr::Owner { uid: Some(7), gid: None }).unwrap();
        let at = Timespec { sec: 1000, nsec: 5 };
        f.set_attr(SetAttr::Times { atime: TimeSet::At(at), mtime: TimeSet::Omit }).unwrap();
        let st = f.stat().unwrap();
        assert_eq!((st.mode, st.uid, st.gid, st.atime), (libc::S_IFREG | 0o640, 7, 0, at));
        assert_ne!(st.mtime, at);
    }
}
