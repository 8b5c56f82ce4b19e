//! The frames of one connection: page requests, owner calls, home calls and file requests.
//!
//! Page requests (fetch, flush, the piggybacked flush+fetch) and owner calls take the owner's
//! lock for the length of one page copy or one vma-tree change. Home calls (process creation,
//! memory system calls, exit) may have to wait on other mem-servers: they run under
//! `block_in_place` holding only the lock of their own process, never the owner's lock while a
//! peer is being waited on.
//!
//! Every process this server is home for holds a *lease*, renewed by its pComponent
//! ([`Request::Renew`]) and by each of its memory calls. The global manager reclaims the memory
//! of a process that stopped reporting ([`Request::Reclaim`]) only through its home, which
//! refuses while the lease is fresh: a live process whose reports to the manager are lost keeps
//! its memory. Once reclaimed, the process is unknown to the home and to its owners, so a
//! pComponent that was only cut off gets refusals (and ends the program), never wrong data.

use lego_proto::sync::LockExt;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use lego_proto::aio::{push_reply, FrameHandler};
use lego_proto::codec::{decode, encode};
use lego_proto::frame::{Header, Op, Status, HEADER_LEN, MAX_CONTROL_LEN, MAX_RUN_PAGES};
use lego_proto::handshake::{ComponentKind, Hello};
use lego_proto::mm::{MemCall, OwnerCall, OwnerOutcome, ProcessSpec, Reply, Request, ServerStat};
use lego_proto::storage::StorageReply;
use lego_proto::transport::{poll_readable, DEFAULT_POLL};

use crate::buffer_cache::CacheFigures;
use crate::file_shards::FileShards;
use crate::gmm::Gmm;
use crate::home::{HomeProcess, OwnerFailure, Owners};
use crate::owner::{Owner, OwnerError};
use crate::peers::Peers;
use crate::poll_gate::PollGate;
use crate::store::ZERO_PAGE;

/// Kinds of peers a mem-server talks to.
pub(crate) const ACCEPTS: [ComponentKind; 4] =
    [ComponentKind::Processor, ComponentKind::Memory, ComponentKind::Client, ComponentKind::Global];

/// A process this server is home for, when its pComponent last showed it alive, and the
/// process here it was forked from (while that one is homed here: a process that goes leaves
/// its children to its own parent, as `init` adopts orphans).
struct Homed {
    process: Arc<Mutex<HomeProcess>>,
    renewed: Instant,
    parent: Option<u64>,
}

impl Homed {
    fn new(process: Arc<Mutex<HomeProcess>>, parent: Option<u64>) -> Homed {
        Homed { process, renewed: Instant::now(), parent }
    }
}

/// Removes `proc` from `homes`, leaving its children to its parent.
fn unhome(homes: &mut HashMap<u64, Homed>, proc: u64) -> Option<Homed> {
    let gone = homes.remove(&proc)?;
    for h in homes.values_mut().filter(|h| h.parent == Some(proc)) {
        h.parent = gone.parent;
    }
    Some(gone)
}

/// State shared by every connection of one server.
pub(crate) struct Shared {
    me: Hello,
    owner: Mutex<Owner>,
    /// The buffer cache, in shards each with its own connection to the storage server.
    files: FileShards,
    /// The storage server's address, for statistics.
    storage: Option<String>,
    homes: Mutex<HashMap<u64, Homed>>,
    peers: Peers,
    gmm: Option<Gmm>,
    traffic: Traffic,
    /// A page-path connection is polling for its next request (see `Conn::idle`).
    pollers: AtomicBool,
    /// Whether the host has a core to spare for that polling.
    poll_gate: PollGate,
}

/// Requests served since start, by operation, and the bytes of their frames: the `requests` of
/// the heartbeat load and the server's metrics.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// Indexed like [`OPS`].
    requests: [AtomicU64; 5],
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
}

/// Names of the operations [`Traffic`] counts, for the metrics' `op` label.
pub(crate) const OPS: [&str; 5] = ["fetch", "flush", "flush_fetch", "control", "fetch_run"];

impl Traffic {
    fn count(&self, op: Op, received: usize, sent: usize) {
        let i = match op {
            Op::Fetch => 0,
            Op::Flush => 1,
            Op::FlushFetch => 2,
            Op::Control | Op::RdmaConnect => 3,
            Op::FetchRun => 4,
        };
        self.requests[i].fetch_add(1, Ordering::Relaxed);
        self.received_bytes.fetch_add(received as u64, Ordering::Relaxed);
        self.sent_bytes.fetch_add(sent as u64, Ordering::Relaxed);
    }

    /// Requests of each operation in [`OPS`].
    pub(crate) fn requests(&self) -> [u64; 5] {
        self.requests.each_ref().map(|n| n.load(Ordering::Relaxed))
    }

    /// Bytes of request frames received, and of reply frames sent (headers included).
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (self.received_bytes.load(Ordering::Relaxed), self.sent_bytes.load(Ordering::Relaxed))
    }
}

impl Shared {
    /// A server of `capacity_pages` frames in `cluster`, caching the files of `storage` in a
    /// buffer cache of `buffer_cache_bytes`, asking `gmm` for the owners of new vRegions.
    pub(crate) fn new(capacity_pages: u64, cluster: u64, storage: Option<String>, buffer_cache_bytes: u64, gmm: Option<Gmm>) -> Shared {
        Shared {
            me: Hello::new(ComponentKind::Memory, cluster),
            owner: Mutex::new(Owner::new(capacity_pages)),
            files: FileShards::new(buffer_cache_bytes, storage.clone(), cluster),
            storage,
            homes: Mutex::new(HashMap::new()),
            peers: Peers::new(cluster),
            gmm,
            traffic: Traffic::default(),
            pollers: AtomicBool::new(false),
            poll_gate: PollGate::new(),
        }
    }

    /// Keeps the secondary copies in `log` from now on (before the server serves anything).
    pub(crate) fn set_backup(&self, log: crate::backup::BackupLog) {
        self.owner.lock_unpoisoned().set_backup(log);
    }

    /// What the backup log has done, if the server has one.
    pub(crate) fn backup(&self) -> Option<crate::backup::BackupFigures> {
        self.owner.lock_unpoisoned().backup().map(|b| b.figures())
    }

    /// How this server introduces itself.
    pub(crate) fn me(&self) -> Hello {
        self.me
    }

    /// Requests served and their bytes.
    pub(crate) fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Whether page-path connections may poll for their next request, and how much of its
    /// CPU time polling has taken.
    pub(crate) fn poll_gate(&self) -> &PollGate {
        &self.poll_gate
    }

    /// The buffer cache's figures.
    pub(crate) fn cache(&self) -> CacheFigures {
        self.files.figures()
    }

    /// Capacity and load.
    pub(crate) fn stat(&self) -> ServerStat {
        let (capacity_pages, used_pages, vregions) = {
            let o = self.owner.lock_unpoisoned();
            (o.store().capacity_pages(), o.store().used_pages(), o.vregions())
        };
        ServerStat {
            capacity_pages,
            used_pages,
            vregions,
            homed: self.homes.lock_unpoisoned().len() as u64,
            requests: self.traffic.requests().iter().sum(),
            storage: self.storage.clone(),
        }
    }

    fn process(&self, proc: u64) -> Option<Arc<Mutex<HomeProcess>>> {
        self.homes.lock_unpoisoned().get(&proc).map(|h| h.process.clone())
    }

    /// The process, its lease renewed: a request of its pComponent shows it alive.
    fn renewed(&self, proc: u64) -> Option<Arc<Mutex<HomeProcess>>> {
        let mut homes = self.homes.lock_unpoisoned();
        let h = homes.get_mut(&proc)?;
        h.renewed = Instant::now();
        Some(h.process.clone())
    }

    fn create(&self, proc: u64, spec: ProcessSpec) -> Reply {
        let home = match HomeProcess::new(proc, spec) {
            Ok(h) => Arc::new(Mutex::new(h)),
            Err(e) => return Reply::Mem(Err(e)),
        };
        {
            let mut homes = self.homes.lock_unpoisoned();
            if homes.contains_key(&proc) {
                return Reply::Mem(Err(libc::EEXIST));
            }
            homes.insert(proc, Homed::new(home.clone(), None));
        }
        let mut p = home.lock_unpoisoned();
        let mut route = Route::new(self, &p);
        let r = p.start(&mut route);
        if !matches!(r, Ok(Ok(_))) {
            self.homes.lock_unpoisoned().remove(&proc);
        }
        match r {
            Ok(outcome) => Reply::Mem(outcome),
            Err(e) => Reply::Failed(format!("creating process {proc}: {e}")),
        }
    }

    fn mem(&self, proc: u64, call: MemCall) -> Result<Reply, Status> {
        let home = self.renewed(proc).ok_or(Status::UnknownProcess)?;
        let mut p = home.lock_unpoisoned();
        let mut route = Route::new(self, &p);
        Ok(match p.call(call, &mut route) {
            Ok(outcome) => Reply::Mem(outcome),
            Err(e) => Reply::Failed(format!("process {proc}: {e}")),
        })
    }

    /// Makes `child` a copy of `parent`, homed here too.
    fn fork(&self, child: u64, parent: u64) -> Result<Reply, Status> {
        let home = self.renewed(parent).ok_or(Status::UnknownProcess)?;
        if self.process(child).is_some() {
            return Ok(Reply::Mem(Err(libc::EEXIST)));
        }
        let p = home.lock_unpoisoned();
        let mut route = Route::new(self, &p);
        Ok(match p.fork(child, &mut route) {
            Ok(Ok((copy, outcome))) => {
                self.homes.lock_unpoisoned().insert(child, Homed::new(Arc::new(Mutex::new(copy)), Some(parent)));
                Reply::Mem(Ok(outcome))
            }
            Ok(Err(errno)) => Reply::Mem(Err(errno)),
            Err(e) => Reply::Failed(format!("forking process {parent} as {child}: {e}")),
        })
    }

    fn exit(&self, proc: u64) -> Result<Reply, Status> {
        let home = unhome(&mut self.homes.lock_unpoisoned(), proc).ok_or(Status::UnknownProcess)?;
        Ok(self.release(proc, &home.process))
    }

    /// Releases `proc`, no longer in `homes`, at every owner and secondary.
    fn release(&self, proc: u64, home: &Mutex<HomeProcess>) -> Reply {
        let mut p = home.lock_unpoisoned();
        let mut route = Route::new(self, &p);
        match p.exit(&mut route) {
            Ok(()) => Reply::Done,
            Err(e) => Reply::Failed(format!("releasing process {proc}: {e}")),
        }
    }

    /// The global manager's reclamation of `proc` (see the module's documentation): released
    /// unless its lease was renewed within `silent`. The check and the removal are one step
    /// under the lock of `homes`, so a renewal either comes first (and keeps the process) or
    /// finds it gone.
    ///
    /// The processes forked from it here (and from those) go with it, whatever the age of their
    /// own leases: one VMM runs a process and all it forks, so they fell silent together (a
    /// child forked after the process's last renewal only looks younger), and a child that
    /// lived less than a report interval (a shell's `sleep`) was never reported to the
    /// manager, which would never reclaim it otherwise.
    fn reclaim(&self, proc: u64, silent: Duration) -> Result<Reply, Status> {
        let family = {
            let mut homes = self.homes.lock_unpoisoned();
            let h = homes.get(&proc).ok_or(Status::UnknownProcess)?;
            let age = h.renewed.elapsed();
            if age < silent {
                tracing::debug!(proc, renewed_ms_ago = age.as_millis() as u64, "reclamation refused: the process renewed its lease");
                return Ok(Reply::Alive { renewed_ms_ago: age.as_millis() as u64 });
            }
            let mut family = vec![proc];
            let mut i = 0;
            while let Some(&p) = family.get(i) {
                let children = homes.iter().filter(|(_, h)| h.parent == Some(p));
                family.extend(children.map(|(&child, _)| child).collect::<Vec<_>>());
                i += 1;
            }
            family.into_iter().filter_map(|p| unhome(&mut homes, p).map(|h| (p, h.process))).collect::<Vec<_>>()
        };
        let mut reply = Reply::Done;
        for (p, home) in family {
            tracing::info!(proc = p, of = proc, "reclaiming the memory of a process that fell silent");
            let released = self.release(p, &home);
            if p == proc {
                reply = released;
            }
        }
        Ok(reply)
    }

    /// Serves a control request; `Err` is a status for the reply header.
    fn control(&self, proc: u64, body: &[u8]) -> Result<Reply, Status> {
        let req: Request = match decode(body) {
            Ok(r) => r,
            Err(e) => return Ok(Reply::Failed(e.to_string())),
        };
        match req {
            Request::Stat => Ok(Reply::Stat(self.stat())),
            Request::Owner(call) => match self.owner.lock_unpoisoned().call(proc, call) {
                Ok(outcome) => Ok(Reply::Owner(Ok(outcome))),
                Err(OwnerError::NotOwner) => Err(Status::NotOwner),
                Err(e) => Ok(Reply::Owner(Err(e.errno()))),
            },
            Request::CreateProcess(spec) => Ok(tokio::task::block_in_place(|| self.create(proc, spec))),
            Request::Mem(call) => tokio::task::block_in_place(|| self.mem(proc, call)),
            Request::ExitProcess => tokio::task::block_in_place(|| self.exit(proc)),
            Request::ReplicaLost { index, server, rebuild } => {
                let home = self.renewed(proc).ok_or(Status::UnknownProcess)?;
                let mut p = home.lock_unpoisoned();
                let mut route = Route::new(self, &p);
                Ok(Reply::Mem(Ok(tokio::task::block_in_place(|| p.replica_lost(index, &server, rebuild, &mut route)))))
            }
            Request::ForkProcess { parent } => tokio::task::block_in_place(|| self.fork(proc, parent)),
            Request::Renew => self.renewed(proc).map(|_| Reply::Done).ok_or(Status::UnknownProcess),
            Request::Reclaim { silent_ms } => tokio::task::block_in_place(|| self.reclaim(proc, Duration::from_millis(silent_ms))),
            // A read of cached pages is answered on the spot; anything that may wait for storage
            // leaves the async worker first.
            Request::File(req) => Ok(Reply::File(match self.files.cached_read(&req) {
                Some(reply) => reply,
                None => tokio::task::block_in_place(|| self.files.serve(req)),
            })),
            Request::FileClosed { vnode, path } => Ok(tokio::task::block_in_place(|| {
                Reply::File(self.files.write_back(&vnode, &path).map_or_else(StorageReply::Error, |()| StorageReply::Done))
            })),
        }
    }
}

/// The owners of one process as its home reaches them: itself directly, the others over the
/// network.
struct Route<'a> {
    shared: &'a Shared,
    servers: Vec<String>,
    home: usize,
}

impl<'a> Route<'a> {
    fn new(shared: &'a Shared, p: &HomeProcess) -> Route<'a> {
        Route { shared, servers: p.spec().servers.clone(), home: p.spec().home }
    }
}

impl Owners for Route<'_> {
    fn call(&mut self, owner: usize, proc: u64, call: OwnerCall) -> Result<OwnerOutcome, OwnerFailure> {
        if owner == self.home {
            return Ok(self.shared.owner.lock_unpoisoned().call(proc, call)?);
        }
        self.shared.peers.owner_call(&self.servers[owner], proc, call)
    }

    fn stat(&mut self, owner: usize) -> Result<ServerStat, OwnerFailure> {
        if owner == self.home {
            return Ok(self.shared.stat());
        }
        self.shared.peers.stat(&self.servers[owner])
    }

    fn gmm_owner(&mut self, among: &[String], vregion_size: u64) -> Option<String> {
        self.shared.gmm.as_ref()?.choose_owner(among, vregion_size)
    }
}

/// One connection's frame handler.
pub(crate) struct Conn {
    shared: Arc<Shared>,
    /// The connection carries page requests: it is a pComponent's page path, whose next miss
    /// follows within tens of microseconds, so the server polls for it.
    page_path: bool,
}

impl Conn {
    /// A handler for a new connection to the server sharing `shared`.
    pub(crate) fn new(shared: Arc<Shared>) -> Conn {
        Conn { shared, page_path: false }
    }

    /// Serves one request, appending its reply to `out`.
    fn serve(&mut self, req: &Header, payload: &[u8], out: &mut Vec<u8>) {
        match req.op {
            Op::Fetch | Op::Flush | Op::FlushFetch => {
                let mut owner = self.shared.owner.lock_unpoisoned();
                let flushed = match req.op {
                    Op::Fetch => Ok(()),
                    Op::Flush => owner.flush(req.proc, req.addr, payload),
                    _ => owner.flush(req.proc, req.addr2, payload),
                };
                let page = flushed.and_then(|()| match req.op {
                    Op::Flush => Ok(None),
                    _ => owner.fetch(req.proc, req.addr).map(|p| Some(p.unwrap_or(Cow::Borrowed(&ZERO_PAGE)))),
                });
                match page {
                    Ok(Some(p)) => push_reply(out, &req.reply(Status::Ok), &p[..]),
                    Ok(None) => push_reply(out, &req.reply(Status::Ok), &[]),
                    Err(status) => push_reply(out, &req.reply(status), &[]),
                }
            }
            Op::FetchRun => {
                let owner = self.shared.owner.lock_unpoisoned();
                let n = req.addr2.min(MAX_RUN_PAGES);
                match owner.fetch_run(req.proc, req.addr, n) {
                    Ok(pages) => {
                        out.extend_from_slice(&req.run_reply(pages.len() as u64).encode());
                        for p in pages {
                            out.extend_from_slice(&p.unwrap_or(Cow::Borrowed(&ZERO_PAGE))[..]);
                        }
                    }
                    Err(status) => push_reply(out, &req.reply(status), &[]),
                }
            }
            // Reached only without an RDMA service in front (`lego_proto::rdma::server`).
            Op::RdmaConnect => push_reply(out, &req.reply(Status::NoRdma), &[]),
            Op::Control => match self.shared.control(req.proc, payload) {
                Ok(reply) => {
                    let mut body = encode(&reply);
                    if body.len() > MAX_CONTROL_LEN {
                        body = encode(&Reply::Failed(format!("reply of {} bytes is too large", body.len())));
                    }
                    let mut h = req.reply(Status::Ok);
                    h.len = body.len() as u32;
                    push_reply(out, &h, &body);
                }
                Err(status) => push_reply(out, &req.reply(status), &[]),
            },
        }
    }
}

impl FrameHandler for Conn {
    fn handle(&mut self, req: &Header, payload: &[u8], out: &mut Vec<u8>) {
        self.page_path |= req.op != Op::Control;
        let before = out.len();
        self.serve(req, payload, out);
        self.shared.traffic.count(req.op, HEADER_LEN + payload.len(), out.len() - before);
    }

    /// A page-path connection polls for its next request, unless another one already does
    /// or the host has no core to spare ([`PollGate`]): a poller holds a core, and on a small
    /// machine the pComponent's vCPUs need the others.
    fn idle(&mut self, socket: BorrowedFd<'_>) {
        let pollers = &self.shared.pollers;
        if self.page_path && pollers.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            self.shared.poll_gate.poll(|| poll_readable(&socket, DEFAULT_POLL));
            pollers.store(false, Ordering::Release);
        }
    }
}
