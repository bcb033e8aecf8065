//! Globally named EBBs and the **global miss** (EbbRT's): an EBB created at run time on
//! one node is reachable by its global id on every node of the application.
//!
//! Creating one ([`GlobalEbbs::create`]) allocates a cluster-wide id ([`GlobalIds`]: no
//! round trip), registers the EBB's kind ([`GlobalKind::TAG`]) and construction data
//! with the application's naming service ([`NamingService`]), and builds its root on
//! the creating node. The first access on a node that has never seen the id
//! ([`GlobalEbbs::resolve`]) misses: the node looks the id up, checks the kind, builds
//! the kind's root from the data there and maps the id to it; from then on the id
//! resolves locally, and the root's own miss handler makes reps on the cores that touch
//! it. Two cores missing at once build one root: the second finds the first's.
//!
//! The naming service is served by the application's frontend (EbbRT's arrangement); a
//! name, once registered, never changes, so a node may cache what it resolved.
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

use crate::idmap::{GlobalIdError, GlobalIds};
use crate::service::{Client, Service, ServiceError};

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

/// The application's naming service: global id -> (kind, construction data).
pub struct NamingService;

/// What a node asks the naming service.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// Registers a new EBB.
    Register {
        /// Its global id.
        id: u64,
        /// Its [`GlobalKind::TAG`].
        kind: String,
        /// Its encoded construction data.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Looks an id up.
    Lookup(u64),
}

/// The naming service's answers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// Registered.
    Registered,
    /// The id's kind and construction data.
    Found {
        /// Its [`GlobalKind::TAG`].
        kind: String,
        /// Its encoded construction data.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

/// Why the naming service refused.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum NamingError {
    /// No EBB has this id.
    Unknown(u64),
    /// The id is taken (by another registration).
    Taken(u64),
    /// The id is not a global id (bit 63 clear), or its allocating node is not the caller.
    NotYours(u64),
    /// The service holds as many names as it may.
    Full,
}

impl fmt::Display for NamingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamingError::Unknown(id) => write!(f, "no EBB is named {id:#x}"),
            NamingError::Taken(id) => write!(f, "{id:#x} is registered already"),
            NamingError::NotYours(id) => write!(f, "{id:#x} is not an id of the caller's"),
            NamingError::Full => write!(f, "the naming service is full"),
        }
    }
}

impl Service for NamingService {
    const NAME: &'static str = "naming";
    type Request = Naming;
    type Reply = Named;
    type Error = NamingError;

    fn method(request: &Naming) -> u16 {
        match request {
            Naming::Register { .. } => 1,
            Naming::Lookup(_) => 2,
        }
    }
}

/// The most names a [`Names`] table holds.
pub const NAMES_MAX: usize = 1 << 20;

/// The naming service's table, for whoever serves it (the frontend).
#[derive(Default)]
pub struct Names {
    names: spin::Mutex<BTreeMap<u64, (String, Vec<u8>)>>,
}

impl Names {
    /// Serves one request from node `caller`.
    ///
    /// # Errors
    /// An unknown or taken id, an id the caller did not allocate, or a full table.
    pub fn serve(&self, caller: NodeId, request: Naming) -> Result<Named, NamingError> {
        let mut names = self.names.lock();
        match request {
            Naming::Register { id, kind, data } => {
                if GlobalIds::node_of(id) != Some(caller) {
                    return Err(NamingError::NotYours(id));
                }
                if names.contains_key(&id) {
                    return Err(NamingError::Taken(id));
                }
                if names.len() >= NAMES_MAX {
                    return Err(NamingError::Full);
                }
                names.insert(id, (kind, data));
                Ok(Named::Registered)
            }
            Naming::Lookup(id) => names
                .get(&id)
                .map(|(kind, data)| Named::Found {
                    kind: kind.clone(),
                    data: data.clone(),
                })
                .ok_or(NamingError::Unknown(id)),
        }
    }
}

/// Why creating or resolving a global EBB failed.
#[derive(Debug, thiserror::Error)]
pub enum GlobalError {
    /// No id left, or this node cannot allocate ids.
    #[error("allocating a global id: {0}")]
    Id(#[from] GlobalIdError),
    /// The naming service refused or could not be reached.
    #[error("the naming service: {0}")]
    Naming(#[from] ServiceError<NamingError>),
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
    /// The naming service answered with another kind of reply.
    #[error("the naming service answered a {0} with another reply")]
    Unexpected(&'static str),
}

/// A node's globally named EBBs: creating them, and resolving global ids to local ones
/// (the global miss). Shared by the node's cores.
pub struct GlobalEbbs {
    names: Client<NamingService>,
    ids: GlobalIds,
    /// Global id -> this node's EBB for it.
    resolved: spin::Mutex<BTreeMap<u64, EbbId>>,
}

impl GlobalEbbs {
    /// The global EBBs of node `node` in `generation`, named through `names`.
    ///
    /// # Errors
    /// The node id is too large for a global id's node field.
    pub fn new(
        names: Client<NamingService>,
        node: NodeId,
        generation: u64,
    ) -> Result<Self, GlobalError> {
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
        let encoded = postcard::to_allocvec(&data).map_err(|_| GlobalError::Data(id))?;
        let request = Naming::Register {
            id,
            kind: K::TAG.into(),
            data: encoded,
        };
        match self.names.call(request).await? {
            Named::Registered => {}
            Named::Found { .. } => return Err(GlobalError::Unexpected("registration")),
        }
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
        let (kind, data) = match self.names.call(Naming::Lookup(global.id)).await? {
            Named::Found { kind, data } => (kind, data),
            Named::Registered => return Err(GlobalError::Unexpected("lookup")),
        };
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
    use alloc::vec;

    #[test]
    fn names_are_registered_once_by_their_allocator_and_found_by_anyone() {
        let names = Names::default();
        let ids = GlobalIds::new(NodeId::new(3), 1).unwrap();
        let id = ids.allocate().unwrap();
        let register = |caller, id| {
            names.serve(
                caller,
                Naming::Register {
                    id,
                    kind: "tally".into(),
                    data: vec![1, 2],
                },
            )
        };
        assert_eq!(register(NodeId::new(2), id), Err(NamingError::NotYours(id)));
        assert_eq!(
            register(NodeId::new(3), 42),
            Err(NamingError::NotYours(42)),
            "not a global id"
        );
        assert_eq!(register(NodeId::new(3), id), Ok(Named::Registered));
        assert_eq!(register(NodeId::new(3), id), Err(NamingError::Taken(id)));
        assert_eq!(
            names.serve(NodeId::new(7), Naming::Lookup(id)),
            Ok(Named::Found {
                kind: "tally".into(),
                data: vec![1, 2]
            })
        );
        let other = ids.allocate().unwrap();
        assert_eq!(
            names.serve(NodeId::new(7), Naming::Lookup(other)),
            Err(NamingError::Unknown(other))
        );
    }

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
