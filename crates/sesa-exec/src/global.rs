//! Globally named EBBs and the **global miss** (EbbRT's): an EBB created at run time on
//! one node is reachable by its global id on every node of the application.
//!
//! Creating one ([`GlobalEbbs::create`]) allocates a cluster-wide id ([`GlobalIds`]: no
//! round trip), sets the EBB's kind ([`GlobalKind::TAG`]) and construction data under
//! that id in the global id map ([`GlobalIdMap`], the naming service), and builds its
//! root on the creating node. The first access on a node that has never seen the id
//! ([`GlobalEbbs::resolve`]) misses: the node looks the id up, checks the kind, builds
//! the kind's root from the data there and maps the id to it; from then on the id
//! resolves locally, and the root's own miss handler makes reps on the cores that touch
//! it. Two cores missing at once build one root: the second finds the first's.
//!
//! The naming service is the global id map, served by the nodes themselves (each name
//! on two of them), not by the frontend as in EbbRT: it outlives the loss of a node,
//! and a name registered (its `create` returned) is found by every later lookup from
//! any node (the map is linearizable). The frontend only tells the nodes who the
//! members are. A name never changes, so a node may cache what it resolved.
//!
//! ```text
//! // On node 1:
//! let tally = node.global().create::<Tally>(TallyData { name: "hits".into() }).await?;
//! // ... its id travels to node 2 in a message ...
//! // On node 2, the first access is a global miss, later ones are local:
//! let ebb = node.global().resolve(tally).await?;
//! ebb.with(|rep| rep.add(1));
//! ```

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sesa_ebb::{EbbError, EbbId, EbbNode, EbbRef, EbbRoot, NodeId};

use crate::idmap::{GlobalIdError, GlobalIdMap, GlobalIds, IdMapError};

/// A kind of globally named EBB: how any node builds its part from the construction
/// data registered when the EBB was created.
pub trait GlobalKind: 'static {
    /// The kind's name in the naming service: unique among the application's kinds.
    const TAG: &'static str;
    /// What the creator registers and every node builds from.
    type Data: Serialize + DeserializeOwned + 'static;
    /// The node-local root built from the data (its miss handler makes the reps).
    type Root: EbbRoot;

    /// This node's root of the EBB.
    fn root(data: Self::Data) -> Self::Root;
}

/// The global id of an EBB of kind `K`. `Copy`; send it anywhere.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct GlobalRef<K> {
    id: u64,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for GlobalRef<K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for GlobalRef<K> {}

impl<K> PartialEq for GlobalRef<K> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<K> Eq for GlobalRef<K> {}

impl<K> fmt::Debug for GlobalRef<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GlobalRef({:#x})", self.id)
    }
}

impl<K> GlobalRef<K> {
    /// The raw global id.
    pub fn id(self) -> u64 {
        self.id
    }

    /// The reference to global id `id` (its kind is checked when it is resolved).
    pub fn from_id(id: u64) -> Self {
        GlobalRef {
            id,
            kind: PhantomData,
        }
    }
}

/// What a global id names in the id map: its kind and construction data.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// Its [`GlobalKind::TAG`].
    kind: String,
    /// Its encoded construction data.
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// Why creating or resolving a global EBB failed.
#[derive(Debug, thiserror::Error)]
pub enum GlobalError {
    /// No id left, or this node cannot allocate ids.
    #[error("allocating a global id: {0}")]
    Id(#[from] GlobalIdError),
    /// The id map refused or could not be reached.
    #[error("the naming service (the global id map): {0}")]
    Naming(#[from] IdMapError),
    /// No EBB has this id.
    #[error("no EBB is named {0:#x}")]
    Unknown(u64),
    /// The id names an EBB of another kind.
    #[error("{id:#x} is a {actual}, not a {wanted}")]
    WrongKind {
        /// The id.
        id: u64,
        /// The kind asked for.
        wanted: &'static str,
        /// The kind registered.
        actual: String,
    },
    /// The construction data did not encode or decode.
    #[error("the construction data of {0:#x} does not encode or decode as its kind's")]
    Data(u64),
    /// The local object model refused (off a core, out of ids).
    #[error(transparent)]
    Ebb(#[from] EbbError),
}

/// A node's globally named EBBs: creating them, and resolving global ids to local ones
/// (the global miss). Shared by the node's cores.
pub struct GlobalEbbs {
    names: GlobalIdMap,
    ids: GlobalIds,
    /// Global id -> this node's EBB for it.
    resolved: spin::Mutex<BTreeMap<u64, EbbId>>,
}

impl GlobalEbbs {
    /// The global EBBs of node `node` in `generation`, named in the id map `names`.
    ///
    /// # Errors
    /// The node id is too large for a global id's node field.
    pub fn new(names: GlobalIdMap, node: NodeId, generation: u64) -> Result<Self, GlobalError> {
        Ok(GlobalEbbs {
            names,
            ids: GlobalIds::new(node, generation)?,
            resolved: spin::Mutex::new(BTreeMap::new()),
        })
    }

    /// Creates an EBB of kind `K` from `data`: registered under a new global id, and
    /// built on this node.
    ///
    /// # Errors
    /// No id, the naming service failed, or the object model refused.
    pub async fn create<K: GlobalKind>(&self, data: K::Data) -> Result<GlobalRef<K>, GlobalError> {
        let id = self.ids.allocate()?;
        let entry = Entry {
            kind: K::TAG.into(),
            data: postcard::to_allocvec(&data).map_err(|_| GlobalError::Data(id))?,
        };
        let entry = postcard::to_allocvec(&entry).map_err(|_| GlobalError::Data(id))?;
        // The id is this node's own (fresh from its id space): nobody else sets it, so
        // the one version written is the one every node reads.
        self.names.set(id, entry).await?;
        let node = EbbNode::current()?;
        let local = node.create_shared(Arc::new(K::root(data)))?;
        self.resolved.lock().insert(id, local.id());
        Ok(GlobalRef::from_id(id))
    }

    /// This node's EBB for `global`: a local hit, or on the first access here the
    /// global miss (the id looked up, its kind checked, its root built from the data).
    ///
    /// # Errors
    /// An unknown id, another kind, the naming service unreachable, or the object
    /// model refused.
    pub async fn resolve<K: GlobalKind>(
        &self,
        global: GlobalRef<K>,
    ) -> Result<EbbRef<<K::Root as EbbRoot>::Rep>, GlobalError> {
        let node = EbbNode::current()?;
        if let Some(local) = self.resolved.lock().get(&global.id).copied() {
            return Ok(node.lookup(local)?);
        }
        // The global miss.
        let found = self.names.get(global.id).await?;
        let found = found.ok_or(GlobalError::Unknown(global.id))?;
        let Entry { kind, data } =
            postcard::from_bytes(&found.value).map_err(|_| GlobalError::Data(global.id))?;
        if kind != K::TAG {
            return Err(GlobalError::WrongKind {
                id: global.id,
                wanted: K::TAG,
                actual: kind,
            });
        }
        let data: K::Data =
            postcard::from_bytes(&data).map_err(|_| GlobalError::Data(global.id))?;
        let mut resolved = self.resolved.lock();
        // Another core may have missed on it meanwhile: its root stands.
        if let Some(local) = resolved.get(&global.id).copied() {
            return Ok(node.lookup(local)?);
        }
        let local = node.create_shared(Arc::new(K::root(data)))?;
        resolved.insert(global.id, local.id());
        Ok(local)
    }

    /// Whether this node has resolved (or created) `global` already.
    pub fn is_resolved(&self, global: u64) -> bool {
        self.resolved.lock().contains_key(&global)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_global_ref_travels_as_its_id() {
        struct K;
        let r = GlobalRef::<K>::from_id(0x8003_0001_0000_0005);
        let bytes = postcard::to_allocvec(&r).unwrap();
        let back: GlobalRef<K> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.id(), 0x8003_0001_0000_0005);
    }
}
