//! Thin owners of rdma-core's verbs objects (through `ibverbs-sys`, the bindings the `ibverbs`
//! crate is built on: the crate's safe API has no RDMA WRITE with immediate and lends its queue
//! pairs for a lifetime, which a connection kept in a struct cannot hold). Each type frees what
//! it owns when dropped, in the order verbs requires (queue pair, then its completion queues;
//! memory region, then its memory; protection domain, then the device context).

use std::alloc::Layout;
use std::io;
use std::sync::Arc;

use ibverbs_sys as ffi;

use super::params::{ConnectParams, RtsPermit};
use super::unavailable::{RdmaUnavailable, DEVICE_GLOB};

/// The port every queue pair uses.
const PORT: u8 = 1;
/// The GID table entry used (0: the port's default GID; RoCE v2 setups may need another).
const GID_INDEX: i32 = 0;

fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn check(what: &str, rc: i32) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        // Verbs calls return the errno itself (not -1 with errno set).
        e => Err(io::Error::new(io::Error::from_raw_os_error(e).kind(), format!("{what}: {}", io::Error::from_raw_os_error(e)))),
    }
}

/// An open RDMA device with its protection domain and the address of its port.
pub struct Device {
    ctx: *mut ffi::ibv_context,
    pd: *mut ffi::ibv_pd,
    /// The device's name.
    pub name: String,
    lid: u16,
    gid: [u8; 16],
    mtu: u8,
}

// SAFETY: libibverbs objects may be used from any thread (the library locks internally); the
// pointers are only freed in `Drop`, once no `Arc` is left.
unsafe impl Send for Device {}
// SAFETY: as above; `Device` has no interior state of its own.
unsafe impl Sync for Device {}

impl Device {
    /// Opens the device named `wanted` (any, if `None`) and checks that its port is active.
    pub fn open(wanted: Option<&str>, peer: &str) -> Result<Arc<Device>, RdmaUnavailable> {
        let looked = wanted.map_or_else(|| DEVICE_GLOB.to_string(), str::to_string);
        let no_device = |why: String| RdmaUnavailable::NoDevice { device: looked.clone(), why, peer: peer.to_string() };
        let mut n = 0i32;
        // SAFETY: `n` is a valid out-pointer; the list is freed below.
        let list = unsafe { ffi::ibv_get_device_list(&mut n) };
        if list.is_null() {
            return Err(no_device(format!("ibv_get_device_list: {}", io::Error::last_os_error())));
        }
        let mut found = None;
        for i in 0..n.max(0) as usize {
            // SAFETY: the list holds `n` valid device pointers.
            let dev = unsafe { *list.add(i) };
            // SAFETY: a listed device has a NUL-terminated name.
            let name = unsafe { std::ffi::CStr::from_ptr(ffi::ibv_get_device_name(dev)) }.to_string_lossy().into_owned();
            if wanted.is_none_or(|w| w == name) {
                // SAFETY: `dev` comes from the live list.
                found = Some((name, unsafe { ffi::ibv_open_device(dev) }));
                break;
            }
        }
        // SAFETY: the list came from ibv_get_device_list; an opened context outlives it.
        unsafe { ffi::ibv_free_device_list(list) };
        let (name, ctx) = found.ok_or_else(|| no_device(format!("{n} devices listed, none of that name")))?;
        let unusable = |why: String| RdmaUnavailable::Unusable { device: name.clone(), why, peer: peer.to_string() };
        if ctx.is_null() {
            return Err(unusable(last_error("ibv_open_device").to_string()));
        }
        // The device is ours from here: `Device::drop` closes it on every error path.
        let mut device = Device { ctx, pd: std::ptr::null_mut(), name: name.clone(), lid: 0, gid: [0; 16], mtu: 0 };
        let mut port = ffi::ibv_port_attr::default();
        // SAFETY: a live context and an out-struct of the layout ibv_query_port fills.
        let rc = unsafe { ffi::ibv_query_port(ctx, PORT, (&mut port as *mut ffi::ibv_port_attr).cast()) };
        check("ibv_query_port", rc).map_err(|e| unusable(e.to_string()))?;
        if port.state != ffi::ibv_port_state::IBV_PORT_ACTIVE {
            return Err(unusable(format!("port {PORT} is not active (state {})", port.state)));
        }
        let mut gid = ffi::ibv_gid::default();
        // SAFETY: a live context and an out-union of 16 bytes.
        let rc = unsafe { ffi::ibv_query_gid(ctx, PORT, GID_INDEX, &mut gid) };
        check("ibv_query_gid", rc).map_err(|e| unusable(e.to_string()))?;
        // SAFETY: every bit pattern of the union is a valid byte array.
        device.gid = unsafe { gid.raw };
        device.lid = port.lid;
        device.mtu = port.active_mtu as u8;
        // SAFETY: a live context.
        device.pd = unsafe { ffi::ibv_alloc_pd(ctx) };
        if device.pd.is_null() {
            return Err(unusable(last_error("ibv_alloc_pd").to_string()));
        }
        Ok(Arc::new(device))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: every region and queue pair holds an `Arc<Device>`, so none is left; the
        // pointers were returned by the verbs calls that allocate them (or are null).
        unsafe {
            if !self.pd.is_null() {
                ffi::ibv_dealloc_pd(self.pd);
            }
            ffi::ibv_close_device(self.ctx);
        }
    }
}

/// Page-aligned memory registered with a device.
pub struct Region {
    dev: Arc<Device>,
    mem: *mut u8,
    layout: Layout,
    mr: *mut ffi::ibv_mr,
}

// SAFETY: the memory is owned by the region; concurrent access goes through raw pointers whose
// users (one transport or one poller) follow the ring protocol.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// `len` zeroed bytes, registered for local access and, if `remote_write`, for RDMA WRITEs
    /// by the peer that gets its rkey (one region per peer and connection, nothing else in it).
    pub fn new(dev: &Arc<Device>, len: usize, remote_write: bool) -> io::Result<Region> {
        let layout = Layout::from_size_align(len.max(1), 4096).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a non-zero size.
        let mem = unsafe { std::alloc::alloc_zeroed(layout) };
        if mem.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, format!("{len} bytes for an RDMA region")));
        }
        let mut access = ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE;
        if remote_write {
            access |= ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE;
        }
        // SAFETY: `mem` is `len` bytes we own until `Drop`, which deregisters first.
        let mr = unsafe { ffi::ibv_reg_mr(dev.pd, mem.cast(), layout.size(), access.0 as i32) };
        if mr.is_null() {
            let e = last_error("ibv_reg_mr");
            // SAFETY: allocated above with `layout`.
            unsafe { std::alloc::dealloc(mem, layout) };
            return Err(e);
        }
        Ok(Region { dev: dev.clone(), mem, layout, mr })
    }

    /// Address of the region (what the peer writes to).
    pub fn addr(&self) -> u64 {
        self.mem as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Always false: a region has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Remote key.
    pub fn rkey(&self) -> u32 {
        // SAFETY: `mr` is live until `Drop`.
        unsafe { (*self.mr).rkey }
    }

    fn lkey(&self) -> u32 {
        // SAFETY: `mr` is live until `Drop`.
        unsafe { (*self.mr).lkey }
    }

    /// Pointer to byte `off`, `len` bytes of which lie inside the region (panics otherwise).
    pub fn at(&self, off: usize, len: usize) -> *mut u8 {
        assert!(off.checked_add(len).is_some_and(|end| end <= self.len()), "{off}+{len} outside a region of {}", self.len());
        // SAFETY: in bounds, checked above.
        unsafe { self.mem.add(off) }
    }

    /// Copies `src` to byte `off`.
    pub fn write(&self, off: usize, src: &[u8]) {
        let dst = self.at(off, src.len());
        // SAFETY: in bounds; the bytes are ours (the peer writes only into slots whose owner is
        // waiting for it, by the ring protocol).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
    }

    /// Copies `dst.len()` bytes from byte `off`.
    pub fn read(&self, off: usize, dst: &mut [u8]) {
        let src = self.at(off, dst.len());
        // SAFETY: as in `write`.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
    }

    /// Reads the 8-byte stamp at `off` (aligned), as the NIC may write it at any time.
    pub fn stamp(&self, off: usize) -> u64 {
        let p = self.at(off, 8).cast::<u64>();
        assert!(p.is_aligned(), "stamp at {off} is not aligned");
        // SAFETY: aligned, in bounds; a volatile read because the NIC writes it behind our back.
        let v = unsafe { std::ptr::read_volatile(p) };
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        v
    }

    /// Sets the 8-byte stamp at `off`.
    pub fn set_stamp(&self, off: usize, v: u64) {
        let p = self.at(off, 8).cast::<u64>();
        // SAFETY: aligned (checked in `stamp`'s layout), in bounds.
        unsafe { std::ptr::write_volatile(p, v) };
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: deregistered before the memory is freed; both came from `new`.
        unsafe {
            ffi::ibv_dereg_mr(self.mr);
            std::alloc::dealloc(self.mem, self.layout);
        }
        let _ = &self.dev;
    }
}

/// A reliable-connected queue pair with its own send and receive completion queues.
pub struct QueuePair {
    dev: Arc<Device>,
    qp: *mut ffi::ibv_qp,
    send_cq: *mut ffi::ibv_cq,
    recv_cq: *mut ffi::ibv_cq,
    psn: u32,
}

// SAFETY: as for `Device`: verbs objects are thread-safe, freed only in `Drop`.
unsafe impl Send for QueuePair {}

/// Where in the peer's memory a write goes.
#[derive(Clone, Copy, Debug)]
pub struct Remote {
    /// Address in the peer's region.
    pub addr: u64,
    /// The region's remote key.
    pub rkey: u32,
}

/// One piece of a region to send.
#[derive(Clone, Copy, Debug)]
pub struct Piece {
    /// Offset in the region.
    pub off: usize,
    /// Bytes.
    pub len: usize,
}

impl QueuePair {
    /// A queue pair in RESET with room for `send` outstanding send and `recv` receive requests.
    pub fn new(dev: &Arc<Device>, send: u32, recv: u32) -> io::Result<QueuePair> {
        // SAFETY: a live context; no completion channel.
        let send_cq = unsafe { ffi::ibv_create_cq(dev.ctx, send as i32, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        if send_cq.is_null() {
            return Err(last_error("ibv_create_cq"));
        }
        // SAFETY: as above.
        let recv_cq = unsafe { ffi::ibv_create_cq(dev.ctx, recv.max(1) as i32, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        let mut qp = QueuePair { dev: dev.clone(), qp: std::ptr::null_mut(), send_cq, recv_cq, psn: 0 };
        if recv_cq.is_null() {
            return Err(last_error("ibv_create_cq"));
        }
        let mut attr = ffi::ibv_qp_init_attr {
            send_cq,
            recv_cq,
            cap: ffi::ibv_qp_cap { max_send_wr: send, max_recv_wr: recv.max(1), max_send_sge: 2, max_recv_sge: 1, max_inline_data: 0 },
            qp_type: ffi::ibv_qp_type::IBV_QPT_RC,
            sq_sig_all: 0,
            ..Default::default()
        };
        // SAFETY: a live protection domain and a filled init struct.
        qp.qp = unsafe { ffi::ibv_create_qp(dev.pd, &mut attr) };
        if qp.qp.is_null() {
            return Err(last_error("ibv_create_qp"));
        }
        let mut psn = [0u8; 4];
        getrandom::fill(&mut psn).map_err(|e| io::Error::other(format!("random PSN: {e}")))?;
        qp.psn = u32::from_le_bytes(psn) & 0xff_ffff;
        Ok(qp)
    }

    /// What the peer needs to reach this queue pair and `region` (of a ring of `slots` slots).
    pub fn params(&self, region: &Region, slots: u32) -> ConnectParams {
        ConnectParams {
            lid: self.dev.lid,
            gid: self.dev.gid,
            // SAFETY: `qp` is live.
            qpn: unsafe { (*self.qp).qp_num },
            psn: self.psn,
            rkey: region.rkey(),
            addr: region.addr(),
            len: region.len() as u64,
            slots,
            mtu: self.dev.mtu,
        }
    }

    /// Brings the queue pair through INIT and RTR to RTS toward the peer of `permit` (which only
    /// an authenticated connection with validated parameters yields).
    pub fn connect(&mut self, permit: &RtsPermit) -> io::Result<()> {
        use ffi::ibv_qp_attr_mask as M;
        let remote = &permit.remote;
        let mut a = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_INIT,
            pkey_index: 0,
            port_num: PORT,
            qp_access_flags: ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0,
            ..Default::default()
        };
        self.modify("INIT", &mut a, M::IBV_QP_STATE | M::IBV_QP_PKEY_INDEX | M::IBV_QP_PORT | M::IBV_QP_ACCESS_FLAGS)?;
        let mut a = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_RTR,
            path_mtu: u32::from(remote.mtu.min(self.dev.mtu)),
            dest_qp_num: remote.qpn,
            rq_psn: remote.psn,
            max_dest_rd_atomic: 1,
            min_rnr_timer: 12,
            ..Default::default()
        };
        a.ah_attr.dlid = remote.lid;
        a.ah_attr.port_num = PORT;
        if remote.gid != [0; 16] {
            a.ah_attr.is_global = 1;
            a.ah_attr.grh.dgid.raw = remote.gid;
            a.ah_attr.grh.sgid_index = GID_INDEX as u8;
            a.ah_attr.grh.hop_limit = 64;
        }
        let rtr = M::IBV_QP_STATE
            | M::IBV_QP_AV
            | M::IBV_QP_PATH_MTU
            | M::IBV_QP_DEST_QPN
            | M::IBV_QP_RQ_PSN
            | M::IBV_QP_MAX_DEST_RD_ATOMIC
            | M::IBV_QP_MIN_RNR_TIMER;
        self.modify("RTR", &mut a, rtr)?;
        let mut a = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_RTS,
            sq_psn: self.psn,
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
            max_rd_atomic: 1,
            ..Default::default()
        };
        let rts = M::IBV_QP_STATE | M::IBV_QP_SQ_PSN | M::IBV_QP_TIMEOUT | M::IBV_QP_RETRY_CNT | M::IBV_QP_RNR_RETRY | M::IBV_QP_MAX_QP_RD_ATOMIC;
        self.modify("RTS", &mut a, rts)
    }

    fn modify(&mut self, state: &str, attr: &mut ffi::ibv_qp_attr, mask: ffi::ibv_qp_attr_mask) -> io::Result<()> {
        // SAFETY: a live queue pair and a filled attribute struct.
        let rc = unsafe { ffi::ibv_modify_qp(self.qp, attr, mask.0 as i32) };
        check(&format!("moving the queue pair to {state}"), rc)
    }

    /// Posts an RDMA WRITE of `pieces` of `region` (gathered in order) to `to`, with `imm` as
    /// immediate data if given; `signaled` asks for a completion.
    pub fn write(&self, wr_id: u64, region: &Region, pieces: &[Piece], to: Remote, imm: Option<u32>, signaled: bool) -> io::Result<()> {
        let mut sges: Vec<ffi::ibv_sge> = pieces
            .iter()
            .map(|p| ffi::ibv_sge { addr: region.at(p.off, p.len) as u64, length: p.len as u32, lkey: region.lkey() })
            .collect();
        let mut wr = ffi::ibv_send_wr {
            wr_id,
            sg_list: sges.as_mut_ptr(),
            num_sge: sges.len() as i32,
            opcode: match imm {
                Some(_) => ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM,
                None => ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE,
            },
            send_flags: if signaled { ffi::ibv_send_flags::IBV_SEND_SIGNALED.0 } else { 0 },
            ..Default::default()
        };
        wr.__bindgen_anon_1.imm_data = imm.unwrap_or(0).to_be();
        wr.wr.rdma = ffi::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 { remote_addr: to.addr, rkey: to.rkey };
        let mut bad: *mut ffi::ibv_send_wr = std::ptr::null_mut();
        // SAFETY: post_send is in the context's ops table of a live queue pair; the work request
        // and its scatter list live across the call, and the NIC reads the region (which the
        // caller keeps alive and unchanged until the write is known done) afterwards.
        let rc = unsafe {
            let ctx = (*self.qp).context;
            let post = (*ctx).ops.post_send.ok_or_else(|| io::Error::other("the device has no post_send"))?;
            post(self.qp, &mut wr, &mut bad)
        };
        check("ibv_post_send", rc)
    }

    /// Posts a receive request without buffer: it takes the immediate of one RDMA WRITE.
    pub fn post_recv(&self, wr_id: u64) -> io::Result<()> {
        let mut wr = ffi::ibv_recv_wr { wr_id, next: std::ptr::null_mut(), sg_list: std::ptr::null_mut(), num_sge: 0 };
        let mut bad: *mut ffi::ibv_recv_wr = std::ptr::null_mut();
        // SAFETY: as in `write`; the request has no scatter list.
        let rc = unsafe {
            let ctx = (*self.qp).context;
            let post = (*ctx).ops.post_recv.ok_or_else(|| io::Error::other("the device has no post_recv"))?;
            post(self.qp, &mut wr, &mut bad)
        };
        check("ibv_post_recv", rc)
    }

    /// Polls the send completions into `wc`; a failed one is an error.
    pub fn poll_send(&self, wc: &mut [ffi::ibv_wc]) -> io::Result<usize> {
        poll(self.send_cq, wc)
    }

    /// Polls the receive completions into `wc`; a failed one is an error.
    pub fn poll_recv(&self, wc: &mut [ffi::ibv_wc]) -> io::Result<usize> {
        poll(self.recv_cq, wc)
    }
}

fn poll(cq: *mut ffi::ibv_cq, wc: &mut [ffi::ibv_wc]) -> io::Result<usize> {
    // SAFETY: poll_cq is in the ops table of the live completion queue's context; it fills at
    // most `wc.len()` entries of the caller's array.
    let n = unsafe {
        let ctx = (*cq).context;
        let poll = (*ctx).ops.poll_cq.ok_or_else(|| io::Error::other("the device has no poll_cq"))?;
        poll(cq, wc.len() as i32, wc.as_mut_ptr())
    };
    if n < 0 {
        return Err(io::Error::other("ibv_poll_cq failed"));
    }
    let n = n as usize;
    if let Some((status, vendor)) = wc[..n].iter().find_map(|w| w.error()) {
        return Err(io::Error::other(format!("work request failed: status {status} (vendor error {vendor:#x})")));
    }
    Ok(n)
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: the queue pair goes before its completion queues; all came from `new` (or
        // are null when `new` failed part way).
        unsafe {
            if !self.qp.is_null() {
                ffi::ibv_destroy_qp(self.qp);
            }
            if !self.recv_cq.is_null() {
                ffi::ibv_destroy_cq(self.recv_cq);
            }
            ffi::ibv_destroy_cq(self.send_cq);
        }
    }
}
