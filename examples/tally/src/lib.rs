//! `tally`: a sesa application whose one EBB is **globally named**: created on one node
//! at run time, and reached by its global id on every other node, where the first
//! access is a *global miss* (`sesa_exec::global`): the node looks the id up in the
//! nodes' global id map (the naming service), gets the EBB's kind and construction
//! data, and builds its own root there, whose per-core reps appear by ordinary misses.
//!
//! ```sh
//! cargo run --release -p tally -- --nodes 3 --incs 1000 --weight 3
//! ```
//!
//! The last node creates the tally (its construction data: a name and the weight of an
//! increment); the frontend sends its id to every node; each node increments it `incs`
//! times on every core and reports its reps' sum and whether it reached the tally by a
//! global miss. The frontend prints the total, which must be
//! `nodes x cores x incs x weight`, and exits with failure otherwise.

#![cfg_attr(not(feature = "frontend"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};
use sesa_ebb::PerCore;
use sesa_exec::global::{GlobalKind, GlobalRef};
use sesa_node::app::{App, AppError, NodeContext};

#[cfg(feature = "frontend")]
mod frontend;
#[cfg(feature = "frontend")]
pub use frontend::Args;

/// A core's part of the tally.
pub struct TallyRep {
    weight: u64,
    count: AtomicU64,
}

/// The globally named tally: its kind.
pub struct Tally;

/// What the creator registers, and every node builds its root from.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TallyData {
    /// Its name, for the report.
    pub name: String,
    /// What one increment adds.
    pub weight: u64,
}

impl GlobalKind for Tally {
    const TAG: &'static str = "tally";
    type Data = TallyData;
    type Root = PerCore<TallyRep>;

    fn root(data: TallyData) -> PerCore<TallyRep> {
        let weight = data.weight;
        PerCore::new(sesa_event::cores(), move |_core| TallyRep {
            weight,
            count: AtomicU64::new(0),
        })
    }
}

/// The application.
pub struct TallyApp;

/// What a node is asked.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Step {
    /// Create the tally.
    Create(TallyData),
    /// Reach the tally by its id and increment it `incs` times on every core.
    Count {
        /// The tally's global id.
        tally: GlobalRef<Tally>,
        /// Increments per core.
        incs: u64,
    },
}

/// What a node answers.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Done {
    /// Created: its global id.
    Created(GlobalRef<Tally>),
    /// Counted.
    Counted {
        /// This node's reps' sum.
        sum: u64,
        /// Its reps (one per core that counted).
        reps: u32,
        /// Whether this node reached the tally by a global miss (it had never seen the
        /// id).
        by_miss: bool,
    },
}

impl App for TallyApp {
    const NAME: &'static str = "tally";
    type Settings = Step;
    type Outcome = Done;

    async fn run(node: NodeContext, step: Step) -> Result<Done, AppError> {
        match step {
            Step::Create(data) => {
                let tally = node
                    .global()
                    .create::<Tally>(data)
                    .await
                    .map_err(AppError::failed)?;
                Ok(Done::Created(tally))
            }
            Step::Count { tally, incs } => {
                let by_miss = !node.global().is_resolved(tally.id());
                let ebb = node
                    .global()
                    .resolve(tally)
                    .await
                    .map_err(AppError::failed)?;
                for r in sesa_event::on_all_cores(move |_| {
                    for _ in 0..incs {
                        ebb.with(|rep| {
                            rep.count
                                .store(rep.count.load(Relaxed) + rep.weight, Relaxed)
                        });
                    }
                })
                .await
                {
                    r.map_err(AppError::failed)?;
                }
                let root = ebb.root::<PerCore<TallyRep>>().map_err(AppError::failed)?;
                let sum = root.reps().map(|(_, rep)| rep.count.load(Relaxed)).sum();
                let reps = root.reps().count() as u32;
                Ok(Done::Counted { sum, reps, by_miss })
            }
        }
    }
}
