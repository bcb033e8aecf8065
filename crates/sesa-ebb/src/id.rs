//! Names: [`NodeId`] for a node, [`CoreId`] for a location inside a node, [`EbbId`] for an
//! EBB.

use core::fmt;
use core::num::{NonZeroU32, NonZeroU64};

/// A core of a node: the location at which events run and reps live.
///
/// Core ids are dense, `0..cores`, fixed for the life of a node.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct CoreId(u32);

impl CoreId {
    /// The core with this index.
    pub const fn new(index: u32) -> Self {
        CoreId(index)
    }

    /// The core's index, usable to index per-core arrays.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The raw number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for CoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "core {}", self.0)
    }
}

/// A node of an application: one process (hosted) or one machine (native).
///
/// Node ids are handed out by the frontend, which is node [`NodeId::FRONTEND`]; a node
/// that restarts comes back with a new id. On the wire a node id is its raw `u32`.
/// It displays as the bare number, so that it reads naturally in `"node {id}"`.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(u32);

impl NodeId {
    /// The frontend: the node that launches the others and serves what they offload.
    pub const FRONTEND: NodeId = NodeId(0);

    /// The node with this number.
    pub const fn new(id: u32) -> Self {
        NodeId(id)
    }

    /// The raw number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<NodeId> for u32 {
    fn from(id: NodeId) -> u32 {
        id.0
    }
}

/// The name of an EBB on a node.
///
/// An id is an *index* (the EBB's slot in every core's translation table and in the
/// node's id map) and a *generation* (how many EBBs held that index before). The index of
/// a destroyed EBB is reused only after every core has dropped its reps, and always with
/// a new generation, so a stale [`EbbRef`](crate::EbbRef) can never reach the new EBB's
/// reps: its full id no longer matches anything.
///
/// Layout of the raw `u64`: generation in the high 32 bits (never 0), index in the low 32.
/// A raw value of 0 therefore never names an EBB, which is what an empty table slot holds.
///
/// On the wire (serde) an id is its raw `u64`; a value no id has is refused when it is
/// read, so a decoded id always names a possible EBB.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u64", into = "u64")]
pub struct EbbId(NonZeroU64);

impl From<EbbId> for u64 {
    fn from(id: EbbId) -> u64 {
        id.raw()
    }
}

impl TryFrom<u64> for EbbId {
    type Error = NotAnEbbId;

    fn try_from(raw: u64) -> Result<Self, NotAnEbbId> {
        EbbId::from_raw(raw).ok_or(NotAnEbbId(raw))
    }
}

/// A raw value that no [`EbbId`] has (its generation is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:#x} is not an EBB id")]
pub struct NotAnEbbId(pub u64);

impl EbbId {
    /// The id with this index and generation.
    pub const fn from_parts(index: u32, generation: NonZeroU32) -> Self {
        let raw = ((generation.get() as u64) << 32) | index as u64;
        match NonZeroU64::new(raw) {
            Some(raw) => EbbId(raw),
            // The generation is non-zero, so the raw value is too.
            None => unreachable!(),
        }
    }

    /// The id of the static EBB at `index` (see [`EbbNode::create_static`]): the same on
    /// every node, known without asking anyone.
    ///
    /// [`EbbNode::create_static`]: crate::EbbNode::create_static
    pub const fn static_id(index: u32) -> Self {
        Self::from_parts(index, NonZeroU32::MIN)
    }

    /// Rebuilds an id from [`EbbId::raw`]; `None` for a value no id has (generation 0).
    pub const fn from_raw(raw: u64) -> Option<Self> {
        if raw >> 32 == 0 {
            return None;
        }
        match NonZeroU64::new(raw) {
            Some(raw) => Some(EbbId(raw)),
            None => None,
        }
    }

    /// The slot this EBB occupies in translation tables and the id map.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self.0.get() as u32
    }

    /// How many EBBs held this index before this one, plus one.
    pub const fn generation(self) -> u32 {
        (self.0.get() >> 32) as u32
    }

    /// The id as one number (stable: usable on the wire and in logs).
    #[inline(always)]
    pub const fn raw(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Debug for EbbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ebb#{}.{}", self.index(), self.generation())
    }
}

impl fmt::Display for EbbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let g = NonZeroU32::new(7).unwrap();
        let id = EbbId::from_parts(42, g);
        assert_eq!(id.index(), 42);
        assert_eq!(id.generation(), 7);
        assert_eq!(EbbId::from_raw(id.raw()), Some(id));
        assert_eq!(EbbId::from_raw(42), None, "generation 0 is never an id");
        assert_eq!(EbbId::from_raw(0), None);
        assert_eq!(alloc::format!("{id}"), "ebb#42.7");
    }
}
