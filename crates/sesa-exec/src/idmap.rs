//! The global id map: a cluster-wide `key -> bytes` map with `get`, `set` and `watch`,
//! partitioned over the nodes, with replicas. It removes EbbRT's single point of
//! failure, where the map lived on the frontend only.
//!
//! # Placement
//! Each key lives on `replicas` nodes (default 2), chosen by rendezvous hashing: every
//! member scores `xxh3(key, node)` and the highest scores win. The hash is stable across
//! processes and builds. When a member leaves, only the keys it held move; every other
//! key keeps its replicas.
//!
//! # Consistency
//! Values carry versions; a replica keeps the highest. A writer first reads the newest
//! version from every replica of the key, then writes `version + 1` to all of them (its
//! node id in the low bits breaks ties between concurrent writers the same way
//! everywhere). So replicas converge: last writer wins. A `set` succeeds only when every
//! replica of the current members took it, so an acknowledged set is on R nodes and no
//! later writer can miss its version. A `get` asks every replica and returns the newest
//! answer, so it survives the loss of all replicas but one. A value is only ever
//! returned if some `set` wrote it. After the members change, each node re-copies its
//! entries to their replicas ([`GlobalIdMap::rebalance`]), so keys are back on R nodes.
//!
//! The deterministic simulator checks this under crashes, restarts, joins, leaves and
//! partitions (`sesa sim --workload idmap`). It found the first design losing
//! acknowledged sets: a set acknowledged by one replica, or a restarted writer whose
//! read saw only its own empty store and wrote a version below the one it replaced.
//!
//! # Serving
//! Each node's store is a node-shared EBB ([`IdMapStore`]) served as a typed service
//! ([`IdMapService`]: get, set, watch, copy). A replica that is this node itself is
//! answered directly, without a message.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::task::{Poll, Waker};
use core::time::Duration;

use serde::{Deserialize, Serialize};
use sesa_ebb::{CoreId, EbbError, EbbId, EbbRef, NodeId, NodeShared};
use sesa_event::EventError;

use crate::MessengerRef;
use crate::service::{Client, Service, ServiceError};

/// A replica's service: the calls one node's id map makes to another's store.
pub struct IdMapService;

/// A call to a replica's store.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum IdMapRequest {
    /// The replica's version of `key`; refused if asked under a view older than the
    /// replica's (`epoch`).
    Get {
        /// The key.
        key: u64,
        /// The reader's view of the members.
        epoch: u64,
    },
    /// Keep `value` for `key` if it is newer; refused if made under a view older than
    /// the replica's (`epoch`).
    Set {
        /// The key.
        key: u64,
        /// The value and its version.
        value: Versioned,
        /// The writer's view of the members.
        epoch: u64,
    },
    /// Wait (up to a limit) for a version of `key` above `after`.
    Watch {
        /// The key.
        key: u64,
        /// The version the caller has.
        after: u64,
    },
    /// A rebalance's copy: kept if newer, whatever the sender's view.
    Copy {
        /// The key.
        key: u64,
        /// The value and its version.
        value: Versioned,
    },
}

/// A replica's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdMapReply {
    /// Its version of the key (a `Get`; a `Watch`: `None` when it held the longest
    /// time without a change).
    Value(Option<Versioned>),
    /// The version it now holds (a `Set` or `Copy`).
    Version(u64),
}

/// Why a replica refused a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReplicaError {
    /// A get or set made under an older view of the members (a writer may have missed
    /// a replica that the newer view has; a reader may ask replicas a newer writer did
    /// not write to).
    #[error("a request made under an older view of the members")]
    OlderView,
    /// The replica has no store (its EBB is gone).
    #[error("the replica has no store")]
    NoStore,
    /// A set of a new key, and the replica holds [`ENTRIES_MAX`] keys already.
    #[error("the replica holds the most keys it may ({ENTRIES_MAX})")]
    Full,
}

/// The most keys one node's part of the map takes by `set` (the naming service's
/// limit: a node creating global EBBs without end is refused, not run out of memory).
/// A rebalance's copies are not refused: they carry keys the map took already.
pub const ENTRIES_MAX: usize = 1 << 20;

impl Service for IdMapService {
    const NAME: &'static str = "id map";
    type Request = IdMapRequest;
    type Reply = IdMapReply;
    type Error = ReplicaError;

    fn method(request: &IdMapRequest) -> u16 {
        match request {
            IdMapRequest::Get { .. } => 1,
            IdMapRequest::Set { .. } => 2,
            IdMapRequest::Watch { .. } => 3,
            IdMapRequest::Copy { .. } => 4,
        }
    }
}

/// How long a replica holds a `watch` before answering "no change" (the caller asks again).
const WATCH_HOLD: Duration = Duration::from_secs(10);

/// The longest a get or a set waits for this node's newest view to be activated
/// ([`GlobalIdMap::activate`]) before it fails with [`IdMapError::Changing`].
pub const ACTIVE_WAIT: Duration = Duration::from_secs(2);

/// A value and its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// Higher is newer.
    pub version: u64,
    /// The value.
    pub value: Vec<u8>,
}

/// A member of the cluster, as the id map needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node id.
    pub node: NodeId,
    /// The id of that node's [`IdMapStore`] EBB.
    pub store: EbbId,
}

/// Why an id map operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdMapError {
    /// No replica of the key answered.
    #[error("no replica of key {key:#x} answered (last error: {last})")]
    Unavailable {
        /// The key.
        key: u64,
        /// What the last replica tried said.
        last: ServiceError<ReplicaError>,
    },
    /// The cluster has no members.
    #[error("the cluster has no members")]
    NoMembers,
    /// This node's newest view of the members is not active yet (some member has not
    /// installed it), for longer than [`ACTIVE_WAIT`].
    #[error("the members are changing (view {epoch} not active); try again")]
    Changing {
        /// The view.
        epoch: u64,
    },
    /// A replica sent something that is not a valid answer.
    #[error("a replica sent a malformed answer")]
    Malformed,
    /// This node's own store could not be reached.
    #[error(transparent)]
    Ebb(#[from] EbbError),
    /// The event layer failed.
    #[error(transparent)]
    Event(#[from] EventError),
}

/// One node's part of the map. Shared by the node's cores.
#[derive(Default)]
pub struct IdMapStore {
    state: spin::Mutex<StoreState>,
}

#[derive(Default)]
struct StoreState {
    entries: BTreeMap<u64, Versioned>,
    /// The newest members' epoch this node has taken: a set made under an older view
    /// is refused (its writer may have missed a replica that the newer view has).
    epoch: u64,
    /// Waiting `watch`es: woken on every set.
    watchers: Vec<Waker>,
}

impl IdMapStore {
    /// Whether a set of `key` is taken: a key held already, or room for one more.
    fn takes(&self, key: u64) -> bool {
        let state = self.state.lock();
        state.entries.len() < ENTRIES_MAX || state.entries.contains_key(&key)
    }

    fn get(&self, key: u64) -> Option<Versioned> {
        self.state.lock().entries.get(&key).cloned()
    }

    /// Keeps the newer of what is stored and `value`; returns the stored version.
    fn set(&self, key: u64, value: Versioned) -> u64 {
        let woken = {
            let mut state = self.state.lock();
            let entry = state.entries.entry(key).or_insert(Versioned {
                version: 0,
                value: Vec::new(),
            });
            if value.version > entry.version {
                *entry = value;
            }
            let version = entry.version;
            (version, core::mem::take(&mut state.watchers))
        };
        for w in woken.1 {
            w.wake();
        }
        woken.0
    }

    /// Completes when `key` has a version above `after`, or after `WATCH_HOLD`.
    async fn watch(&self, key: u64, after: u64) -> Option<Versioned> {
        let newer = core::future::poll_fn(|cx| {
            let mut state = self.state.lock();
            match state.entries.get(&key) {
                Some(v) if v.version > after => Poll::Ready(v.clone()),
                _ => {
                    state.watchers.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        });
        sesa_event::timeout(WATCH_HOLD, newer).await
    }
}

/// The replicas of `key` among `members`, best first ([`crate::placement`]).
pub fn replicas_of(key: u64, members: &[Member], replicas: usize) -> Vec<Member> {
    crate::placement::top(&key.to_le_bytes(), members.iter().copied(), replicas, |m| {
        m.node
    })
}

/// A handle to the global id map from one node: `Copy`-free but cheap to clone, usable
/// from any core of it.
#[derive(Clone)]
pub struct GlobalIdMap {
    messenger: MessengerRef,
    me: NodeId,
    store: EbbRef<IdMapStore>,
    /// The members and their epoch.
    members: Arc<spin::Mutex<(u64, Vec<Member>)>>,
    /// The newest epoch [`GlobalIdMap::activate`]d: gets and sets run under `members`
    /// only once it is theirs.
    active: Arc<core::sync::atomic::AtomicU64>,
    /// The members of the newest settled view (every node finished its rebalance to
    /// it), whose replicas hold every key until the next one settles: a get asks them
    /// too ([`GlobalIdMap::set_settled`]).
    settled: Arc<spin::Mutex<Vec<Member>>>,
    replicas: usize,
}

impl GlobalIdMap {
    /// Creates this node's store and serves it. Give the returned map the cluster's
    /// members (with this node's own [`Member`], from [`GlobalIdMap::member`]) before use.
    ///
    /// # Errors
    /// Off a core, or the messenger cannot be reached.
    pub async fn start(
        messenger: MessengerRef,
        me: NodeId,
        replicas: usize,
    ) -> Result<Self, IdMapError> {
        let (store, _root) = NodeShared::create(IdMapStore::default)?;
        crate::service::serve::<IdMapService, _, _>(messenger, store.id(), move |_, request| {
            answer(store, request)
        })
        .await?;
        Ok(GlobalIdMap {
            messenger,
            me,
            store,
            members: Arc::new(spin::Mutex::new((0, Vec::new()))),
            active: Arc::new(core::sync::atomic::AtomicU64::new(0)),
            settled: Arc::new(spin::Mutex::new(Vec::new())),
            replicas: replicas.max(1),
        })
    }

    /// This node as a member (what other nodes need to reach its store).
    pub fn member(&self) -> Member {
        Member {
            node: self.me,
            store: self.store.id(),
        }
    }

    /// Installs the membership view (this node included) with the members of `epoch`,
    /// which must grow with each change (the frontend's view number). A view older than
    /// the one this node has is ignored. From here on this node's store refuses sets
    /// made under an older view; call [`rebalance`](Self::rebalance) next. Gets and sets
    /// wait until the view is [activated](Self::activate).
    pub fn set_members(&self, epoch: u64, members: Vec<Member>) {
        {
            let mut current = self.members.lock();
            if epoch < current.0 {
                return;
            }
            *current = (epoch, members);
        }
        if let Some(store) = local_store(self.store) {
            let mut state = store.state.lock();
            state.epoch = state.epoch.max(epoch);
        }
    }

    /// Lets this node get and set under view `epoch` (if it is the one installed): the
    /// caller, the cluster's authority, knows every member of it installed it. Until
    /// then a node could still act under an older view: a set there could be missed by
    /// a reader under the new one, and a reader under the old one could miss a set
    /// acknowledged under the new one (a node that joined, say, reading alone).
    /// Returns whether `epoch` is the view installed (else nothing changed).
    pub fn activate(&self, epoch: u64) -> bool {
        let installed = self.members.lock().0 == epoch;
        if installed {
            self.active
                .fetch_max(epoch, core::sync::atomic::Ordering::Relaxed);
        }
        installed
    }

    /// The current view's epoch and the replicas of `key` in it, once it is active
    /// (waiting up to [`ACTIVE_WAIT`], for a first view too: a node that has just
    /// joined is given one by the frontend).
    async fn active_replicas_of(&self, key: u64) -> Result<(u64, Vec<Member>), IdMapError> {
        let deadline = sesa_event::now() + ACTIVE_WAIT;
        loop {
            let late = sesa_event::now() > deadline;
            match self.replicas_of(key) {
                Ok((epoch, replicas))
                    if self.active.load(core::sync::atomic::Ordering::Relaxed) == epoch =>
                {
                    return Ok((epoch, replicas));
                }
                Ok((epoch, _)) if late => return Err(IdMapError::Changing { epoch }),
                Err(e) if late => return Err(e),
                _ => {}
            }
            sesa_event::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The members of the newest view that settled: every node of it finished its
    /// [`rebalance`](Self::rebalance), so each key is on its replicas in it. Until the
    /// next view settles, a get asks those replicas too (a new replica may not have its
    /// copy yet).
    pub fn set_settled(&self, members: Vec<Member>) {
        *self.settled.lock() = members;
    }

    /// The current view's epoch and the replicas of `key` in it.
    fn replicas_of(&self, key: u64) -> Result<(u64, Vec<Member>), IdMapError> {
        let (epoch, members) = self.members.lock().clone();
        if members.is_empty() {
            return Err(IdMapError::NoMembers);
        }
        Ok((epoch, replicas_of(key, &members, self.replicas)))
    }

    async fn ask(
        &self,
        replica: Member,
        request: IdMapRequest,
    ) -> Result<IdMapReply, ServiceError<ReplicaError>> {
        if replica.node == self.me {
            // Ourselves: no message, straight to the store (still through its service,
            // so local and remote answers are computed alike).
            return answer(self.store, request)
                .await
                .map_err(ServiceError::Failed);
        }
        Client::<IdMapService>::new(self.messenger, replica.node, CoreId::new(0), replica.store)
            .call(request)
            .await
    }

    /// A replica's version of `key`, asked under view `epoch`.
    async fn version_at(
        &self,
        replica: Member,
        key: u64,
        epoch: u64,
    ) -> Result<Option<Versioned>, ServiceError<ReplicaError>> {
        match self.ask(replica, IdMapRequest::Get { key, epoch }).await? {
            IdMapReply::Value(v) => Ok(v),
            IdMapReply::Version(_) => Err(ServiceError::Codec {
                service: IdMapService::NAME,
                what: "a version answered to a get",
            }),
        }
    }

    /// The newest value of `key` among its replicas, or `None` if it was never set.
    ///
    /// Needs every replica of the current members, as [`GlobalIdMap::set`] does: a set
    /// acknowledged before the get began is on each of them, so the newest answer is
    /// at least as new as it, even when one replica answers from an empty store (a node
    /// that restarted) or is cut off. While a replica is unreachable but still a member,
    /// gets of its keys fail too; a view without it makes them succeed again.
    ///
    /// # Errors
    /// [`IdMapError::Unavailable`] if a replica did not answer or refused.
    pub async fn get(&self, key: u64) -> Result<Option<Versioned>, IdMapError> {
        let (epoch, replicas) = self.active_replicas_of(key).await?;
        let mut newest: Option<Versioned> = None;
        let mut keep = |got: Option<Versioned>| {
            if let Some(v) = got
                && newest.as_ref().is_none_or(|n| v.version > n.version)
            {
                newest = Some(v);
            }
        };
        for replica in &replicas {
            let got = self
                .version_at(*replica, key, epoch)
                .await
                .map_err(|last| IdMapError::Unavailable { key, last })?;
            keep(got);
        }
        // The key's replicas in the settled view: a set acknowledged under it is on
        // them, maybe not yet on the new replicas. One still a member must answer (it
        // may be the only one with the key); one that is gone (lost, or left) has handed
        // its keys over or counts as lost. A refusal means this reader's view is behind.
        let before = replicas_of(key, &self.settled.lock().clone(), self.replicas);
        let members = self.members.lock().1.clone();
        for replica in before.iter().filter(|b| !replicas.contains(b)) {
            match self.version_at(*replica, key, epoch).await {
                Ok(got) => keep(got),
                Err(last @ ServiceError::Failed(ReplicaError::OlderView)) => {
                    return Err(IdMapError::Unavailable { key, last });
                }
                Err(last) if members.contains(replica) => {
                    return Err(IdMapError::Unavailable { key, last });
                }
                Err(_) => {}
            }
        }
        Ok(newest)
    }

    /// Sets `key` to `value` on its replicas; returns the version written.
    ///
    /// Needs every replica of the current members: it reads the newest version from all
    /// of them, then writes a higher one to all of them (and to those of any view that
    /// came meanwhile), and succeeds only when each took it. So an acknowledged set is
    /// on R nodes, and the next set of the key (from any node, a restarted one too)
    /// sees its version. While a replica is unreachable
    /// but still a member, sets of its keys fail; a view without it (the frontend
    /// removes lost nodes) makes them succeed again. A failed set may have reached some
    /// replicas.
    ///
    /// # Errors
    /// [`IdMapError::Unavailable`] if a replica did not answer or refused.
    pub async fn set(&self, key: u64, value: Vec<u8>) -> Result<u64, IdMapError> {
        let (epoch, replicas) = self.active_replicas_of(key).await?;
        let mut current = 0;
        for replica in &replicas {
            let got = self
                .version_at(*replica, key, epoch)
                .await
                .map_err(|last| IdMapError::Unavailable { key, last })?;
            if let Some(v) = got {
                current = current.max(v.version);
            }
        }
        // Above everything seen; the low 16 bits name the writer, so two writers that
        // read the same version still order the same way on every replica.
        let version = ((current >> 16) + 1) << 16 | u64::from(self.me.get() & 0xffff);
        let value = Versioned { version, value };
        // Every replica of this node's newest view must hold it before it is
        // acknowledged: a view that came while the set ran (its rebalance copied the
        // entries held before this one landed) has replicas the first round missed.
        let (mut epoch, mut replicas, mut took) = (epoch, replicas, Vec::new());
        loop {
            for replica in replicas {
                if took.contains(&replica) {
                    continue;
                }
                let set = IdMapRequest::Set {
                    key,
                    value: value.clone(),
                    epoch,
                };
                self.ask(replica, set)
                    .await
                    .map_err(|last| IdMapError::Unavailable { key, last })?;
                took.push(replica);
            }
            let (newest, now) = self.replicas_of(key)?;
            if newest == epoch {
                return Ok(version);
            }
            (epoch, replicas) = (newest, now);
        }
    }

    /// Copies every entry this node's store holds to the key's other replicas under the
    /// current members, so that each key is back on R live nodes after the members
    /// changed (a replica lost, a node joined, one is leaving). Call it after
    /// [`set_members`](Self::set_members); a leaving node calls it with the members
    /// that stay, to hand its keys over. Replicas keep the newer version, so a copy
    /// never undoes a write, and copying twice is harmless. Returns how many copies a
    /// replica took. Every copy is tried; if one failed, the error says which key (call
    /// it again: a node leaving must not go before its keys are handed over).
    ///
    /// It sends one message per key and replica: fine for an id map (a few thousand
    /// keys); a bulk transfer would be the next step for more.
    ///
    /// # Errors
    /// A replica did not take a copy ([`IdMapError::Unavailable`]), or there are no
    /// members.
    pub async fn rebalance(&self) -> Result<usize, IdMapError> {
        let entries: Vec<(u64, Versioned)> = match local_store(self.store) {
            Some(store) => store
                .state
                .lock()
                .entries
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            None => Vec::new(), // Nothing stored here yet.
        };
        let mut copied = 0;
        let mut failed = None;
        for (key, value) in entries {
            for replica in self.replicas_of(key)?.1 {
                if replica.node == self.me {
                    continue;
                }
                let copy = IdMapRequest::Copy {
                    key,
                    value: value.clone(),
                };
                match self.ask(replica, copy).await {
                    Ok(_) => copied += 1,
                    Err(last) => failed = Some(IdMapError::Unavailable { key, last }),
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(copied),
        }
    }

    /// Waits for a version of `key` above `after` and returns it. Moves to another
    /// replica if the one it waits on is lost.
    ///
    /// # Errors
    /// [`IdMapError::Unavailable`] if no replica can be reached.
    pub async fn watch(&self, key: u64, after: u64) -> Result<Versioned, IdMapError> {
        loop {
            let mut last = None;
            for replica in self.replicas_of(key)?.1 {
                match self.ask(replica, IdMapRequest::Watch { key, after }).await {
                    Ok(IdMapReply::Value(Some(v))) => return Ok(v),
                    Ok(IdMapReply::Value(None)) => {
                        // Held the maximum time without a change: ask again.
                        last = None;
                        break;
                    }
                    Ok(IdMapReply::Version(_)) => return Err(IdMapError::Malformed),
                    Err(e) => last = Some(e),
                }
            }
            if let Some(last) = last {
                return Err(IdMapError::Unavailable { key, last });
            }
        }
    }
}

/// This node's store (made by its first access if there is none yet). The rep is
/// node-shared: an `Arc` of it can be held across awaits (a watch's).
fn local_store(store: EbbRef<IdMapStore>) -> Option<Arc<IdMapStore>> {
    let root = store.root::<NodeShared<IdMapStore>>().ok()?;
    match root.rep() {
        Some(rep) => Some(rep),
        None => {
            store.try_with(|_| ()).ok()?;
            root.rep()
        }
    }
}

/// A replica's side: what its store answers to `request`.
async fn answer(
    store: EbbRef<IdMapStore>,
    request: IdMapRequest,
) -> Result<IdMapReply, ReplicaError> {
    let local = local_store(store).ok_or(ReplicaError::NoStore)?;
    // Gets and sets made under a view older than this replica's are refused.
    let current = |epoch: u64| match epoch < local.state.lock().epoch {
        true => Err(ReplicaError::OlderView),
        false => Ok(()),
    };
    Ok(match request {
        IdMapRequest::Get { key, epoch } => {
            current(epoch)?;
            IdMapReply::Value(local.get(key))
        }
        IdMapRequest::Set { key, value, epoch } => {
            current(epoch)?;
            if !local.takes(key) {
                return Err(ReplicaError::Full);
            }
            IdMapReply::Version(local.set(key, value))
        }
        IdMapRequest::Copy { key, value } => IdMapReply::Version(local.set(key, value)),
        IdMapRequest::Watch { key, after } => IdMapReply::Value(local.watch(key, after).await),
    })
}

/// Allocates cluster-wide ids with no round trip: each node (and each generation of it)
/// owns its own id space.
///
/// Layout of an id: bit 63 set (a global id; node-local `EbbId`s never set it), bits
/// 48-62 the node (15 bits), bits 32-47 the node's generation (16 bits, wrapping), bits
/// 0-31 a counter. A restarted node comes back with a new generation, so it never
/// reissues an id of its previous life.
pub struct GlobalIds {
    prefix: u64,
    next: core::sync::atomic::AtomicU32,
}

/// Why a global id could not be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GlobalIdError {
    /// The node id does not fit the layout.
    #[error("node id {0} does not fit in 15 bits")]
    NodeTooLarge(NodeId),
    /// This generation has used all 2^32 of its ids.
    #[error("this node generation has allocated all of its 2^32 global ids")]
    Exhausted,
}

impl GlobalIds {
    /// The id space of `node` in `generation`.
    ///
    /// # Errors
    /// [`GlobalIdError::NodeTooLarge`] for a node id of 2^15 or more.
    pub fn new(node: NodeId, generation: u64) -> Result<Self, GlobalIdError> {
        if node.get() >= 1 << 15 {
            return Err(GlobalIdError::NodeTooLarge(node));
        }
        let prefix = (1 << 63) | (u64::from(node.get()) << 48) | ((generation & 0xffff) << 32);
        Ok(GlobalIds {
            prefix,
            next: core::sync::atomic::AtomicU32::new(0),
        })
    }

    /// A fresh id, from any core.
    ///
    /// # Errors
    /// [`GlobalIdError::Exhausted`] after 2^32 ids.
    pub fn allocate(&self) -> Result<u64, GlobalIdError> {
        use core::sync::atomic::Ordering::Relaxed;
        let n = self
            .next
            .fetch_update(Relaxed, Relaxed, |n| n.checked_add(1))
            .map_err(|_| GlobalIdError::Exhausted)?;
        Ok(self.prefix | u64::from(n))
    }

    /// The node that allocated `id`, if it is a global id.
    pub fn node_of(id: u64) -> Option<NodeId> {
        (id >> 63 == 1).then_some(NodeId::new(((id >> 48) & 0x7fff) as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_replica_takes_sets_of_its_keys_but_no_new_one() {
        let store = IdMapStore::default();
        let empty = || Versioned {
            version: 1,
            value: Vec::new(),
        };
        store.state.lock().entries = (0..ENTRIES_MAX as u64).map(|k| (k, empty())).collect();
        assert!(store.takes(7));
        assert!(!store.takes(ENTRIES_MAX as u64));
        store.state.lock().entries.remove(&7);
        assert!(store.takes(ENTRIES_MAX as u64));
    }

    #[test]
    fn global_ids_are_unique_across_nodes_and_generations() {
        let mut seen = alloc::collections::BTreeSet::new();
        for (node, generation) in [(1, 1), (2, 1), (1, 2), (32767, 65535)] {
            let ids = GlobalIds::new(NodeId::new(node), generation).unwrap();
            for _ in 0..1000 {
                let id = ids.allocate().unwrap();
                assert!(seen.insert(id), "{id:#x} issued twice");
                assert_eq!(GlobalIds::node_of(id), Some(NodeId::new(node)));
                assert!(sesa_ebb::EbbId::from_raw(id).is_some_and(|e| e.generation() >= 1 << 31));
            }
        }
        assert_eq!(GlobalIds::node_of(5), None, "a local id is not global");
        assert!(GlobalIds::new(NodeId::new(1 << 15), 1).is_err());
        let ids = GlobalIds::new(NodeId::new(3), 1).unwrap();
        ids.next
            .store(u32::MAX, core::sync::atomic::Ordering::Relaxed);
        assert_eq!(ids.allocate(), Err(GlobalIdError::Exhausted));
    }
}
