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
//! baseline...) so that machine noise hits both alike. The EBB figures are measured by
//! `sesa_node::micro`, the same code the native kernel runs (`sesa bench micro --native`
//! boots it and sets its figures beside these); the baselines are the OS's, so they are
//! measured here.

use std::cell::Cell;
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow};
use serde::Serialize;
use sesa_apps::counter::{Counter, CounterRep};
use sesa_hosted::{Config, Exit, Runtime};
use sesa_node::micro::{self as portable, Sizes, median, ns_per_call, percentile};

/// Sizes of one micro-benchmark run.
#[derive(Clone, Debug)]
pub struct MicroConfig {
    /// Cores of the runtime (the counters use all; the spawn figures use cores 0 and 1).
    pub cores: usize,
    /// Repetitions and loop sizes (the portable suite's; figures are medians).
    pub sizes: Sizes,
    /// Pin core threads to CPUs.
    pub pin_threads: bool,
}

impl MicroConfig {
    /// The sizes behind the published figures (a few seconds on 2 cores).
    pub fn full(cores: usize) -> Self {
        MicroConfig {
            cores,
            sizes: Sizes::FULL,
            pin_threads: true,
        }
    }

    /// Tiny sizes, so the suite runs in the tests without taking time (figures are
    /// meaningless at this size).
    pub fn quick(cores: usize) -> Self {
        MicroConfig {
            cores,
            sizes: Sizes::QUICK,
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
    /// The same portable figures on a native node (`--native`), and their ratios.
    pub native: Option<NativeMicro>,
}

/// A native node's figures beside the hosted ones.
#[derive(Clone, Debug, Serialize)]
pub struct NativeMicro {
    /// QEMU's accelerator.
    pub accel: sesa_frontend::Accel,
    /// The native node's figures.
    pub figures: sesa_node::micro::Figures,
    /// Native over hosted, per figure (times for `_ns`, rates for `_mops`: above 1 is
    /// slower for times and faster for rates).
    pub ebb_call: f64,
    /// See `ebb_call`.
    pub ebb_inline: f64,
    /// See `ebb_call`.
    pub counter_ebb: f64,
    /// See `ebb_call`.
    pub miss: f64,
    /// See `ebb_call`.
    pub spawn_rtt_p50: f64,
    /// See `ebb_call`.
    pub spawn: f64,
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
        ) + &self.native.as_ref().map_or(String::new(), |n| {
            let f = &n.figures;
            format!(
                "native node (QEMU {accel}), same measurements, native/hosted:\n\
                 ebb call (hit)       {:>10.2} ns   {:.2}x\n\
                 ebb hit, inlined     {:>10.2} ns   {:.2}x\n\
                 counter, per-core EBB {:>9.1} M inc/s   {:.2}x\n\
                 counter, shared atomic {:>8.1} M inc/s\n\
                 miss (first access)  {:>10.0} ns   {:.2}x\n\
                 spawn_on round trip  {:>10.0} ns p50   {:.0} ns p99   {:.2}x\n\
                 ship throughput      {:>10.2} M events/s   {:.2}x\n",
                f.ebb_call_ns,
                n.ebb_call,
                f.ebb_inline_ns,
                n.ebb_inline,
                f.counter_ebb_mops,
                n.counter_ebb,
                f.counter_atomic_mops,
                f.miss_ns,
                n.miss,
                f.spawn_rtt_p50_ns,
                f.spawn_rtt_p99_ns,
                n.spawn_rtt_p50,
                f.spawn_mops,
                n.spawn,
                accel = n.accel,
            )
        })
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

async fn run_all(config: MicroConfig) -> anyhow::Result<MicroReport> {
    let cfg = config.sizes;
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
        ebb.push(portable::ebb_call_ns(counter, cfg.calls));
        direct.push(direct_call_ns(cfg.calls));
        ebb_inline.push(portable::ebb_inline_ns(counter, cfg.calls));
        direct_inline.push(direct_inline_ns(cfg.calls));
        c_ebb.push(portable::counter_ebb_mops(cfg.incs_per_core).await?);
        let atomic = Arc::new(std::sync::atomic::AtomicU64::new(0));
        c_atomic.push(
            portable::counter_mops(cfg.incs_per_core, move || {
                atomic.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .await?,
        );
        let mutex = Arc::new(Mutex::new(0u64));
        c_mutex.push(
            portable::counter_mops(cfg.incs_per_core, move || {
                *mutex.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            })
            .await?,
        );
        miss.push(portable::miss_ns(cfg.misses).await?);
        rtts.extend(portable::round_trips_ns(cfg.round_trips).await?);
        ships.push(portable::ship_mops(cfg.ships).await?);
    }
    sesa_event::destroy(counter.ebb()).await?;
    rtts.sort_unstable();
    let (ebb_call_ns, direct_call_ns) = (median(ebb), median(direct));
    let (ebb_inline_ns, direct_inline_ns) = (median(ebb_inline), median(direct_inline));
    let (counter_ebb_mops, counter_atomic_mops) = (median(c_ebb), median(c_atomic));
    Ok(MicroReport {
        cores: config.cores,
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
        spawn_rtt_p50_ns: percentile(&rtts, 0.50),
        spawn_rtt_p99_ns: percentile(&rtts, 0.99),
        spawn_mops: median(ships),
        native: None,
    })
}

/// The same method through a thread-local pointer.
#[inline(never)]
fn inc_through_tls() {
    DIRECT.with(|d| d.get().inc())
}

#[inline(never)]
fn direct_call_ns(calls: u64) -> f64 {
    ensure_direct_rep();
    ns_per_call(calls, inc_through_tls)
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

/// Boots the native kernel under QEMU with `-smp cores` and its `bench` command (the
/// same portable measurements, `sesa_node::micro`), and reads its figures from the
/// console. QEMU is killed (by its PID) if it has not finished within ten minutes.
///
/// # Errors
/// QEMU cannot run, the kernel failed, or its figures are missing.
pub fn native_micro(
    kernel: &std::path::Path,
    accel: sesa_frontend::Accel,
    cores: usize,
    quick: bool,
) -> anyhow::Result<sesa_node::micro::Figures> {
    use std::io::Read as _;
    let mut qemu = sesa_frontend::qemu_command(accel, 256, cores)
        .arg("-kernel")
        .arg(kernel)
        .arg("-append")
        .arg(format!(
            "bench {cores} {}",
            if quick { "quick" } else { "full" }
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while qemu.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            anyhow::bail!("the native node's benchmarks did not finish within 10 minutes");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut console = String::new();
    qemu.stdout
        .take()
        .context("QEMU's console")?
        .read_to_string(&mut console)?;
    let line = console
        .lines()
        .find_map(|l| l.strip_prefix("sesa-native: micro "))
        .ok_or_else(|| anyhow!("no figures from the native node:\n{console}"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no {name} in {line:?}"))
    };
    Ok(sesa_node::micro::Figures {
        cores: field("cores")? as usize,
        ebb_call_ns: field("ebb_call_ns")?,
        ebb_inline_ns: field("ebb_inline_ns")?,
        counter_ebb_mops: field("counter_ebb_mops")?,
        counter_atomic_mops: field("counter_atomic_mops")?,
        miss_ns: field("miss_ns")?,
        spawn_rtt_p50_ns: field("spawn_rtt_p50_ns")?,
        spawn_rtt_p99_ns: field("spawn_rtt_p99_ns")?,
        spawn_mops: field("spawn_mops")?,
    })
}

impl MicroReport {
    /// Sets a native node's figures beside these, with native-over-hosted ratios.
    pub fn with_native(
        mut self,
        accel: sesa_frontend::Accel,
        figures: sesa_node::micro::Figures,
    ) -> Self {
        self.native = Some(NativeMicro {
            accel,
            ebb_call: figures.ebb_call_ns / self.ebb_call_ns,
            ebb_inline: figures.ebb_inline_ns / self.ebb_inline_ns,
            counter_ebb: figures.counter_ebb_mops / self.counter_ebb_mops,
            miss: figures.miss_ns / self.miss_ns,
            spawn_rtt_p50: figures.spawn_rtt_p50_ns / self.spawn_rtt_p50_ns,
            spawn: figures.spawn_mops / self.spawn_mops,
            figures,
        });
        self
    }
}

/// For `cargo bench` and the CLI: runs and formats.
///
/// # Errors
/// As [`micro`].
pub fn micro_json(config: &MicroConfig) -> anyhow::Result<String> {
    let report = micro(config)?;
    serde_json::to_string(&report).context("serialising the report")
}
