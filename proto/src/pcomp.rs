//! Run sessions between `lego run` and a pComponent daemon (`lego pcomp`).
//!
//! After the handshake the client sends [`ToPcomp::Run`]; the pComponent starts the process and
//! answers [`FromPcomp::Started`] (or [`FromPcomp::Refused`]). From then on both sides stream:
//! the client its standard input ([`ToPcomp::Stdin`], then [`ToPcomp::StdinClosed`]), the
//! pComponent the program's output ([`FromPcomp::Stdout`], [`FromPcomp::Stderr`]) and at last
//! its exit status ([`FromPcomp::Exited`]). A client that goes away ends the process.
//!
//! Every message is one control frame ([`crate::frame::Op::Control`]) with a bincode body, on a
//! blocking socket: [`send`] and [`recv`].

use std::io::{Read, Write};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::error::ProtoError;
use crate::frame::{Header, Op, Status, HEADER_LEN, MAX_CONTROL_LEN};

/// Largest chunk of standard input or output in one message.
pub const CHUNK: usize = 64 * 1024;

/// A program to run in a vNode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// The vNode, which the global managers place.
    pub vnode: String,
    /// Path of the program in the vNode's files.
    pub program: Vec<u8>,
    /// The program's argv, argv\[0\] included.
    pub argv: Vec<Vec<u8>>,
    /// The program's environment, `KEY=VALUE` each.
    pub envp: Vec<Vec<u8>>,
    /// Address space, if not the vNode's.
    pub mem: Option<u64>,
    /// ExCache size, if not the vNode's.
    pub excache: Option<u64>,
    /// Lines per ExCache set.
    pub excache_ways: u32,
    /// CLOCK replacement instead of FIFO.
    pub excache_clock: bool,
    /// Most ExCache lines prefetched after a sequential miss (0: none).
    pub excache_prefetch: u32,
    /// Run the ExCache's background cleaner.
    pub excache_cleaner: bool,
    /// vRegion size.
    pub vregion_size: u64,
    /// Seconds to wait for a mem-server before giving the process up.
    pub mem_timeout_s: u64,
    /// Copies of the process's memory (1 or 2).
    pub replicas: u8,
    /// Trace every system call to standard error.
    pub trace_syscalls: bool,
    /// Signals the client had ignored, one bit per signal (`1 << (signal - 1)`): the process
    /// starts with them ignored, as if the client had `execve`d it.
    pub ignored_signals: u64,
    /// Signals the client had blocked, the same way: the process starts with them blocked.
    pub blocked_signals: u64,
    /// Print system-call and ExCache statistics to standard error at exit.
    pub stats: bool,
    /// Addresses outside the virtual IP space are reachable (`--egress`).
    pub egress: bool,
    /// Ports of the vNode published on the pComponent host, `HOSTPORT:VPORT` each.
    pub publish: Vec<String>,
}

/// Client to pComponent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToPcomp {
    /// Start this program (the first message, and only once).
    Run(RunRequest),
    /// Bytes for the program's standard input.
    Stdin(Vec<u8>),
    /// The client's standard input ended.
    StdinClosed,
}

/// pComponent to client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromPcomp {
    /// The process started; `pid` is its VMM's process id on the pComponent.
    Started {
        /// Host process id of the VMM running the program.
        pid: u32,
    },
    /// The process could not be started.
    Refused(String),
    /// Bytes the program wrote to standard output.
    Stdout(Vec<u8>),
    /// Bytes the program (or its VMM) wrote to standard error.
    Stderr(Vec<u8>),
    /// The process ended with this status, as a shell reports it (128+N for signal N).
    Exited {
        /// The status.
        status: u8,
    },
}

/// Writes one message.
pub fn send<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), ProtoError> {
    let body = encode(msg);
    if body.len() > MAX_CONTROL_LEN {
        return Err(ProtoError::Oversized { op: "Control".into(), len: body.len() });
    }
    let mut h = Header::request(Op::Control, 0, 0, 0, 0);
    h.len = body.len() as u32;
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&h.encode());
    frame.extend_from_slice(&body);
    w.write_all(&frame).map_err(|source| ProtoError::Io { peer: "run session".into(), source })
}

/// Reads one message; `Ok(None)` if the peer closed the connection between messages.
pub fn recv<T: DeserializeOwned>(r: &mut impl Read) -> Result<Option<T>, ProtoError> {
    let io = |source| ProtoError::Io { peer: "run session".into(), source };
    let mut hb = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut hb[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtoError::Malformed("the peer closed the connection in the middle of a frame".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    let h = Header::decode(&hb)?;
    if h.op != Op::Control || h.status != Status::Ok {
        return Err(ProtoError::Malformed(format!("a {:?} frame in a run session", h.op)));
    }
    let mut body = vec![0u8; h.len as usize];
    r.read_exact(&mut body).map_err(io)?;
    decode(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_eof_between_frames_is_none() {
        let mut wire = Vec::new();
        let run = ToPcomp::Run(RunRequest {
            vnode: "v".into(),
            program: b"/bin/x".to_vec(),
            argv: vec![b"x".to_vec(), b"-n".to_vec()],
            envp: vec![b"A=1".to_vec()],
            mem: Some(1 << 30),
            excache: None,
            excache_ways: 64,
            excache_clock: true,
            excache_prefetch: 16,
            excache_cleaner: true,
            vregion_size: 1 << 30,
            mem_timeout_s: 30,
            replicas: 1,
            trace_syscalls: false,
            ignored_signals: 0b11,
            blocked_signals: 0b100,
            stats: true,
            egress: false,
            publish: Vec::new(),
        });
        send(&mut wire, &run).unwrap();
        send(&mut wire, &ToPcomp::Stdin(vec![7; CHUNK])).unwrap();
        let mut r = &wire[..];
        assert_eq!(recv::<ToPcomp>(&mut r).unwrap(), Some(run));
        assert_eq!(recv::<ToPcomp>(&mut r).unwrap(), Some(ToPcomp::Stdin(vec![7; CHUNK])));
        assert_eq!(recv::<ToPcomp>(&mut r).unwrap(), None);
    }

    #[test]
    fn truncated_and_foreign_frames_are_errors() {
        let mut wire = Vec::new();
        send(&mut wire, &FromPcomp::Exited { status: 3 }).unwrap();
        assert!(recv::<FromPcomp>(&mut &wire[..wire.len() - 1]).is_err(), "truncated body");
        assert!(recv::<FromPcomp>(&mut &wire[..10]).is_err(), "truncated header");
        let fetch = Header::request(Op::Fetch, 1, 0, 0, 0).encode();
        assert!(recv::<FromPcomp>(&mut &fetch[..]).is_err(), "a page-path frame");
        let mut garbage = wire.clone();
        garbage[HEADER_LEN] = 0xff;
        assert!(recv::<FromPcomp>(&mut &garbage[..]).is_err(), "an undecodable body");
    }
}
