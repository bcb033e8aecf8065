//! The platform conformance suite: what every platform behind the seam must do, as named
//! checks that run on the platform itself.
//!
//! Code above the seam relies on these properties on every platform; each check states
//! one and fails with what it saw. The hosted and simulated platforms run the whole suite
//! in their tests; the native kernel runs it at boot (`-append "events <cores>"`), except
//! the checks that need panics to unwind ([`Needs::Unwinding`]: the kernel is built with
//! `panic = "abort"` and reports a panic as its end).
//!
//! ```text
//! // On any platform, from an event on core 0:
//! let results = sesa_event::conformance::run(|check| check.runs_here()).await;
//! for (name, result) in &results { /* report */ }
//! ```

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use core::time::Duration;

use sesa_ebb::{CoreId, EbbNode, PerCore};

use crate::{
    all_cores, cores, current_core, destroy, fill_random, now, on_all_cores, ship, sleep,
    spawn_local, spawn_on, timeout, yield_now,
};

/// What a check needs of the platform beyond the seam.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: every platform runs it.
    Nothing,
    /// At least two cores (with one, it proves nothing and is skipped).
    TwoCores,
    /// Panics that unwind, so that a panicking event can be isolated.
    Unwinding,
    /// An entropy source (the native kernel's is the CPU's RDRAND: QEMU's `-cpu max`;
    /// without one, `fill_random` is a platform error, not a result).
    Entropy,
}

type Running = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// One named check of the suite.
pub struct Check {
    /// What it checks, as a sentence's subject and verb.
    pub name: &'static str,
    /// What it needs of the platform.
    pub needs: Needs,
    run: fn() -> Running,
}

impl Check {
    /// Whether it can run on this core's platform: two cores where it needs them.
    /// (Whether panics unwind, and whether there is an entropy source, is the caller's
    /// to say.)
    pub fn runs_here(&self) -> bool {
        match self.needs {
            Needs::Nothing | Needs::Unwinding | Needs::Entropy => true,
            Needs::TwoCores => cores() >= 2,
        }
    }
}

/// Every check, in the order [`run`] takes them.
pub const CHECKS: &[Check] = &[
    Check {
        name: "a shipped event never runs inline in its sender",
        needs: Needs::Nothing,
        run: || Box::pin(ship_is_never_inline()),
    },
    Check {
        name: "events shipped to a core run in the order they were shipped",
        needs: Needs::Nothing,
        run: || Box::pin(ships_run_in_order()),
    },
    Check {
        name: "spawn_on runs on the core it names and returns the result",
        needs: Needs::TwoCores,
        run: || Box::pin(spawn_on_runs_there()),
    },
    Check {
        name: "a ship to a core that does not exist is refused",
        needs: Needs::Nothing,
        run: || Box::pin(missing_core_is_refused()),
    },
    Check {
        name: "sleeps end at or after their deadlines, in deadline order",
        needs: Needs::Nothing,
        run: || Box::pin(sleeps_end_by_deadline()),
    },
    Check {
        name: "a timeout ends a future that does not finish, and not one that does",
        needs: Needs::Nothing,
        run: || Box::pin(timeouts()),
    },
    Check {
        name: "yield_now lets the core's shipped events run",
        needs: Needs::Nothing,
        run: || Box::pin(yield_lets_events_in()),
    },
    Check {
        name: "on_all_cores runs once on every core, in core order",
        needs: Needs::Nothing,
        run: || Box::pin(on_all_cores_once_each()),
    },
    Check {
        name: "a per-core EBB gets a rep on each core by that core's miss",
        needs: Needs::Nothing,
        run: || Box::pin(reps_by_miss()),
    },
    Check {
        name: "destroy returns once every core has dropped its rep",
        needs: Needs::Nothing,
        run: || Box::pin(destroy_waits_for_quiescence()),
    },
    Check {
        name: "the entropy source gives different bytes each time",
        needs: Needs::Entropy,
        run: || Box::pin(entropy_varies()),
    },
    Check {
        name: "a panicking event is isolated: its caller gets an error and the core goes on",
        needs: Needs::Unwinding,
        run: || Box::pin(panic_is_isolated()),
    },
];

/// How long one check may take before it counts as hung.
pub const CHECK_LIMIT: Duration = Duration::from_secs(20);

/// Runs the checks `wanted` selects, one after another, each bounded by
/// [`CHECK_LIMIT`]; each check's name and result.
pub async fn run(wanted: impl Fn(&Check) -> bool) -> Vec<(&'static str, Result<(), String>)> {
    let mut results = Vec::new();
    for check in CHECKS.iter().filter(|c| wanted(c)) {
        let result = match timeout(CHECK_LIMIT, (check.run)()).await {
            Some(result) => result,
            None => Err(format!("did not finish within {CHECK_LIMIT:?}")),
        };
        results.push((check.name, result));
    }
    results
}

fn last_core() -> CoreId {
    CoreId::new(cores() as u32 - 1)
}

async fn ship_is_never_inline() -> Result<(), String> {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    ship(current_core(), move || flag.store(true, SeqCst)).map_err(|e| format!("ship: {e}"))?;
    if ran.load(SeqCst) {
        return Err("the event ran inside ship, in its sender".into());
    }
    // Events of a core run in order: once this one has, the first has too.
    spawn_on(current_core(), || ())
        .await
        .map_err(|e| format!("spawn_on: {e}"))?;
    if !ran.load(SeqCst) {
        return Err("the shipped event never ran".into());
    }
    Ok(())
}

async fn ships_run_in_order() -> Result<(), String> {
    for core in [current_core(), last_core()] {
        let order = Arc::new(spin::Mutex::new(Vec::new()));
        for i in 0..16u32 {
            let order = order.clone();
            ship(core, move || order.lock().push(i)).map_err(|e| format!("ship: {e}"))?;
        }
        spawn_on(core, || ())
            .await
            .map_err(|e| format!("spawn_on: {e}"))?;
        let seen = order.lock().clone();
        if seen != (0..16).collect::<Vec<_>>() {
            return Err(format!("on {core}: {seen:?}"));
        }
    }
    Ok(())
}

async fn spawn_on_runs_there() -> Result<(), String> {
    for core in all_cores() {
        let (ran_on, value) = spawn_on(core, || (current_core(), 6 * 7))
            .await
            .map_err(|e| format!("spawn_on {core}: {e}"))?;
        if ran_on != core || value != 42 {
            return Err(format!(
                "asked for {core}: ran on {ran_on}, returned {value}"
            ));
        }
    }
    Ok(())
}

async fn missing_core_is_refused() -> Result<(), String> {
    let missing = CoreId::new(cores() as u32);
    if ship(missing, || {}).is_ok() {
        return Err(format!("a ship to {missing} was taken"));
    }
    match spawn_on(missing, || ()).await {
        Ok(()) => Err(format!("spawn_on {missing} ran")),
        Err(_) => Ok(()),
    }
}

async fn sleeps_end_by_deadline() -> Result<(), String> {
    let woke = Arc::new(spin::Mutex::new(Vec::new()));
    let started = now();
    // Started in the reverse order of their deadlines.
    let tasks: Vec<_> = [(30u64, 'c'), (20, 'b'), (10, 'a')]
        .into_iter()
        .map(|(ms, name)| {
            let woke = woke.clone();
            spawn_local(async move {
                sleep(Duration::from_millis(ms)).await;
                woke.lock().push((name, now() - started, ms));
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| format!("a sleeping task: {e}"))?;
    }
    let woke = woke.lock().clone();
    let names: Vec<char> = woke.iter().map(|w| w.0).collect();
    if names != ['a', 'b', 'c'] {
        return Err(format!("woke in the order {names:?}"));
    }
    for (name, after, ms) in woke {
        if after < Duration::from_millis(ms) {
            return Err(format!("{name}: a {ms} ms sleep ended after {after:?}"));
        }
    }
    Ok(())
}

async fn timeouts() -> Result<(), String> {
    let started = now();
    if timeout(Duration::from_millis(10), core::future::pending::<()>())
        .await
        .is_some()
    {
        return Err("a pending future finished".into());
    }
    let waited = now() - started;
    if waited < Duration::from_millis(10) {
        return Err(format!("a 10 ms timeout ended after {waited:?}"));
    }
    match timeout(Duration::from_secs(10), async { 5 }).await {
        Some(5) => Ok(()),
        other => Err(format!("a ready future under a timeout gave {other:?}")),
    }
}

async fn yield_lets_events_in() -> Result<(), String> {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    ship(current_core(), move || flag.store(true, SeqCst)).map_err(|e| format!("ship: {e}"))?;
    // A platform may run a few other things first; it must not starve the event.
    for _ in 0..1000 {
        yield_now().await;
        if ran.load(SeqCst) {
            return Ok(());
        }
    }
    Err("the shipped event had not run after 1000 yields".into())
}

async fn on_all_cores_once_each() -> Result<(), String> {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let results = on_all_cores(move |core| {
        counted.fetch_add(1, SeqCst);
        (core, current_core())
    })
    .await;
    let mut seen = Vec::new();
    for r in results {
        let (named, ran_on) = r.map_err(|e| format!("{e}"))?;
        if named != ran_on {
            return Err(format!("told {named}, ran on {ran_on}"));
        }
        seen.push(named);
    }
    if seen != all_cores().collect::<Vec<_>>() || runs.load(SeqCst) != cores() {
        return Err(format!("ran on {seen:?}, {} time(s)", runs.load(SeqCst)));
    }
    Ok(())
}

async fn reps_by_miss() -> Result<(), String> {
    use core::sync::atomic::AtomicU64;
    let (counter, root) =
        PerCore::create(|_core| AtomicU64::new(0)).map_err(|e| format!("create: {e}"))?;
    if root.reps().count() != 0 {
        return Err("reps existed before any access".into());
    }
    for r in on_all_cores(move |_| {
        for _ in 0..1000 {
            counter.with(|rep| rep.fetch_add(1, SeqCst));
        }
    })
    .await
    {
        r.map_err(|e| format!("{e}"))?;
    }
    let reps = root.reps().count();
    let total: u64 = root.reps().map(|(_, rep)| rep.load(SeqCst)).sum();
    drop(root);
    destroy(counter)
        .await
        .map_err(|e| format!("destroy: {e}"))?;
    if reps != cores() || total != 1000 * cores() as u64 {
        return Err(format!("{reps} rep(s) counting {total}"));
    }
    Ok(())
}

/// A rep that counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

async fn destroy_waits_for_quiescence() -> Result<(), String> {
    let node = EbbNode::current().map_err(|e| format!("{e}"))?;
    let live = node.live_ebbs();
    let dropped = Arc::new(AtomicUsize::new(0));
    let counts = dropped.clone();
    let (ebb, root) =
        PerCore::create(move |_core| Counted(counts.clone())).map_err(|e| format!("{e}"))?;
    for r in on_all_cores(move |_| ebb.with(|_| ())).await {
        r.map_err(|e| format!("{e}"))?;
    }
    drop(root);
    destroy(ebb).await.map_err(|e| format!("destroy: {e}"))?;
    let (gone, left) = (dropped.load(SeqCst), node.live_ebbs());
    if gone != cores() || left != live {
        return Err(format!(
            "after destroy: {gone} of {} rep(s) dropped, {left} live EBB(s) (were {live})",
            cores()
        ));
    }
    Ok(())
}

async fn entropy_varies() -> Result<(), String> {
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    fill_random(&mut a);
    fill_random(&mut b);
    if a == b {
        return Err("two draws of 32 bytes were equal".into());
    }
    Ok(())
}

async fn panic_is_isolated() -> Result<(), String> {
    let core = last_core();
    match spawn_on(core, || panic!("a planned panic of the conformance suite")).await {
        Ok(()) => return Err("the panicking event returned".into()),
        Err(crate::EventError::Panicked { core: on }) if on == core => {}
        Err(e) => return Err(format!("the caller got {e}, not a panic on {core}")),
    }
    match spawn_on(core, || 1).await {
        Ok(1) => Ok(()),
        other => Err(format!("after the panic, {core} answered {other:?}")),
    }
}
