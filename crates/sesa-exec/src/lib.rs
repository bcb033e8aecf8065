//! # sesa-exec: the Scalable Elastic Executive
//!
//! What turns one node's cores into one application across many nodes (the paper's
//! section 3 and figure 4). Portable: it is written against the platform seam
//! (`sesa-event`) and the wire protocol (`sesa-wire`) only.
//!
//! Today it holds the [`messenger`] (authenticated connections between nodes, and remote
//! invocation of an EBB's rep at (node, core)) and the [`idmap`] (the global id map,
//! partitioned and replicated over the nodes). Membership, failure detection and
//! elastic grow and shrink build on them.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod departure;
pub mod global;
pub mod idmap;
pub mod membership;
pub mod messenger;
pub mod placement;
pub mod service;

pub use departure::Departures;
pub use idmap::{GlobalIdError, GlobalIdMap, GlobalIds, IdMapError, Member, Versioned};
pub use membership::{MemberEvent, Membership, MembershipConfig, MembershipRef, NodeIdentity};
pub use messenger::{
    CallError, ConnectError, Identity, Messenger, MessengerConfig, MessengerRef, MessengerStats,
    RemoteRep, Request, ServiceFuture,
};
pub use service::{Client, Service, ServiceError};
pub use sesa_ebb::NodeId;
pub use sesa_wire::{RemoteError, Secret};
