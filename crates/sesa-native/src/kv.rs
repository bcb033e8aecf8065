//! The data store on a native node: `sesa-apps`' memcached server, unchanged, on the
//! native event loops.
//!
//! The same code as a hosted single-node store (`sesa kv --nodes 1`): the hash table is
//! an EBB whose reps are per-core partitions, and a command runs on its key's core. The
//! difference is below the application: the network belongs to core 0, so every
//! connection is accepted and read there and its commands are shipped to the keys'
//! cores (the other cores' shared listeners are given no connections: `runtime.rs`).
//!
//! Limits, explicit: items take at most the memory given on the command line (memcached's
//! `-m`, LRU eviction beyond it), which must fit in half the kernel's heap; connections
//! are bounded by the server's `max_connections` and, below it, by the sockets the stack
//! may hold (`net.rs`) and its listening backlog (`net::BACKLOG`).

use alloc::format;
use alloc::string::String;
use core::net::{Ipv4Addr, SocketAddr};

use sesa_apps::memcache::server::{Kv, KvConfig, serve_every_core};

use crate::println;

/// The port clients connect to (memcached's).
pub const PORT: u16 = 11211;
/// Item memory when the command line does not say (MiB).
pub const DEFAULT_MEMORY_MB: usize = 32;

/// Serves the store on every core until the machine is stopped; returns only on a
/// failure to start.
///
/// # Errors
/// The memory asked for does not fit the heap, or the port cannot be listened on.
pub async fn serve(memory_mb: usize, heap_bytes: u64) -> Result<(), String> {
    let memory_bytes = memory_mb.saturating_mul(1 << 20);
    // Items, their table and the connections' buffers share the heap: half for items
    // leaves room for the rest (the same bound as a node of a cluster).
    sesa_kv::check_memory(
        memory_bytes,
        Some(usize::try_from(heap_bytes / 2).unwrap_or(usize::MAX)),
    )?;
    let config = KvConfig {
        memory_bytes,
        ..KvConfig::default()
    };
    let kv = Kv::create(&config).map_err(|e| format!("the store's EBB: {e}"))?;
    let addr = serve_every_core(kv, SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), PORT))
        .await
        .map_err(|e| format!("listening on port {PORT}: {e}"))?;
    println!(
        "sesa-native: kv: serving the memcached protocol on {addr} ({} cores, {memory_mb} MiB of items)",
        sesa_event::cores()
    );
    core::future::pending::<()>().await;
    Ok(())
}
