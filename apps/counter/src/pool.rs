//! A node's side of the elastic counter: lease chunks of counting from the frontend's
//! work pool (the pool itself is the frontend's `WorkPool`), count each on every core
//! through the node's counter EBB, and report it.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering::SeqCst};
use core::time::Duration;

use serde::{Deserialize, Serialize};
use sesa_ebb::{CoreId, EbbId, NodeId};
use sesa_exec::{Client, MessengerRef, ServiceError};

/// The frontend's work pool ([`Pool`] requests).
pub struct PoolService;

/// What a node asks the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pool {
    /// Lease the next chunk (giving back the one held, if any).
    Take,
    /// Chunk `chunk` is counted: `counted` increments.
    Report {
        /// The chunk's index.
        chunk: u64,
        /// Its increments, as counted.
        counted: i64,
    },
}

/// The pool's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolReply {
    /// The answer to [`Pool::Take`].
    Lease(Lease),
    /// The report was taken (or was stale: only the leaseholder's report counts).
    Reported,
}

/// The pool refuses nothing it can name: a stale request gets [`Lease::Done`] or is
/// ignored. (An empty enum: no value exists.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolError {}

impl core::fmt::Display for PoolError {
    fn fmt(&self, _: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {}
    }
}

impl sesa_exec::Service for PoolService {
    const NAME: &'static str = "work pool";
    type Request = Pool;
    type Reply = PoolReply;
    type Error = PoolError;

    fn method(request: &Pool) -> u16 {
        match request {
            Pool::Take => 1,
            Pool::Report { .. } => 2,
        }
    }
}

/// How long a node waits before asking again when every chunk left is leased.
const RETRY: Duration = Duration::from_millis(10);

/// The pool's answer to [`Pool::Take`].
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

/// Where a node finds the pool.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct PoolAddress {
    /// The frontend's node id.
    pub node: NodeId,
    /// The pool EBB.
    pub pool: EbbId,
}

/// A node's side: leases and counts chunks until every chunk is counted or `leaving`
/// is set (checked between chunks). Returns how many increments this node counted.
///
/// # Errors
/// The frontend cannot be reached, or a core fails.
pub async fn count_from_pool(
    messenger: MessengerRef,
    pool: PoolAddress,
    leaving: Arc<AtomicBool>,
) -> Result<i64, CountError> {
    let counter = sesa_apps::counter::Counter::create()?;
    let client = Client::<PoolService>::new(messenger, pool.node, CoreId::new(0), pool.pool);
    let mut mine = 0i64;
    while !leaving.load(SeqCst) {
        let (chunk, size) = match client.call(Pool::Take).await? {
            PoolReply::Lease(Lease::Chunk { chunk, size }) => (chunk, size),
            PoolReply::Lease(Lease::Wait) => {
                sesa_event::sleep(RETRY).await;
                continue;
            }
            PoolReply::Lease(Lease::Done) => break,
            PoolReply::Reported => return Err(CountError::Unexpected),
        };
        let before = counter.try_val()?;
        count_on_every_core(counter, size).await?;
        let counted = counter.try_val()? - before;
        client.call(Pool::Report { chunk, counted }).await?;
        mine += counted;
    }
    sesa_event::destroy(counter.ebb()).await?;
    Ok(mine)
}

/// Why a node's counting from the pool stopped.
#[derive(Debug, thiserror::Error)]
pub enum CountError {
    /// The pool could not be reached.
    #[error("the work pool: {0}")]
    Pool(#[from] ServiceError<PoolError>),
    /// The pool answered a lease request with something else.
    #[error("the work pool answered a lease request with another reply")]
    Unexpected,
    /// The node's counter EBB failed.
    #[error("the counter EBB: {0}")]
    Counter(#[from] sesa_ebb::EbbError),
    /// A core failed.
    #[error("counting: {0}")]
    Event(#[from] sesa_event::EventError),
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
