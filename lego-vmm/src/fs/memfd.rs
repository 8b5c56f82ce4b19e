//! An anonymous file in the VMM's memory (`memfd_create`): no name in any file system, gone
//! when its last descriptor and mapping are.

use std::sync::{Mutex, MutexGuard};

use super::{DirEntry, File, Stat, Timespec};
use crate::errno::{Errno, SysResult};

/// The bytes of a memfd.
pub struct MemFile {
    data: Mutex<Vec<u8>>,
    /// Largest size: its bytes are the VMM's memory, so no more than the vNode's memory.
    max: u64,
    uid: u32,
    gid: u32,
    created: Timespec,
}

impl MemFile {
    /// An empty file owned by `uid`/`gid`, at most `max` bytes long.
    pub fn new(max: u64, uid: u32, gid: u32) -> MemFile {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let created = Timespec {
            sec: now.as_secs() as i64,
            nsec: i64::from(now.subsec_nanos()),
        };
        MemFile {
            data: Mutex::new(Vec::new()),
            max,
            uid,
            gid,
            created,
        }
    }

    fn data(&self) -> MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
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
        Ok(Stat {
            // The shmem file system's anonymous device.
            dev: 0x1,
            // Memfds only need to differ from each other: the address of the file does.
            ino: self as *const MemFile as u64 >> 4,
            mode: libc::S_IFREG | 0o777,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            size,
            blksize: 4096,
            blocks: size.div_ceil(512),
            atime: self.created,
            mtime: self.created,
            ctime: self.created,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_reads_back_and_truncates() {
        let f = MemFile::new(1 << 20, 0, 0);
        assert_eq!(f.write_at(b"abc", 5), Ok(3));
        let mut b = [9u8; 10];
        assert_eq!(f.read_at(&mut b, 0), Ok(8));
        assert_eq!(&b[..8], b"\0\0\0\0\0abc");
        f.set_len(2).unwrap();
        assert_eq!(f.stat().unwrap().size, 2);
        assert_eq!(f.read_at(&mut b, 7), Ok(0));
        assert_eq!(f.write_at(b"x", 1 << 20), Err(Errno::EFBIG));
        assert_eq!(f.set_len((1 << 20) + 1), Err(Errno::EFBIG));
        let other = Box::new(MemFile::new(1 << 20, 0, 0));
        assert_ne!(other.stat().unwrap().ino, f.stat().unwrap().ino);
    }
}
