//! The micro-benchmarks every platform runs the same way: the object model's and the
//! event runtime's costs, timed on the platform's clock (`sesa_event::now`). The hosted
//! `sesa bench micro` adds its OS baselines (a thread-local pointer, a mutex) and runs
//! them interleaved with these; the native kernel's `bench` command runs [`measure`] and
//! prints the figures, so that `sesa bench micro --native` compares the two platforms.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use sesa_apps::counter::Counter;
use sesa_ebb::CoreId;
use sesa_event::{EventError, spawn_on};

/// Sizes of one run of [`measure`].
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Sizes {
    /// Repetitions of every measurement; figures are medians.
    pub runs: usize,
    /// Calls per timed loop for the EBB call figures.
    pub calls: u64,
    /// Increments per core for the counter throughputs.
    pub incs_per_core: u64,
    /// EBBs created and first-accessed per run for the miss figure.
    pub misses: usize,
    /// Round trips per run for the spawn latency percentiles.
    pub round_trips: usize,
    /// Events shipped per run for the ship throughput.
    pub ships: u64,
}

impl Sizes {
    /// The sizes behind the published figures.
    pub const FULL: Sizes = Sizes {
        runs: 7,
        calls: 20_000_000,
        incs_per_core: 10_000_000,
        misses: 20_000,
        round_trips: 20_000,
        ships: 1_000_000,
    };

    /// Tiny sizes for tests (the figures mean nothing).
    pub const QUICK: Sizes = Sizes {
        runs: 3,
        calls: 20_000,
        incs_per_core: 20_000,
        misses: 200,
        round_trips: 200,
        ships: 2_000,
    };
}

/// The platform-independent figures (medians over the runs).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Figures {
    /// Cores of the runtime.
    pub cores: usize,
    /// An EBB call on a hit (a method not inlined), ns.
    pub ebb_call_ns: f64,
    /// The EBB hit inlined into the timing loop, ns.
    pub ebb_inline_ns: f64,
    /// Per-core EBB counter, million increments/s over all cores.
    pub counter_ebb_mops: f64,
    /// One shared atomic, million increments/s over all cores.
    pub counter_atomic_mops: f64,
    /// First access to an EBB on a core, ns.
    pub miss_ns: f64,
    /// Cross-core `spawn_on` round trip, median, ns.
    pub spawn_rtt_p50_ns: f64,
    /// Cross-core `spawn_on` round trip, 99th percentile, ns.
    pub spawn_rtt_p99_ns: f64,
    /// One-way `ship` throughput core 0 -> core 1, million events/s.
    pub spawn_mops: f64,
}

/// Runs every portable measurement `sizes.runs` times, interleaved.
///
/// # Errors
/// Off a core, or a core failed.
pub async fn measure(sizes: Sizes) -> Result<Figures, EventError> {
    let counter = Counter::create()?;
    let (mut call, mut inline, mut ebb, mut atomic, mut miss, mut rtts, mut ships) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for _ in 0..sizes.runs.max(1) {
        call.push(ebb_call_ns(counter, sizes.calls));
        inline.push(ebb_inline_ns(counter, sizes.calls));
        ebb.push(counter_ebb_mops(sizes.incs_per_core).await?);
        let shared = Arc::new(AtomicU64::new(0));
        atomic.push(
            counter_mops(sizes.incs_per_core, move || {
                shared.fetch_add(1, Ordering::Relaxed);
            })
            .await?,
        );
        miss.push(miss_ns(sizes.misses).await?);
        rtts.extend(round_trips_ns(sizes.round_trips).await?);
        ships.push(ship_mops(sizes.ships).await?);
    }
    sesa_event::destroy(counter.ebb()).await?;
    rtts.sort_unstable();
    Ok(Figures {
        cores: sesa_event::cores(),
        ebb_call_ns: median(call),
        ebb_inline_ns: median(inline),
        counter_ebb_mops: median(ebb),
        counter_atomic_mops: median(atomic),
        miss_ns: median(miss),
        spawn_rtt_p50_ns: percentile(&rtts, 0.50),
        spawn_rtt_p99_ns: percentile(&rtts, 0.99),
        spawn_mops: median(ships),
    })
}

/// The median of `xs` (0 for none).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// The `p` quantile of sorted samples (0 for none).
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Rounded to the nearest index (`f64::round` is not in `core`; the value is >= 0).
    let index = ((sorted.len() - 1) as f64 * p.clamp(0.0, 1.0) + 0.5) as usize;
    sorted[index.min(sorted.len() - 1)] as f64
}

fn elapsed_ns(start: sesa_event::Instant) -> u64 {
    sesa_event::now().as_nanos() - start.as_nanos()
}

/// A method invocation through the EBB: what application code pays per call.
#[inline(never)]
fn inc_through_ebb(counter: Counter) {
    counter.inc()
}

/// Times `calls` calls of `call`; ns per call. Inlined into each caller, so every timed
/// loop is compiled for its own `call`.
#[inline(always)]
pub fn ns_per_call(calls: u64, mut call: impl FnMut()) -> f64 {
    let calls = black_box(calls).max(1);
    let start = sesa_event::now();
    for _ in 0..calls {
        call();
    }
    elapsed_ns(start) as f64 / calls as f64
}

/// An EBB call on a hit, not inlined, ns.
#[inline(never)]
pub fn ebb_call_ns(counter: Counter, calls: u64) -> f64 {
    ns_per_call(calls, || inc_through_ebb(counter))
}

/// An EBB hit inlined into the timing loop, ns.
#[inline(never)]
pub fn ebb_inline_ns(counter: Counter, calls: u64) -> f64 {
    ns_per_call(calls, || counter.inc())
}

/// All cores run `inc` `incs` times at once (released together by a barrier); million
/// calls per second over the slowest core's time.
///
/// # Errors
/// A core failed.
pub async fn counter_mops(
    incs: u64,
    inc: impl Fn() + Send + Sync + 'static,
) -> Result<f64, EventError> {
    let cores = sesa_event::cores();
    let arrived = Arc::new(AtomicUsize::new(0));
    let results = sesa_event::on_all_cores(move |_| {
        // A barrier inside events: deliberately blocks each core until all are here,
        // so the contended baselines really contend.
        arrived.fetch_add(1, Ordering::SeqCst);
        while arrived.load(Ordering::SeqCst) < cores {
            core::hint::spin_loop();
        }
        let start = sesa_event::now();
        (0..incs).for_each(|_| inc());
        elapsed_ns(start)
    })
    .await;
    let mut slowest = 1;
    for r in results {
        slowest = slowest.max(r?);
    }
    Ok((incs as f64 * cores as f64) / (slowest as f64 / 1e9) / 1e6)
}

/// The per-core EBB counter under [`counter_mops`].
///
/// # Errors
/// Off a core, out of EBB ids, or a core failed.
pub async fn counter_ebb_mops(incs: u64) -> Result<f64, EventError> {
    let counter = Counter::create()?;
    let mops = counter_mops(incs, move || counter.inc()).await?;
    debug_assert_eq!(counter.val(), (incs as usize * sesa_event::cores()) as i64);
    sesa_event::destroy(counter.ebb()).await?;
    Ok(mops)
}

/// Creates `n` EBBs, then times their first access on this core; ns per miss.
///
/// # Errors
/// Out of EBB ids, or a core failed.
pub async fn miss_ns(n: usize) -> Result<f64, EventError> {
    let counters: Vec<Counter> = (0..n.max(1))
        .map(|_| Counter::create())
        .collect::<Result<_, _>>()?;
    let start = sesa_event::now();
    for c in &counters {
        c.inc();
    }
    let per_miss = elapsed_ns(start) as f64 / counters.len() as f64;
    for c in &counters {
        c.ebb().destroy()?;
    }
    // One pass over every core reclaims them all.
    for r in sesa_event::on_all_cores(|_| ()).await {
        r?;
    }
    Ok(per_miss)
}

fn partner_core() -> CoreId {
    CoreId::new(if sesa_event::cores() > 1 { 1 } else { 0 })
}

/// `n` round trips of `spawn_on(core 1, no-op)`, each in ns.
///
/// # Errors
/// A core failed.
pub async fn round_trips_ns(n: usize) -> Result<Vec<u64>, EventError> {
    let target = partner_core();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = sesa_event::now();
        spawn_on(target, || ()).await?;
        samples.push(elapsed_ns(start));
    }
    Ok(samples)
}

/// One-way `ship` throughput from this core to core 1, million events/s.
///
/// # Errors
/// A core failed, or not every event ran.
pub async fn ship_mops(n: u64) -> Result<f64, EventError> {
    let target = partner_core();
    let received = Arc::new(AtomicU64::new(0));
    let start = sesa_event::now();
    for _ in 0..n {
        let received = received.clone();
        sesa_event::ship(target, move || {
            received.fetch_add(1, Ordering::Relaxed);
        })?;
    }
    spawn_on(target, || ()).await?;
    let elapsed = elapsed_ns(start).max(1);
    assert_eq!(
        received.load(Ordering::Relaxed),
        n,
        "every shipped event ran"
    );
    Ok(n as f64 / (elapsed as f64 / 1e9) / 1e6)
}
