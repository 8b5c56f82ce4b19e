//! `lego remote-swap`: an Infiniswap-style remote swap device built from what these machines
//! have (no NBD, no ublk). It exposes one file of the device's size through FUSE and keeps every
//! 4 KB block of it in the memory of `lego mem-server`s; `losetup` turns the file into a block
//! device and `swapon` makes it swap.
//!
//! It talks to the mem-servers exactly as a pComponent does: it creates a process at a home
//! mem-server, maps the device range as one anonymous region, and moves blocks with the page
//! path (`read_page`/`write_page`) straight to the owner of each vRegion. vRegions (1 GiB by
//! default) are Infiniswap's slabs: each is placed on one mem-server by the home, and all
//! blocks in it go to that server.
//!
//! Swapping through a user-space daemon deadlocks if the daemon itself must be swapped out or
//! must wait for reclaim: the daemon locks its memory (`mlockall`) and is meant to run outside
//! the memory cgroup whose pages it swaps.

use lego_proto::sync::LockExt;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};
use lego_proto::codec::{decode, encode};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::{Effect, MemCall, MemOutcome, ProcessSpec, Reply, Request as MemRequest};
use lego_proto::transport::{RegisteredBuf, Slot, TcpTransport, Transport};
use lego_proto::vma::{Prot, VmaKind};
use lego_vmm::memory::excache::owners::Owners;

use crate::size::parse_size;

/// Options of `lego remote-swap`.
#[derive(clap::Args)]
pub struct RemoteSwapArgs {
    /// Mem-servers holding the blocks (ADDR[,ADDR...]); the first is the home.
    #[arg(long, value_delimiter = ',', value_name = "ADDR", required = true)]
    mem_server: Vec<String>,
    /// Device size (a multiple of 4 KiB).
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// Empty directory to mount the FUSE file system on; the device is the file `disk` in it.
    #[arg(long)]
    mount: PathBuf,
    /// Slab size: the unit in which mem-servers own the device's blocks (Infiniswap: 1 GiB).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    vregion_size: u64,
    /// Cluster id presented to the mem-servers.
    #[arg(long, default_value_t = 0, env = "LEGO_CLUSTER_ID")]
    cluster: u64,
    /// Seconds to wait for a mem-server.
    #[arg(long, default_value_t = 30)]
    mem_timeout: u64,
}

/// The name of the device file in the mount.
pub const DISK: &str = "disk";
const PAGE: u64 = 4096;
const ROOT: INodeNo = INodeNo::ROOT;
const DISK_INO: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(3600);

/// The device's blocks on the mem-servers.
struct Blocks {
    home: TcpTransport,
    proc: u64,
    /// Device offset 0 is this address of the process.
    base: u64,
    size: u64,
    /// The owner of each slab (vRegion) of the device, and a page-path link to each.
    owners: Owners,
    buf: RegisteredBuf,
}

impl Blocks {
    /// Creates the process at the home and maps `size` bytes for the device.
    fn connect(args: &RemoteSwapArgs) -> anyhow::Result<Blocks> {
        let v = args.vregion_size;
        if !v.is_power_of_two() || v < (2 << 20) {
            bail!("--vregion-size must be a power of two of at least 2 MiB");
        }
        if args.size == 0 || !args.size.is_multiple_of(PAGE) {
            bail!("--size must be a positive multiple of 4 KiB");
        }
        let timeout = Duration::from_secs(args.mem_timeout.max(1));
        let hello = Hello::new(ComponentKind::Processor, args.cluster);
        let home = TcpTransport::connect(&args.mem_server[0], hello, timeout)?;
        let proc = loop {
            let mut b = [0u8; 8];
            // SAFETY: `b` is a valid 8-byte buffer.
            if unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) } == 8 && u64::from_le_bytes(b) != 0 {
                break u64::from_le_bytes(b);
            }
        };
        // The device starts at slab 1 and is followed by one slab holding the one-page stack
        // every process has.
        let base = v;
        let span = args.size.div_ceil(v) * v;
        let top = base + span + v;
        let spec = ProcessSpec {
            servers: args.mem_server.clone(),
            home: 0,
            vregion_size: v,
            user_min: base,
            space_top: top,
            mmap_top: base + span,
            stack: (top - PAGE, top),
            replicas: 1,
            backup_storage: None,
        };
        let mut b = Blocks {
            home,
            proc,
            base,
            size: args.size,
            owners: Owners::tcp(args.mem_server.clone(), v, args.cluster, timeout),
            buf: RegisteredBuf::new(1),
        };
        b.home_call(MemRequest::CreateProcess(spec)).context("creating the device's process at the home")?;
        let flags = 0x02 | 0x20 | 0x10; // MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
        let call = MemCall::Mmap { addr: base, len: span, prot: Prot::RW, flags, kind: VmaKind::Anon };
        let at = b.home_call(MemRequest::Mem(call)).context("mapping the device's blocks")?;
        if at != base {
            bail!("the home mapped the device at {at:#x}, not {base:#x}");
        }
        Ok(b)
    }

    /// A call to the home; records the slab owners its answer names.
    fn home_call(&mut self, req: MemRequest) -> anyhow::Result<u64> {
        let body = self.home.call(self.proc, &encode(&req))?;
        let outcome: MemOutcome = match decode(&body)? {
            Reply::Mem(Ok(o)) => o,
            Reply::Mem(Err(errno)) => bail!("the home answered errno {errno}"),
            other => bail!("the home answered {other:?}"),
        };
        for o in &outcome.owners {
            self.owners.set(o.index, &o.owner, o.secondary.as_deref())?;
        }
        if let Some(e) = outcome.effects.iter().find(|e| !matches!(e, Effect::Map(_))) {
            bail!("unexpected effect {e:?}");
        }
        Ok(outcome.value)
    }

    /// Runs `f` on the page-path connection to the owner of the slab holding `addr`, and the
    /// block buffer.
    fn with_owner<R>(
        &mut self,
        addr: u64,
        f: impl FnOnce(&mut dyn Transport, &mut RegisteredBuf) -> Result<R, lego_proto::ProtoError>,
    ) -> anyhow::Result<R> {
        let i = self.owners.owner_of(addr).with_context(|| format!("no owner for {addr:#x}"))?;
        let mut link = self.owners.take_link(i)?;
        let r = f(&mut *link, &mut self.buf);
        self.owners.put_link(i, link);
        Ok(r?)
    }

    /// Reads the block at device offset `off` (page aligned) into the buffer.
    fn fetch(&mut self, off: u64) -> anyhow::Result<&[u8; 4096]> {
        let (proc, addr) = (self.proc, self.base + off);
        self.with_owner(addr, |l, buf| l.read_page(proc, addr, buf, Slot(0)))?;
        Ok(self.buf.page(0))
    }

    /// Writes the buffer to the block at device offset `off` (page aligned).
    fn store(&mut self, off: u64) -> anyhow::Result<()> {
        let (proc, addr) = (self.proc, self.base + off);
        self.with_owner(addr, |l, buf| l.write_page(proc, addr, buf, Slot(0)))
    }

    fn read(&mut self, off: u64, len: u64) -> anyhow::Result<Vec<u8>> {
        let end = (off + len).min(self.size);
        let mut out = Vec::with_capacity(end.saturating_sub(off) as usize);
        let mut at = off;
        while at < end {
            let page = at / PAGE * PAGE;
            let upto = (page + PAGE).min(end);
            let data = self.fetch(page)?;
            out.extend_from_slice(&data[(at - page) as usize..(upto - page) as usize]);
            at = upto;
        }
        Ok(out)
    }

    fn write(&mut self, off: u64, data: &[u8]) -> anyhow::Result<()> {
        if off + data.len() as u64 > self.size {
            bail!("write past the end of the device");
        }
        let mut done = 0usize;
        while done < data.len() {
            let at = off + done as u64;
            let page = at / PAGE * PAGE;
            let from = (at - page) as usize;
            let n = (PAGE as usize - from).min(data.len() - done);
            if n < PAGE as usize {
                self.fetch(page)?; // a partial block: read, modify, write
            }
            self.buf.page_mut(0)[from..from + n].copy_from_slice(&data[done..done + n]);
            self.store(page)?;
            done += n;
        }
        Ok(())
    }

    /// Releases the blocks at every mem-server.
    fn release(&mut self) -> anyhow::Result<()> {
        let body = self.home.call(self.proc, &encode(&MemRequest::ExitProcess))?;
        match decode(&body)? {
            Reply::Done => Ok(()),
            other => bail!("the home answered {other:?}"),
        }
    }
}

/// The FUSE file system: a root directory holding the device file.
struct RemoteDisk {
    blocks: Mutex<Blocks>,
    size: u64,
}

impl RemoteDisk {
    fn attr(&self, ino: INodeNo) -> FileAttr {
        let dir = ino == ROOT;
        FileAttr {
            ino,
            size: if dir { 0 } else { self.size },
            blocks: if dir { 0 } else { self.size / 512 },
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind: if dir { FileType::Directory } else { FileType::RegularFile },
            perm: if dir { 0o755 } else { 0o600 },
            nlink: if dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        }
    }

    fn blocks(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.blocks.lock_unpoisoned()
    }
}

impl fuser::Filesystem for RemoteDisk {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == ROOT && name == DISK {
            reply.entry(&TTL, &self.attr(DISK_INO), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino {
            ROOT | DISK_INO => reply.attr(&TTL, &self.attr(ino)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino == DISK_INO {
            // No page cache in front of the device: every block goes to the mem-servers, and
            // swapped-out pages do not come back as cached copies of themselves.
            reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        } else {
            reply.error(Errno::EISDIR);
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        match self.blocks().read(offset, size as u64) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                tracing::error!("reading {size} bytes at {offset}: {e}");
                reply.error(Errno::EIO)
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino != DISK_INO {
            return reply.error(Errno::EISDIR);
        }
        match self.blocks().write(offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => {
                tracing::error!("writing {} bytes at {offset}: {e}", data.len());
                reply.error(Errno::EIO)
            }
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok(); // every write is stored at its mem-server before it is answered
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if ino != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [(ROOT, FileType::Directory, "."), (ROOT, FileType::Directory, ".."), (DISK_INO, FileType::RegularFile, DISK)];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// Serves the device until SIGTERM or SIGINT, then unmounts it and frees its blocks.
pub fn run(args: RemoteSwapArgs) -> anyhow::Result<()> {
    // SAFETY: mlockall takes flags only. Locked memory keeps the daemon out of the reclaim it
    // serves; without it a swap-out could wait on a swap-in of the daemon itself.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        bail!("mlockall: {}", std::io::Error::last_os_error());
    }
    let blocks = Blocks::connect(&args)?;
    let slabs = args.size.div_ceil(args.vregion_size);
    let fs = RemoteDisk { blocks: Mutex::new(blocks), size: args.size };
    let (stop_tx, stop_rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .context("installing the SIGTERM handler")?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![fuser::MountOption::FSName("lego-remote-swap".into()), fuser::MountOption::RW];
    let session = fuser::spawn_mount(fs, &args.mount, &config).with_context(|| format!("mounting {}", args.mount.display()))?;
    println!(
        "lego remote-swap serving {} ({} MiB in {slabs} slab(s) on {})",
        args.mount.join(DISK).display(),
        args.size >> 20,
        args.mem_server.join(",")
    );
    let _ = stop_rx.recv();
    // Unmounting drops the file system, whose `Blocks` then free the blocks at the mem-servers.
    session.umount_and_join().context("unmounting")

}

impl Drop for Blocks {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!("releasing the device's blocks: {e:#}");
        }
    }
}
