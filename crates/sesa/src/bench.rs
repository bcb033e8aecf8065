//! `sesa bench micro`: the object model's and the event runtime's costs, each measured
//! against its baseline in the same run.
//!
//! | figure | what | baseline |
//! |---|---|---|
//! | `ebb_call_ns` | a call of a (not inlined) method that runs `Counter::inc` through its `EbbRef` on a core (a hit) | `direct_call_ns`: the same method on the same kind of rep, reached through a thread-local pointer |
//! | `ebb_inline_ns` | the same, inlined into the timing loop | `direct_inline_ns` |
//! | `counter_ebb_mops` | increments/s over all cores, each on its own rep | `counter_atomic_mops` (one shared `AtomicU64::fetch_add`), `counter_mutex_mops` (one `Mutex<u64>`) |
//! | `miss_ns` | first access to an EBB on a core: id map, miss handler, rep creation, install | — |
//! | `spawn_rtt_p50_ns`, `_p99_ns` | `spawn_on(core 1, no-op).await` from core 0 | — |
//! | `spawn_mops` | one-way `ship` throughput from core 0 to core 1 | — |
//!
//! Every figure is the median over `runs` repetitions, interleaved (EBB, baseline, EBB,
//! baseline...) so that machine noise hits both alike. Timing uses the OS monotonic
//! clock directly (benchmarks are hosted-only).

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, anyhow};
use serde::Serialize;
use sesa_apps::counter::{Counter, CounterRep};
use sesa_ebb::CoreId;
use sesa_event::{EventError, spawn_on};
use sesa_hosted::{Config, Exit, Runtime};

/// Sizes of one micro-benchmark run.
#[derive(Clone, Debug)]
pub struct MicroConfig {
    /// Cores of the runtime (the counters use all; the spawn figures use cores 0 and 1).
    pub cores: usize,
    /// Repetitions of every measurement; figures are medians.
    pub runs: usize,
    /// Calls per timed loop for `ebb_call_ns` / `direct_call_ns`.
    pub calls: u64,
    /// Increments per core for the counter throughputs.
    pub incs_per_core: u64,
    /// EBBs created and first-accessed per run for `miss_ns`.
    pub misses: usize,
    /// Round trips per run for the spawn latency percentiles.
    pub round_trips: usize,
    /// Events shipped per run for `spawn_mops`.
    pub ships: u64,
    /// Pin core threads to CPUs.
    pub pin_threads: bool,
}

impl MicroConfig {
    /// The sizes behind the published figures (a few seconds on 2 cores).
    pub fn full(cores: usize) -> Self {
        MicroConfig {
            cores,
            runs: 7,
            calls: 20_000_000,
            incs_per_core: 10_000_000,
            misses: 20_000,
            round_trips: 20_000,
            ships: 1_000_000,
            pin_threads: true,
        }
    }

    /// Tiny sizes, so the suite runs in the tests without taking time (figures are
    /// meaningless at this size).
    pub fn quick(cores: usize) -> Self {
        MicroConfig {
            cores,
            runs: 3,
            calls: 20_000,
            incs_per_core: 20_000,
            misses: 200,
            round_trips: 200,
            ships: 2_000,
            pin_threads: false,
        }
    }
}

/// The figures `sesa bench micro --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct MicroReport {
    /// Cores of the runtime.
    pub cores: usize,
    /// Repetitions behind each median.
    pub runs: usize,
    /// EBB call on a hit, ns.
    pub ebb_call_ns: f64,
    /// The same call through a thread-local pointer, ns.
    pub direct_call_ns: f64,
    /// `ebb_call_ns / direct_call_ns` (goal: at most 1.2).
    pub ebb_call_ratio: f64,
    /// EBB hit inlined into the caller's loop, ns: the bare lookup cost.
    pub ebb_inline_ns: f64,
    /// The thread-local pointer, inlined into the caller's loop, ns.
    pub direct_inline_ns: f64,
    /// `ebb_inline_ns / direct_inline_ns`.
    pub ebb_inline_ratio: f64,
    /// Per-core EBB counter, million increments/s over all cores.
    pub counter_ebb_mops: f64,
    /// One shared `AtomicU64`, million increments/s over all cores.
    pub counter_atomic_mops: f64,
    /// One `Mutex<u64>`, million increments/s over all cores.
    pub counter_mutex_mops: f64,
    /// `counter_ebb_mops / counter_atomic_mops` (goal: at least 5 on 2 cores).
    pub counter_ebb_vs_atomic: f64,
    /// First access to an EBB on a core, ns.
    pub miss_ns: f64,
    /// Cross-core `spawn_on` round trip, median, ns.
    pub spawn_rtt_p50_ns: f64,
    /// Cross-core `spawn_on` round trip, 99th percentile, ns.
    pub spawn_rtt_p99_ns: f64,
    /// One-way `ship` throughput core 0 -> core 1, million events/s.
    pub spawn_mops: f64,
}

impl MicroReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        format!(
            "sesa bench micro: {cores} cores, medians of {runs} runs\n\
             ebb call (hit)       {ebb:>10.2} ns   direct call {direct:.2} ns   ratio {ratio:.2}x\n\
             ebb hit, inlined     {ebbi:>10.2} ns   direct      {directi:.2} ns   ratio {ratioi:.2}x\n\
             counter, per-core EBB {cebb:>9.1} M inc/s\n\
             counter, shared atomic {catom:>8.1} M inc/s   (EBB {vs:.1}x)\n\
             counter, mutex       {cmut:>10.1} M inc/s\n\
             miss (first access)  {miss:>10.0} ns\n\
             spawn_on round trip  {p50:>10.0} ns p50   {p99:.0} ns p99\n\
             ship throughput      {ships:>10.2} M events/s\n",
            cores = self.cores,
            runs = self.runs,
            ebb = self.ebb_call_ns,
            direct = self.direct_call_ns,
            ratio = self.ebb_call_ratio,
            ebbi = self.ebb_inline_ns,
            directi = self.direct_inline_ns,
            ratioi = self.ebb_inline_ratio,
            cebb = self.counter_ebb_mops,
            catom = self.counter_atomic_mops,
            vs = self.counter_ebb_vs_atomic,
            cmut = self.counter_mutex_mops,
            miss = self.miss_ns,
            p50 = self.spawn_rtt_p50_ns,
            p99 = self.spawn_rtt_p99_ns,
            ships = self.spawn_mops,
        )
    }
}

/// Runs the micro-benchmarks on a fresh hosted runtime.
///
/// # Errors
/// If the runtime cannot start or a core fails.
pub fn micro(config: &MicroConfig) -> anyhow::Result<MicroReport> {
    let runtime = Runtime::new(Config {
        pin_threads: config.pin_threads,
        ..Config::with_cores(config.cores)
    })?;
    let cfg = config.clone();
    match runtime.run(move || run_all(cfg))? {
        Exit::Completed(report) => Ok(report?),
        other => Err(anyhow!("the runtime stopped early (exit {})", other.code())),
    }
}

async fn run_all(cfg: MicroConfig) -> anyhow::Result<MicroReport> {
    let mut ebb = Vec::new();
    let mut direct = Vec::new();
    let mut ebb_inline = Vec::new();
    let mut direct_inline = Vec::new();
    let mut c_ebb = Vec::new();
    let mut c_atomic = Vec::new();
    let mut c_mutex = Vec::new();
    let mut miss = Vec::new();
    let mut rtts = Vec::new();
    let mut ships = Vec::new();
    let counter = Counter::create()?;
    for _ in 0..cfg.runs {
        ebb.push(ebb_call_ns(counter, cfg.calls));
        direct.push(direct_call_ns(cfg.calls));
        ebb_inline.push(ebb_inline_ns(counter, cfg.calls));
        direct_inline.push(direct_inline_ns(cfg.calls));
        c_ebb.push(counter_mops(CounterKind::Ebb, cfg.incs_per_core).await?);
        c_atomic.push(counter_mops(CounterKind::Atomic, cfg.incs_per_core).await?);
        c_mutex.push(counter_mops(CounterKind::Mutex, cfg.incs_per_core).await?);
        miss.push(miss_ns(cfg.misses).await?);
        rtts.extend(round_trips_ns(cfg.round_trips).await?);
        ships.push(ship_mops(cfg.ships).await?);
    }
    sesa_event::destroy(counter.ebb()).await?;
    rtts.sort_unstable();
    let percentile = |p: f64| rtts[((rtts.len() - 1) as f64 * p).round() as usize] as f64;
    let (ebb_call_ns, direct_call_ns) = (median(ebb), median(direct));
    let (ebb_inline_ns, direct_inline_ns) = (median(ebb_inline), median(direct_inline));
    let (counter_ebb_mops, counter_atomic_mops) = (median(c_ebb), median(c_atomic));
    Ok(MicroReport {
        cores: cfg.cores,
        runs: cfg.runs,
        ebb_call_ns,
        direct_call_ns,
        ebb_call_ratio: ebb_call_ns / direct_call_ns,
        ebb_inline_ns,
        direct_inline_ns,
        ebb_inline_ratio: ebb_inline_ns / direct_inline_ns,
        counter_ebb_mops,
        counter_atomic_mops,
        counter_mutex_mops: median(c_mutex),
        counter_ebb_vs_atomic: counter_ebb_mops / counter_atomic_mops,
        miss_ns: median(miss),
        spawn_rtt_p50_ns: percentile(0.50),
        spawn_rtt_p99_ns: percentile(0.99),
        spawn_mops: median(ships),
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A method invocation through the EBB: what application code pays per call.
#[inline(never)]
fn inc_through_ebb(counter: Counter) {
    counter.inc()
}

/// The same method through a thread-local pointer.
#[inline(never)]
fn inc_through_tls() {
    DIRECT.with(|d| d.get().inc())
}

/// Times `calls` calls of `call`; ns per call. Inlined into each caller, so every timed
/// loop is compiled for its own `call`.
#[inline(always)]
fn ns_per_call(calls: u64, mut call: impl FnMut()) -> f64 {
    let calls = black_box(calls);
    let start = Instant::now();
    for _ in 0..calls {
        call();
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

#[inline(never)]
fn ebb_call_ns(counter: Counter, calls: u64) -> f64 {
    ns_per_call(calls, || inc_through_ebb(counter))
}

#[inline(never)]
fn direct_call_ns(calls: u64) -> f64 {
    ensure_direct_rep();
    ns_per_call(calls, inc_through_tls)
}

#[inline(never)]
fn ebb_inline_ns(counter: Counter, calls: u64) -> f64 {
    ns_per_call(calls, || counter.inc())
}

#[inline(never)]
fn direct_inline_ns(calls: u64) -> f64 {
    ensure_direct_rep();
    ns_per_call(calls, || DIRECT.with(|d| d.get().inc()))
}

/// The baseline rep: a `CounterRep` like the EBB's, reached through a thread-local
/// pointer (the cheapest per-core indirection there is).
static UNSET: CounterRep = CounterRep::new();

std::thread_local! {
    static DIRECT: Cell<&'static CounterRep> = const { Cell::new(&UNSET) };
}

fn ensure_direct_rep() {
    if std::ptr::eq(DIRECT.with(Cell::get), &UNSET) {
        // Once per core thread; a few bytes for the life of the process.
        DIRECT.with(|d| d.set(Box::leak(Box::new(CounterRep::new()))));
    }
}

#[derive(Clone, Copy)]
enum CounterKind {
    Ebb,
    Atomic,
    Mutex,
}

/// All cores increment at once (released together by a barrier); returns million
/// increments per second over the slowest core's time.
async fn counter_mops(kind: CounterKind, incs: u64) -> Result<f64, EventError> {
    let counter = Counter::create()?;
    let atomic = Arc::new(AtomicU64::new(0));
    let mutex = Arc::new(Mutex::new(0u64));
    let cores = sesa_event::cores();
    let arrived = Arc::new(AtomicUsize::new(0));
    let results = sesa_event::on_all_cores(move |_| {
        // A barrier inside events: deliberately blocks each core until all are here,
        // so the contended baselines really contend.
        arrived.fetch_add(1, Ordering::SeqCst);
        while arrived.load(Ordering::SeqCst) < cores {
            std::hint::spin_loop();
        }
        let start = Instant::now();
        match kind {
            CounterKind::Ebb => (0..incs).for_each(|_| counter.inc()),
            CounterKind::Atomic => (0..incs).for_each(|_| {
                atomic.fetch_add(1, Ordering::Relaxed);
            }),
            CounterKind::Mutex => (0..incs).for_each(|_| {
                *mutex.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            }),
        }
        start.elapsed()
    })
    .await;
    let mut slowest = std::time::Duration::ZERO;
    for r in results {
        slowest = slowest.max(r?);
    }
    if let CounterKind::Ebb = kind {
        debug_assert_eq!(counter.val(), (incs as usize * cores) as i64);
    }
    sesa_event::destroy(counter.ebb()).await?;
    Ok((incs as f64 * cores as f64) / slowest.as_secs_f64() / 1e6)
}

/// Creates `n` EBBs, then times their first access on this core.
async fn miss_ns(n: usize) -> Result<f64, EventError> {
    let counters: Vec<Counter> = (0..n)
        .map(|_| Counter::create())
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    for c in &counters {
        c.inc();
    }
    let per_miss = start.elapsed().as_nanos() as f64 / n as f64;
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

async fn round_trips_ns(n: usize) -> Result<Vec<u64>, EventError> {
    let target = partner_core();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        spawn_on(target, || ()).await?;
        samples.push(start.elapsed().as_nanos() as u64);
    }
    Ok(samples)
}

async fn ship_mops(n: u64) -> Result<f64, EventError> {
    let target = partner_core();
    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    for _ in 0..n {
        let received = received.clone();
        sesa_event::ship(target, move || {
            received.fetch_add(1, Ordering::Relaxed);
        })?;
    }
    spawn_on(target, || ()).await?;
    let elapsed = start.elapsed();
    assert_eq!(
        received.load(Ordering::Relaxed),
        n,
        "every shipped event ran"
    );
    Ok(n as f64 / elapsed.as_secs_f64() / 1e6)
}

/// For `cargo bench` and the CLI: runs and formats.
///
/// # Errors
/// As [`micro`].
pub fn micro_json(config: &MicroConfig) -> anyhow::Result<String> {
    let report = micro(config)?;
    serde_json::to_string(&report).context("serialising the report")
}
