//! The bincode codec of every serialised message and record: control messages in
//! [`crate::frame::Op::Control`] frames (memory, storage, run sessions, the global managers) and
//! the records the servers keep on disk (journal, registry, mount records).
//!
//! Fixed-width integers, trailing bytes allowed, and a size bound of
//! [`crate::frame::MAX_CONTROL_LEN`]: a hostile length inside a payload cannot make the decoder
//! allocate more than that.

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::error::ProtoError;
use crate::frame::MAX_CONTROL_LEN;

/// Serialises a message (infallible for the workspace's message types: plain data, no maps with
/// non-string keys). The size bound is not applied here: a message bigger than a frame may
/// carry (a program's 2 MB command line, say) is refused as `Oversized` by whatever sends it,
/// as an error, not a panic.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    format().serialize(msg).expect("control messages always serialise")
}

/// Parses a message; the size bound is the frame's, so a hostile length inside the payload cannot
/// make the decoder allocate more than the payload it was given allows.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ProtoError> {
    options().deserialize(bytes).map_err(|e| ProtoError::Malformed(format!("bad control message: {e}")))
}

fn options() -> impl Options {
    format().with_limit(MAX_CONTROL_LEN as u64)
}

/// The encoding, without the size bound.
fn format() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().allow_trailing_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_message_past_the_bound_encodes_for_its_sender_to_refuse() {
        let big = vec![7u8; MAX_CONTROL_LEN + 1];
        assert_eq!(encode(&big).len(), 8 + big.len());
        let mut wire = Vec::new();
        let sent = crate::pcomp::send(&mut wire, &big);
        assert!(matches!(sent, Err(ProtoError::Oversized { .. })) && wire.is_empty(), "{sent:?}");
    }

    #[test]
    fn integers_are_fixed_width_and_trailing_bytes_are_allowed() {
        assert_eq!(encode(&(1u16, 2u64)), [1, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode::<u16>(&[7, 0, 9]).unwrap(), 7);
    }

    #[test]
    fn a_hostile_length_is_refused_not_allocated() {
        let mut bytes = encode(&u64::MAX);
        bytes.extend_from_slice(&[0; 8]);
        assert!(matches!(decode::<Vec<u8>>(&bytes), Err(ProtoError::Malformed(_))));
    }

    proptest! {
        /// Garbage never panics the decoder.
        #[test]
        fn garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<(String, Vec<u64>)>(&bytes);
        }
    }
}
