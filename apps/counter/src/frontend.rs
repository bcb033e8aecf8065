//! The elastic counter: a fixed amount of counting, spread over a set of nodes that may
//! grow, shrink or crash while it runs, with an exact total.
//!
//! The frontend holds a [`WorkPool`] of `nodes x cores x K` increments cut into chunks.
//! Each node leases a chunk, counts it on all its cores through its own counter EBB
//! (the first chunk on a new node is where that EBB's reps appear, by access misses),
//! and reports the chunk with the counter's change as the result. Reports are
//! idempotent, and only the leaseholder's counts.
//! - A joining node simply starts leasing chunks.
//! - A node leaving on purpose gets a departure event: it stops leasing, finishes and
//!   reports its chunk (its counter's state moves to the frontend), then stops.
//! - A crashed node's leased chunks go back to the pool, and a new node takes its place
//!   (the frontend keeps the number of nodes last asked for).
//! - A node finds no chunk free while others are still leased: it waits and asks
//!   again, and ends only when every chunk is counted. (A leaseholder may yet be
//!   declared down, and its chunks must then find a taker.)
//!
//! So the total is exact in all three cases.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use crate::{Counter, CounterSettings};
use anyhow::{Context, anyhow, bail};
use sesa_ebb::{NodeId, NodeShared};
use sesa_exec::{RemoteError, RemoteRep, Request};
use sesa_frontend::roster::{Action, Roster};
use sesa_frontend::{Application, Cluster, Event};

// The node's side (leasing and counting) is `crate::pool`, which every node runs.
pub use crate::pool::{Lease, Pool, PoolAddress, PoolReply, PoolService, count_from_pool};

/// Increments per chunk by default: a few milliseconds of counting per core.
const CHUNK: u64 = 1 << 22;

/// The frontend's pool of counting work (a node-shared EBB, served remotely).
pub struct WorkPool {
    state: Mutex<PoolState>,
}

struct PoolState {
    total: u64,
    chunk: u64,
    chunks: u64,
    next: u64,
    requeued: Vec<u64>,
    /// Chunk -> the node life (id and generation) that leased it.
    leases: BTreeMap<u64, (NodeId, u64)>,
    /// The newest generation of each node id that has asked for work.
    newest: BTreeMap<NodeId, u64>,
    /// Node lives known to be gone: every generation up to this one, by node id. Their
    /// requests still in flight when they were lost must not lease work (nobody would
    /// ever report it).
    gone: BTreeMap<NodeId, u64>,
    done: BTreeSet<u64>,
    tally: i64,
}

impl WorkPool {
    /// A pool of `total` increments.
    pub fn new(total: u64) -> Self {
        Self::with_chunk(total, CHUNK)
    }

    /// A pool of `total` increments leased `chunk` at a time (at least 1).
    pub fn with_chunk(total: u64, chunk: u64) -> Self {
        let chunk = chunk.max(1);
        WorkPool {
            state: Mutex::new(PoolState {
                total,
                chunk,
                chunks: total.div_ceil(chunk),
                next: 0,
                requeued: Vec::new(),
                leases: BTreeMap::new(),
                newest: BTreeMap::new(),
                gone: BTreeMap::new(),
                done: BTreeSet::new(),
                tally: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts back the chunks leased by the lives of `node` up to `generation` (it
    /// crashed, or left with a report lost), and gives no work to those lives again,
    /// even to one that never asked yet (its first request may still be in flight);
    /// returns how many. A newer generation of the node (restarted under the same id)
    /// keeps its leases.
    pub fn requeue(&self, node: NodeId, generation: u64) -> usize {
        let mut s = self.lock();
        let gone = s.gone.entry(node).or_insert(0);
        *gone = (*gone).max(generation);
        s.requeue_where(|(n, g)| n == node && g <= generation)
    }

    /// Whether every chunk is counted.
    pub fn finished(&self) -> bool {
        let s = self.lock();
        s.done.len() as u64 == s.chunks
    }

    /// The counted total so far.
    pub fn tally(&self) -> i64 {
        self.lock().tally
    }

    /// (chunks counted, chunks in all).
    pub fn progress(&self) -> (u64, u64) {
        let s = self.lock();
        (s.done.len() as u64, s.chunks)
    }
}

impl PoolState {
    /// Puts back the chunks whose leaseholder matches; returns how many.
    fn requeue_where(&mut self, matches: impl Fn((NodeId, u64)) -> bool) -> usize {
        let lost: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, holder)| matches(**holder))
            .map(|(c, _)| *c)
            .collect();
        for c in &lost {
            self.leases.remove(c);
            self.requeued.push(*c);
        }
        lost.len()
    }
}

impl RemoteRep for WorkPool {
    fn handle(&self, request: Request<'_>) -> Result<Vec<u8>, RemoteError> {
        sesa_exec::service::handle::<PoolService>(request, |from, request| {
            let mut s = self.lock();
            let holder = (from.node, from.generation);
            Ok(match request {
                Pool::Take => PoolReply::Lease(s.lease(holder)),
                Pool::Report { chunk, counted } => {
                    if s.leases.get(&chunk) == Some(&holder) {
                        s.leases.remove(&chunk);
                        if s.done.insert(chunk) {
                            s.tally += counted;
                        }
                    }
                    PoolReply::Reported
                }
            })
        })
    }
}

impl PoolState {
    /// The next lease for node life `holder` (node, generation).
    fn lease(&mut self, (node, generation): (NodeId, u64)) -> Lease {
        if self.gone.get(&node).is_some_and(|&g| generation <= g) {
            // A lost life's request, arriving after its loss was handled.
            return Lease::Done;
        }
        if self.newest.get(&node).is_none_or(|&g| generation > g) {
            // A newer life of the node: the older ones are gone with their leases.
            self.newest.insert(node, generation);
            self.requeue_where(|(n, g)| n == node && g < generation);
        }
        // A node counts one chunk at a time: asking again means it gave up the one it
        // held (its report was lost with a connection, say). That chunk goes back; the
        // tally only ever adds reports the pool took, so a chunk counted twice is
        // counted once.
        self.requeue_where(|holder| holder == (node, generation));
        let chunk = self.requeued.pop().or_else(|| {
            (self.next < self.chunks).then(|| {
                self.next += 1;
                self.next - 1
            })
        });
        match chunk {
            Some(c) => {
                self.leases.insert(c, (node, generation));
                let size = self.chunk.min(self.total - c * self.chunk);
                Lease::Chunk { chunk: c, size }
            }
            None if self.leases.is_empty() => Lease::Done,
            None => Lease::Wait,
        }
    }
}

/// The counter's frontend: the elastic loop below, whose output is the total.
pub struct CounterFrontend;

/// What the elastic counter counts.
#[derive(Clone, Copy, Debug)]
pub struct ElasticCount {
    /// Increments per core of each first node: the total is their cores times this.
    pub incs: u64,
    /// Increments per chunk leased (at least 1).
    pub chunk: u64,
}

impl ElasticCount {
    /// `incs` per core, leased in chunks of the default size (a few milliseconds of
    /// counting per core).
    pub fn new(incs: u64) -> Self {
        ElasticCount { incs, chunk: CHUNK }
    }
}

impl Application for CounterFrontend {
    type Node = Counter;
    type Settings = ElasticCount;
    type Output = i64;

    async fn frontend(cx: &mut Cluster<'_>, count: ElasticCount) -> anyhow::Result<i64> {
        elastic_counter(cx, count).await
    }
}

/// Runs the elastic counter to completion while nodes join, leave and crash: the
/// frontend's roster decides who is in, this loop runs the count on each node and gives
/// the work of the lost ones back to the pool.
async fn elastic_counter(cx: &mut Cluster<'_>, count: ElasticCount) -> anyhow::Result<i64> {
    let first = cx.first_nodes().clone();
    let incs = count.incs;
    let total: u64 = first.values().map(|r| u64::from(r.cores) * incs).sum();
    let (pool, pool_root) = NodeShared::create(move || WorkPool::with_chunk(total, count.chunk))?;
    cx.messenger().serve(pool).await?;
    pool.try_with(|_| ()).map_err(|e| anyhow!("{e}"))?;
    let work = pool_root.rep().context("the pool rep")?;
    let settings = CounterSettings {
        incs,
        pool: Some(PoolAddress {
            node: NodeId::FRONTEND,
            pool: pool.id(),
        }),
    };
    let mut roster = Roster::new(first.values()).replacing_lost();
    // Each node's part (it ends when every chunk is counted, or the node leaves).
    let mut running: BTreeMap<NodeId, sesa_event::JoinHandle<anyhow::Result<()>>> = BTreeMap::new();
    // Each leaving node's leave (it ends once the node has drained).
    let mut leaving: BTreeMap<NodeId, sesa_event::JoinHandle<anyhow::Result<()>>> = BTreeMap::new();
    // The life (generation) each node's part runs in: a lost or departed node's
    // leases are put back by it.
    let mut lives: BTreeMap<NodeId, u64> = BTreeMap::new();
    cx.accept_scaling(true);
    loop {
        cx.observe(&mut roster);
        // Nodes SWIM declared down (crashed, or hung with their connection still open).
        // If one was only frozen and resumes, its late reports are ignored (it no
        // longer holds the leases).
        for node in cx.take_down() {
            roster.down(node);
        }
        for (node, handle) in take_finished(&mut running) {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => roster.failed(node, &format!("{e:#}")),
                Err(e) => roster.failed(node, &e.to_string()),
            }
        }
        for (node, handle) in take_finished(&mut leaving) {
            roster.left(node, matches!(handle.await, Ok(Ok(()))));
        }
        while let Some(action) = roster.next_action(sesa_event::now()) {
            let Some(action) = cx.act(&mut roster, action)? else {
                continue;
            };
            match action {
                Action::Start { node, .. } => {
                    let part = cx.run_on::<Counter>(&node, &settings);
                    let part = sesa_event::spawn_local(async move { part.await.map(drop) });
                    running.insert(node.node, part);
                    lives.insert(node.node, node.generation);
                    roster.started(node.node);
                }
                Action::Lost { node, cause } => {
                    running.remove(&node);
                    let back = requeue(&work, &lives, node);
                    cx.report(Event::Lost {
                        node,
                        cause,
                        then: format!("{back} chunk(s) of its work go back to the pool"),
                    });
                }
                Action::Leave(node) => {
                    cx.report(Event::Leaving { node });
                    leaving.insert(node, sesa_event::spawn_local(cx.leave(node)));
                }
                Action::Left { node, clean } => {
                    // A clean leave ends the node's part with every report made; a
                    // lease it still holds is one whose report was lost (a connection
                    // reset): nobody would count it. It goes back too (a late report of
                    // it is then ignored: the pool counts a chunk once).
                    let back = requeue(&work, &lives, node);
                    if !clean {
                        cx.report(Event::Note(format!(
                            "node {node} left uncleanly: {back} chunk(s) go back to the pool"
                        )));
                    } else if back > 0 {
                        cx.report(Event::Note(format!(
                            "node {node} left with {back} chunk(s) whose report was lost: \
                             back to the pool"
                        )));
                    }
                    cx.report(Event::Left { node });
                }
                // Nodes lease from the pool: there is no view to send.
                Action::ChangeView { .. } => {}
                Action::Launch | Action::Stop { .. } | Action::Scaled { .. } => {}
            }
        }
        if work.finished() {
            break;
        }
        if roster.is_empty() {
            cx.accept_scaling(false);
            bail!("every node was lost before the count finished");
        }
        // Nodes end their part only when every chunk is counted or they leave; if none
        // is counting, none will, and waiting would hang the application.
        if running.is_empty() && !roster.joining() && leaving.is_empty() {
            let (done, chunks) = work.progress();
            cx.accept_scaling(false);
            bail!(
                "no node is counting, yet {} of {chunks} chunk(s) are not counted",
                chunks - done
            );
        }
        sesa_event::sleep(Duration::from_millis(5)).await;
    }
    cx.accept_scaling(false);
    for (_, h) in running {
        let _ = h.await;
    }
    // Nodes that joined by hand are not our processes: ask them to leave cleanly.
    for node in roster.joined_by_hand() {
        if !leaving.contains_key(&node) {
            let _ = cx.leave(node).await;
        }
    }
    for (node, h) in leaving {
        let _ = h.await;
        cx.stop_node(node, Duration::from_secs(5));
    }
    Ok(work.tally())
}

/// Puts back the leases of `node`'s life that ran a part (a node lost before it was
/// started has none, and no request of its own in flight).
fn requeue(work: &WorkPool, lives: &BTreeMap<NodeId, u64>, node: NodeId) -> usize {
    lives
        .get(&node)
        .map_or(0, |&generation| work.requeue(node, generation))
}

/// Removes and returns the tasks that have finished.
fn take_finished<T>(
    tasks: &mut BTreeMap<NodeId, sesa_event::JoinHandle<T>>,
) -> Vec<(NodeId, sesa_event::JoinHandle<T>)> {
    let done: Vec<NodeId> = tasks
        .iter()
        .filter(|(_, h)| h.is_finished())
        .map(|(n, _)| *n)
        .collect();
    done.into_iter()
        .filter_map(|n| tasks.remove(&n).map(|h| (n, h)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sesa_exec::Identity;

    /// A call to the pool as the wire carries it.
    fn call(pool: &WorkPool, from: Identity, request: Pool) -> PoolReply {
        use sesa_exec::Service as _;
        let payload = postcard::to_allocvec(&request).unwrap();
        let reply = pool
            .handle(Request {
                from,
                method: PoolService::method(&request),
                payload: &payload,
            })
            .unwrap();
        let reply: Result<PoolReply, crate::pool::PoolError> =
            postcard::from_bytes(&reply).unwrap();
        reply.unwrap()
    }

    fn first_life(node: u32) -> Identity {
        Identity {
            node: NodeId::new(node),
            generation: 1,
        }
    }

    fn take_as(pool: &WorkPool, who: Identity) -> Lease {
        match call(pool, who, Pool::Take) {
            PoolReply::Lease(lease) => lease,
            other => panic!("{other:?} answered to a take"),
        }
    }

    fn take(pool: &WorkPool, node: u32) -> Lease {
        take_as(pool, first_life(node))
    }

    fn report(pool: &WorkPool, node: u32, chunk: u64, counted: i64) {
        let reply = call(pool, first_life(node), Pool::Report { chunk, counted });
        assert_eq!(reply, PoolReply::Reported);
    }

    /// The frozen-node case: node 2 runs out of free chunks while node 1 still holds one.
    /// Node 2 must wait, not end, so it can take node 1's chunk once node 1 is declared
    /// down.
    #[test]
    fn a_node_waits_while_another_holds_the_last_chunk_then_takes_it_back() {
        let pool = WorkPool::new(CHUNK + 5);
        let Lease::Chunk { chunk: first, size } = take(&pool, 1) else {
            panic!("no first chunk")
        };
        assert_eq!(size, CHUNK);
        let Lease::Chunk { chunk: last, size } = take(&pool, 2) else {
            panic!("no second chunk")
        };
        assert_eq!(size, 5);
        report(&pool, 2, last, 5);
        assert_eq!(take(&pool, 2), Lease::Wait);
        assert!(!pool.finished());

        assert_eq!(pool.requeue(NodeId::new(1), 1), 1);
        assert_eq!(
            take(&pool, 2),
            Lease::Chunk {
                chunk: first,
                size: CHUNK
            }
        );
        // Node 1 wakes up and reports the chunk it lost: ignored.
        report(&pool, 1, first, CHUNK as i64);
        assert_eq!(pool.tally(), 5);
        report(&pool, 2, first, CHUNK as i64);
        assert!(pool.finished());
        assert_eq!(pool.tally(), CHUNK as i64 + 5);
        assert_eq!(take(&pool, 2), Lease::Done);
    }

    /// Found by `sesa sim --workload counter --seed 33`: a crashed node's request still
    /// in flight reached the pool after its leases were put back, and leased a chunk
    /// nobody would report.
    #[test]
    fn a_lost_life_gets_no_work_but_its_next_generation_does() {
        let pool = WorkPool::with_chunk(10, 1);
        let at = |node, generation| Identity {
            node: NodeId::new(node),
            generation,
        };
        assert!(matches!(take_as(&pool, at(1, 1)), Lease::Chunk { .. }));
        assert_eq!(pool.requeue(NodeId::new(1), 1), 1);
        // Generation 1's late request: no lease.
        assert_eq!(take_as(&pool, at(1, 1)), Lease::Done);
        // Generation 2 of the same node id works, and keeps its lease when the loss
        // of generation 1 is reported again.
        assert!(matches!(take_as(&pool, at(1, 2)), Lease::Chunk { .. }));
        assert_eq!(pool.requeue(NodeId::new(1), 1), 0);
        assert_eq!(pool.requeue(NodeId::new(1), 2), 1);
    }

    /// Found by `sesa sim --workload counter --faults wide --seed 61`: a node declared
    /// down right after its part started had not asked for work yet; its first request
    /// arrived after the loss and leased a chunk nobody would report.
    #[test]
    fn a_life_lost_before_it_asked_gets_no_work() {
        let pool = WorkPool::with_chunk(10, 1);
        assert_eq!(pool.requeue(NodeId::new(1), 1), 0);
        assert_eq!(take(&pool, 1), Lease::Done);
        assert!(matches!(take(&pool, 2), Lease::Chunk { .. }));
    }

    /// Found by `sesa sim --workload counter` once connections could be reset: a node
    /// whose report was lost with its connection asked for new work and kept its old
    /// lease forever, so the count never finished.
    #[test]
    fn asking_again_gives_the_held_chunk_back() {
        let pool = WorkPool::with_chunk(2, 1);
        let Lease::Chunk { chunk: first, .. } = take(&pool, 1) else {
            panic!("no chunk")
        };
        // The report of `first` is lost; node 1 asks again and gets it back.
        assert_eq!(
            take(&pool, 1),
            Lease::Chunk {
                chunk: first,
                size: 1
            }
        );
        report(&pool, 1, first, 1);
        let Lease::Chunk { chunk: second, .. } = take(&pool, 1) else {
            panic!("no second chunk")
        };
        report(&pool, 1, second, 1);
        assert!(pool.finished());
        assert_eq!(pool.tally(), 2);
    }

    #[test]
    fn a_chunk_reported_twice_counts_once() {
        let pool = WorkPool::new(3);
        let Lease::Chunk { chunk, .. } = take(&pool, 1) else {
            panic!("no chunk")
        };
        report(&pool, 1, chunk, 3);
        report(&pool, 1, chunk, 3);
        assert_eq!(pool.tally(), 3);
        assert_eq!(pool.progress(), (1, 1));
    }
}
