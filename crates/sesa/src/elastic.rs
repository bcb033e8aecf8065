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
//! - A crashed node's leased chunks go back to the pool.
//! - A node finds no chunk free while others are still leased: it waits and asks
//!   again, and ends only when every chunk is counted. (A leaseholder may yet be
//!   declared down, and its chunks must then find a taker.)
//!
//! So the total is exact in all three cases.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sesa_ebb::{CoreId, EbbId};
use sesa_exec::{CallError, MessengerRef, RemoteError, RemoteRep, Request};

/// The work pool's method: lease the next chunk.
pub const TAKE: u16 = 1;
/// The work pool's method: report a finished chunk.
pub const REPORT: u16 = 2;

/// Increments per chunk: a few milliseconds of counting per core.
const CHUNK: u64 = 1 << 22;

/// How long a node waits before asking again when every chunk left is leased.
const RETRY: std::time::Duration = std::time::Duration::from_millis(10);

/// The pool's answer to [`TAKE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lease {
    /// Count `size` increments and report them as chunk `chunk`.
    Chunk {
        /// The chunk's index.
        chunk: u64,
        /// Its increments.
        size: u64,
    },
    /// Every chunk left is leased to some node: ask again later, for the leaseholder
    /// may be lost and its chunk given back.
    Wait,
    /// Every chunk is counted.
    Done,
}

/// The frontend's pool of counting work (a node-shared EBB, served remotely).
pub struct WorkPool {
    state: Mutex<PoolState>,
}

struct PoolState {
    total: u64,
    chunks: u64,
    next: u64,
    requeued: Vec<u64>,
    leases: BTreeMap<u64, u32>,
    done: BTreeSet<u64>,
    tally: i64,
}

impl WorkPool {
    /// A pool of `total` increments.
    pub fn new(total: u64) -> Self {
        WorkPool {
            state: Mutex::new(PoolState {
                total,
                chunks: total.div_ceil(CHUNK),
                next: 0,
                requeued: Vec::new(),
                leases: BTreeMap::new(),
                done: BTreeSet::new(),
                tally: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `node`'s leased chunks back (it crashed); returns how many.
    pub fn requeue(&self, node: u32) -> usize {
        let mut s = self.lock();
        let lost: Vec<u64> = s
            .leases
            .iter()
            .filter(|(_, n)| **n == node)
            .map(|(c, _)| *c)
            .collect();
        for c in &lost {
            s.leases.remove(c);
            s.requeued.push(*c);
        }
        lost.len()
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

impl RemoteRep for WorkPool {
    fn handle(&self, request: Request<'_>) -> Result<Vec<u8>, RemoteError> {
        let bad = || RemoteError::Refused("malformed work request".into());
        let mut s = self.lock();
        match request.method {
            TAKE => {
                let chunk = s.requeued.pop().or_else(|| {
                    (s.next < s.chunks).then(|| {
                        s.next += 1;
                        s.next - 1
                    })
                });
                let lease = match chunk {
                    Some(c) => {
                        s.leases.insert(c, request.from.node);
                        let size = CHUNK.min(s.total - c * CHUNK);
                        Lease::Chunk { chunk: c, size }
                    }
                    None if s.leases.is_empty() => Lease::Done,
                    None => Lease::Wait,
                };
                crate::encode_reply(&lease)
            }
            REPORT => {
                let (chunk, counted): (u64, i64) =
                    postcard::from_bytes(request.payload).map_err(|_| bad())?;
                if s.leases.get(&chunk) == Some(&request.from.node) {
                    s.leases.remove(&chunk);
                    if s.done.insert(chunk) {
                        s.tally += counted;
                    }
                }
                crate::encode_reply(&())
            }
            _ => Err(RemoteError::NoHandler),
        }
    }
}

/// Where a node finds the pool.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct PoolAddress {
    /// The frontend's node id.
    pub node: u32,
    /// The pool EBB.
    pub pool: u64,
}

/// A node's side: leases and counts chunks until every chunk is counted or `leaving`
/// is set (checked between chunks). Returns how many increments this node counted.
///
/// # Errors
/// The frontend cannot be reached, or a core fails.
pub async fn count_from_pool(
    messenger: MessengerRef,
    pool: PoolAddress,
    leaving: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<i64, CallError> {
    let counter = sesa_apps::counter::Counter::create().map_err(|e| refused(&e))?;
    let id = EbbId::from_raw(pool.pool).ok_or_else(|| refused(&"bad pool id"))?;
    let mut mine = 0i64;
    while !leaving.load(std::sync::atomic::Ordering::SeqCst) {
        let lease = messenger
            .call(pool.node, CoreId::new(0), id, TAKE, Vec::new())
            .await?;
        let (chunk, size) =
            match postcard::from_bytes(&lease).map_err(|_| refused(&"malformed lease"))? {
                Lease::Chunk { chunk, size } => (chunk, size),
                Lease::Wait => {
                    sesa_event::sleep(RETRY).await;
                    continue;
                }
                Lease::Done => break,
            };
        let before = counter.try_val().map_err(|e| refused(&e))?;
        count_on_every_core(counter, size)
            .await
            .map_err(|e| refused(&e))?;
        let counted = counter.try_val().map_err(|e| refused(&e))? - before;
        let report = postcard::to_allocvec(&(chunk, counted)).map_err(|_| refused(&"encoding"))?;
        messenger
            .call(pool.node, CoreId::new(0), id, REPORT, report)
            .await?;
        mine += counted;
    }
    sesa_event::destroy(counter.ebb())
        .await
        .map_err(|e| refused(&e))?;
    Ok(mine)
}

fn refused(e: &dyn std::fmt::Display) -> CallError {
    CallError::Remote {
        node: 0,
        error: RemoteError::Refused(e.to_string()),
    }
}

/// Increments `counter` `n` times, spread over every core.
async fn count_on_every_core(
    counter: sesa_apps::counter::Counter,
    n: u64,
) -> Result<(), sesa_event::EventError> {
    let cores = sesa_event::cores() as u64;
    let handles: Vec<_> = sesa_event::all_cores()
        .map(|core| {
            let share = n / cores + u64::from((core.get() as u64) < n % cores);
            sesa_event::spawn_on_async(core, move || async move {
                let mut left = share;
                while left > 0 {
                    let turn = left.min(1 << 16);
                    for _ in 0..turn {
                        counter.inc();
                    }
                    left -= turn;
                    sesa_event::yield_now().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sesa_exec::Identity;

    fn call(pool: &WorkPool, node: u32, method: u16, payload: &[u8]) -> Vec<u8> {
        let from = Identity {
            node,
            generation: 1,
        };
        pool.handle(Request {
            from,
            method,
            payload,
        })
        .unwrap()
    }

    fn take(pool: &WorkPool, node: u32) -> Lease {
        postcard::from_bytes(&call(pool, node, TAKE, &[])).unwrap()
    }

    fn report(pool: &WorkPool, node: u32, chunk: u64, counted: i64) {
        call(
            pool,
            node,
            REPORT,
            &postcard::to_allocvec(&(chunk, counted)).unwrap(),
        );
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

        assert_eq!(pool.requeue(1), 1);
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
