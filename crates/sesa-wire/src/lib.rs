//! # sesa-wire: how nodes talk
//!
//! The byte-level protocol between sesa nodes (and between nodes and the frontend), with
//! no I/O of its own (sans-IO, like smoltcp's `wire` module): the executive's messenger
//! drives it over whatever stream the platform gives it, and the simulator over a
//! simulated one. `no_std` + `alloc`.
//!
//! ## A frame
//! ```text
//! offset  size  field
//!      0     4  magic "SESA"
//!      4     1  protocol version (1)
//!      5     1  flags (0; any other value is rejected)
//!      6     2  message type (little-endian u16, a stable id: see `MsgType`)
//!      8     4  payload length (little-endian u32, at most `Limits::frame_max`)
//!     12     n  payload: the message, postcard-encoded
//! ```
//! Type ids are explicit constants, never hashes of type names, so they stay stable
//! across builds and versions. Bytes from the network are only ever read through
//! [`Header::new_checked`] and [`FrameDecoder`], which reject bad magic, unknown versions
//! or types and oversize lengths *before* buffering a payload.
//!
//! ## The handshake
//! Both ends send [`Hello`] (node id, generation, a fresh 32-byte nonce), then [`Auth`]:
//! an HMAC-SHA256, under the cluster secret, of the *peer's* nonce and both identities in
//! the sender's order. Each end verifies the MAC over its own nonce, so the proof is
//! fresh (no replay) and directional (a reflected `Auth` does not verify). See
//! [`Handshake`].
//!
//! ```
//! use sesa_wire::{Handshake, Identity, Secret};
//!
//! let secret = Secret::from_bytes([7; 32]);
//! let a = Identity { node: 1, generation: 1 };
//! let b = Identity { node: 2, generation: 1 };
//! let mut ha = Handshake::new(a, [1; 32], secret.clone());
//! let mut hb = Handshake::new(b, [2; 32], secret);
//! let auth_for_b = ha.on_hello(&hb.hello()).unwrap();
//! let auth_for_a = hb.on_hello(&ha.hello()).unwrap();
//! assert_eq!(ha.on_auth(&auth_for_a).unwrap(), b);
//! assert_eq!(hb.on_auth(&auth_for_b).unwrap(), a);
//! ```

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod frame;
mod handshake;
mod msg;

pub use frame::{FrameDecoder, HEADER_LEN, Header, Limits, MAGIC, VERSION, encode};
pub use handshake::{AuthError, Handshake, Identity, Secret};
pub use msg::{Auth, Call, Data, Gossip, Hello, MsgType, RemoteError, Reply};

/// Why bytes from a peer were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame does not start with `SESA`.
    #[error("bad magic {0:02x?}: not a sesa frame")]
    BadMagic([u8; 4]),
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {0} (this node speaks {VERSION})")]
    BadVersion(u8),
    /// Reserved flag bits were set.
    #[error("reserved flags {0:#04x} set")]
    BadFlags(u8),
    /// A message type id this build does not know.
    #[error("unknown message type {0}")]
    UnknownType(u16),
    /// The announced payload is larger than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The configured limit.
        max: u32,
    },
    /// The payload is not a valid message of its type.
    #[error("malformed {msg_type:?} payload: {reason}")]
    Malformed {
        /// The frame's type.
        msg_type: MsgType,
        /// The decoder's reason.
        reason: &'static str,
    },
    /// The message could not be encoded within the limits.
    #[error("cannot encode {msg_type:?}: {reason}")]
    Encode {
        /// The message's type.
        msg_type: MsgType,
        /// Why.
        reason: &'static str,
    },
}
