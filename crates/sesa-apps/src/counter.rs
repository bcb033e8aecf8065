//! The paper's distributed counter (section 4.1, figure 3): one object with `inc`, `dec`
//! and `val`, whose per-core reps make increments purely local.
//!
//! Each core's first `inc` misses and the [`PerCore`] template builds that core's rep
//! there; later calls are a translation-table hit plus a relaxed load and store to a
//! cache line no other core writes. `val` asks the root for every rep that exists and
//! sums them. It is exact once the increments it should count have happened-before the
//! call (for instance, their events returned to the caller); while other cores are still
//! counting it returns some value between the totals before and after.
//!
//! ```
//! # use sesa_hosted::{Config, Exit, Runtime};
//! use sesa_apps::counter::Counter;
//!
//! # let config = Config { pin_threads: false, ..Config::with_cores(2) };
//! # let exit = Runtime::new(config).unwrap().run(|| async {
//! let counter = Counter::create().unwrap();
//! for result in sesa_event::on_all_cores(move |_core| counter.inc()).await {
//!     result.unwrap();
//! }
//! assert_eq!(counter.val(), 2); // one increment on each of the 2 cores
//! # });
//! # assert!(matches!(exit, Ok(Exit::Completed(()))));
//! ```

use alloc::vec::Vec;
use core::sync::atomic::{AtomicI64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;
use sesa_ebb::{EbbError, EbbRef, PerCore};
use sesa_event::{EventError, on_all_cores, spawn_on_async, yield_now};

/// A core's part of the count. Written only by its own core (a relaxed load and store,
/// no read-modify-write); read by any core aggregating. Padded to a cache line so two
/// cores' reps never share one.
#[derive(Debug, Default)]
pub struct CounterRep {
    count: CachePadded<AtomicI64>,
}

impl CounterRep {
    /// A rep at zero.
    pub const fn new() -> Self {
        CounterRep {
            count: CachePadded::new(AtomicI64::new(0)),
        }
    }

    /// Adds one. Only the rep's own core may call this (single writer).
    #[inline]
    pub fn inc(&self) {
        self.count
            .store(self.count.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// Subtracts one. Only the rep's own core may call this (single writer).
    #[inline]
    pub fn dec(&self) {
        self.count
            .store(self.count.load(Relaxed).wrapping_sub(1), Relaxed);
    }

    /// This core's part.
    pub fn get(&self) -> i64 {
        self.count.load(Relaxed)
    }
}

/// The distributed counter EBB: `Copy`, usable from any core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    ebb: EbbRef<CounterRep>,
}

impl Counter {
    /// Creates a counter on the current node. No rep exists until a core counts.
    ///
    /// # Errors
    /// Off a core, or when the node is out of EBB ids.
    pub fn create() -> Result<Counter, EbbError> {
        let (ebb, _root) = PerCore::create(|_core| CounterRep::new())?;
        Ok(Counter { ebb })
    }

    /// The underlying EBB.
    pub fn ebb(self) -> EbbRef<CounterRep> {
        self.ebb
    }

    /// Adds one, on this core's rep.
    ///
    /// # Panics
    /// If the counter was destroyed, or off a core.
    #[inline]
    pub fn inc(self) {
        self.ebb.with(CounterRep::inc)
    }

    /// Subtracts one, on this core's rep.
    ///
    /// # Panics
    /// If the counter was destroyed, or off a core.
    #[inline]
    pub fn dec(self) {
        self.ebb.with(CounterRep::dec)
    }

    /// The sum over every core's rep.
    ///
    /// # Errors
    /// If the counter was destroyed, or off a core.
    pub fn try_val(self) -> Result<i64, EbbError> {
        let root = self.ebb.root::<PerCore<CounterRep>>()?;
        Ok(root
            .reps()
            .fold(0i64, |sum, (_, rep)| sum.wrapping_add(rep.get())))
    }

    /// The sum over every core's rep.
    ///
    /// # Panics
    /// If the counter was destroyed, or off a core.
    #[track_caller]
    pub fn val(self) -> i64 {
        match self.try_val() {
            Ok(v) => v,
            Err(e) => panic!("counter val failed: {e}"),
        }
    }
}

/// How many increments a core makes per event before letting its other events run (so
/// a long count stays responsive to stop requests and shipped work).
const INCS_PER_TURN: u64 = 1 << 16;

/// The counter application: every core increments one counter `incs_per_core` times,
/// then the total is read and the counter destroyed. Returns the total, which is
/// exactly `cores * incs_per_core`.
///
/// # Errors
/// If a core fails (a panic, or the runtime stopping first).
pub async fn count_on_all_cores(incs_per_core: u64) -> Result<i64, EventError> {
    let counter = Counter::create()?;
    let cores: Vec<_> = sesa_event::all_cores().collect();
    let handles: Vec<_> = cores
        .into_iter()
        .map(|core| {
            spawn_on_async(core, move || async move {
                let mut left = incs_per_core;
                while left > 0 {
                    let turn = left.min(INCS_PER_TURN);
                    for _ in 0..turn {
                        counter.inc();
                    }
                    left -= turn;
                    yield_now().await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await?;
    }
    let total = counter.try_val()?;
    sesa_event::destroy(counter.ebb()).await?;
    Ok(total)
}

/// Increments `counter` once on every core and decrements it once on core 0: a smoke
/// check of `inc`, `dec` and `val` across cores, used by the tests.
///
/// # Errors
/// If a core fails.
pub async fn inc_everywhere_dec_once(counter: Counter) -> Result<i64, EventError> {
    for r in on_all_cores(move |_| counter.inc()).await {
        r?;
    }
    counter.dec();
    Ok(counter.try_val()?)
}
