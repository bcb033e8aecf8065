//! The data store's building blocks (issue 4), sans-IO. [`protocol`] turns untrusted
//! bytes from clients into commands; it is built to never panic and to bound every
//! allocation. [`store`] is one partition of items with memcached's semantics. The
//! server, with its per-core partitions, replication and elasticity, comes next.

pub mod protocol;
pub mod server;
pub mod store;
