//! Memory shared between the processes of a run: `MAP_SHARED` anonymous mappings, which a
//! fork passes on, and `MAP_SHARED` mappings of files (`/dev/shm` and memfds among them), which
//! every process mapping the same file shares.
//!
//! LegoOS keeps no writable memory shared between processes (§3.2): its components are not
//! coherent with each other. Every process of a vNode here is a VM in one VMM process on one
//! pComponent, and within one component the hardware is coherent, as the paper keeps it. So the
//! pages of a shared mapping live in the pComponent, in a host memfd; they are neither lines of
//! the ExCache nor pages at the mem-servers, and they never miss.
//!
//! - The **window** ([`Window`]): guest-physical `[SHARED_GPA, SHARED_GPA + WINDOW_SIZE)`, one
//!   memslot that every VM of the run has over the same host range.
//! - A **view** ([`View`]) is a piece of the window where a shared object's memfd
//!   ([`SharedFile`]) is mapped `MAP_SHARED`: every view of one object, in any process, reaches
//!   the same host pages. A process maps a view with guest page-table entries pointing into the
//!   window, present from the start.
//! - Taking a translation away (`munmap`, `mprotect`) reaches KVM through
//!   [`Window::zap`]: `MADV_DONTNEED` on the view's host range drops the host's page-table
//!   entries (not the memfd's pages), and with them every shadow entry KVM built from them. VMs
//!   that still map the view build theirs again without an exit to the VMM.
//! - A futex word in shared memory is known by its object and offset ([`View::key`]), so a
//!   wake in one process finds the waiters of another.
//! - A file mapped shared has one object per run while some process maps it
//!   ([`Window::file_object`], by device and inode), its pages read from the file as mappings
//!   first reach them ([`SharedFile::load`]). Writing changes back to the file stays with the
//!   mappings (`crate::mapstate`), at `msync`, `munmap`, `execve` and exit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use lego_proto::sync::LockExt;

use crate::layout::PAGE_SIZE;

/// Guest-physical base of the window (above any ExCache, below the VMM-private slot).
pub const SHARED_GPA: u64 = 1 << 39;
/// Bytes of the window: the most memory the processes of a run share at once. KVM keeps 8
/// bytes per page of it for each VM (2 MiB).
pub const WINDOW_SIZE: u64 = 1 << 30;

/// The window of a run (see the module documentation).
pub struct Window {
    host: *mut u8,
    /// Free pieces, offset -> length, coalesced.
    free: Mutex<BTreeMap<u64, u64>>,
    next_id: AtomicU64,
    /// The most bytes of views mapped at once.
    peak: AtomicU64,
    /// The objects of files mapped shared, by device and inode, while some view holds them.
    files: Mutex<HashMap<(u64, u64), Weak<SharedFile>>>,
}

// SAFETY: `host` is a reservation the window owns for its whole life; the views mapped into it
// are shared memory by design, accessed by the guests and by the VMM under the ExCache locks of
// the processes mapping them.
unsafe impl Send for Window {}
// SAFETY: as above.
unsafe impl Sync for Window {}

impl Window {
    /// Reserves the window's host range (no memory until views are mapped into it).
    pub fn new() -> std::io::Result<Arc<Window>> {
        let host = reserve(std::ptr::null_mut(), WINDOW_SIZE, 0)?;
        Ok(Arc::new(Window {
            host,
            free: Mutex::new(BTreeMap::from([(0, WINDOW_SIZE)])),
            next_id: AtomicU64::new(1),
            peak: AtomicU64::new(0),
            files: Mutex::new(HashMap::new()),
        }))
    }

    /// A number no other caller in the run gets (shared objects, memfd inodes).
    pub fn unique_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The object of the file with device and inode `file`: the one some process of the run
    /// maps, or a new, empty one.
    pub fn file_object(&self, file: (u64, u64)) -> std::io::Result<Arc<SharedFile>> {
        let mut files = self.files.lock_unpoisoned();
        if let Some(obj) = files.get(&file).and_then(Weak::upgrade) {
            return Ok(obj);
        }
        files.retain(|_, w| w.strong_count() > 0);
        let obj = SharedFile::new(self)?;
        files.insert(file, Arc::downgrade(&obj));
        Ok(obj)
    }

    /// Host virtual address of the window's first byte (for the memslot).
    pub fn host_addr(&self) -> u64 {
        self.host as u64
    }

    /// Whether guest-physical `gpa` is in the window.
    pub fn contains(gpa: u64) -> bool {
        (SHARED_GPA..SHARED_GPA + WINDOW_SIZE).contains(&gpa)
    }

    /// The page at guest-physical `gpa` in the window.
    ///
    /// # Safety
    /// A view must be mapped there for as long as the slice is used: the caller holds a
    /// page-table entry to it, under the lock that serialises that entry's removal.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn page(&self, gpa: u64) -> &mut [u8] {
        assert!(Window::contains(gpa) && gpa.is_multiple_of(PAGE_SIZE), "shared page {gpa:#x}");
        // SAFETY: inside the reservation (asserted); a view is mapped there (the caller's
        // promise).
        unsafe { std::slice::from_raw_parts_mut(self.host.add((gpa - SHARED_GPA) as usize), PAGE_SIZE as usize) }
    }

    /// Drops every translation of `[gpa, gpa + len)` (host page-table entries and the KVM
    /// shadow entries built from them), keeping the contents.
    pub fn zap(&self, gpa: u64, len: u64) -> std::io::Result<()> {
        assert!(Window::contains(gpa) && gpa + len <= SHARED_GPA + WINDOW_SIZE, "zapping {gpa:#x}+{len:#x}");
        // SAFETY: a range of our reservation; for a shared mapping MADV_DONTNEED only unmaps,
        // and for the reserved parts it does nothing.
        let r = unsafe { libc::madvise(self.host.add((gpa - SHARED_GPA) as usize).cast(), len as usize, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// A free piece of `len` bytes (first fit), as an offset in the window.
    fn take(&self, len: u64) -> Option<u64> {
        let mut free = self.free.lock_unpoisoned();
        let (&at, &have) = free.iter().find(|(_, &l)| l >= len)?;
        free.remove(&at);
        if have > len {
            free.insert(at + len, have - len);
        }
        self.peak.fetch_max(WINDOW_SIZE - free.values().sum::<u64>(), Ordering::Relaxed);
        Some(at)
    }

    /// Gives `[at, at + len)` back, merged with its free neighbours.
    fn give_back(&self, at: u64, len: u64) {
        let mut free = self.free.lock_unpoisoned();
        let (mut start, mut end) = (at, at + len);
        if let Some((&s, &l)) = free.range(..at).next_back() {
            if s + l == at {
                free.remove(&s);
                start = s;
            }
        }
        if let Some(l) = free.remove(&end) {
            end += l;
        }
        free.insert(start, end - start);
    }

    /// Bytes of the window in use.
    pub fn in_use(&self) -> u64 {
        WINDOW_SIZE - self.free.lock_unpoisoned().values().sum::<u64>()
    }

    /// The most bytes of the window in use at once so far (`--stats`).
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: our own reservation; every view holds the window, so none is left, and the
        // VMs using the memslot are gone first.
        unsafe { libc::munmap(self.host.cast(), WINDOW_SIZE as usize) };
    }
}

/// Maps `len` bytes of inaccessible, unbacked memory at `at` (anywhere if null; `flags` adds
/// `MAP_FIXED`).
fn reserve(at: *mut u8, len: u64, flags: i32) -> std::io::Result<*mut u8> {
    // SAFETY: an anonymous mapping with no access; with MAP_FIXED, `at` is a range of the
    // window the caller owns.
    let p = unsafe {
        libc::mmap(at.cast(), len as usize, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | flags, -1, 0)
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p.cast())
}

/// A shared object: the host memfd its pages are in.
pub struct SharedFile {
    file: std::fs::File,
    id: u64,
    /// Bytes the memfd has (views never reach past them).
    len: Mutex<u64>,
    /// For a file's object: the pages read from the file so far.
    loaded: Mutex<BTreeSet<u64>>,
}

impl SharedFile {
    /// An empty object of the run of `window`.
    pub fn new(window: &Window) -> std::io::Result<Arc<SharedFile>> {
        // SAFETY: a NUL-terminated name and valid flags.
        let fd = unsafe { libc::memfd_create(c"lego-shared".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor just made, owned by nothing else.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Arc::new(SharedFile { file, id: window.unique_id(), len: Mutex::new(0), loaded: Mutex::new(BTreeSet::new()) }))
    }

    /// Reads the pages of `[off, off + len)` that no mapping has reached yet from the file
    /// (`read_at`, which returns 0 at its end); the pages past its end stay zero, and are read
    /// again by a later mapping.
    pub fn load<E: From<std::io::Error>>(&self, off: u64, len: u64, mut read_at: impl FnMut(&mut [u8], u64) -> Result<usize, E>) -> Result<(), E> {
        let mut loaded = self.loaded.lock_unpoisoned();
        let mut page = vec![0u8; PAGE_SIZE as usize];
        let first = off / PAGE_SIZE;
        for n in first..(off + len).div_ceil(PAGE_SIZE) {
            if loaded.contains(&n) {
                continue;
            }
            let mut got = 0;
            while got < page.len() {
                let r = read_at(&mut page[got..], n * PAGE_SIZE + got as u64)?;
                if r == 0 {
                    break;
                }
                got += r;
            }
            if got == 0 {
                break;
            }
            page[got..].fill(0);
            self.reach((n + 1) * PAGE_SIZE)?;
            self.file.write_all_at(&page, n * PAGE_SIZE)?;
            loaded.insert(n);
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `off` (zeroes past what the object has).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        buf.fill(0);
        let mut got = 0;
        while got < buf.len() {
            match self.file.read_at(&mut buf[got..], off + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes the memfd at least `len` bytes long.
    fn reach(&self, len: u64) -> std::io::Result<()> {
        let mut have = self.len.lock_unpoisoned();
        if *have < len {
            self.file.set_len(len)?;
            *have = len;
        }
        Ok(())
    }
}

/// Why a view could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The window has no free piece that large.
    #[error("the shared-memory window ({window} MiB for the run) has no room for {0} more bytes", window = WINDOW_SIZE >> 20)]
    Full(u64),
    /// The host refused.
    #[error("mapping shared memory: {0}")]
    Host(#[from] std::io::Error),
}

/// A piece of the window where `[file_off, file_off + len)` of a shared object is mapped.
pub struct View {
    window: Arc<Window>,
    file: Arc<SharedFile>,
    /// Offset in the window.
    at: u64,
    file_off: u64,
    len: u64,
}

impl View {
    /// Maps `len` bytes (page multiple) of `file` from `file_off` into a free piece of
    /// `window`.
    pub fn new(window: &Arc<Window>, file: &Arc<SharedFile>, file_off: u64, len: u64) -> Result<Arc<View>, ViewError> {
        assert!(len > 0 && len.is_multiple_of(PAGE_SIZE) && file_off.is_multiple_of(PAGE_SIZE), "view {file_off:#x}+{len:#x}");
        let at = window.take(len).ok_or(ViewError::Full(len))?;
        let view = View { window: window.clone(), file: file.clone(), at, file_off, len };
        // From here on, dropping `view` gives the piece back.
        file.reach(file_off + len)?;
        // SAFETY: replaces a reserved piece of the window that this view owns.
        let p = unsafe {
            libc::mmap(
                window.host.add(at as usize).cast(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                file.file.as_raw_fd(),
                file_off as i64,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(ViewError::Host(std::io::Error::last_os_error()));
        }
        Ok(Arc::new(view))
    }

    /// Guest-physical address of the view's first page.
    pub fn gpa(&self) -> u64 {
        SHARED_GPA + self.at
    }

    /// Bytes mapped.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is mapped (never: views are at least a page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The futex key of the word at offset `off` of the view: its object and offset in it,
    /// the same through every view of the object (bit 63 keeps it apart from guest addresses).
    pub fn key(&self, off: u64) -> u64 {
        1 << 63 | self.file.id << 40 | (self.file_off + off)
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: the piece is this view's; reserving it again unmaps the memfd (and drops
        // every translation of it). No page-table entry points here any more: each process
        // mapping the view held it.
        match reserve(unsafe { self.window.host.add(self.at as usize) }, self.len, libc::MAP_FIXED) {
            Ok(_) => self.window.give_back(self.at, self.len),
            // The piece stays unusable rather than reused while something may map it.
            Err(e) => tracing::warn!("unmapping a shared view: {e}"),
        }
    }
}

/// The shared mappings of one process: address ranges and the views they show.
#[derive(Clone, Default)]
pub struct SharedMaps {
    /// start -> piece.
    map: BTreeMap<u64, Piece>,
}

/// `[start, end)` shows the view from offset `off`.
#[derive(Clone)]
struct Piece {
    end: u64,
    view: Arc<View>,
    off: u64,
}

impl SharedMaps {
    /// Records that `[start, end)` shows `view` from offset `off`.
    pub fn insert(&mut self, start: u64, end: u64, view: Arc<View>, off: u64) {
        assert!(off + (end - start) <= view.len(), "a piece past its view");
        self.remove(start, end);
        self.map.insert(start, Piece { end, view, off });
    }

    /// The piece `addr` is in: its start and end, its view and the view offset of its start.
    pub fn piece(&self, addr: u64) -> Option<(u64, u64, Arc<View>, u64)> {
        let (&s, p) = self.map.range(..=addr).next_back().filter(|(_, p)| addr < p.end)?;
        Some((s, p.end, p.view.clone(), p.off))
    }

    /// Forgets what is mapped in `[start, end)`, splitting pieces that reach out of it. A view
    /// no process maps any more goes with its last piece.
    pub fn remove(&mut self, start: u64, end: u64) {
        let hit: Vec<u64> = self.overlapping(start, end).collect();
        for s in hit {
            let p = self.map.remove(&s).expect("listed");
            if s < start {
                self.map.insert(s, Piece { end: start, ..p.clone() });
            }
            if p.end > end {
                self.map.insert(end, Piece { end: p.end, view: p.view, off: p.off + (end - s) });
            }
        }
    }

    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = u64> + '_ {
        let first = self.map.range(..start).next_back().filter(|(_, p)| p.end > start).map(|(&s, _)| s);
        first.into_iter().chain(self.map.range(start..end).map(|(&s, _)| s))
    }

    /// Whether anything in `[start, end)` is shared.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.overlapping(start, end).next().is_some()
    }

    /// The shared page at `addr`: its guest-physical address and its futex key.
    pub fn find(&self, addr: u64) -> Option<(u64, u64)> {
        let (&s, p) = self.map.range(..=addr).next_back().filter(|(_, p)| addr < p.end)?;
        let off = p.off + (addr - s);
        Some((p.view.gpa() + off, p.view.key(off)))
    }

    /// Every piece as (start, end, guest-physical address of its first page).
    pub fn pieces(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.map.iter().map(|(&s, p)| (s, p.end, p.view.gpa() + p.off))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_of_one_object_share_pages_and_keys() {
        let w = Window::new().unwrap();
        let f = SharedFile::new(&w).unwrap();
        let a = View::new(&w, &f, 0, 2 * PAGE_SIZE).unwrap();
        let b = View::new(&w, &f, PAGE_SIZE, PAGE_SIZE).unwrap();
        assert_ne!(a.gpa(), b.gpa());
        // SAFETY: both views are alive and nothing else uses them.
        unsafe {
            w.page(a.gpa() + PAGE_SIZE)[8] = 42;
            assert_eq!(w.page(b.gpa())[8], 42);
        }
        assert_eq!(a.key(PAGE_SIZE + 8), b.key(8));
        assert_ne!(a.key(8), b.key(8));
        // Zapping keeps the contents.
        w.zap(a.gpa(), 2 * PAGE_SIZE).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { w.page(b.gpa())[8] }, 42);
        assert_eq!(w.in_use(), 3 * PAGE_SIZE);
        assert_eq!(w.peak(), 3 * PAGE_SIZE);
        drop(a);
        drop(b);
        assert_eq!(w.in_use(), 0);
        assert_eq!(w.free.lock_unpoisoned().len(), 1, "the pieces merged again");
    }

    #[test]
    fn a_file_object_is_one_per_file_and_loads_pages_once() {
        let w = Window::new().unwrap();
        let a = w.file_object((5, 9)).unwrap();
        assert!(Arc::ptr_eq(&a, &w.file_object((5, 9)).unwrap()));
        assert!(!Arc::ptr_eq(&a, &w.file_object((5, 10)).unwrap()));
        let file = b"0123456789".repeat(500);
        let mut reads = 0;
        let mut read = |buf: &mut [u8], at: u64| -> std::io::Result<usize> {
            reads += 1;
            let at = (at as usize).min(file.len());
            let n = buf.len().min(file.len() - at);
            buf[..n].copy_from_slice(&file[at..at + n]);
            Ok(n)
        };
        a.load(0, 3 * PAGE_SIZE, &mut read).unwrap();
        a.load(PAGE_SIZE, PAGE_SIZE, &mut read).unwrap();
        let mut back = vec![0u8; 5010];
        a.read_at(&mut back, 0).unwrap();
        assert_eq!(&back[..5000], &file[..]);
        assert_eq!(&back[5000..], &[0u8; 10]);
        // Page 0 in one read, page 1 in two (the second finds the end), page 2 finds only the
        // end; the second load reads nothing again.
        assert_eq!(reads, 4);
        drop(a);
        assert_ne!(w.file_object((5, 9)).unwrap().id, 0, "a new object once the last went");
    }

    #[test]
    fn a_full_window_refuses() {
        let w = Window::new().unwrap();
        let f = SharedFile::new(&w).unwrap();
        assert!(matches!(View::new(&w, &f, 0, WINDOW_SIZE + PAGE_SIZE), Err(ViewError::Full(_))));
    }

    #[test]
    fn maps_split_and_find() {
        let w = Window::new().unwrap();
        let f = SharedFile::new(&w).unwrap();
        let v = View::new(&w, &f, 0, 4 * PAGE_SIZE).unwrap();
        let mut m = SharedMaps::default();
        m.insert(0x10000, 0x14000, v.clone(), 0);
        assert!(m.overlaps(0x13000, 0x20000) && !m.overlaps(0x14000, 0x20000));
        m.remove(0x11000, 0x12000);
        let pieces: Vec<_> = m.pieces().collect();
        assert_eq!(pieces, vec![(0x10000, 0x11000, v.gpa()), (0x12000, 0x14000, v.gpa() + 2 * PAGE_SIZE)]);
        assert_eq!(m.find(0x12008), Some((v.gpa() + 2 * PAGE_SIZE + 8, v.key(2 * PAGE_SIZE + 8))));
        assert_eq!(m.find(0x11000), None);
        let (s, e, pv, off) = m.piece(0x13000).unwrap();
        assert_eq!((s, e, pv.gpa(), off), (0x12000, 0x14000, v.gpa(), 2 * PAGE_SIZE));
        let forked = m.clone();
        m.remove(0, u64::MAX);
        assert!(m.find(0x10000).is_none() && forked.find(0x10000).is_some());
        drop((v, pv, forked));
        assert_eq!(w.in_use(), 0, "the view went with its last piece");
    }
}
