//! A node's side of the elastic counter: lease chunks of counting from the frontend's
//! work pool (the pool itself is `sesa::elastic::WorkPool`), count each on every core
//! through the node's counter EBB, and report it.

use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering::SeqCst};
use core::time::Duration;

use serde::{Deserialize, Serialize};
use sesa_ebb::{CoreId, EbbId};
use sesa_exec::{CallError, MessengerRef, RemoteError};

/// The work pool's method: lease the next chunk.
pub const TAKE: u16 = 1;
/// The work pool's method: report a finished chunk.
pub const REPORT: u16 = 2;

/// How long a node waits before asking again when every chunk left is leased.
const RETRY: Duration = Duration::from_millis(10);

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
    leaving: Arc<AtomicBool>,
) -> Result<i64, CallError> {
    let counter = sesa_apps::counter::Counter::create().map_err(|e| refused(&e))?;
    let id = EbbId::from_raw(pool.pool).ok_or_else(|| refused(&"bad pool id"))?;
    let mut mine = 0i64;
    while !leaving.load(SeqCst) {
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

fn refused(e: &dyn core::fmt::Display) -> CallError {
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
