//! Many nodes as one store: the paper's partitioned hash table (section 4.4), across
//! nodes as well as cores.
//!
//! # Placement
//! A [`View`] lists the store's nodes under an epoch. Each key has `R` owners (default
//! 2), the top `R` nodes by rendezvous hashing (xxh3 of the key, seeded by the node id):
//! the first is the key's **primary**, the others its replicas. Inside a node the key
//! belongs to one core ([`super::server`]'s per-core partitions), so a request for a key
//! travels to exactly one (node, core) and runs there without locks.
//!
//! # Requests
//! Any node answers any key. The node a client talks to ships the command to the key's
//! primary (function shipping through the messenger, straight to the key's core), unless
//! it is the primary itself. The primary applies it, then sends the item's new state to
//! the replicas and waits for them before it answers, so an acknowledged write is on
//! every live owner. Copies carry the primary's cas, and a partition never installs a
//! copy older than the one it holds; a new primary's own writes get higher cas values
//! than every copy it was sent ([`super::store::Partition::import`]).
//!
//! # Changes
//! The frontend owns membership: when a node joins, is asked to leave, or is lost
//! (`kill -9`, or declared down by SWIM) it sends every node the next view. Each node
//! then, for every key it holds, pushes the item to the key's new owners that were not
//! owners before (only the first surviving old owner does, so each copy moves once) and
//! drops the keys it no longer owns. About `1/(n+1)` of the keys move on a join; on a
//! loss, the keys that lost a replica get a new one. Until the frontend says every node
//! is done ([`SETTLE`]), a primary that lacks a key asks the key's previous owners for it
//! first (pull on miss), so no request sees a key "missing" because it is still moving.
//! A request that finds its primary gone waits for the next view and is routed again.
//! Copies carry the epoch of the view they were made under; a node that has a newer
//! view passes such a copy on to the key's current owners (a write whose primary had not
//! seen the new view yet would otherwise miss them). A primary whose copy to a replica
//! failed on a lost connection sends it again once the replica is back, unless a newer
//! view drops it. The frontend's [`Coordinator`] sends a view again to a node that
//! missed it. The deterministic simulator found the need for each of these
//! (`sesa sim --workload kv`).
//!
//! # Limits
//! - Concurrent writes to one key during a change may resolve by cas order (last writer
//!   wins) rather than arrival order.
//! - A `delete` made at a key's new primary while the key is still moving can be undone
//!   by the older copy arriving after it (no tombstones yet).
//! - Losing a second owner of a key before its replacement copy is made loses the key
//!   (R=2 tolerates one failure at a time).

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use spin::{Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sesa_ebb::{CoreId, EbbId};
use sesa_event::EventError;
use sesa_exec::{CallError, MessengerRef, RemoteError, placement};

use super::server::{Kv, Op, owner};
use super::store::{Item, Scan};

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

/// How many times a request may be shipped on (a node with an older view forwards it).
const MAX_HOPS: u8 = 4;
/// Items per copy message when keys move.
const BATCH: usize = 128;
/// Keys planned at a time when keys move, between yields of the core.
const SCAN: usize = 1024;
/// The longest a copy batch counts for its rest ([`Pace`]).
const PACE_MAX: Duration = Duration::from_millis(5);
/// A copy batch's rest, in multiples of its time ([`Pace`]), when nodes only joined:
/// the copying takes at most a sixth of the time (docs/benchmarks.md, "the pace of a
/// move", has the rests measured and why 5).
const PACE_REST_JOIN: u32 = 5;
/// As [`PACE_REST_JOIN`] when a node left or was lost: its keys are on fewer owners
/// until they are copied, so they move faster, at more cost to the clients.
const PACE_REST_LOSS: u32 = 1;
const _: () = assert!(PACE_REST_LOSS < PACE_REST_JOIN);
/// The least rest worth a sleep ([`Pace`]).
const PACE_SLEEP: Duration = Duration::from_millis(2);
/// How long a request waits for the frontend's next view when its primary is lost.
const VIEW_WAIT: Duration = Duration::from_secs(5);
/// The most wakers kept for requests waiting for a view (see [`Node::view_at_least`]).
const VIEW_WAITERS_MAX: usize = 1 << 16;
/// How many times a primary sends a copy to a replica whose connection keeps failing.
const REPLICATE_ATTEMPTS: u32 = 20;
/// How long a node waits for the membership layer to connect it to a new view's nodes.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// A node of the store, as the view names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node id.
    pub node: u32,
    /// Its store service (an EBB id, for the messenger).
    pub service: u64,
    /// Its cores (a key's core there is the key's hash modulo this).
    pub cores: u32,
}

/// How keys are placed on the store's nodes: the paper's progression for its
/// hash-table EBB (section 4.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// (c) Each key on its own `R` nodes, by rendezvous hashing: the load and the
    /// memory spread over every node. The default.
    #[default]
    Partitioned,
    /// (a) Every key on the view's first node (and the next `R - 1` as replicas):
    /// the other nodes ship every request there.
    Central,
    /// (b) As [`Layout::Central`], and every other node keeps a read cache of the items
    /// its clients read. A write invalidates every cache before it is acknowledged.
    Cached,
}

impl core::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "partitioned" => Ok(Layout::Partitioned),
            "central" => Ok(Layout::Central),
            "cached" => Ok(Layout::Cached),
            other => Err(format!(
                "no layout {other:?}: partitioned, central or cached"
            )),
        }
    }
}

/// Where a read may be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reads {
    /// By the nearest holder: this node's copy when it is a replica of the key (or, in
    /// the cached layout, its cache), else the primary.
    Nearest,
    /// Only by the primary, as a write to the key is: for a read that must see a
    /// write sent just before it (on the same connection), which a copy here may not
    /// have received yet.
    AtPrimary,
}

/// The store's nodes at one epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Increases with every change; 0 is "no view yet".
    pub epoch: u64,
    /// The nodes.
    pub members: Vec<Member>,
    /// Owners per key (capped by the number of nodes).
    pub replicas: u32,
    /// How keys are placed.
    pub layout: Layout,
}

impl View {
    /// The owners of `key`, primary first.
    pub fn owners(&self, key: &[u8]) -> Vec<Member> {
        let owners = self.replicas.max(1) as usize;
        if self.layout != Layout::Partitioned {
            return self.members.iter().take(owners).copied().collect();
        }
        // The `owners` highest scores, best first (ties to the lower node id), kept by
        // insertion: no scored list of every member is made and sorted.
        placement::top(key, self.members.iter().copied(), owners, |m| m.node)
    }

    /// Whether `node` is in this view.
    pub fn has(&self, node: u32) -> bool {
        self.members.iter().any(|m| m.node == node)
    }
}

/// A key's owners in two views at once, as [`View::owners`] finds them in each, for a
/// move that asks both for every key a node holds (a million keys): a node's score does
/// not depend on the view, so it is computed once for every node of either view, and
/// the owners are kept in buffers reused from key to key instead of new vectors.
struct OwnersInBoth<'v> {
    old: &'v View,
    new: &'v View,
    /// Every node of either view: its member in the old view and in the new one.
    nodes: Vec<(Option<Member>, Option<Member>)>,
    /// The owners found for the last key, with their scores, best first.
    before: Vec<(u64, Member)>,
    after: Vec<(u64, Member)>,
    /// The same, without the scores (what [`OwnersInBoth::of`] lends).
    members: (Vec<Member>, Vec<Member>),
}

impl<'v> OwnersInBoth<'v> {
    fn new(old: &'v View, new: &'v View) -> Self {
        let mut nodes: Vec<(Option<Member>, Option<Member>)> =
            old.members.iter().map(|m| (Some(*m), None)).collect();
        for m in &new.members {
            let same = |n: &(Option<Member>, Option<Member>)| n.0.is_some_and(|o| o.node == m.node);
            match nodes.iter_mut().find(|n| same(n)) {
                Some(n) => n.1 = Some(*m),
                None => nodes.push((None, Some(*m))),
            }
        }
        OwnersInBoth {
            old,
            new,
            nodes,
            before: Vec::new(),
            after: Vec::new(),
            members: (Vec::new(), Vec::new()),
        }
    }

    /// `key`'s owners in the old view and in the new one, primary first.
    fn of(&mut self, key: &[u8]) -> (&[Member], &[Member]) {
        let (before, after) = &mut self.members;
        if self.old.layout != Layout::Partitioned || self.new.layout != Layout::Partitioned {
            *before = self.old.owners(key);
            *after = self.new.owners(key);
            return (before, after);
        }
        self.before.clear();
        self.after.clear();
        for &(in_old, in_new) in &self.nodes {
            let Some(node) = in_old.or(in_new).map(|m| m.node) else {
                continue;
            };
            let score = placement::score(key, node);
            if let Some(m) = in_old {
                placement::keep_top(
                    &mut self.before,
                    self.old.replicas as usize,
                    score,
                    m,
                    |m| m.node,
                );
            }
            if let Some(m) = in_new {
                placement::keep_top(&mut self.after, self.new.replicas as usize, score, m, |m| {
                    m.node
                });
            }
        }
        before.clear();
        before.extend(self.before.iter().map(|t| t.1));
        after.clear();
        after.extend(self.after.iter().map(|t| t.1));
        (before, after)
    }
}

/// What the frontend sends when the store's nodes change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    /// The new view.
    pub view: View,
    /// The view before it, whose owners may still hold keys moving to the new owners
    /// (`None` for the first view). A node that joins gets it too: it owns keys it has
    /// not been sent yet.
    pub previous: Option<View>,
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

/// An item on the wire. Keys and values are written as byte strings (`serde_bytes`):
/// the same bytes postcard writes for a sequence of `u8`, made with one copy instead of
/// a call per byte (a move sends hundreds of thousands).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Copy {
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    /// `None`: the key is gone.
    item: Option<WireItem>,
}

/// A [`Copy`] as a move sends it: borrowed from the partition, not cloned out of it.
/// Encoded as a `Copy` is (postcard writes a slice and a `Vec` alike).
#[derive(Serialize)]
struct CopyRef<'a> {
    #[serde(with = "serde_bytes")]
    key: &'a [u8],
    item: Option<WireItemRef<'a>>,
}

/// A [`WireItem`], borrowed.
#[derive(Serialize)]
struct WireItemRef<'a> {
    #[serde(with = "serde_bytes")]
    value: &'a [u8],
    flags: u32,
    expires_at: Option<u64>,
    cas: u64,
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
struct WireItem {
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    flags: u32,
    expires_at: Option<u64>,
    cas: u64,
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

/// Shared (`Arc`) so that a request takes a reference, not a copy of the member list.
#[derive(Default)]
struct Views {
    current: Arc<View>,
    /// The view before `current`, while keys still move (until [`SETTLE`]).
    previous: Option<Arc<View>>,
}

/// This node's part of the store.
pub struct Node {
    me: u32,
    messenger: MessengerRef,
    /// The node's partitions (its own `Kv`, without the cluster layer).
    kv: Kv,
    service: EbbId,
    views: RwLock<Views>,
    progress: Mutex<Progress>,
    /// Requests waiting for a newer view ([`Node::view_at_least`]), in the order they
    /// began to wait; woken in that order when one is installed.
    view_waiters: Mutex<Vec<core::task::Waker>>,
    /// Per core: invalidations received (the cached layout). A cache fill whose fetch
    /// raced one is not kept.
    invalidations: Vec<AtomicU64>,
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, RemoteError> {
    postcard::to_allocvec(value).map_err(|_| RemoteError::Refused("encoding".into()))
}

fn server_error(why: impl core::fmt::Display) -> Vec<u8> {
    format!("SERVER_ERROR {why}\r\n").into_bytes()
}

impl Node {
    /// Makes `kv` (this node's partitions) a member of a cluster store and serves the
    /// store's messages. Returns the node (it lives as long as the process) and the
    /// `Kv` to serve clients with, which routes every command through the cluster.
    /// Until the frontend sends the first view, commands wait for it.
    ///
    /// # Errors
    /// Off a core, out of EBB ids, or the messenger cannot be reached.
    pub async fn start(messenger: MessengerRef, kv: Kv) -> Result<(&'static Node, Kv), EventError> {
        let (service, _) = sesa_ebb::NodeShared::create(|| ())?;
        let (me, _) = messenger.identity_and_home().await?;
        // One per node process, for the life of the process: the store's requests run
        // on every core and need it without reference counting per request.
        let node: &'static Node = Box::leak(Box::new(Node {
            me: me.node,
            messenger,
            kv,
            service: service.id(),
            views: RwLock::new(Views::default()),
            progress: Mutex::new(Progress::default()),
            view_waiters: Mutex::new(Vec::new()),
            invalidations: (0..sesa_event::cores())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }));
        messenger
            .serve_async(service.id(), move |_from, method, payload| {
                node.serve(method, payload)
            })
            .await?;
        Ok((node, kv.in_cluster(node)))
    }

    /// This node in a view.
    pub fn member(&self) -> Member {
        Member {
            node: self.me,
            service: self.service.raw(),
            cores: sesa_event::cores() as u32,
        }
    }

    fn views(&self) -> spin::RwLockReadGuard<'_, Views> {
        self.views.read()
    }

    fn current(&self) -> Arc<View> {
        self.views().current.clone()
    }

    /// Whether this node owns `key` in `view` and, if keys are moving, owned it in the
    /// previous view too (so it holds every acknowledged write of it).
    fn holds_for_sure(&self, view: &View, key: &[u8]) -> bool {
        self.holds_for_sure_among(&view.owners(key), self.owners_before(key).as_deref())
    }

    /// [`Node::holds_for_sure`], given the key's owners now and, while keys move, before.
    fn holds_for_sure_among(&self, now: &[Member], before: Option<&[Member]>) -> bool {
        let mine = |owners: &[Member]| owners.iter().any(|m| m.node == self.me);
        mine(now) && before.is_none_or(mine)
    }

    /// `key`'s owners in the previous view, while keys move to the current one.
    fn owners_before(&self, key: &[u8]) -> Option<Vec<Member>> {
        self.views().previous.as_ref().map(|p| p.owners(key))
    }

    /// This node's rebalance progress.
    pub fn progress(&self) -> Progress {
        self.progress.lock().clone()
    }

    fn note(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress.lock());
    }

    async fn serve(&'static self, method: u16, payload: Vec<u8>) -> Result<Vec<u8>, RemoteError> {
        let bad = || RemoteError::Refused("malformed store request".into());
        match method {
            EXEC => {
                let (epoch, hops, op): (u64, u8, Op) =
                    postcard::from_bytes(&payload).map_err(|_| bad())?;
                // Shipped here as the key's primary: a copy here (this node may be a
                // replica in a newer view) may lack a write the sender shipped before.
                Ok(self.route(op, epoch, hops, Reads::AtPrimary).await)
            }
            READ => {
                let (epoch, hops, op): (u64, u8, Op) =
                    postcard::from_bytes(&payload).map_err(|_| bad())?;
                if op.writes() {
                    return Err(RemoteError::Refused("a write sent as a read".into()));
                }
                // The sender's client allowed any holder to answer; this node answers
                // if it holds the key for sure by its own view, else routes it on.
                Ok(self.route(op, epoch, hops, Reads::Nearest).await)
            }
            PUT => {
                let (epoch, mut copies): (u64, Vec<Copy>) =
                    postcard::from_bytes(&payload).map_err(|_| bad())?;
                let here = sesa_event::current_core();
                let cores = sesa_event::cores();
                if copies.iter().any(|c| owner(&c.key, cores) != here) {
                    return Err(RemoteError::Refused(
                        "copies sent to a core that does not own them".into(),
                    ));
                }
                self.kv.with_partition(|p, now| {
                    for c in &mut copies {
                        p.import(&c.key, c.item.take().map(Item::from), now);
                    }
                });
                // Copies made under an older view (a write its primary ran before it
                // knew the new one) may have missed owners that view does not have, and
                // this node may have moved these keys already: pass them on.
                let view = self.current();
                if epoch < view.epoch {
                    for Copy { key, .. } in copies {
                        let item = self.kv.with_partition(|p, now| p.export(&key, now));
                        self.replicate(key, item).await;
                    }
                }
                encode(&())
            }
            FETCH => {
                let key: Vec<u8> = postcard::from_bytes(&payload).map_err(|_| bad())?;
                if owner(&key, sesa_event::cores()) != sesa_event::current_core() {
                    return Err(RemoteError::Refused("fetch sent to the wrong core".into()));
                }
                let item = self.kv.with_partition(|p, now| p.export(&key, now));
                encode(&item.map(WireItem::from))
            }
            CONNECT => {
                let view: View = postcard::from_bytes(&payload).map_err(|_| bad())?;
                self.connect_to(&view).await?;
                encode(&())
            }
            VIEW => {
                let change: ViewChange = postcard::from_bytes(&payload).map_err(|_| bad())?;
                self.install(change).await?;
                encode(&())
            }
            PROGRESS => encode(&self.progress()),
            SETTLE => {
                let epoch: u64 = postcard::from_bytes(&payload).map_err(|_| bad())?;
                let mut views = self.views.write();
                if views.current.epoch == epoch {
                    views.previous = None;
                }
                encode(&())
            }
            INVALIDATE => {
                let keys: Vec<Vec<u8>> = postcard::from_bytes(&payload).map_err(|_| bad())?;
                let here = sesa_event::current_core();
                if keys.iter().any(|k| owner(k, sesa_event::cores()) != here) {
                    return Err(RemoteError::Refused(
                        "invalidation sent to a core that does not hold the keys".into(),
                    ));
                }
                self.invalidated(here).fetch_add(1, Ordering::Relaxed);
                self.kv.with_partition(|p, now| {
                    for k in &keys {
                        p.import(k, None, now);
                    }
                });
                encode(&())
            }
            FLUSH => {
                let delay: i64 = postcard::from_bytes(&payload).map_err(|_| bad())?;
                self.kv
                    .each_partition(move |p, now| p.flush_all(delay, now))
                    .await
                    .map_err(|_| RemoteError::Stopping)?;
                encode(&())
            }
            _ => Err(RemoteError::NoHandler),
        }
    }

    /// Whether a read of `key` may be answered at once on the calling core, without an
    /// event: this core holds the key for sure (as its primary or a replica, with no
    /// keys moving to this node; or a copy in its cache, in the cached layout).
    pub(crate) fn reads_here(&self, key: &[u8]) -> bool {
        if owner(key, sesa_event::cores()) != sesa_event::current_core() {
            return false;
        }
        let view = self.current();
        view.epoch > 0 && self.holds_for_sure(&view, key)
            || view.layout == Layout::Cached && self.kv.with_partition(|p, now| p.holds(key, now))
    }

    /// Runs a client's command wherever its key lives; the reply bytes.
    pub(crate) async fn execute(&'static self, op: Op, reads: Reads) -> Vec<u8> {
        self.route(op, 0, 0, reads).await
    }

    /// Routes `op` by this node's view (waiting, briefly, for a view at least as new as
    /// `epoch`, the sender's): runs it here if this node is the key's primary, else ships
    /// it to the primary. A lost primary means waiting for the next view and routing
    /// again.
    async fn route(&'static self, mut op: Op, epoch: u64, hops: u8, reads: Reads) -> Vec<u8> {
        let mut view = self.view_at_least(epoch.max(1)).await;
        loop {
            if view.epoch == 0 {
                return server_error("the store has no view of its nodes yet");
            }
            let owners = view.owners(op.key());
            let Some(primary) = owners.first().copied() else {
                return server_error("the store has no nodes");
            };
            if primary.node == self.me {
                let core = owner(op.key(), sesa_event::cores());
                return sesa_event::spawn_on_async(core, move || self.primary(op))
                    .await
                    .unwrap_or_else(|_| server_error("the node is stopping"));
            }
            // A read at one of the key's replicas is answered here: a write is on every
            // owner before it is acknowledged. While keys move, only if this node owned
            // the key before too (a new owner may still be waiting for its copy).
            let nearest = reads == Reads::Nearest && !op.writes();
            // Only a read may be answered by another holder than the primary.
            let before = if nearest {
                self.owners_before(op.key())
            } else {
                None
            };
            if nearest && self.holds_for_sure_among(&owners, before.as_deref()) {
                let (kv, core) = (self.kv, owner(op.key(), sesa_event::cores()));
                return sesa_event::spawn_on(core, move || kv.apply_here(op))
                    .await
                    .unwrap_or_else(|_| server_error("the node is stopping"));
            }
            // The cached layout: a client's read here is answered from this node's cache,
            // filled from the primary on a miss.
            if view.layout == Layout::Cached && nearest {
                let core = owner(op.key(), sesa_event::cores());
                match sesa_event::spawn_on_async(core, move || self.cached_read(op, primary)).await
                {
                    Ok(Ok(reply)) => return reply,
                    // Not served from the cache: ship it to the primary as usual.
                    Ok(Err(back)) => op = back,
                    Err(_) => return server_error("the node is stopping"),
                }
            }
            if hops >= MAX_HOPS {
                return server_error("the nodes disagree on where the key lives");
            }
            // While keys move, a read goes to an owner of the key in both views, the
            // earliest in the current one's order: it holds every acknowledged write (an
            // old owner had them all, a new one gets every write made since), where a new
            // primary may first have to fetch the key from an old owner (an extra round
            // trip for most reads of a moving key). None when every owner is new
            // (several nodes joined at once, say).
            let steady = before.as_deref().and_then(|before| {
                owners
                    .iter()
                    .find(|m| before.iter().any(|b| b.node == m.node))
                    .copied()
            });
            let (target, method) = match steady {
                Some(m) if m.node != primary.node => (m, READ),
                _ => (primary, EXEC),
            };
            let Some(service) = EbbId::from_raw(target.service) else {
                return server_error("a bad service id in the view");
            };
            let Ok(payload) = postcard::to_allocvec(&(view.epoch, hops + 1, &op)) else {
                return server_error("encoding");
            };
            let core = owner(op.key(), target.cores as usize);
            match self
                .messenger
                .call(target.node, core, service, method, payload)
                .await
            {
                Ok(reply) => return reply,
                Err(CallError::Remote { node, error }) => {
                    return server_error(format_args!("node {node}: {error}"));
                }
                Err(e) => {
                    // Lost or not yet connected: the frontend's next view routes around a
                    // lost node; a connection being made just needs a moment.
                    let Some(next) = self.next_view(view.epoch, target.node).await else {
                        return server_error(format_args!("the key's node is unreachable: {e}"));
                    };
                    view = next;
                }
            }
        }
    }

    /// The current view once its epoch is at least `epoch` (or the current one after
    /// [`VIEW_WAIT`]).
    ///
    /// Requests that wait resume in the order they began to wait (see
    /// [`Node::view_waiters`]): a client's pipelined requests, or those shipped here on
    /// one connection, must not overtake one another while the view arrives.
    async fn view_at_least(&self, epoch: u64) -> Arc<View> {
        let view = self.current();
        if view.epoch >= epoch {
            return view;
        }
        let mut deadline = core::pin::pin!(sesa_event::sleep(VIEW_WAIT));
        core::future::poll_fn(|cx| {
            // Checked under the waiters' lock, which `install` takes after switching
            // views: either the new view is seen here, or this waker is woken.
            let mut waiters = self.view_waiters.lock();
            let view = self.current();
            if view.epoch >= epoch || deadline.as_mut().poll(cx).is_ready() {
                return core::task::Poll::Ready(view);
            }
            // A waiter that timed out leaves its waker here until the next view: past a
            // bound, wake every one early (each re-checks and queues again, in order).
            if waiters.len() >= VIEW_WAITERS_MAX {
                waiters.drain(..).for_each(core::task::Waker::wake);
            }
            waiters.push(cx.waker().clone());
            core::task::Poll::Pending
        })
        .await
    }

    /// After a call to `node` failed under view `epoch`: a newer view, or the same one
    /// once `node` is connected again; `None` after [`VIEW_WAIT`].
    async fn next_view(&self, epoch: u64, node: u32) -> Option<Arc<View>> {
        let deadline = sesa_event::now() + VIEW_WAIT;
        loop {
            sesa_event::sleep(Duration::from_millis(5)).await;
            let view = self.current();
            if view.epoch > epoch {
                return Some(view);
            }
            if self.connected(node).await {
                return Some(view);
            }
            if sesa_event::now() > deadline {
                return None;
            }
        }
    }

    async fn connected(&self, node: u32) -> bool {
        self.messenger
            .peers()
            .await
            .is_ok_and(|peers| peers.iter().any(|p| p.node == node))
    }

    fn invalidated(&self, core: CoreId) -> &AtomicU64 {
        // One counter per core, made at start for every core of the node. Each is
        // touched only on its own core (invalidations and cache fills run on the key's
        // core), so the atomics need no ordering.
        &self.invalidations[core.index()]
    }

    /// A read on the key's core of a node that caches (the cached layout): from the
    /// cache if the key is there; else the item is fetched from `primary`, kept, and
    /// the read answered from it. Gives the command back (to be shipped to the primary)
    /// if the fetch failed or an invalidation raced it (the copy may be stale).
    async fn cached_read(&'static self, op: Op, primary: Member) -> Result<Vec<u8>, Op> {
        let here = sesa_event::current_core();
        let key = op.key().to_vec();
        if self.kv.with_partition(|p, now| p.holds(&key, now)) {
            return Ok(self.kv.apply_here(op));
        }
        let before = self.invalidated(here).load(Ordering::Relaxed);
        let (Some(service), Ok(payload)) = (
            EbbId::from_raw(primary.service),
            postcard::to_allocvec(&key),
        ) else {
            return Err(op);
        };
        let core = owner(&key, primary.cores as usize);
        let Ok(reply) = self
            .messenger
            .call(primary.node, core, service, FETCH, payload)
            .await
        else {
            return Err(op);
        };
        let Ok(item) = postcard::from_bytes::<Option<WireItem>>(&reply) else {
            return Err(op);
        };
        let raced = self.invalidated(here).load(Ordering::Relaxed) != before;
        match item {
            _ if raced => Err(op),
            // Absent at the primary: a miss (nothing is cached).
            None => Ok(self.kv.apply_here(op)),
            Some(item) => {
                self.kv
                    .with_partition(|p, now| p.import(&key, Some(item.into()), now));
                Ok(self.kv.apply_here(op))
            }
        }
    }

    /// Runs `op` as the key's primary, on the key's core: fetch the key from its
    /// previous owners first if it is still moving here, apply, copy to the replicas.
    async fn primary(&'static self, op: Op) -> Vec<u8> {
        let key = op.key().to_vec();
        let previous = self.views().previous.clone();
        // Only a new owner may lack the key: one that owned it before too has every
        // acknowledged write of it, and a miss there is a miss (no round trip to ask).
        if let Some(previous) = previous
            && !previous.owners(&key).iter().any(|m| m.node == self.me)
            && !self.kv.with_partition(|p, now| p.holds(&key, now))
        {
            self.pull(&key, &previous).await;
        }
        let writes = op.writes();
        let reply = self.kv.apply_here(op);
        if writes {
            let item = self.kv.with_partition(|p, now| p.export(&key, now));
            self.replicate(key, item).await;
        }
        reply
    }

    /// Sends the key's new state to its other owners and waits for them (and, in the
    /// cached layout, drops it from every other node's cache). A replica whose
    /// connection was lost gets the copy again once it is back (up to [`VIEW_WAIT`] at a
    /// time); one that a newer view no longer lists is left to that view.
    async fn replicate(&self, key: Vec<u8>, item: Option<Item>) {
        let view = self.current();
        if view.layout == Layout::Cached {
            self.invalidate_caches(&view, &key).await;
        }
        let others: Vec<Member> = view
            .owners(&key)
            .into_iter()
            .filter(|m| m.node != self.me)
            .collect();
        if others.is_empty() {
            return;
        }
        // A slice, as PUT decodes a `Vec` (an array would be encoded without its length).
        let copy = [Copy {
            key,
            item: item.map(WireItem::from),
        }];
        let Ok(payload) = postcard::to_allocvec(&(view.epoch, &copy[..])) else {
            return;
        };
        for m in others {
            let Some(service) = EbbId::from_raw(m.service) else {
                continue;
            };
            let core = owner(&copy[0].key, m.cores as usize);
            for attempt in 1.. {
                let epoch = self.current().epoch;
                let e = match self
                    .messenger
                    .call(m.node, core, service, PUT, payload.clone())
                    .await
                {
                    Ok(_) => break,
                    Err(e) => e,
                };
                // A lost connection to a replica that is still in the view (a reset, not
                // a crash) must not leave it stale: the write would be on one owner only,
                // and a later move could copy the stale one over it. Wait for the
                // connection to come back, or for a view that has the replica no more.
                // Bounded: a connection that keeps coming back only to fail again is left to
                // the frontend, which will see the node as lost.
                let connection = matches!(e, CallError::NotConnected(_) | CallError::PeerLost(_))
                    && attempt < REPLICATE_ATTEMPTS;
                let retry = match self.next_view(epoch, m.node).await {
                    Some(view) if connection => view.owners(&copy[0].key).contains(&m),
                    _ => false,
                };
                if !retry {
                    tracing::warn!(node = m.node, "replica not updated: {e}");
                    break;
                }
            }
        }
    }

    /// Drops `key` from the cache of every node of `view` that does not own it.
    async fn invalidate_caches(&self, view: &View, key: &[u8]) {
        let owners = view.owners(key);
        let Ok(payload) = postcard::to_allocvec(&[key][..]) else {
            return;
        };
        for m in &view.members {
            if m.node == self.me || owners.contains(m) {
                continue;
            }
            let Some(service) = EbbId::from_raw(m.service) else {
                continue;
            };
            let core = owner(key, m.cores as usize);
            if let Err(e) = self
                .messenger
                .call(m.node, core, service, INVALIDATE, payload.clone())
                .await
            {
                tracing::warn!(node = m.node, "cache not invalidated: {e}");
            }
        }
    }

    /// Installs `key` from the first of its previous owners that answers.
    async fn pull(&self, key: &[u8], previous: &View) {
        let current = self.current();
        for m in previous.owners(key) {
            if m.node == self.me || !current.has(m.node) {
                continue;
            }
            let (Some(service), Ok(payload)) =
                (EbbId::from_raw(m.service), postcard::to_allocvec(key))
            else {
                continue;
            };
            let core = owner(key, m.cores as usize);
            let Ok(reply) = self
                .messenger
                .call(m.node, core, service, FETCH, payload)
                .await
            else {
                continue;
            };
            if let Ok(item) = postcard::from_bytes::<Option<WireItem>>(&reply) {
                if let Some(item) = item {
                    self.kv
                        .with_partition(|p, now| p.import(key, Some(item.into()), now));
                }
                return;
            }
        }
    }

    /// Installs the change's view if it is newer than the current one, once connected to
    /// each of its nodes, and starts moving this node's keys to it.
    async fn install(&'static self, change: ViewChange) -> Result<(), RemoteError> {
        let ViewChange { view, previous } = change;
        self.connect_to(&view).await?;
        let old = {
            let mut views = self.views.write();
            if view.epoch <= views.current.epoch {
                return Ok(());
            }
            let old = core::mem::replace(&mut views.current, Arc::new(view.clone()));
            // The cluster's previous view, not this node's: a node that just joined has
            // none of its own, yet must ask the previous owners for keys moving to it.
            views.previous = previous.map(Arc::new);
            old
        };
        // In the order they began to wait.
        let waiters = core::mem::take(&mut *self.view_waiters.lock());
        for waker in waiters {
            waker.wake();
        }
        self.note(|p| {
            *p = Progress {
                epoch: view.epoch,
                done: old.epoch == 0,
                ..Progress::default()
            };
        });
        if old.epoch > 0 {
            sesa_event::spawn_local(self.rebalance((*old).clone(), view));
        }
        Ok(())
    }

    /// Waits until this node is connected to every node of `view` (the membership layer
    /// makes the connections), for up to [`CONNECT_WAIT`].
    async fn connect_to(&self, view: &View) -> Result<(), RemoteError> {
        let deadline = sesa_event::now() + CONNECT_WAIT;
        for m in &view.members {
            while m.node != self.me && !self.connected(m.node).await {
                if sesa_event::now() > deadline {
                    return Err(RemoteError::Refused(format!(
                        "node {} is not connected to node {} after {CONNECT_WAIT:?}",
                        self.me, m.node
                    )));
                }
                sesa_event::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(())
    }

    /// Moves this node's keys from `old` to `new`, core by core.
    async fn rebalance(&'static self, old: View, new: View) {
        let epoch = new.epoch;
        // What there is to look at, so that the frontend can show how far along it is.
        let held = self
            .kv
            .each_partition(|p, now| p.live_keys(now) as u64)
            .await;
        let total = held.map_or(0, |counts| counts.iter().sum());
        self.note(|p| {
            if p.epoch == epoch {
                p.keys_total = total;
            }
        });
        for core in sesa_event::all_cores() {
            let (old, new) = (old.clone(), new.clone());
            let _ = sesa_event::spawn_on_async(core, move || self.rebalance_core(old, new)).await;
        }
        self.note(|p| {
            if p.epoch == epoch {
                p.done = true;
            }
        });
    }

    /// [`Node::rebalance`] on one core's partition: the keys are found, planned, copied
    /// and dropped a slice at a time ([`Partition::scan`](super::store::Partition::scan):
    /// a 256th of them), with a yield after each, so that the core goes on serving
    /// clients and answering membership probes while a million keys move (a core busy
    /// for seconds would be declared down). The keys are not copied out all at once
    /// first: for a million keys that took every node's core for 200-300 ms at the
    /// start of a move, most of it the kernel zeroing the fresh pages.
    async fn rebalance_core(&'static self, old: View, new: View) {
        let mut scan = Scan::default();
        let mut pace = Pace::of(&old, &new);
        let mut owners = OwnersInBoth::new(&old, &new);
        while let Some(slice) = self.kv.with_partition(|p, now| p.scan(&mut scan, now)) {
            for keys in slice.chunks(SCAN) {
                self.rebalance_slice(&mut owners, keys, &mut pace).await;
                self.note(|p| p.keys_seen += keys.len() as u64);
                sesa_event::yield_now().await;
            }
        }
    }

    async fn rebalance_slice(
        &'static self,
        owners: &mut OwnersInBoth<'_>,
        keys: &[Vec<u8>],
        pace: &mut Pace,
    ) {
        let new = owners.new;
        let mut outgoing: BTreeMap<(u32, u32), Vec<&[u8]>> = BTreeMap::new();
        let mut leaving = Vec::new();
        for key in keys {
            let (before, after) = owners.of(key);
            let pusher = before.iter().find(|m| new.has(m.node)).map(|m| m.node);
            // A key held here that no surviving old owner claims (this node joined
            // late, say) is pushed from here.
            if pusher == Some(self.me) || pusher.is_none() {
                for m in after {
                    if m.node != self.me && !before.iter().any(|b| b.node == m.node) {
                        let core = owner(key, m.cores as usize).index() as u32;
                        outgoing.entry((m.node, core)).or_default().push(key);
                    }
                }
            }
            if !after.iter().any(|m| m.node == self.me) {
                leaving.push(key.as_slice());
            }
        }
        let mut failed: BTreeSet<&[u8]> = BTreeSet::new();
        for ((node, core), keys) in outgoing {
            let Some(m) = new.members.iter().find(|m| m.node == node) else {
                continue;
            };
            let Some(service) = EbbId::from_raw(m.service) else {
                continue;
            };
            for chunk in keys.chunks(BATCH) {
                let started = sesa_event::now();
                // Read the items when sending, so the copy is as fresh as this core's
                // partition (writes here and copies leave this core in order), and
                // encode them where they are.
                let (sent, encoded) = self.kv.with_partition(|p, now| {
                    let copies: Vec<CopyRef<'_>> = chunk
                        .iter()
                        .filter_map(|&key| {
                            let item = p.peek(key, now)?;
                            Some(CopyRef {
                                key,
                                item: Some(item.into()),
                            })
                        })
                        .collect();
                    (
                        copies.len() as u64,
                        postcard::to_allocvec(&(new.epoch, &copies)),
                    )
                });
                let result = match encoded {
                    Ok(payload) => self
                        .messenger
                        .call(node, CoreId::new(core), service, PUT, payload)
                        .await
                        .map(|_| ()),
                    Err(_) => Err(CallError::NotConnected(node)),
                };
                match result {
                    Ok(()) => self.note(|p| p.copies_sent += sent),
                    Err(e) => {
                        tracing::warn!(node, "keys not copied: {e}");
                        failed.extend(chunk.iter().copied());
                        self.note(|p| p.failures += sent);
                    }
                }
                pace.after(sesa_event::now() - started).await;
            }
        }
        // Drop what this node no longer owns, unless its copy could not be made.
        let dropped = self.kv.with_partition(|p, now| {
            let mut n = 0;
            for key in leaving.iter().filter(|k| !failed.contains(*k)) {
                if p.import(key, None, now) {
                    n += 1;
                }
            }
            n
        });
        self.note(|p| p.keys_dropped += dropped);
    }

    /// `flush_all` on every node of the store: `OK`, or what went wrong.
    pub(crate) async fn flush_all(&'static self, delay: i64) -> Vec<u8> {
        let view = self.current();
        let Ok(payload) = postcard::to_allocvec(&delay) else {
            return server_error("encoding");
        };
        for &m in &view.members {
            let result = if m.node == self.me {
                self.serve(FLUSH, payload.clone()).await.map(|_| ())
            } else {
                match EbbId::from_raw(m.service) {
                    Some(service) => self
                        .messenger
                        .call(m.node, CoreId::new(0), service, FLUSH, payload.clone())
                        .await
                        .map(|_| ())
                        .map_err(|e| RemoteError::Refused(e.to_string())),
                    None => Err(RemoteError::NoSuchEbb),
                }
            };
            if let Err(e) = result {
                return server_error(format_args!("flush_all on node {}: {e}", m.node));
            }
        }
        b"OK\r\n".to_vec()
    }
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
    let service = EbbId::from_raw(member.service).ok_or(CallError::Remote {
        node: member.node,
        error: RemoteError::NoSuchEbb,
    })?;
    messenger
        .call(member.node, CoreId::new(0), service, method, payload)
        .await
}

/// How a move's copying rests, so that the node's clients keep most of its core: after
/// each batch, for [`PACE_REST_JOIN`] (or [`PACE_REST_LOSS`]) times as long as the
/// batch took (its encoding, the round trip, the new owner's installing). The rest is
/// owed until it is worth a sleep ([`PACE_SLEEP`]): the timers' resolution is a
/// millisecond, so a sleep after each batch shorter than that would rest longer than
/// asked.
struct Pace {
    /// The rest, in multiples of a batch's time.
    rest: u32,
    owed: Duration,
}

impl Pace {
    /// The pace of a move from `old` to `new`: gentle only when nodes just joined a
    /// store whose keys all had their owners already, so that no key has fewer copies
    /// than it should while it moves. A node (re)joining a store left with fewer nodes
    /// than owners per key restores lost copies: that is urgent too (a simulated run,
    /// seed 3089, lost a write when the last old owner crashed during a gentle move).
    fn of(old: &View, new: &View) -> Pace {
        let joined_only = old.members.iter().all(|m| new.has(m.node));
        let redundant = old.replicas >= new.replicas;
        Pace {
            rest: if joined_only && redundant {
                PACE_REST_JOIN
            } else {
                PACE_REST_LOSS
            },
            owed: Duration::ZERO,
        }
    }

    async fn after(&mut self, took: Duration) {
        self.owed += took.min(PACE_MAX) * self.rest;
        if self.owed >= PACE_SLEEP {
            let start = sesa_event::now();
            sesa_event::sleep(self.owed).await;
            self.owed = self.owed.saturating_sub(sesa_event::now() - start);
        }
    }
}

/// A move of keys to a new view: every node's [`Progress`] summed, as the frontend last
/// read it.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebalance {
    /// The view the keys move to.
    pub epoch: u64,
    /// Nodes done moving their keys.
    pub nodes_done: u32,
    /// Nodes moving keys (the view's, and any leaving it).
    pub nodes: u32,
    /// Keys the nodes held when the move began.
    pub keys_total: u64,
    /// Keys looked at so far.
    pub keys_seen: u64,
    /// Copies sent to new owners.
    pub copies_sent: u64,
    /// Keys dropped by nodes that no longer own them.
    pub keys_dropped: u64,
    /// Copies that could not be sent.
    pub failures: u64,
    /// Milliseconds since the view was sent.
    pub elapsed_ms: u64,
    /// Whether every node is done.
    pub finished: bool,
}

impl Rebalance {
    /// One line for people: `view 3: 2 of 4 node(s) moved their keys; ...`.
    pub fn line(&self) -> String {
        format!(
            "view {}: {} of {} node(s) moved their keys; {} copies sent, {} keys dropped, {} failed{}",
            self.epoch,
            self.nodes_done,
            self.nodes,
            self.copies_sent,
            self.keys_dropped,
            self.failures,
            if self.finished {
                format!(" ({} ms)", self.elapsed_ms)
            } else {
                format!(
                    " ({} of {} keys looked at)",
                    self.keys_seen, self.keys_total
                )
            }
        )
    }
}

/// The frontend's side of membership changes: it numbers the views, sends each to the
/// store's nodes, waits until they have moved their keys, and settles it. Portable: the
/// `sesa kv` frontend and the simulator's store workload drive the same code.
pub struct Coordinator {
    messenger: MessengerRef,
    replicas: u32,
    layout: Layout,
    last: Option<View>,
    /// How long a change may take before the coordinator stops waiting for it.
    pub limit: Duration,
}

impl Coordinator {
    /// A coordinator of a store with `replicas` owners per key and `layout`.
    pub fn new(messenger: MessengerRef, replicas: u32, layout: Layout) -> Self {
        Coordinator {
            messenger,
            replicas,
            layout,
            last: None,
            limit: Duration::from_secs(120),
        }
    }

    /// The last view sent.
    pub fn view(&self) -> Option<&View> {
        self.last.as_ref()
    }

    /// Sends the next view (of `members`) to every member and to `leaving`, waits until
    /// each has moved its keys, calling `progress` with the figures after every round
    /// (every 20 ms), then settles the view. Returns the last figures (`finished` is
    /// false if [`limit`](Self::limit) passed first). Nodes that do not take the view
    /// are left out of the wait: they are lost, and the next view handles them.
    ///
    /// # Errors
    /// The view could not be encoded.
    pub async fn change(
        &mut self,
        members: &BTreeMap<u32, Member>,
        leaving: &[Member],
        mut progress: impl FnMut(&Rebalance),
    ) -> Result<Rebalance, RemoteError> {
        let view = View {
            epoch: self.last.as_ref().map_or(0, |v| v.epoch) + 1,
            members: members.values().copied().collect(),
            replicas: self.replicas.min(members.len() as u32).max(1),
            layout: self.layout,
        };
        let epoch = view.epoch;
        let change = ViewChange {
            view: view.clone(),
            previous: self.last.replace(view),
        };
        let payload = postcard::to_allocvec(&change)
            .map_err(|_| RemoteError::Refused("encoding the view".into()))?;
        let started = sesa_event::now();
        let messenger = self.messenger;
        // First every node connects to every other (a new one's connections are being
        // made by the membership layer, each node on its own time), so that they all
        // take the view within moments of one another: a node that had it would ship
        // requests of the new view to one still connecting, where they would wait (a
        // quarter of a second with the whole store stalled, measured, when nodes were
        // sent the view straight away). One that fails here is told the view anyway, and
        // its failure to take it is handled below.
        if epoch > 1 {
            let view = postcard::to_allocvec(&change.view)
                .map_err(|_| RemoteError::Refused("encoding the view".into()))?;
            let calls: Vec<_> = members
                .values()
                .chain(leaving)
                .map(|m| {
                    let (m, view) = (*m, view.clone());
                    sesa_event::spawn_local(async move { call(messenger, m, CONNECT, view).await })
                })
                .collect();
            for call in calls {
                let _ = call.await;
            }
        }
        // Every node must take the view: one that misses it (a connection being
        // re-established, say) would own keys without knowing. Those that fail are asked
        // again for up to `VIEW_WAIT`; a node still silent then is lost, and the next
        // view (the frontend's, when it notices) handles it.
        let mut told: Vec<Member> = Vec::new();
        let mut untold: Vec<Member> = members.values().chain(leaving).copied().collect();
        loop {
            let calls: Vec<_> = untold
                .iter()
                .map(|m| {
                    let (m, payload) = (*m, payload.clone());
                    (
                        m,
                        sesa_event::spawn_local(
                            async move { call(messenger, m, VIEW, payload).await },
                        ),
                    )
                })
                .collect();
            let mut failed = Vec::new();
            for (m, call) in calls {
                match call.await {
                    Ok(Ok(_)) => told.push(m),
                    Ok(Err(e)) => failed.push((m, e.to_string())),
                    Err(e) => failed.push((m, e.to_string())),
                }
            }
            if failed.is_empty() || sesa_event::now() - started > VIEW_WAIT {
                for (m, e) in failed {
                    tracing::warn!(node = m.node, epoch, error = %e, "view not taken");
                }
                break;
            }
            untold = failed.into_iter().map(|(m, _)| m).collect();
            sesa_event::sleep(Duration::from_millis(20)).await;
        }
        let mut r = Rebalance {
            epoch,
            nodes: told.len() as u32,
            ..Rebalance::default()
        };
        if epoch > 1 {
            loop {
                r = Rebalance {
                    epoch,
                    nodes: told.len() as u32,
                    ..Rebalance::default()
                };
                let mut waiting = 0;
                for m in &told {
                    let reply = call(messenger, *m, PROGRESS, Vec::new()).await;
                    let Some(p) = reply
                        .ok()
                        .and_then(|b| postcard::from_bytes::<Progress>(&b).ok())
                    else {
                        continue; // Lost meanwhile: the next view handles it.
                    };
                    if p.epoch == epoch && !p.done {
                        waiting += 1;
                    }
                    r.keys_total += p.keys_total;
                    r.keys_seen += p.keys_seen;
                    r.copies_sent += p.copies_sent;
                    r.keys_dropped += p.keys_dropped;
                    r.failures += p.failures;
                }
                r.nodes_done = r.nodes - waiting;
                r.finished = waiting == 0;
                r.elapsed_ms = (sesa_event::now() - started).as_millis() as u64;
                progress(&r);
                if r.finished || sesa_event::now() - started > self.limit {
                    break;
                }
                sesa_event::sleep(Duration::from_millis(20)).await;
            }
        } else {
            // The first view: nothing to move, nothing to settle.
            r.finished = true;
            r.nodes_done = r.nodes;
            progress(&r);
            return Ok(r);
        }
        let settle = postcard::to_allocvec(&epoch)
            .map_err(|_| RemoteError::Refused("encoding the epoch".into()))?;
        for m in &told {
            let _ = call(messenger, *m, SETTLE, settle.clone()).await;
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(nodes: &[u32], replicas: u32) -> View {
        View {
            epoch: 1,
            members: nodes
                .iter()
                .map(|&node| Member {
                    node,
                    service: 1,
                    cores: 2,
                })
                .collect(),
            replicas,
            layout: Layout::Partitioned,
        }
    }

    #[test]
    fn a_join_moves_only_the_keys_the_new_node_now_owns() {
        let before = view(&[1, 2, 3], 2);
        let after = view(&[1, 2, 3, 4], 2);
        let mut changed = 0;
        for i in 0..10_000 {
            let key = format!("key{i}");
            let (b, a) = (before.owners(key.as_bytes()), after.owners(key.as_bytes()));
            assert_eq!(a.len(), 2);
            assert_ne!(a[0].node, a[1].node);
            if a != b {
                // Only because node 4 took a place; the others keep their order.
                assert!(a.iter().any(|m| m.node == 4), "{key}: {b:?} -> {a:?}");
                changed += 1;
            }
        }
        // Node 4 is in the top 2 of 4 for about half the keys.
        assert!((4_500..5_500).contains(&changed), "{changed}");
    }

    #[test]
    fn a_loss_promotes_the_replica_and_keeps_the_survivors() {
        let before = view(&[1, 2, 3], 2);
        let after = view(&[1, 3], 2);
        for i in 0..1_000 {
            let key = format!("key{i}");
            let (b, a) = (before.owners(key.as_bytes()), after.owners(key.as_bytes()));
            for m in b.iter().filter(|m| m.node != 2) {
                assert!(a.contains(m), "{key}: survivor {} lost ownership", m.node);
            }
        }
    }

    #[test]
    fn central_layouts_put_every_key_on_the_first_nodes() {
        for layout in [Layout::Central, Layout::Cached] {
            let v = View {
                layout,
                ..view(&[2, 5, 9], 2)
            };
            for key in [b"a".as_slice(), b"b", b"zzz"] {
                let owners: Vec<u32> = v.owners(key).iter().map(|m| m.node).collect();
                assert_eq!(owners, [2, 5]);
            }
        }
        assert_eq!("cached".parse::<Layout>(), Ok(Layout::Cached));
        assert!("ring".parse::<Layout>().is_err());
    }

    #[test]
    fn owners_are_capped_by_the_nodes() {
        assert_eq!(view(&[5], 2).owners(b"k").len(), 1);
        assert!(View::default().owners(b"k").is_empty());
    }

    #[test]
    fn owners_in_both_views_are_each_views_owners() {
        // Joins, losses, both at once, replicas changing, a member's cores changing, and
        // the central layouts, key after key with the same buffers.
        let with_cores = |mut v: View, node: u32, cores: u32| {
            v.members
                .iter_mut()
                .filter(|m| m.node == node)
                .for_each(|m| m.cores = cores);
            v
        };
        let changes = [
            (view(&[1, 2, 3], 2), view(&[1, 2, 3, 4], 2)),
            (view(&[1, 2, 3, 4], 2), view(&[1, 3, 4], 2)),
            (view(&[1, 2], 2), view(&[3, 4, 5], 3)),
            (view(&[5], 1), view(&[5, 6, 7, 8, 9], 2)),
            (view(&[1, 2, 3], 3), with_cores(view(&[1, 2, 3], 1), 2, 4)),
            (
                view(&[1, 2, 3], 2),
                View {
                    layout: Layout::Central,
                    ..view(&[3, 2], 2)
                },
            ),
            (View::default(), view(&[1], 2)),
        ];
        for (old, new) in &changes {
            let mut both = OwnersInBoth::new(old, new);
            for i in 0..500 {
                let key = format!("key{i}");
                let (before, after) = both.of(key.as_bytes());
                assert_eq!(before, old.owners(key.as_bytes()), "{old:?} {key}");
                assert_eq!(after, new.owners(key.as_bytes()), "{new:?} {key}");
            }
        }
    }

    #[test]
    fn owners_are_the_highest_scores_in_order() {
        // The selection against the plain definition: every member scored, sorted.
        for nodes in 1..8u32 {
            for replicas in 1..4 {
                let v = view(
                    &(1..=nodes).map(|n| n * 7 % 11).collect::<Vec<_>>(),
                    replicas,
                );
                for i in 0..500 {
                    let key = format!("key{i}");
                    let mut scored: Vec<(u64, u32)> = v
                        .members
                        .iter()
                        .map(|m| (placement::score(key.as_bytes(), m.node), m.node))
                        .collect();
                    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                    let expected: Vec<u32> =
                        scored.iter().take(replicas as usize).map(|s| s.1).collect();
                    let owners: Vec<u32> =
                        v.owners(key.as_bytes()).iter().map(|m| m.node).collect();
                    assert_eq!(
                        owners, expected,
                        "{nodes} nodes, {replicas} replicas, {key}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_move_sends_what_a_copy_reads() {
        let item = Item {
            value: b"some value".to_vec(),
            flags: 7,
            expires_at: Some(1_700_000_000),
            cas: 42,
        };
        let sent = [
            CopyRef {
                key: b"k1",
                item: Some((&item).into()),
            },
            CopyRef {
                key: b"k2",
                item: None,
            },
        ];
        let bytes = postcard::to_allocvec(&(3u64, &sent[..])).unwrap();
        let (epoch, copies): (u64, Vec<Copy>) = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(epoch, 3);
        assert_eq!(copies.len(), 2);
        assert_eq!(copies[0].key, b"k1");
        assert_eq!(copies[1].key, b"k2");
        assert!(copies[1].item.is_none());
        assert_eq!(Item::from(copies[0].item.clone().unwrap()), item);
        // Byte strings are written as postcard writes a sequence of bytes: a length, then
        // the bytes.
        let plain = postcard::to_allocvec(&(3u64, [(b"k1".to_vec(), None::<u8>)])).unwrap();
        let ours = postcard::to_allocvec(&(
            3u64,
            [CopyRef {
                key: b"k1",
                item: None,
            }],
        ))
        .unwrap();
        assert_eq!(plain, ours);
    }

    #[test]
    fn keys_move_gently_on_a_join_and_sooner_after_a_loss() {
        let (three, four) = (view(&[1, 2, 3], 2), view(&[1, 2, 3, 4], 2));
        assert_eq!(Pace::of(&three, &four).rest, PACE_REST_JOIN);
        assert_eq!(Pace::of(&four, &three).rest, PACE_REST_LOSS);
        assert_eq!(Pace::of(&three, &view(&[1, 2, 4], 2)).rest, PACE_REST_LOSS);
        // One node left of two owners per key: a second restores the lost copies.
        assert_eq!(
            Pace::of(&view(&[1], 1), &view(&[1, 3], 2)).rest,
            PACE_REST_LOSS
        );
    }
}
