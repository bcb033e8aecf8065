//! # sesa: the command
//!
//! The top layer: the `sesa` binary (`src/main.rs`) runs applications and benchmarks on
//! the hosted runtime. Today it is the node itself; with the executive it becomes the
//! *frontend* that launches nodes and makes them look like one local process.
//!
//! The library half holds what the binary runs, so tests and `cargo bench` reach the
//! same code: [`bench`](mod@bench) (the micro-benchmarks behind `sesa bench micro`) and
//! [`bench_msg`] (the messenger's, behind `sesa bench msg`) and [`bench_kv`] (the memcached
//! load generator behind `sesa bench kv`).

#![forbid(unsafe_code)]

pub mod bench;
pub mod bench_elastic;
pub mod bench_kv;
pub mod bench_msg;
pub mod cluster;
pub mod elastic;
pub mod kv;
pub mod offload;
pub mod sim;

/// Encodes a service's reply (the node crate's, shared by both sides).
pub(crate) use sesa_node::encode_reply;
