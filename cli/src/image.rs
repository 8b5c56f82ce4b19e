//! `lego image`: guest images in a vNode's storage mount.
//!
//! `push` copies a host directory or a tar archive into the mount, straight to the storage
//! server (each file created, written in `MAX_IO` pieces and fsync'd, so a pushed image survives
//! a storage-server crash; symlinks as symlinks, a tar archive's hard links as hard links);
//! `add` copies host programs there, each with the program interpreter and shared libraries
//! `ldd` lists for it, at their host paths; `ls` lists the mount. Push while no program of that
//! vNode runs: a mem-server caching the vNode's files would not see the new contents of files
//! it holds.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::storage::{self, errno, FileKind, Owner, StorageOp, StorageReply, StorageRequest, MAX_DIRENTS, MAX_IO};
use lego_proto::transport::TcpTransport;

use crate::cluster::StateArgs;
use crate::global::ManagerArgs;

/// `lego image` subcommands.
#[derive(clap::Subcommand)]
pub enum ImageCmd {
    /// Copy a directory or a .tar archive into a vNode's storage mount.
    Push {
        /// Host directory, or tar archive, whose contents become the vNode's `/`.
        source: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Copy host programs into a vNode's storage mount, each at its own absolute path, with
    /// the program interpreter and the shared libraries `ldd` lists for it (at theirs): what a
    /// dynamically linked program needs to start there. Files a program opens by itself
    /// (`dlopen`ed modules, data files) are not found this way: push those.
    Add {
        /// Host paths of the programs (static ones are copied alone).
        #[arg(required = true)]
        programs: Vec<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// List a vNode's storage mount, recursively, with sizes.
    Ls {
        /// Directory to list.
        #[arg(default_value = "/")]
        path: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Which vNode, on which storage server.
#[derive(clap::Args)]
pub struct Target {
    /// The vNode whose mount to use.
    #[arg(long)]
    vnode: String,
    /// The storage server [default: the one holding the vNode's mount, from the global manager].
    #[arg(long, value_name = "ADDR")]
    storage_server: Option<String>,
    /// The global manager asked for that storage server, and the cluster id presented to both.
    #[command(flatten)]
    at: ManagerArgs,
}

/// A connection to one vNode's mount.
struct Mount {
    conn: TcpTransport,
    vnode: String,
}

impl Target {
    /// The storage server: the one given, or the one the running cluster's GSM chose for the vNode.
    fn storage(&self, state: &StateArgs) -> anyhow::Result<String> {
        if let Some(s) = &self.storage_server {
            return Ok(s.clone());
        }
        let global = self.at.addr(state).context("no --storage-server given")?;
        let p = crate::global::place(&global, self.at.cluster_id(), &self.vnode)?;
        p.vnode.storage.ok_or_else(|| anyhow::anyhow!("no storage server is up to hold vNode {}", self.vnode))
    }
}

impl Mount {
    fn open(t: &Target, state: &StateArgs) -> anyhow::Result<(Mount, String)> {
        if storage::check_vnode(&t.vnode).is_err() {
            bail!("vNode name {:?} must be 1-64 bytes of [A-Za-z0-9._-]", t.vnode);
        }
        let addr = t.storage(state)?;
        let hello = Hello::new(ComponentKind::Client, t.at.cluster_id());
        let conn = TcpTransport::connect(&addr, hello, Duration::from_secs(30)).with_context(|| format!("storage server {addr}"))?;
        Ok((Mount { conn, vnode: t.vnode.clone() }, addr))
    }

    /// One request; an errno answer is `Err(errno)`, a transport failure an error.
    fn op(&mut self, op: StorageOp) -> anyhow::Result<Result<StorageReply, i32>> {
        let req = StorageRequest { vnode: self.vnode.clone(), op };
        Ok(match storage::call(&mut self.conn, &req)? {
            StorageReply::Error(e) => Err(e),
            r => Ok(r),
        })
    }

    fn must(&mut self, what: &str, path: &[u8], op: StorageOp) -> anyhow::Result<StorageReply> {
        self.op(op)?.map_err(|e| match e {
            errno::ENOVNODE => anyhow::anyhow!(
                "the storage server does not know vNode {} (create it with `lego vnode create {}`)",
                self.vnode,
                self.vnode
            ),
            e => anyhow::anyhow!("{what} {}: {}", String::from_utf8_lossy(path), std::io::Error::from_raw_os_error(e)),
        })
    }

    fn mkdir(&mut self, path: &[u8], mode: u32) -> anyhow::Result<()> {
        match self.op(StorageOp::Mkdir { path: path.to_vec(), mode, owner: Owner::ROOT })? {
            Ok(_) | Err(errno::EEXIST) => Ok(()),
            Err(e) => bail!("mkdir {}: {}", String::from_utf8_lossy(path), std::io::Error::from_raw_os_error(e)),
        }
    }

    /// Makes `path` a symlink to `target`, replacing what a push before left there.
    fn symlink(&mut self, path: &[u8], target: &[u8]) -> anyhow::Result<()> {
        let op = || StorageOp::Symlink { path: path.to_vec(), target: target.to_vec(), owner: Owner::ROOT };
        match self.op(op())? {
            Ok(_) => Ok(()),
            Err(errno::EEXIST) => {
                self.must("unlink", path, StorageOp::Unlink { path: path.to_vec() })?;
                self.must("symlink", path, op()).map(drop)
            }
            Err(e) => bail!("symlink {}: {}", String::from_utf8_lossy(path), std::io::Error::from_raw_os_error(e)),
        }
    }

    fn put(&mut self, path: &[u8], mode: u32, mut data: impl Read) -> anyhow::Result<u64> {
        self.must("create", path, StorageOp::Create { path: path.to_vec(), mode, exclusive: false, truncate: true, owner: Owner::ROOT })?;
        let mut buf = vec![0u8; MAX_IO];
        let mut offset = 0u64;
        loop {
            let n = read_full(&mut data, &mut buf)?;
            if n == 0 {
                break;
            }
            self.must("write", path, StorageOp::Write { path: path.to_vec(), offset, data: buf[..n].to_vec() })?;
            offset += n as u64;
        }
        self.must("fsync", path, StorageOp::Fsync { path: path.to_vec() })?;
        Ok(offset)
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The vNode path of `rel` (a relative path inside the image), checked.
fn vnode_path(rel: &Path) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = storage::normalize(b"/", rel.as_os_str().as_bytes());
    if let Err(e) = storage::check_path(&p) {
        bail!("{}: {}", rel.display(), std::io::Error::from_raw_os_error(e));
    }
    Ok(p)
}

/// Runs an image command.
pub fn run(cmd: ImageCmd, state: &StateArgs) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Push { source, target } => push(&source, &target, state),
        ImageCmd::Add { programs, target } => add(&programs, &target, state),
        ImageCmd::Ls { path, target } => ls(&path, &target, state),
    }
}

/// Opens the vNode's mount to write into it. A storage server named on the command line may
/// not know the vNode yet (the GSM tells the one it chose): its mount is made, and a quota it
/// has is kept.
fn open_for_writing(target: &Target, state: &StateArgs) -> anyhow::Result<(Mount, String)> {
    let (mut m, addr) = Mount::open(target, state)?;
    if target.storage_server.is_some() {
        m.must("mounting vNode", target.vnode.as_bytes(), StorageOp::Mount { quota: storage::QuotaChange::Keep })?;
    }
    Ok((m, addr))
}

/// What a push put into the mount.
#[derive(Default)]
struct Pushed {
    files: u64,
    links: u64,
    bytes: u64,
    /// Entries of kinds an image does not carry (devices, FIFOs, sockets).
    skipped: Vec<String>,
}

fn push(source: &Path, target: &Target, state: &StateArgs) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let (mut m, addr) = open_for_writing(target, state)?;
    let mut pushed = Pushed::default();
    let meta = std::fs::metadata(source).with_context(|| format!("{}", source.display()))?;
    if meta.is_dir() {
        push_dir(&mut m, source, Path::new(""), &mut pushed)?;
    } else {
        let f = std::fs::File::open(source).with_context(|| format!("{}", source.display()))?;
        let mut archive = tar::Archive::new(f);
        for entry in archive.entries().with_context(|| format!("reading {} as a tar archive", source.display()))? {
            let entry = entry.with_context(|| format!("reading {}", source.display()))?;
            let rel = entry.path()?.into_owned();
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            let path = vnode_path(&rel)?;
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                mkdir_all(&mut m, &path, mode)?;
                continue;
            }
            if let Some(parent) = rel.parent() {
                mkdir_all(&mut m, &vnode_path(parent)?, 0o755)?;
            }
            let link_name = || -> anyhow::Result<Vec<u8>> {
                let name = entry.link_name()?.with_context(|| format!("{}: a link without a target", rel.display()))?;
                Ok(name.as_os_str().as_bytes().to_vec())
            };
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    pushed.bytes += m.put(&path, mode, entry)?;
                    pushed.files += 1;
                }
                tar::EntryType::Symlink => {
                    m.symlink(&path, &link_name()?)?;
                    pushed.links += 1;
                }
                // A hard link names a file the archive holds before it.
                tar::EntryType::Link => {
                    let from = vnode_path(Path::new(std::ffi::OsStr::from_bytes(&link_name()?)))?;
                    m.must("link", &path, StorageOp::Link { from, to: path.clone() })?;
                    pushed.files += 1;
                }
                _ => pushed.skipped.push(rel.display().to_string()),
            }
        }
    }
    let Pushed { files, links, bytes, skipped } = pushed;
    println!("pushed {files} files and {links} symlinks ({bytes} bytes) into vNode {} on {addr}", target.vnode);
    if !skipped.is_empty() {
        println!("skipped (devices, FIFOs and sockets are not pushed): {}", skipped.join(", "));
    }
    Ok(())
}

fn add(programs: &[PathBuf], target: &Target, state: &StateArgs) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = std::collections::BTreeSet::new();
    for prog in programs {
        // The program keeps the path it was given (made absolute), as a symlink's name is how
        // it will be run; the libraries the paths `ldd` prints.
        let prog = std::path::absolute(prog).with_context(|| format!("{}", prog.display()))?;
        files.extend(libraries(&prog)?);
        files.insert(prog);
    }
    let (mut m, addr) = open_for_writing(target, state)?;
    let mut bytes = 0;
    for file in &files {
        let path = vnode_path(file.strip_prefix("/").unwrap_or(file))?;
        if let Some(parent) = file.parent().filter(|p| *p != Path::new("/")) {
            mkdir_all(&mut m, &vnode_path(parent.strip_prefix("/").unwrap_or(parent))?, 0o755)?;
        }
        // Symlinks followed: the file's contents and mode go under the name it was reached by.
        let f = std::fs::File::open(file).with_context(|| format!("{}", file.display()))?;
        let mode = f.metadata()?.permissions().mode() & 0o7777;
        bytes += m.put(&path, mode, f)?;
        println!("  {}", file.display());
    }
    println!("added {} files ({bytes} bytes) into vNode {} on {addr}", files.len(), target.vnode);
    Ok(())
}

/// The program interpreter and shared libraries `ldd` lists for `prog`: none for a static
/// program; an error naming a library `ldd` cannot find.
fn libraries(prog: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd").arg(prog).output().context("running ldd (Debian's libc-bin)")?;
    let (text, err) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("ldd {}: {}{}", prog.display(), err.trim(), text.trim());
    }
    let mut found = Vec::new();
    for line in text.lines() {
        if line.contains("=> not found") {
            bail!("{}: ldd finds no {}", prog.display(), line.split_whitespace().next().unwrap_or("library"));
        }
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, `/lib64/ld-linux-x86-64.so.2
        // (0x...)`; the vDSO has no path.
        found.extend(line.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from));
    }
    Ok(found)
}

/// Creates `path` and its missing parents.
fn mkdir_all(m: &mut Mount, path: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut at = 0;
    while let Some(i) = path[at + 1..].iter().position(|&b| b == b'/').map(|i| i + at + 1) {
        m.mkdir(&path[..i], 0o755)?;
        at = i;
    }
    if path != b"/" {
        m.mkdir(path, mode)?;
    }
    Ok(())
}

fn push_dir(m: &mut Mount, root: &Path, rel: &Path, pushed: &mut Pushed) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel = rel.join(e.file_name());
        let meta = std::fs::symlink_metadata(e.path())?;
        let mode = meta.permissions().mode() & 0o7777;
        let path = vnode_path(&rel)?;
        if meta.is_dir() {
            m.mkdir(&path, mode)?;
            push_dir(m, root, &rel, pushed)?;
        } else if meta.is_file() {
            let f = std::fs::File::open(e.path()).with_context(|| format!("{}", e.path().display()))?;
            pushed.bytes += m.put(&path, mode, f)?;
            pushed.files += 1;
        } else if meta.is_symlink() {
            // Its text as it is: resolved in the vNode's files when followed.
            let to = std::fs::read_link(e.path()).with_context(|| format!("{}", e.path().display()))?;
            m.symlink(&path, to.as_os_str().as_bytes())?;
            pushed.links += 1;
        } else {
            pushed.skipped.push(rel.display().to_string());
        }
    }
    Ok(())
}

fn ls(path: &str, target: &Target, state: &StateArgs) -> anyhow::Result<()> {
    let (mut m, _) = Mount::open(target, state)?;
    list(&mut m, &vnode_path(Path::new(path))?)
}

/// Prints the entries of `dir` in name order, each directory followed by its own listing.
fn list(m: &mut Mount, dir: &[u8]) -> anyhow::Result<()> {
    let mut cookie = 0;
    let mut children = Vec::new();
    loop {
        let op = StorageOp::Readdir { path: dir.to_vec(), cookie, max: MAX_DIRENTS as u32 };
        let StorageReply::Entries { entries, more } = m.must("readdir", dir, op)? else { bail!("unexpected readdir answer") };
        cookie = entries.last().map_or(cookie, |e| e.cookie);
        children.extend(entries.into_iter().map(|e| e.name));
        if !more {
            break;
        }
    }
    children.sort();
    for name in children {
        let mut p = dir.to_vec();
        if p != b"/" {
            p.push(b'/');
        }
        p.extend_from_slice(&name);
        let StorageReply::Attr(a) = m.must("stat", &p, StorageOp::Stat { path: p.clone() })? else {
            bail!("unexpected stat answer")
        };
        let kind = match a.kind {
            FileKind::Dir => 'd',
            FileKind::Symlink => 'l',
            FileKind::File => '-',
            FileKind::Fifo => 'p',
            FileKind::Socket => 's',
        };
        println!("{kind}{:04o} {:>12} {}", a.mode, a.size, String::from_utf8_lossy(&p));
        if a.kind == FileKind::Dir {
            list(m, &p)?;
        }
    }
    Ok(())
}
