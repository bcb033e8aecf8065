//! The data store's building blocks (issue 4), sans-IO. [`protocol`] turns untrusted
//! bytes from clients into commands; it is built to never panic and to bound every
//! allocation. [`store`] is one partition of items with memcached's semantics, and
//! [`ops`] one key's command on it. [`server`] serves clients from a node's per-core
//! partitions, routing each command to its key's core or, on a node of many, to the
//! cluster layer; [`cluster`] makes many nodes one store: partitioned, replicated, and
//! elastic.

pub mod cluster;
pub mod meta;
pub mod ops;
pub mod protocol;
pub mod server;
pub mod store;
