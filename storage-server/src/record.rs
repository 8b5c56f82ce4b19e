//! The records of the index and the journal: [`Entry`], one name of a file, and [`Batch`], the
//! changes of one vNode committed together; with the version 1 layouts (before owner ids) and
//! version 2 layouts (before access times) that old journals and index rows still hold, read
//! only.

use lego_proto::storage::FileKind;
use serde::{Deserialize, Serialize};

/// One name of a file, symlink or directory. The names of one inode (hard links) carry the same
/// attributes, and all change together; only `dseq` is the name's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) kind: FileKind,
    pub(crate) mode: u32,
    pub(crate) size: u64,
    pub(crate) ino: u64,
    pub(crate) mtime: i64,
    pub(crate) ctime: i64,
    /// Creation number within the parent directory: orders readdir, and is its cookie.
    pub(crate) dseq: u64,
    /// Owner ids (stored, not enforced).
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Last access as set at creation or by `utimensat` (reads do not change it: the mount
    /// behaves as Linux's `noatime`), nanoseconds since the epoch.
    pub(crate) atime: i64,
}

/// An [`Entry`] as the journal records of the builds before access times held it (read only).
#[derive(Clone, Copy, Debug, Deserialize)]
pub(crate) struct EntryV2 {
    kind: FileKind,
    mode: u32,
    size: u64,
    ino: u64,
    mtime: i64,
    ctime: i64,
    dseq: u64,
    uid: u32,
    gid: u32,
}

impl From<EntryV2> for Entry {
    /// Accessed when last modified, as far as anyone can tell.
    fn from(e: EntryV2) -> Entry {
        let EntryV2 { kind, mode, size, ino, mtime, ctime, dseq, uid, gid } = e;
        Entry { kind, mode, size, ino, mtime, ctime, dseq, uid, gid, atime: mtime }
    }
}

/// An [`Entry`] as the journal records of the builds before owner ids held it (read only).
#[derive(Clone, Copy, Debug, Deserialize)]
pub(crate) struct EntryV1 {
    kind: FileKind,
    mode: u32,
    size: u64,
    ino: u64,
    mtime: i64,
    ctime: i64,
    dseq: u64,
}

impl From<EntryV1> for Entry {
    fn from(e: EntryV1) -> Entry {
        let EntryV1 { kind, mode, size, ino, mtime, ctime, dseq } = e;
        EntryV2 { kind, mode, size, ino, mtime, ctime, dseq, uid: 0, gid: 0 }.into()
    }
}

impl Entry {
    /// Length of an index record: version 3, with the access time. Version 2 (the builds
    /// before it) is its first [`Entry::LEN_V2`] bytes, read with the access time at the
    /// modification time; version 1 (before owner ids) its first [`Entry::LEN_V1`], read with
    /// owner 0:0 too.
    pub(crate) const LEN: usize = 61;
    pub(crate) const LEN_V2: usize = 53;
    pub(crate) const LEN_V1: usize = 45;

    pub(crate) fn encode(&self) -> [u8; Entry::LEN] {
        let mut b = [0u8; Entry::LEN];
        b[0] = match self.kind {
            FileKind::File => 1,
            FileKind::Dir => 2,
            FileKind::Symlink => 3,
            FileKind::Fifo => 4,
            FileKind::Socket => 5,
        };
        b[1..5].copy_from_slice(&self.mode.to_le_bytes());
        b[5..13].copy_from_slice(&self.size.to_le_bytes());
        b[13..21].copy_from_slice(&self.ino.to_le_bytes());
        b[21..29].copy_from_slice(&self.mtime.to_le_bytes());
        b[29..37].copy_from_slice(&self.ctime.to_le_bytes());
        b[37..45].copy_from_slice(&self.dseq.to_le_bytes());
        b[45..49].copy_from_slice(&self.uid.to_le_bytes());
        b[49..53].copy_from_slice(&self.gid.to_le_bytes());
        b[53..61].copy_from_slice(&self.atime.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Entry> {
        if ![Entry::LEN, Entry::LEN_V2, Entry::LEN_V1].contains(&b.len()) {
            return None;
        }
        let u32_at = |i: usize| {
            if b.len() > i {
                u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"))
            } else {
                0
            }
        };
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let kind = match b[0] {
            1 => FileKind::File,
            2 => FileKind::Dir,
            3 => FileKind::Symlink,
            4 => FileKind::Fifo,
            5 => FileKind::Socket,
            _ => return None,
        };
        Some(Entry {
            kind,
            mode: u32::from_le_bytes(b[1..5].try_into().expect("4 bytes")),
            size: u64_at(5),
            ino: u64_at(13),
            mtime: u64_at(21) as i64,
            ctime: u64_at(29) as i64,
            dseq: u64_at(37),
            uid: u32_at(45),
            gid: u32_at(49),
            atime: if b.len() >= Entry::LEN { u64_at(53) as i64 } else { u64_at(21) as i64 },
        })
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }
}

/// Index changes of one vNode, journalled and committed together.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Batch {
    /// Paths removed (applied before `puts`).
    pub(crate) dels: Vec<Vec<u8>>,
    /// Paths added or changed.
    pub(crate) puts: Vec<(Vec<u8>, Entry)>,
    /// The vNode's new id counter.
    pub(crate) next_id: Option<u64>,
    /// Inode numbers whose host files go once this batch is durable.
    pub(crate) freed: Vec<u64>,
}

/// A [`Batch`] as the journal records of older builds held it, with their entry layout `E`
/// (read only).
#[derive(Debug, Deserialize)]
pub(crate) struct OldBatch<E> {
    dels: Vec<Vec<u8>>,
    puts: Vec<(Vec<u8>, E)>,
    next_id: Option<u64>,
    freed: Vec<u64>,
}

/// A batch of the builds before access times.
pub(crate) type BatchV2 = OldBatch<EntryV2>;
/// A batch of the builds before owner ids.
pub(crate) type BatchV1 = OldBatch<EntryV1>;

impl<E: Into<Entry>> From<OldBatch<E>> for Batch {
    fn from(b: OldBatch<E>) -> Batch {
        let OldBatch { dels, puts, next_id, freed } = b;
        Batch { dels, puts: puts.into_iter().map(|(p, e)| (p, e.into())).collect(), next_id, freed }
    }
}

impl Batch {
    pub(crate) fn put(path: &[u8], e: Entry) -> Batch {
        Batch { puts: vec![(path.to_vec(), e)], ..Batch::default() }
    }

    /// Also records that directory `path` (entry `e`) changed at `now`.
    pub(crate) fn touch(&mut self, path: &[u8], e: Entry, now: i64) {
        self.puts.push((path.to_vec(), Entry { mtime: now, ctime: now, ..e }));
    }
}
