//! The messages, with their stable type ids.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::WireError;

/// Stable message type ids. Never renumber one; retire it and add a new id instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum MsgType {
    /// [`Hello`]: the first frame on every connection.
    Hello = 1,
    /// [`Auth`]: the proof of the cluster secret.
    Auth = 2,
    /// [`Call`]: invoke an EBB's rep at (node, core).
    Call = 3,
    /// [`Reply`]: the result of a [`Call`].
    Reply = 4,
    /// [`Gossip`]: a membership protocol datagram.
    Gossip = 5,
    /// [`Data`]: one chunk of a call whose argument is too large for one frame.
    Data = 6,
}

impl MsgType {
    /// The type with this id.
    ///
    /// # Errors
    /// [`WireError::UnknownType`].
    pub fn from_u16(id: u16) -> Result<Self, WireError> {
        Ok(match id {
            1 => MsgType::Hello,
            2 => MsgType::Auth,
            3 => MsgType::Call,
            4 => MsgType::Reply,
            5 => MsgType::Gossip,
            6 => MsgType::Data,
            other => return Err(WireError::UnknownType(other)),
        })
    }
}

/// The first message on a connection: who I am, and a challenge for you.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's node id.
    pub node: u32,
    /// The sender's generation (incremented each time a node with this id restarts).
    pub generation: u64,
    /// A fresh random challenge; the peer must MAC it.
    pub nonce: [u8; 32],
}

/// The answer to a [`Hello`]: HMAC-SHA256 of the peer's nonce under the cluster secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// The MAC.
    pub mac: [u8; 32],
}

/// Invoke method `method` of EBB `ebb`'s rep on core `core` of the receiving node, with
/// `payload` as argument. Borrowed from the frame: decoding copies nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call<'a> {
    /// Matches the [`Reply`]; unique per connection direction.
    pub call_id: u64,
    /// The target EBB (`EbbId::raw`).
    pub ebb: u64,
    /// The core whose rep handles it.
    pub core: u32,
    /// Which method (the EBB's own numbering).
    pub method: u16,
    /// The argument, encoded by the EBB.
    #[serde(borrow, with = "serde_bytes")]
    pub payload: &'a [u8],
}

/// The result of a [`Call`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply<'a> {
    /// The call's id.
    pub call_id: u64,
    /// The method's result, encoded by the EBB, or why there is none.
    #[serde(borrow)]
    pub result: Result<&'a serde_bytes::Bytes, RemoteError>,
}

/// One chunk of a large call (data shipping): the chunks of a transfer arrive in order,
/// and when `offset + chunk.len() == total` the receiver runs the call with the whole
/// payload and answers with a [`Reply`] for `transfer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data<'a> {
    /// The transfer (the call id its reply will carry).
    pub transfer: u64,
    /// The target EBB.
    pub ebb: u64,
    /// The core whose rep handles it.
    pub core: u32,
    /// The method.
    pub method: u16,
    /// The payload's total size.
    pub total: u64,
    /// Where this chunk starts.
    pub offset: u64,
    /// The bytes.
    #[serde(borrow, with = "serde_bytes")]
    pub chunk: &'a [u8],
}

/// A datagram of the membership protocol (SWIM), opaque to the messenger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gossip<'a> {
    /// The membership protocol's bytes.
    #[serde(borrow, with = "serde_bytes")]
    pub data: &'a [u8],
}

/// Why a remote call produced no result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The receiving node has no such EBB.
    #[error("no such EBB on the remote node")]
    NoSuchEbb,
    /// The receiving node has no such core.
    #[error("no such core on the remote node")]
    NoSuchCore,
    /// The EBB does not serve remote calls, or not this method.
    #[error("the EBB does not serve this method remotely")]
    NoHandler,
    /// The EBB refused the call (its reason).
    #[error("refused: {0}")]
    Refused(String),
    /// The handler panicked (reported on the remote node).
    #[error("the handler panicked on the remote node")]
    Panicked,
    /// The remote node is stopping.
    #[error("the remote node is stopping")]
    Stopping,
}
