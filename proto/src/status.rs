//! The status every reply carries in its frame header ([`crate::frame::Header::status`]).

/// Outcome of a request, in every reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Done.
    Ok = 0,
    /// The page lies in a vRegion this server does not own.
    NotOwner = 1,
    /// The server has no free frame left.
    NoSpace = 2,
    /// The server knows no such process.
    UnknownProcess = 3,
    /// The request was well formed but made no sense (e.g. an unaligned page address).
    BadRequest = 4,
    /// The server failed internally (e.g. a peer it needed was unreachable).
    Internal = 5,
    /// The server has no RDMA page path (no device, or not built with it).
    NoRdma = 6,
    /// The server, a secondary, has no room left in its backup log: its storage server is
    /// slower than the write-backs, or unreachable.
    LogFull = 7,
}

impl Status {
    /// The status with wire value `v`, if any.
    pub(crate) fn from_u32(v: u32) -> Option<Status> {
        Some(match v {
            0 => Status::Ok,
            1 => Status::NotOwner,
            2 => Status::NoSpace,
            3 => Status::UnknownProcess,
            4 => Status::BadRequest,
            5 => Status::Internal,
            6 => Status::NoRdma,
            7 => Status::LogFull,
            _ => return None,
        })
    }

    /// A human description.
    pub fn describe(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NotOwner => "the server does not own that vRegion",
            Status::NoSpace => "the server is out of memory (capacity reached)",
            Status::UnknownProcess => "the server knows no such process",
            Status::BadRequest => "bad request",
            Status::Internal => "internal server error",
            Status::NoRdma => "the server does not serve the page path over RDMA",
            Status::LogFull => "the server's backup log is full (its storage server is slow or unreachable)",
        }
    }
}
