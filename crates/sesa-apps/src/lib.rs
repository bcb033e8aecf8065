//! # sesa-apps: applications built from EBBs
//!
//! The application layer: code written only against the object model (`sesa-ebb`) and
//! the event API (`sesa-event`), so it runs on any platform: the paper's
//! distributed counter ([`counter`]) and the memcached-compatible data store
//! ([`memcache`]).
//!
//! `no_std` + `alloc`: the hosted runtime, the simulator and the native kernel run the
//! same code. What a platform knows and this crate cannot ask (the process id for
//! `stats`) comes in through the configuration.

//!
//! ## How it works
//!
//! Code written only against `sesa-ebb`, `sesa-event` and the executive (`sesa-exec`), so
//! it runs on any platform (`no_std` + `alloc`: spin locks for the few shared structures,
//! hashbrown for the tables; the process id for `stats` comes in through `KvConfig`).
//! `counter.rs` is the paper's distributed counter. `memcache/` holds the data store's
//! sans-IO building blocks. `protocol.rs` parses the memcached text protocol with
//! memcached 1.6's limits and error replies, and never panics on input (proptest).
//! `store.rs` is one partition of items: expiry, cas, incr/decr, flush_all, and a memory
//! limit with CLOCK eviction (a hit sets a bit; eviction passes a marked item over once),
//! with time passed in; keys are hashed with foldhash under a seed from the platform. The
//! items are in 256 hash tables (`Index`), a key's picked by bits of its hash, with shares
//! of the keys spread over one doubling so the tables grow one after another (one large
//! table's rehash stalled its core: docs/benchmarks.md, "Two stalls"). The eviction
//! queue grows a 4096-entry block at a time for the same reason. A move reads the keys a
//! table at a time (`Partition::scan`), not all at once. `meta.rs` applies the meta commands
//! (parsed into an owned `Meta`, so they ship to a key's core or node like any command)
//! to a partition. `server.rs` is the node's server: `Kv`, a
//! per-core EBB whose reps are the partitions (a key's core is a hash of the key), and
//! `serve`, which accepts connections, parses everything one read brought, runs each
//! command on its key's core (`spawn_on` when that is not the connection's core) without
//! waiting for the ones before it, puts the replies back in request order (`Replies`;
//! one key's requests stay ordered because its core's inbox is FIFO; `flush_all` and
//! `stats` wait for everything before them), and writes them in one write.
//! Every core listens (`serve_every_core`, shared listeners) and serves the connections it
//! accepted. `cluster/` is the layer above for a store of many nodes, by concern:
//! `view.rs`, `msg.rs`, `node.rs`, `rebalance.rs`, `coordinator.rs`. A `View` (epoch,
//! nodes, owners per key) places each key on its top-R nodes by rendezvous hashing
//! (`sesa_exec::placement`); a
//! `Node` serves the store's typed service (`StoreService`: `Exec` a shipped command,
//! `Read` a shipped read, `Put` copies, `Fetch`, `Connect`, `View`, `Progress`, `Settle`,
//! `Flush`, `Invalidate`) straight on the key's core. The view
//! also carries the `Layout`: partitioned (above), central (every key on the view's first
//! nodes) or cached (central, with read caches on the other nodes that a primary
//! invalidates before it acknowledges a write; a cache fill that raced an invalidation is
//! not kept). A `Kv` in a cluster
//! sends every command through its router to the cluster layer (`ClusterLayer`, which
//! `Node` implements): run here if this node is the primary
//! (then copy the item's state to the replicas and wait), else ship it to the primary; a
//! lost primary means waiting for the next view. A read of a key this node holds for sure
//! (primary or replica, nothing moving) is answered here, inline when the key is the
//! connection's core's. While keys move, a read goes (`Read`) to an owner of the key in
//! both views, which has every acknowledged write, not to a new primary that may first
//! have to fetch the key; a primary fetches only keys it did not own before. A change of
//! view is two steps from the frontend's `Coordinator`: every node connects to every
//! other (`Connect`), then all take the view (`View`) within moments (a node with the new view shipping to
//! one still connecting stalled the store for a quarter of a second). Each node then
//! copies its keys to their new owners in batches, resting after each (`Pace`) five times
//! as long as it took when nodes only joined to a store whose keys had all their owners,
//! once as long otherwise (after a loss, keys are on fewer owners until copied).
//!
//! A primary waits for every replica's copy; a replica whose connection was lost (reset,
//! not crashed) gets the copy again once it is back, unless a newer view drops it. Copies
//! carry the view epoch they were made under; a node that has a newer view passes such a
//! copy on to the key's current owners (it may have moved the key already). The
//! `Coordinator` sends a view again to a node that failed to take it (for up to 5 s):
//! a node that missed a view would own keys without knowing.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod counter;
pub mod memcache;
