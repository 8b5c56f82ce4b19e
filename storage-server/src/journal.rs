//! The write-ahead journal of the index: what makes a reply survive `kill -9` of the server.
//!
//! Every change to the index is appended here, as one checksummed record, before the request is
//! answered. A `write(2)` that returned is in the kernel's page cache, which outlives the
//! process, so an acknowledged change survives any crash of the server process at no more cost
//! than a memory copy; `fsync` and `sync` requests [`Journal::sync`] the journal, which makes
//! every change before them survive power loss too.
//!
//! The journal is a sequence of files `DIR/journal.<gen>`. When the current one has grown past
//! [`CHECKPOINT_BYTES`], a checkpoint starts a new file, writes the older files' changes to the
//! redb index in one durable commit, and deletes them. Mutators go on appending to the new file
//! meanwhile; only `sync` waits for a checkpoint in progress. At start, every journal file left is
//! replayed over the index in order (records are whole entries, not deltas, so replaying one
//! that the index already holds changes nothing), then checkpointed.
//!
//! Record: `len: u32 LE | crc32(payload): u32 LE | payload`. The payload is the bincode of
//! `(RECORD_V3, vNode, batch)`. Replay still reads the older records: `(RECORD_V2, vNode,
//! batch)` of the builds before access times, and `(vNode, batch)` of the builds before owner
//! ids, each with its entry layout (a vNode name's length, the first 8 bytes there, is never
//! either tag). Replay stops at the first record that is short or fails its checksum: only a power
//! loss can leave one, and then only after the last fsync.

use lego_proto::sync::{LockExt, RwLockExt};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use lego_proto::storage::errno;

use crate::record::{Batch, BatchV1, BatchV2};

/// The first 8 bytes of a version 2 record's payload (entries with owner ids).
const RECORD_V2: u64 = u64::MAX;
/// The first 8 bytes of a version 3 record's payload (entries with access times).
const RECORD_V3: u64 = u64::MAX - 1;

/// Journal bytes after which a checkpoint is made.
pub(crate) const CHECKPOINT_BYTES: u64 = 8 << 20;
/// Largest record replay accepts (a rename of a big directory tree is the largest batch).
const MAX_RECORD: u32 = 256 << 20;

/// The current journal file and what it holds since the last checkpoint.
struct Current {
    file: Arc<File>,
    gen: u64,
    bytes: u64,
    /// The batches of the journal files not checkpointed yet, in order.
    batches: Vec<(String, Batch)>,
}

/// The journal of one store.
pub(crate) struct Journal {
    dir: PathBuf,
    current: Mutex<Current>,
    /// Held (exclusively) by a checkpoint from rotating the file to its index commit, and
    /// (shared) by `sync`, which must not report records of a rotated file as durable before
    /// the index holds them.
    checkpoint: RwLock<()>,
}

/// Why a journal could not be read at start.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct JournalError {
    /// The journal file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

fn path_of(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("journal.{gen}"))
}

/// The generations of the journal files in `dir`, oldest first.
fn generations(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let err = |source| JournalError { path: dir.to_path_buf(), source };
    let mut gens = Vec::new();
    for d in std::fs::read_dir(dir).map_err(err)? {
        let name = d.map_err(err)?.file_name();
        if let Some(g) = name.to_str().and_then(|n| n.strip_prefix("journal.")).and_then(|g| g.parse().ok()) {
            gens.push(g);
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

/// The whole records of one journal file, in order.
fn read_records(path: &Path) -> Result<Vec<(String, Batch)>, JournalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| JournalError { path: path.to_path_buf(), source })?;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let end = at + 8 + len as usize;
        if len > MAX_RECORD || end > bytes.len() || crc32fast::hash(&bytes[at + 8..end]) != crc {
            break;
        }
        match decode_record(&bytes[at + 8..end]) {
            Some(r) => out.push(r),
            None => break,
        }
        at = end;
    }
    if at != bytes.len() {
        tracing::warn!(path = %path.display(), dropped = bytes.len() - at, "a torn journal tail was dropped");
    }
    Ok(out)
}

/// One record's payload, of any version.
fn decode_record(payload: &[u8]) -> Option<(String, Batch)> {
    if payload.get(..8) == Some(RECORD_V3.to_le_bytes().as_slice()) {
        let (_, vnode, batch) = lego_proto::codec::decode::<(u64, String, Batch)>(payload).ok()?;
        return Some((vnode, batch));
    }
    if payload.get(..8) == Some(RECORD_V2.to_le_bytes().as_slice()) {
        let (_, vnode, batch) = lego_proto::codec::decode::<(u64, String, BatchV2)>(payload).ok()?;
        return Some((vnode, batch.into()));
    }
    let (vnode, batch) = lego_proto::codec::decode::<(String, BatchV1)>(payload).ok()?;
    Some((vnode, batch.into()))
}

fn open_new(dir: &Path, gen: u64) -> std::io::Result<File> {
    let f = OpenOptions::new().create(true).truncate(true).write(true).open(path_of(dir, gen))?;
    sync_dir(dir)?;
    Ok(f)
}

impl Journal {
    /// Reads every journal file in `dir`: the batches not yet in the index, in order. The
    /// caller applies them, then calls [`Journal::start`] with the last generation.
    pub(crate) fn recover(dir: &Path) -> Result<(Vec<(String, Batch)>, u64), JournalError> {
        let gens = generations(dir)?;
        let mut batches = Vec::new();
        for &g in &gens {
            batches.extend(read_records(&path_of(dir, g))?);
        }
        Ok((batches, gens.last().copied().unwrap_or(0)))
    }

    /// Starts a new journal file after generation `last`, once the caller has made everything
    /// journalled so far durable in the index; deletes the older files.
    pub(crate) fn start(dir: &Path, last: u64) -> Result<Journal, JournalError> {
        let gen = last + 1;
        let file = open_new(dir, gen).map_err(|source| JournalError { path: path_of(dir, gen), source })?;
        for g in generations(dir)?.into_iter().filter(|&g| g < gen) {
            let p = path_of(dir, g);
            std::fs::remove_file(&p).map_err(|source| JournalError { path: p, source })?;
        }
        Ok(Journal {
            dir: dir.to_path_buf(),
            current: Mutex::new(Current { file: Arc::new(file), gen, bytes: 0, batches: Vec::new() }),
            checkpoint: RwLock::new(()),
        })
    }

    /// Appends one change of `vnode`; once it returns, the change survives a crash of this
    /// process. Answers whether a checkpoint is due.
    pub(crate) fn append(&self, vnode: &str, batch: &Batch) -> Result<bool, i32> {
        let record = (vnode.to_string(), batch.clone());
        let payload = lego_proto::codec::encode(&(RECORD_V3, &record.0, &record.1));
        let mut buf = Vec::with_capacity(8 + payload.len());
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        buf.extend_from_slice(&payload);
        let mut cur = self.current.lock_unpoisoned();
        if let Err(e) = cur.file.write_all_at(&buf, cur.bytes) {
            tracing::error!(error = %e, "appending to the journal");
            // Replay stops at a partial record: cut it, so later records stay readable.
            if let Err(e) = cur.file.set_len(cur.bytes) {
                tracing::error!(error = %e, "cutting a partial journal record");
            }
            return Err(errno::EIO);
        }
        cur.bytes += buf.len() as u64;
        cur.batches.push(record);
        Ok(cur.bytes >= CHECKPOINT_BYTES)
    }

    /// Makes every change appended so far survive power loss.
    pub(crate) fn sync(&self) -> Result<(), i32> {
        let _no_checkpoint = self.checkpoint.read_unpoisoned();
        let file = self.current.lock_unpoisoned().file.clone();
        file.sync_data().map_err(|e| {
            tracing::error!(error = %e, "syncing the journal");
            errno::EIO
        })
    }

    /// Starts a new journal file and hands `commit` the batches of the older ones; once it has
    /// made them durable in the index, deletes the older files. If `commit` fails, its batches
    /// stay for the next checkpoint (and their files for replay).
    pub(crate) fn checkpoint(&self, commit: impl FnOnce(&[(String, Batch)]) -> Result<(), i32>) -> Result<(), i32> {
        let _only_one = self.checkpoint.write_unpoisoned();
        let (batches, gen) = {
            let mut cur = self.current.lock_unpoisoned();
            let gen = cur.gen + 1;
            let file = open_new(&self.dir, gen).map_err(|e| {
                tracing::error!(error = %e, "starting a journal file");
                errno::EIO
            })?;
            let batches = std::mem::take(&mut cur.batches);
            *cur = Current { file: Arc::new(file), gen, bytes: 0, batches: Vec::new() };
            (batches, gen)
        };
        if let Err(e) = commit(&batches) {
            let mut cur = self.current.lock_unpoisoned();
            let newer = std::mem::replace(&mut cur.batches, batches);
            cur.batches.extend(newer);
            return Err(e);
        }
        self.remove_before(gen);
        Ok(())
    }

    fn remove_before(&self, gen: u64) {
        for g in generations(&self.dir).unwrap_or_default().into_iter().filter(|&g| g < gen) {
            if let Err(e) = std::fs::remove_file(path_of(&self.dir, g)) {
                tracing::warn!(error = %e, "removing a checkpointed journal file");
            }
        }
    }
}

/// Makes the entries of directory `dir` (files created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lego_proto::storage::FileKind;

    /// A record of the builds before owner ids (the vNode, then the batch with entries of seven
    /// fields, encoded as bincode encodes those structs) still replays, owned by 0:0.
    #[test]
    fn version_1_records_replay() {
        type EntryV1 = (FileKind, u32, u64, u64, i64, i64, u64);
        type BatchV1 = (Vec<Vec<u8>>, Vec<(Vec<u8>, EntryV1)>, Option<u64>, Vec<u64>);
        let old: (String, BatchV1) =
            ("demo".into(), (vec![b"/old".to_vec()], vec![(b"/f".to_vec(), (FileKind::File, 0o644, 5, 7, 1, 2, 7))], Some(8), vec![3]));
        let (vnode, batch) = decode_record(&lego_proto::codec::encode(&old)).expect("a version 1 record");
        assert_eq!(vnode, "demo");
        let new = lego_proto::codec::encode(&(RECORD_V3, &vnode, &batch));
        let (again, same) = decode_record(&new).expect("a version 3 record");
        assert_eq!((again, format!("{same:?}")), (vnode, format!("{batch:?}")));
        let shown = format!("{batch:?}");
        assert!(shown.contains("size: 5, ino: 7") && shown.contains("uid: 0, gid: 0, atime: 1") && shown.contains("freed: [3]"), "{shown}");
        assert!(decode_record(b"garbage").is_none());
    }

    /// A record of the builds before access times (entries with owner ids) replays with each
    /// access time at the modification time.
    #[test]
    fn version_2_records_replay() {
        type EntryV2 = (FileKind, u32, u64, u64, i64, i64, u64, u32, u32);
        type BatchV2 = (Vec<Vec<u8>>, Vec<(Vec<u8>, EntryV2)>, Option<u64>, Vec<u64>);
        let old: (u64, String, BatchV2) =
            (RECORD_V2, "demo".into(), (vec![], vec![(b"/f".to_vec(), (FileKind::Fifo, 0o600, 0, 9, 11, 12, 9, 5, 6))], Some(10), vec![]));
        let (vnode, batch) = decode_record(&lego_proto::codec::encode(&old)).expect("a version 2 record");
        assert_eq!(vnode, "demo");
        let shown = format!("{batch:?}");
        assert!(shown.contains("kind: Fifo") && shown.contains("mtime: 11, ctime: 12") && shown.contains("uid: 5, gid: 6, atime: 11"), "{shown}");
    }
}
