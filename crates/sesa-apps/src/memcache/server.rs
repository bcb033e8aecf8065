//! A memcached server on one node: the keyspace partitioned over the node's cores.
//!
//! The hash table is an EBB whose per-core reps are the partitions (the paper's
//! section 4.4, partitioned within a node): each key belongs to one core, chosen by a hash
//! of the key, and a command runs on that core, shipped there from the connection's
//! core when needed. A partition is touched only by its own core, so it takes no locks.
//!
//! [`serve_every_core`] listens on every core (shared listeners, spread by the platform);
//! connections are served on the core that accepted them. Everything a read brought in
//! is parsed and executed in order (pipelining), and its replies leave in one write.
//! Bad input gets memcached's error replies; a line too long closes the connection.
//!
//! Every command goes through the store's router (`Router`): on a node alone, to its key's
//! core; on a node that is one of many, to the layer above ([`ClusterLayer`], which
//! [`super::cluster`] implements): a command on a key whose primary is another node is
//! shipped there, and writes are replicated. The server knows the cluster only through
//! that trait.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sesa_ebb::{CoreId, EbbError, EbbRef, EbbRoot, Install, MissContext, MissError};
use sesa_event::net::{Listener, Stream};
use sesa_event::{EventError, spawn_on};

use core::future::Future;
use core::pin::Pin;

use super::ops::get_into;
pub use super::ops::{Op, Reads, apply, owner};
use super::protocol::{self, Command, Keys, Limits, Parsed};
use super::store::{Partition, PartitionStats};

/// How a node's store is set up.
#[derive(Clone, Debug)]
pub struct KvConfig {
    /// Protocol limits.
    pub limits: Limits,
    /// Memory for items on the whole node, split evenly over its cores.
    pub memory_bytes: usize,
    /// Open client connections allowed on the node (memcached's `-c`, default 1024);
    /// one more is told `ERROR Too many open connections` and closed, as memcached does.
    pub max_connections: u64,
    /// What `stats` reports as `pid`: the hosted node's process id (a native node has
    /// no process: 0).
    pub pid: u32,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            limits: Limits::default(),
            memory_bytes: 64 << 20,
            max_connections: 1024,
            pid: 0,
        }
    }
}

/// A core's partition.
pub struct PartitionRep(RefCell<Partition>);

struct Partitions {
    per_core: usize,
}

impl EbbRoot for Partitions {
    type Rep = PartitionRep;
    fn miss(&self, _cx: &MissContext<'_>) -> Result<Install<PartitionRep>, MissError> {
        // A secret seed per partition, from the platform (seeded under simulation).
        Ok(Install::local(Box::new(PartitionRep(RefCell::new(
            Partition::with_seed(self.per_core, sesa_event::random_u64()),
        )))))
    }
}

/// A node's store: `Copy`, usable from any core.
#[derive(Clone, Copy)]
pub struct Kv {
    parts: EbbRef<PartitionRep>,
    pub(crate) limits: Limits,
    max_connections: u64,
    pid: u32,
    /// Where its commands go.
    router: Router,
}

/// A command's reply, to come (from another core or node).
pub type ReplyFuture = Pin<Box<dyn Future<Output = Vec<u8>>>>;

/// A node's counts of where clients' commands were answered, and of the messages its
/// commands and writes' copies went in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    /// Clients' commands answered on this node.
    pub here: u64,
    /// Clients' commands sent on to another node.
    pub sent_on: u64,
    /// Batches those went in (with the commands other nodes sent here and this node
    /// sent on again).
    pub sent_on_batches: u64,
    /// Reads sent again alone: their batch's answer had no room for their values.
    pub sent_on_alone: u64,
    /// Writes' copies sent to the keys' other owners.
    pub copies: u64,
    /// Batches those went in.
    pub copy_batches: u64,
}

impl Routing {
    /// As `stats` lines.
    pub fn lines(&self) -> [(&'static str, u64); 6] {
        [
            ("sesa_answered_here", self.here),
            ("sesa_sent_on", self.sent_on),
            ("sesa_sent_on_batches", self.sent_on_batches),
            ("sesa_sent_on_alone", self.sent_on_alone),
            ("sesa_copies", self.copies),
            ("sesa_copy_batches", self.copy_batches),
        ]
    }
}

/// The cluster layer as the server sees it: a node's store that is one of many routes
/// commands through it ([`super::cluster::Node`] implements it).
pub trait ClusterLayer: Sync {
    /// Whether a read of `key` may be answered at once on the calling core (this core
    /// holds the key for sure). The server then answers it: `true` counts it as
    /// answered here (see [`ClusterLayer::routed`]).
    fn reads_here(&self, key: &[u8]) -> bool;
    /// Runs a client's command wherever its key lives; the reply.
    fn execute(&'static self, op: Op, reads: Reads) -> ReplyFuture;
    /// `flush_all` on every node; the reply.
    fn flush_all(&'static self, delay: i64) -> ReplyFuture;
    /// What this node answered and sent so far, for `stats` (`sesa_answered_here`,
    /// `sesa_sent_on`, ...: see [`Routing::lines`]).
    fn routed(&self) -> Routing;
    /// The body of the reply to `config get cluster` (ElastiCache's auto-discovery):
    /// a version that changes with the store's nodes, a newline, the nodes' client
    /// addresses (`host|ip|port`, space-separated), a newline.
    fn cluster_config(&self) -> String;
}

/// Where a node's store sends a command.
#[derive(Clone, Copy)]
enum Router {
    /// To its key's core on this node (a store of one node).
    Local,
    /// Through the cluster layer (a node of a store of many).
    Cluster(&'static dyn ClusterLayer),
}

impl Kv {
    /// Creates the store on the current node.
    ///
    /// # Errors
    /// Off a core, or out of EBB ids.
    pub fn create(config: &KvConfig) -> Result<Kv, EbbError> {
        let node = sesa_ebb::EbbNode::current()?;
        let per_core = (config.memory_bytes / node.cores()).max(1);
        let parts = node.create(Partitions { per_core })?;
        Ok(Kv {
            parts,
            limits: config.limits,
            max_connections: config.max_connections,
            pid: config.pid,
            router: Router::Local,
        })
    }

    /// This store as a node of a store of many, its commands routed through `cluster`.
    pub fn in_cluster(self, cluster: &'static dyn ClusterLayer) -> Kv {
        Kv {
            router: Router::Cluster(cluster),
            ..self
        }
    }

    /// Runs `f` on this core's partition (which must be `key`'s core).
    pub(crate) fn with_partition<T>(self, f: impl FnOnce(&mut Partition, u64) -> T) -> T {
        let now = sesa_event::unix_time();
        self.parts.with(|rep| f(&mut rep.0.borrow_mut(), now))
    }

    /// Runs `op` on this core's partition; the reply bytes.
    pub(crate) fn apply_here(self, op: Op) -> Vec<u8> {
        let mut out = Vec::new();
        self.apply_into(op, &mut out);
        out
    }

    /// Runs `op` on this core's partition, its reply appended to `out`.
    fn apply_into(self, op: Op, out: &mut Vec<u8>) {
        let now = sesa_event::unix_time();
        self.parts
            .with(|rep| apply(&mut rep.0.borrow_mut(), op, now, out));
    }

    /// Starts `op` on the core that owns `key`: runs it now if that is this core,
    /// else ships it there. Its reply joins `replies` in request order (or is dropped
    /// if not `keep`, for noreply).
    fn start(self, key: &[u8], op: Op, keep: bool, replies: &mut Replies) {
        if let Router::Cluster(cluster) = self.router {
            // Wherever the key lives in the cluster (maybe here), with its replicas. A
            // read that follows a write of its key in this batch must see it: it goes
            // the write's way, to the primary, not to a copy here that the write may
            // not have reached yet.
            let after_write = replies.written.contains(key);
            if op.writes() && !after_write {
                replies.written.insert(key.to_vec());
            }
            let route = if after_write {
                Reads::AtPrimary
            } else {
                Reads::Nearest
            };
            replies.ship(sesa_event::spawn_local(cluster.execute(op, route)), keep);
            return;
        }
        let core = owner(key, sesa_event::cores());
        if core == sesa_event::current_core() {
            // Straight into the reply (no reply of its own to allocate and copy).
            let mark = replies.tail.len();
            self.apply_into(op, &mut replies.tail);
            if !keep {
                replies.tail.truncate(mark);
            }
        } else {
            replies.ship(spawn_on(core, move || self.apply_here(op)), keep);
        }
    }

    /// Runs `f` on every core's partition, in core order.
    pub(crate) async fn each_partition<T: Send + 'static>(
        self,
        f: impl Fn(&mut Partition, u64) -> T + Send + Sync + 'static,
    ) -> Result<Vec<T>, EventError> {
        let f = Arc::new(f);
        let mut out = Vec::new();
        for r in sesa_event::on_all_cores(move |_| {
            let now = sesa_event::unix_time();
            self.parts.with(|rep| f(&mut rep.0.borrow_mut(), now))
        })
        .await
        {
            out.push(r?);
        }
        Ok(out)
    }

    /// The counters summed over every partition.
    ///
    /// # Errors
    /// A core failed.
    pub async fn stats(self) -> Result<PartitionStats, EventError> {
        let all = self.each_partition(|p, _| p.stats()).await?;
        Ok(all
            .into_iter()
            .fold(PartitionStats::default(), |a, s| PartitionStats {
                items: a.items + s.items,
                bytes: a.bytes + s.bytes,
                hits: a.hits + s.hits,
                misses: a.misses + s.misses,
                evictions: a.evictions + s.evictions,
            }))
    }

    /// Starts one command; its reply joins `replies` (nothing for `noreply`). Returns
    /// `false` for `quit`.
    ///
    /// A command on one key is started on the key's core and not waited for, so that
    /// pipelined requests for keys on different cores overlap. A command on the whole
    /// store (`flush_all`, `stats`) first waits for the ones before it.
    ///
    /// # Errors
    /// A core failed.
    async fn execute(
        self,
        command: Command<'_>,
        replies: &mut Replies,
        conns: &Counters,
    ) -> Result<bool, EventError> {
        let on_one_key = matches!(
            command,
            Command::Get { .. }
                | Command::Gat { .. }
                | Command::Store { .. }
                | Command::Delete { .. }
                | Command::Arith { .. }
                | Command::Touch { .. }
                | Command::Meta(_)
        );
        if !on_one_key {
            replies.settle().await?;
        }
        match command {
            Command::Get { keys, cas } => self.get(keys, cas, None, replies),
            Command::Gat { exptime, keys, cas } => self.get(keys, cas, Some(exptime), replies),
            Command::Store {
                mode,
                key,
                flags,
                exptime,
                data,
                noreply,
            } => {
                let op = Op::Store {
                    mode,
                    key: key.to_vec(),
                    flags,
                    exptime,
                    data: data.to_vec(),
                };
                self.start(key, op, !noreply, replies);
            }
            Command::Delete { key, noreply } => {
                self.start(key, Op::Delete { key: key.to_vec() }, !noreply, replies);
            }
            Command::Arith {
                incr,
                key,
                delta,
                noreply,
            } => {
                let op = Op::Arith {
                    incr,
                    key: key.to_vec(),
                    delta,
                };
                self.start(key, op, !noreply, replies);
            }
            Command::Touch {
                key,
                exptime,
                noreply,
            } => {
                let op = Op::Touch {
                    key: key.to_vec(),
                    exptime,
                };
                self.start(key, op, !noreply, replies);
            }
            Command::FlushAll { delay, noreply } => {
                let reply = match self.router {
                    // Every node's items, as a client of one memcached would expect.
                    Router::Cluster(cluster) => cluster.flush_all(delay).await,
                    Router::Local => {
                        self.each_partition(move |p, now| p.flush_all(delay, now))
                            .await?;
                        b"OK\r\n".to_vec()
                    }
                };
                if !noreply {
                    replies.tail.extend_from_slice(&reply);
                }
            }
            Command::Stats { args } => match args.first().copied() {
                None => self.write_stats(&mut replies.tail, conns).await?,
                Some(b"reset") => {
                    self.each_partition(|p, _| p.reset_stats()).await?;
                    conns.total.store(0, Relaxed);
                    replies.tail.extend_from_slice(b"RESET\r\n");
                }
                Some(b"settings") => self.write_settings(&mut replies.tail).await?,
                // memcached's per-slab-class groups: sesa has no slab classes (items
                // live in per-core partitions), so each group is empty, as memcached's
                // own is before its first item.
                Some(b"items" | b"slabs" | b"sizes") => replies.tail.extend_from_slice(b"END\r\n"),
                // What memcached answers to a group it does not know.
                Some(_) => replies.tail.extend_from_slice(b"ERROR\r\n"),
            },
            Command::Version => replies.tail.extend_from_slice(
                concat!("VERSION sesa-", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes(),
            ),
            Command::ConfigGet { name } => match self.router {
                Router::Cluster(cluster) if name == b"cluster" => {
                    let body = cluster.cluster_config();
                    let out = &mut replies.tail;
                    out.extend_from_slice(
                        format!("CONFIG cluster 0 {}\r\n", body.len()).as_bytes(),
                    );
                    out.extend_from_slice(body.as_bytes());
                    out.extend_from_slice(b"\r\nEND\r\n");
                }
                // memcached's answer to a command it does not know: one node alone is
                // one memcached.
                _ => replies.tail.extend_from_slice(b"ERROR\r\n"),
            },
            Command::Verbosity { noreply } => {
                if !noreply {
                    replies.tail.extend_from_slice(b"OK\r\n");
                }
            }
            Command::Meta(meta) => {
                let key = meta.key.clone();
                self.start(&key, Op::Meta(meta), true, replies);
            }
            Command::MetaNoop => replies.tail.extend_from_slice(b"MN\r\n"),
            Command::Quit => return Ok(false),
        }
        Ok(true)
    }

    /// Starts every key's lookup on its core; the values follow in request order.
    fn get(self, keys: Keys<'_>, cas: bool, touch: Option<i64>, replies: &mut Replies) {
        let cores = sesa_event::cores();
        for key in keys.iter() {
            // A key this core holds (on one node: a key of this core; on many: also one
            // this node holds for sure, and not written earlier in this batch): straight
            // into the reply, with no command to build, no event and no reply to copy.
            let here = match self.router {
                Router::Local => owner(key, cores) == sesa_event::current_core(),
                // Not a touch (a write), nor a read that must see a write of this batch.
                Router::Cluster(cluster) => {
                    touch.is_none() && !replies.written.contains(key) && cluster.reads_here(key)
                }
            };
            if here {
                self.with_partition(|p, now| get_into(p, key, cas, touch, now, &mut replies.tail));
                continue;
            }
            let op = Op::Get {
                key: key.to_vec(),
                cas,
                touch,
            };
            self.start(key, op, true, replies);
        }
        replies.tail.extend_from_slice(b"END\r\n");
    }

    async fn write_settings(self, out: &mut Vec<u8>) -> Result<(), EventError> {
        let limits = self.each_partition(|p, _| p.limit()).await?;
        let lines = [
            ("maxbytes", limits.iter().sum::<usize>().to_string()),
            ("item_size_max", self.limits.item_max.to_string()),
            ("maxconns", self.max_connections.to_string()),
            ("num_threads", sesa_event::cores().to_string()),
            ("evictions", "on".to_owned()),
            ("cas_enabled", "yes".to_owned()),
            ("flush_enabled", "yes".to_owned()),
            ("binding_protocol", "ascii".to_owned()),
        ];
        write_stat_lines(out, lines);
        Ok(())
    }

    async fn write_stats(self, out: &mut Vec<u8>, conns: &Counters) -> Result<(), EventError> {
        let s = self.stats().await?;
        let c = conns.snapshot();
        let mut lines: BTreeMap<&str, String> = [
            ("pid", self.pid.to_string()),
            ("time", sesa_event::unix_time().to_string()),
            ("version", format!("sesa-{}", env!("CARGO_PKG_VERSION"))),
            ("threads", sesa_event::cores().to_string()),
            ("curr_items", s.items.to_string()),
            ("bytes", s.bytes.to_string()),
            ("get_hits", s.hits.to_string()),
            ("get_misses", s.misses.to_string()),
            ("evictions", s.evictions.to_string()),
            ("curr_connections", c.0.to_string()),
            ("total_connections", c.1.to_string()),
            ("sesa_connections_per_core", conns.per_core()),
        ]
        .into_iter()
        .collect();
        if let Router::Cluster(cluster) = self.router {
            for (name, count) in cluster.routed().lines() {
                lines.insert(name, count.to_string());
            }
        }
        write_stat_lines(out, lines);
        Ok(())
    }
}

/// A connection's replies to the requests of one read, in request order: some ready,
/// some still being computed on other cores.
///
/// Order is kept without waiting: requests on different keys may run at once on
/// different cores, and requests on one key all go to that key's core, whose inbox runs
/// them first in, first out.
#[derive(Default)]
struct Replies {
    /// Replies before `tail`, in order.
    pieces: Vec<Piece>,
    /// Ready bytes after every piece.
    tail: Vec<u8>,
    /// On a node of a cluster: the keys written by commands not yet settled.
    written: hashbrown::HashSet<Vec<u8>, foldhash::fast::RandomState>,
}

enum Piece {
    Ready(Vec<u8>),
    Shipped {
        reply: sesa_event::JoinHandle<Vec<u8>>,
        /// `false` for noreply: wait for it (to keep order) and drop it.
        keep: bool,
    },
}

impl Replies {
    fn ship(&mut self, reply: sesa_event::JoinHandle<Vec<u8>>, keep: bool) {
        if !self.tail.is_empty() {
            self.pieces
                .push(Piece::Ready(core::mem::take(&mut self.tail)));
        }
        self.pieces.push(Piece::Shipped { reply, keep });
    }

    /// Waits for every shipped reply, leaving all of them ready in `tail`. On an error
    /// nothing is left: a partial reply stream would be out of order.
    async fn settle(&mut self) -> Result<(), EventError> {
        if self.pieces.is_empty() {
            // Nothing is in flight: every write is acknowledged.
            self.written.clear();
            return Ok(());
        }
        let mut all = Vec::with_capacity(self.tail.len());
        for piece in core::mem::take(&mut self.pieces) {
            match piece {
                Piece::Ready(bytes) => all.extend_from_slice(&bytes),
                Piece::Shipped { reply, keep } => {
                    let bytes = match reply.await {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            // What follows must not be sent without what came before.
                            self.tail.clear();
                            return Err(e);
                        }
                    };
                    if keep {
                        all.extend_from_slice(&bytes);
                    }
                }
            }
        }
        all.extend_from_slice(&self.tail);
        self.tail = all;
        // Every write so far is acknowledged: any copy now has it.
        self.written.clear();
        Ok(())
    }
}

/// Appends `STAT <name> <value>` lines and the closing `END`.
fn write_stat_lines<'a>(out: &mut Vec<u8>, lines: impl IntoIterator<Item = (&'a str, String)>) {
    for (k, v) in lines {
        out.extend_from_slice(format!("STAT {k} {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"END\r\n");
}

/// Connection counters of a server, shared by its cores (read by `stats`; touched once
/// per connection, never per request).
struct Counters {
    current: AtomicU64,
    total: AtomicU64,
    /// Open connections by the core serving them.
    per_core: Vec<AtomicU64>,
}

impl Counters {
    /// Zeroed counters for a node of `cores` cores.
    fn new(cores: usize) -> Self {
        Counters {
            current: AtomicU64::new(0),
            total: AtomicU64::new(0),
            per_core: (0..cores).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn snapshot(&self) -> (u64, u64) {
        (self.current.load(Relaxed), self.total.load(Relaxed))
    }

    /// Open connections per core, as `3,5` (core 0 first).
    fn per_core(&self) -> String {
        let counts: Vec<String> = self
            .per_core
            .iter()
            .map(|c| c.load(Relaxed).to_string())
            .collect();
        counts.join(",")
    }

    /// Counts a new connection if fewer than `max` are open; `false` if the limit is
    /// reached (nothing counted). The check and the count are one atomic step, so
    /// cores accepting at once cannot overshoot the limit together.
    fn open(&self, max: u64) -> bool {
        if self
            .current
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_err()
        {
            return false;
        }
        self.total.fetch_add(1, Relaxed);
        if let Some(c) = self.per_core.get(sesa_event::current_core().index()) {
            c.fetch_add(1, Relaxed);
        }
        true
    }

    fn closed(&self) {
        self.current.fetch_sub(1, Relaxed);
        if let Some(c) = self.per_core.get(sesa_event::current_core().index()) {
            c.fetch_sub(1, Relaxed);
        }
    }
}

/// Serves memcached clients on `listener` until the runtime stops, on this core only.
pub async fn serve(kv: Kv, listener: Listener) {
    serve_with(kv, listener, Arc::new(Counters::new(sesa_event::cores()))).await;
}

/// Listens on `addr` on every core of the node (shared listeners: the platform spreads
/// the connections) and serves memcached clients there until the runtime stops.
/// Returns the address listened on (the port picked, if `addr`'s was 0) once every
/// core listens.
///
/// # Errors
/// If a core cannot listen (the address is in use, say); the cores already listening
/// go on serving.
pub async fn serve_every_core(kv: Kv, addr: SocketAddr) -> Result<SocketAddr, EventError> {
    let counters = Arc::new(Counters::new(sesa_event::cores()));
    let here = sesa_event::current_core();
    // The cores share the port (SO_REUSEPORT on hosted), and so could another process:
    // a second store started on a taken port would silently split the clients between
    // two unrelated stores. A plain bind first fails if anyone listens there already.
    if addr.port() != 0 {
        drop(sesa_event::tcp_listen(addr)?);
    }
    let first = sesa_event::tcp_listen_shared(addr)?;
    let addr = first.local_addr().map_err(EventError::Net)?;
    sesa_event::spawn_local(serve_with(kv, first, counters.clone()));
    let others: Vec<_> = (0..sesa_event::cores() as u32)
        .map(CoreId::new)
        .filter(|&core| core != here)
        .map(|core| {
            let counters = counters.clone();
            spawn_on(core, move || {
                let listener = sesa_event::tcp_listen_shared(addr)?;
                sesa_event::spawn_local(serve_with(kv, listener, counters));
                Ok::<(), EventError>(())
            })
        })
        .collect();
    for other in others {
        other.await??;
    }
    Ok(addr)
}

async fn serve_with(kv: Kv, listener: Listener, counters: Arc<Counters>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of descriptors, typically: back off rather than spin, and say so.
                log_rate_limited(format_args!("sesa kv: accepting a connection: {e}"));
                sesa_event::sleep(core::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let counters = counters.clone();
        sesa_event::spawn_local(async move {
            if !counters.open(kv.max_connections) {
                log_rate_limited(format_args!(
                    "sesa kv: refusing a connection: {} are open (the limit)",
                    kv.max_connections
                ));
                let mut stream = stream;
                let _ = stream
                    .write_all(b"ERROR Too many open connections\r\n")
                    .await;
                return;
            }
            // A client's reset or bad input ends only its own connection.
            let _ = connection(kv, stream, &counters).await;
            counters.closed();
        });
    }
}

/// Reports a problem with accepting connections (a warning), at most once a second on
/// the node, so that a flood of them (out of descriptors, a client opening connections in
/// a loop) cannot become a flood of lines.
fn log_rate_limited(message: core::fmt::Arguments<'_>) {
    /// When the last line was written, in the platform clock's nanoseconds (0: never).
    static LAST: AtomicU64 = AtomicU64::new(0);
    // The platform's clock, never the OS's: the simulator gives it a virtual one.
    let now = sesa_event::now().as_nanos().max(1);
    let last = LAST.load(Relaxed);
    if (last == 0 || now.saturating_sub(last) >= 1_000_000_000)
        && LAST.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
    {
        tracing::warn!("{message} (core {})", sesa_event::current_core());
    }
}

/// The reply when a core cannot answer because the node is stopping.
const STOPPING: &[u8] = b"SERVER_ERROR the node is stopping\r\n";

async fn connection(
    kv: Kv,
    mut stream: Stream,
    counters: &Counters,
) -> Result<(), sesa_event::net::NetError> {
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut read = vec![0u8; 16 << 10];
    let mut replies = Replies::default();
    let mut skip = 0usize;
    loop {
        let n = stream.read(&mut read).await?;
        if n == 0 {
            return Ok(());
        }
        let mut fresh = &read[..n];
        // Drop what remains of a refused value first.
        let dropped = skip.min(fresh.len());
        skip -= dropped;
        fresh = &fresh[dropped..];
        buf.extend_from_slice(fresh);
        let mut at = 0;
        let mut keep_open = true;
        while keep_open {
            match protocol::parse(&buf[at..], &kv.limits) {
                Parsed::Incomplete => break,
                Parsed::Command(command, used) => {
                    at += used;
                    keep_open = match kv.execute(command, &mut replies, counters).await {
                        Ok(open) => open,
                        Err(_) => {
                            replies.tail.extend_from_slice(STOPPING);
                            false
                        }
                    };
                }
                Parsed::Error {
                    reply,
                    consumed,
                    skip: more,
                    close,
                } => {
                    replies.tail.extend_from_slice(reply);
                    at += consumed;
                    skip += more;
                    keep_open = !close;
                }
            }
        }
        buf.drain(..at);
        if replies.settle().await.is_err() {
            replies.tail.extend_from_slice(STOPPING);
            keep_open = false;
        }
        // Everything this read produced leaves in one write.
        if !replies.tail.is_empty() {
            stream.write_all(&replies.tail).await?;
            replies.tail.clear();
        }
        if !keep_open {
            return Ok(());
        }
    }
}
