//! # sesa-ebb: Elastic Building Blocks
//!
//! The object model of sesa (the paper's section 4.1, and the event hook of 4.2): an
//! **EBB** is one object to its clients and a set of *representatives* (reps) inside,
//! one per location that has touched it. This crate is the lowest layer of sesa: it is
//! `no_std` + `alloc`, names no platform, and is used unchanged by the hosted runtime, the
//! native kernel and the simulator.
//!
//! ## The model
//! - An EBB is created with a **root** ([`EbbRoot`]): node-wide, shared by all cores. The
//!   node's id map ([`EbbNode`]) gives it an [`EbbId`] at once, locally, with no round trip.
//! - Clients hold an [`EbbRef<T>`]: a `Copy` name, valid on every core. Calling through it
//!   on a core ([`EbbRef::with`]) looks the id up in *that core's* translation table: on a
//!   hit, about what reaching an object through a thread-local pointer costs, plus two
//!   predictable branches (measured in `docs/benchmarks.md`).
//! - The first access on a core **misses**, and the EBB's own handler ([`EbbRoot::miss`])
//!   decides what that core gets: a new local rep, an existing shared one, a forwarding
//!   rep, or a refusal the caller sees as an error. What it installs is cached, so each
//!   core misses once.
//! - [Templates](templates) cover the paper's shapes: [`PerCore`] (a rep per core, with a
//!   root that enumerates them for aggregation), [`NodeShared`] (one rep per node), and,
//!   in the event layer, a central rep reached by function shipping.
//! - **Lifecycle** (which EbbRT never had): [`EbbNode::destroy`] stops new misses at once;
//!   each core drops its reps at its next quiescent point ([`quiesce`], called by the
//!   platform between events); when all have, the id's index is reused with a new
//!   generation, so stale references fail cleanly instead of reaching a new EBB's reps.
//!
//! ## Example: the paper's distributed counter, in miniature
//! ```
//! use sesa_ebb::{CoreId, EbbNode, NodeConfig, PerCore};
//! use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
//!
//! // A node of 2 cores; here two plain threads stand in for the platform's core loops.
//! let node = EbbNode::new(NodeConfig::with_cores(2));
//! let (counter, root) = PerCore::create_on(&node, |_core| AtomicI64::new(0)).unwrap();
//! std::thread::scope(|s| {
//!     for core in 0..2 {
//!         let node = node.clone();
//!         s.spawn(move || {
//!             let _bound = node.bind(CoreId::new(core)).unwrap();
//!             for _ in 0..1000 {
//!                 // Single writer per rep: a relaxed load and store, no atomic RMW.
//!                 counter.with(|rep| rep.store(rep.load(Relaxed) + 1, Relaxed));
//!             }
//!         });
//!     }
//! });
//! let total: i64 = root.reps().map(|(_, rep)| rep.load(Relaxed)).sum();
//! assert_eq!(total, 2000);
//! ```
//!
//! ## Contracts
//! - A core's table is used only by the thread bound to it ([`CoreBinding`] is `!Send`).
//! - Reps are borrowed only inside [`EbbRef::with`]; the compiler keeps the borrow from
//!   escaping the closure (see its docs), hence from outliving the event.
//! - The platform calls [`quiesce`] on every core between events, or destroyed EBBs are
//!   never reclaimed.
//! - "Which core is this?" is the only thing this crate needs from below: a
//!   `thread_local!` with feature `std`, else a `gs:` slot the platform fills (feature
//!   `gs-current`, x86-64) or a `__sesa_ebb_current` symbol it defines (see `current.rs`).

#![no_std]
#![deny(unsafe_code)]
// The modules below that need `unsafe` opt out one by one, each with the reason.
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[allow(unsafe_code)] // the platform's binding on no_std: an extern symbol or a gs: load
mod current;
mod error;
mod id;
mod map;
mod node;
#[allow(unsafe_code)] // lends reps from raw table slots
mod reference;
#[allow(unsafe_code)] // type-erased rep ownership
mod root;
mod sync;
#[allow(unsafe_code)] // the core-private translation table
mod table;
#[allow(unsafe_code)] // per-core rep slots published once through atomics
pub mod templates;

pub use current::{CurrentCore, GS_CURRENT};
pub use error::{EbbError, MissError};
pub use id::{CoreId, EbbId, NodeId, NotAnEbbId};
pub use map::STATIC_INDICES;
pub use node::{EbbNode, NodeConfig};
pub use reference::EbbRef;
pub use root::{EbbRoot, Install, MissContext};
pub use table::{CoreBinding, ParkedCore};
pub use templates::{NodeShared, PerCore};

/// How many reps the calling thread's core holds (0 off a core). For statistics: it walks
/// the core's table.
pub fn reps_on_this_core() -> usize {
    table::current_table().map_or(0, |t| t.reps())
}

/// The core the calling thread is bound to, if any.
pub fn current_core() -> Option<CoreId> {
    table::current_table().map(|t| t.core())
}

/// Reclaims, on the calling core, the reps of EBBs destroyed since its last call, and
/// returns how many were dropped. Costs one atomic load when nothing was destroyed.
/// Does nothing off a core.
///
/// # Safety
/// Call only at a quiescent point of this core: no rep lent by [`EbbRef::with`] may be
/// borrowed on this thread (in practice: from the event loop, between events — never from
/// inside an event).
#[allow(unsafe_code)]
pub unsafe fn quiesce() -> usize {
    match table::current_table() {
        // SAFETY: forwarded from this function's contract.
        Some(table) => unsafe { table.reclaim() },
        None => 0,
    }
}
