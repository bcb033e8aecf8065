//! sesa's deterministic simulator: whole clusters on one thread.
//!
//! A [`Sim`] runs any number of nodes, each with its cores, on the calling thread, under
//! a virtual clock, with every random choice drawn from one seeded generator and a
//! simulated network that delays, holds (partitions) and resets streams. It implements
//! the same platform seam (`sesa_event::Platform`) as the hosted runtime, so the object
//! model, the executive and the applications run on it unchanged: the only difference
//! from production is the platform under them.
//!
//! A run is a function of its seed and its workload: [`Sim::trace_hash`] hashes every
//! scheduling decision, and the same seed gives the same hash. A failure found by a
//! sweep of seeds is replayed, step for step, by running its seed again.
//!
//! `sesa sim` runs the workloads and their checkers
//! (`sesa::sim`, in the `sesa` crate) over sweeps of seeds.

// Unsafe code only where an item says why (the scheduler's quiescent points).
#![deny(unsafe_code)]

mod net;
pub mod rng;
mod world;

pub use world::{NodeEnd, NodeKey, NodeSpec, Sim, SimConfig};
