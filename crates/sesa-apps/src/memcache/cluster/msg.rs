//! The store's node-to-node protocol: a typed service ([`StoreService`]), its requests,
//! replies and errors, and a call to a node.

use super::*;

/// The store's service on every node: what nodes ask one another, and what the
/// frontend's [`Coordinator`] asks them.
pub struct StoreService;

/// A call to a node's store.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StoreRequest {
    /// Run a client's command here as the key's primary.
    Exec {
        /// The sender's view.
        epoch: u64,
        /// How many times it was shipped on (a bounded number: nodes that disagree on the
        /// key's owners must not ship it on forever).
        hops: u8,
        /// The command.
        op: Op,
    },
    /// Install copies of items sent by their primary or by a move (to the keys' core).
    Put {
        /// The view they were made under.
        epoch: u64,
        /// The items.
        copies: Vec<KeyCopy>,
    },
    /// The item under a key (for a new primary that lacks it while keys move, or a
    /// cache fill), from the key's core.
    Fetch {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Install a new view (from the frontend); starts this node's move.
    View(ViewChange),
    /// This node's progress in moving keys.
    Progress,
    /// Every node of view `epoch` took it: it may act on it (a view is taken first,
    /// and acted on only once no member acts on an older one).
    Activate {
        /// The view.
        epoch: u64,
    },
    /// Every node has moved its keys to view `epoch`: stop pulling on a miss.
    Settle {
        /// The view.
        epoch: u64,
    },
    /// `flush_all` on this node's partitions.
    Flush {
        /// memcached's delay.
        delay: i64,
    },
    /// Drop cached copies of keys (the cached layout's invalidation, before a write is
    /// acknowledged), on the keys' core.
    Invalidate {
        /// The keys.
        keys: Vec<serde_bytes::ByteBuf>,
    },
    /// Run a client's read here as a holder of the key (not necessarily its primary):
    /// sent while keys move to an owner of the key in both views, which has every
    /// acknowledged write of it (see `Node::route`).
    Read {
        /// The sender's view.
        epoch: u64,
        /// How many times it was shipped on.
        hops: u8,
        /// The read.
        op: Op,
    },
    /// Connect to every node of a [`View`] (the frontend's first step of a change,
    /// before [`StoreRequest::View`]); answered once connected.
    Connect(View),
    /// Clients' commands a node sends on to this one, each as [`StoreRequest::Exec`]
    /// (or [`StoreRequest::Read`]) would send it alone: those a core of the sender had
    /// for this node's core in one turn (`batch`). Run in order, each as it would be
    /// alone; answered with one [`Answer`] each, in order, once every one is done. At
    /// most [`FORWARD_COMMANDS_MAX`] commands.
    Batch(Vec<Shipped>),
}

/// A client's command sent on to another node (in a [`StoreRequest::Batch`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Shipped {
    /// The sender's view.
    pub epoch: u64,
    /// How many times it was shipped on, this time included.
    pub hops: u8,
    /// Whether any holder of the key may answer (a read, as [`StoreRequest::Read`]);
    /// else the key's primary ([`StoreRequest::Exec`]).
    pub read: bool,
    /// The command.
    pub op: Op,
}

/// One command's answer in a batch ([`StoreReply::Replies`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Answer {
    /// Its reply, as the memcached protocol writes it.
    Reply(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A read whose reply did not fit the batch's answer (its values over
    /// [`FORWARD_REPLY_BYTES`]): the sender sends it again alone.
    Resend,
}

/// A node's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StoreReply {
    /// A command's reply, as the memcached protocol writes it.
    Reply(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Done (a put, view, settle, flush, invalidation or connection).
    Done,
    /// The key asked for: its item, or its tombstone (`None`: neither).
    Item(Option<WireHeld>),
    /// This node's progress in moving keys.
    Progress(Progress),
    /// The answers to a [`StoreRequest::Batch`], one per command, in order.
    Replies(Vec<Answer>),
}

/// Why a node refused a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    /// Keys sent to a core that does not own them (a sender with another core count).
    #[error("keys sent to a core that does not own them")]
    WrongCore,
    /// A write sent as a read.
    #[error("a write sent as a read")]
    WriteAsRead,
    /// The node could not connect to a view's node in time.
    #[error("node {me} is not connected to node {node} after {CONNECT_WAIT:?}")]
    NotConnected {
        /// The node asked.
        me: NodeId,
        /// The node it could not reach.
        node: NodeId,
    },
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopping,
    /// Copies of a view the node has not taken yet, within `VIEW_WAIT`.
    #[error("copies of view {epoch}, which this node has not taken")]
    NoView {
        /// The view.
        epoch: u64,
    },
    /// A batch of more than [`FORWARD_COMMANDS_MAX`] commands.
    #[error("a batch of {0} commands (at most {FORWARD_COMMANDS_MAX})")]
    BatchTooLarge(usize),
    /// A write did not reach every owner of its key within `REPLICATE_WAIT`: it is not
    /// acknowledged, and may be on some owners (its outcome is unknown).
    #[error("not stored on every owner of the key: node {node} did not take it ({why})")]
    Unreplicated {
        /// The owner that did not take it.
        node: NodeId,
        /// Why.
        why: String,
    },
}

impl Service for StoreService {
    const NAME: &'static str = "store";
    type Request = StoreRequest;
    type Reply = StoreReply;
    type Error = StoreError;

    fn method(request: &StoreRequest) -> u16 {
        match request {
            StoreRequest::Exec { .. } => 1,
            StoreRequest::Put { .. } => 2,
            StoreRequest::Fetch { .. } => 3,
            StoreRequest::View(_) => 4,
            StoreRequest::Progress => 5,
            StoreRequest::Settle { .. } => 6,
            StoreRequest::Flush { .. } => 7,
            StoreRequest::Invalidate { .. } => 8,
            StoreRequest::Read { .. } => 9,
            StoreRequest::Connect(_) => 10,
            StoreRequest::Activate { .. } => 11,
            StoreRequest::Batch(_) => 12,
        }
    }
}

/// A failed call to a node's store.
pub type StoreCallError = ServiceError<StoreError>;

/// The store's client of `member`, on `core`.
pub fn client(messenger: MessengerRef, member: Member, core: CoreId) -> Client<StoreService> {
    Client::new(messenger, member.node, core, member.service)
}

/// Asks `member`'s store (on its core 0: the frontend's calls).
///
/// # Errors
/// The call failed, or the node refused.
pub async fn call(
    messenger: MessengerRef,
    member: Member,
    request: StoreRequest,
) -> Result<StoreReply, StoreCallError> {
    client(messenger, member, CoreId::new(0))
        .call(request)
        .await
}

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

/// An item on the wire, under its key. Keys and values are written as byte strings
/// (`serde_bytes`): one copy instead of a call per byte (a move sends hundreds of
/// thousands).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyCopy {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Its item or its deletion; `None`: the key is gone from its sender, without a
    /// tombstone.
    pub state: Option<WireHeld>,
}

/// A key's state ([`Held`]) as it travels between nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WireHeld {
    /// The item.
    Item(WireItem),
    /// Deleted at this cas.
    Gone(u64),
}

impl From<Held> for WireHeld {
    fn from(h: Held) -> Self {
        match h {
            Held::Item(i) => WireHeld::Item(i.into()),
            Held::Gone(cas) => WireHeld::Gone(cas),
        }
    }
}

impl From<WireHeld> for Held {
    fn from(h: WireHeld) -> Self {
        match h {
            WireHeld::Item(i) => Held::Item(i.into()),
            WireHeld::Gone(cas) => Held::Gone(cas),
        }
    }
}

/// An item as it travels between nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireItem {
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The client's flags.
    pub flags: u32,
    /// When it expires (Unix seconds).
    pub expires_at: Option<u64>,
    /// Its cas.
    pub cas: u64,
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

impl From<&Item> for WireItem {
    fn from(i: &Item) -> Self {
        i.clone().into()
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

pub(super) fn server_error(why: impl core::fmt::Display) -> Vec<u8> {
    format!("SERVER_ERROR {why}\r\n").into_bytes()
}
