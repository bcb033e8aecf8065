//! # sesa: the command
//!
//! The top layer: the `sesa` binary (`src/main.rs`) runs the built-in applications (as
//! their frontend, through `sesa-frontend`, or in this process), the simulator and the
//! benchmarks.
//!
//! The library half holds what the binary runs, so tests and `cargo bench` reach the
//! same code: the built-in applications' frontend sides ([`elastic`]: the elastic
//! counter and its work pool; [`kv`]: the data store's view changes; [`cat`]), the
//! simulator's workloads ([`sim`]), [`bench`](mod@bench) (the micro-benchmarks behind
//! `sesa bench micro`), [`bench_msg`] (the messenger's, behind `sesa bench msg`) and
//! [`bench_kv`] (the memcached load generator behind `sesa bench kv`).

#![forbid(unsafe_code)]

pub mod bench;
pub mod bench_elastic;
pub mod bench_kv;
pub mod bench_msg;
pub mod cat;
pub mod elastic;
pub mod kv;
pub mod sim;
