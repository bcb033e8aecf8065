//! # sesa: the command
//!
//! The top layer: the `sesa` binary (`src/main.rs`) runs the built-in applications (as
//! their frontend, through `sesa-frontend`, or in this process), the simulator and the
//! benchmarks.
//!
//! The library half holds what the binary runs, so tests and `cargo bench` reach the
//! same code: the table of built-in applications ([`builtin`]; each is a crate of its
//! own under `apps/`), the simulator's workloads ([`sim`]), [`bench`](mod@bench) (the micro-benchmarks behind
//! `sesa bench micro`), [`bench_msg`] (the messenger's, behind `sesa bench msg`) and
//! [`bench_kv`] (the memcached load generator behind `sesa bench kv`).

#![forbid(unsafe_code)]

pub mod bench;
pub mod bench_elastic;
pub mod bench_kv;
pub mod bench_msg;
pub mod bench_scale;
pub mod cgroup;
pub mod sim;

/// The applications the `sesa` binary and the `sesa-kernel` image are built with: the
/// counter, `cat` and the data store.
pub fn builtin() -> sesa_node::app::Apps {
    sesa_node::app::Apps::new()
        .with::<sesa_counter::Counter>()
        .with::<sesa_cat::Cat>()
        .with::<sesa_kv::Kv>()
}
