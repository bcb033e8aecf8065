//! # sesa-counter: the paper's distributed counter, as an elastic sesa application
//!
//! Every core of every node increments one counter EBB (`sesa_apps::counter`, the
//! paper's figure 3: per-core reps made by access misses, `val` summed by the root).
//! Run by a frontend, it is **elastic**: the frontend holds a work pool of
//! `nodes x cores x K` increments cut into chunks ([`frontend`]'s `WorkPool`, feature
//! `frontend`); each node leases a chunk, counts it on all its cores and reports it
//! ([`pool`], the node side, `no_std`). Nodes may join (`sesa scale`), leave with a
//! drain, or crash, and the total stays exact.

#![cfg_attr(not(feature = "frontend"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering::SeqCst};
use core::time::Duration;

use serde::{Deserialize, Serialize};
use sesa_node::app::{App, AppError, NodeContext};

#[cfg(feature = "frontend")]
pub mod frontend;
pub mod pool;

use pool::PoolAddress;

/// The distributed counter: every core of every node increments one counter EBB.
pub struct Counter;

/// What the counter's nodes are asked to do.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct CounterSettings {
    /// Increments per core (without a pool).
    pub incs: u64,
    /// The frontend's work pool: lease chunks of counting from it, elastically, instead
    /// of counting `incs` on every core.
    pub pool: Option<PoolAddress>,
}

impl App for Counter {
    const NAME: &'static str = "counter";
    type Settings = CounterSettings;
    /// This node's increments.
    type Outcome = i64;

    async fn run(node: NodeContext, settings: CounterSettings) -> Result<i64, AppError> {
        let Some(pool) = settings.pool else {
            return sesa_apps::counter::count_on_all_cores(settings.incs)
                .await
                .map_err(AppError::failed);
        };
        // Elastic: count chunks leased from the frontend's pool.
        let counting = Arc::new(AtomicBool::new(true));
        let watched = counting.clone();
        // The counter's departure event: wait until the chunk in hand is counted and
        // reported, so no count is lost when this node leaves.
        node.on_departure(move || {
            let watched = watched.clone();
            async move {
                while watched.load(SeqCst) {
                    sesa_event::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let result =
            crate::pool::count_from_pool(node.messenger(), pool, node.leaving_flag()).await;
        counting.store(false, SeqCst);
        result.map_err(AppError::failed)
    }
}
