//! The store's node-to-node protocol: method ids, the messages, and a call to a node.

use super::*;

/// The store service's method: run a client's command here as the key's primary.
pub const EXEC: u16 = 1;
/// Install copies of items sent by their primary or by a rebalance.
pub const PUT: u16 = 2;
/// The item under a key (for a new primary that lacks it while keys move).
pub const FETCH: u16 = 3;
/// Install a new view (a [`ViewChange`], from the frontend); starts this node's
/// rebalance.
pub const VIEW: u16 = 4;
/// This node's rebalance progress.
pub const PROGRESS: u16 = 5;
/// Every node has rebalanced to the given epoch: stop pulling on a miss.
pub const SETTLE: u16 = 6;
/// `flush_all` on this node's partitions.
pub const FLUSH: u16 = 7;
/// Drop cached copies of keys (the cached layout's invalidation, before a write is
/// acknowledged).
pub const INVALIDATE: u16 = 8;
/// Run a client's read here as a holder of the key (not necessarily its primary): sent
/// while keys move to an owner of the key in both views, which has every acknowledged
/// write of it (see `Node::route`).
pub const READ: u16 = 9;
/// Connect to every node of a [`View`] (the frontend's first step of a change, before
/// [`VIEW`]); answered once connected.
pub const CONNECT: u16 = 10;

/// A node's progress in moving keys to the newest view.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The view being moved to.
    pub epoch: u64,
    /// Keys this node held when the move began: what [`Progress::keys_seen`] counts up
    /// to, give or take the keys written or deleted while it moves.
    pub keys_total: u64,
    /// Keys looked at so far.
    pub keys_seen: u64,
    /// Copies sent to new owners.
    pub copies_sent: u64,
    /// Keys dropped (no longer owned here).
    pub keys_dropped: u64,
    /// Whether this node is done.
    pub done: bool,
    /// Copies that could not be sent (their keys are kept here).
    pub failures: u64,
}

/// An item on the wire. Keys and values are written as byte strings (`serde_bytes`):
/// the same bytes postcard writes for a sequence of `u8`, made with one copy instead of
/// a call per byte (a move sends hundreds of thousands).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Copy {
    #[serde(with = "serde_bytes")]
    pub(super) key: Vec<u8>,
    /// `None`: the key is gone.
    pub(super) item: Option<WireItem>,
}

/// A [`Copy`] as a move sends it: borrowed from the partition, not cloned out of it.
/// Encoded as a `Copy` is (postcard writes a slice and a `Vec` alike).
#[derive(Serialize)]
pub(super) struct CopyRef<'a> {
    #[serde(with = "serde_bytes")]
    pub(super) key: &'a [u8],
    pub(super) item: Option<WireItemRef<'a>>,
}

/// A [`WireItem`], borrowed.
#[derive(Serialize)]
pub(super) struct WireItemRef<'a> {
    #[serde(with = "serde_bytes")]
    pub(super) value: &'a [u8],
    pub(super) flags: u32,
    pub(super) expires_at: Option<u64>,
    pub(super) cas: u64,
}

impl<'a> From<&'a Item> for WireItemRef<'a> {
    fn from(i: &'a Item) -> Self {
        WireItemRef {
            value: &i.value,
            flags: i.flags,
            expires_at: i.expires_at,
            cas: i.cas,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct WireItem {
    #[serde(with = "serde_bytes")]
    pub(super) value: Vec<u8>,
    pub(super) flags: u32,
    pub(super) expires_at: Option<u64>,
    pub(super) cas: u64,
}

impl From<Item> for WireItem {
    fn from(i: Item) -> Self {
        WireItem {
            value: i.value,
            flags: i.flags,
            expires_at: i.expires_at,
            cas: i.cas,
        }
    }
}

impl From<WireItem> for Item {
    fn from(i: WireItem) -> Self {
        Item {
            value: i.value,
            flags: i.flags,
            expires_at: i.expires_at,
            cas: i.cas,
        }
    }
}

pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, RemoteError> {
    postcard::to_allocvec(value).map_err(|_| RemoteError::Refused("encoding".into()))
}

pub(super) fn server_error(why: impl core::fmt::Display) -> Vec<u8> {
    format!("SERVER_ERROR {why}\r\n").into_bytes()
}

/// Asks `node`'s store service `method` (for the frontend).
///
/// # Errors
/// The call failed.
pub async fn call(
    messenger: MessengerRef,
    member: Member,
    method: u16,
    payload: Vec<u8>,
) -> Result<Vec<u8>, CallError> {
    messenger
        .call(member.node, CoreId::new(0), member.service, method, payload)
        .await
}
