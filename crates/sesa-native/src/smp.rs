//! The application processors' side: each AP enters `ap_main` with its index, makes its
//! per-CPU block its own, and runs the work it was started for: a core's event loop
//! (`runtime.rs`), or the check here, which binds its core of a node the boot CPU set up
//! and touches a per-core EBB, whose miss handler makes that core's rep there.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use sesa_ebb::{CoreId, EbbNode, EbbRef, NodeConfig, PerCore};

use crate::cpu;
use crate::println;

/// What the APs use in the check: the node and the per-core EBB they touch.
static SHARED: spinning_top::Spinlock<Option<(Arc<EbbNode>, EbbRef<AtomicU64>)>> =
    spinning_top::Spinlock::new(None);

/// What each AP runs once it is up (set once, by whoever starts them).
static WORK: spinning_top::Spinlock<Option<fn(u32)>> = spinning_top::Spinlock::new(None);

/// Starts the application processors; each runs `work(index)` once it is up, then halts.
/// They can be started once per boot.
pub fn start(work: fn(u32)) {
    *WORK.lock() = Some(work);
    cpu::smp::start_aps();
}

/// An AP's entry, from the trampoline (`arch/x86_64/smp.rs`), on its own stack.
// The symbol the trampoline calls: exported unmangled, nothing else unsafe.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
extern "C" fn ap_main(index: u32) -> ! {
    cpu::apic::init(index as usize);
    cpu::smp::ARRIVED.fetch_add(1, Ordering::AcqRel);
    let work = *WORK.lock();
    if let Some(work) = work {
        work(index);
    }
    cpu::halt()
}

/// The check's work on an AP: bind its core and touch the per-core EBB.
fn touch(index: u32) {
    let shared = SHARED.lock().clone();
    if let Some((node, ebb)) = shared {
        match node.bind(CoreId::new(index)) {
            Ok(binding) => {
                ebb.with(|rep| rep.fetch_add(1, Ordering::Relaxed));
                drop(binding);
            }
            Err(e) => println!("sesa-native: cpu {index}: {e}"),
        }
    }
    TOUCHED.fetch_add(1, Ordering::AcqRel);
}

/// APs that have done the check's work.
static TOUCHED: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Starts the APs and checks the object model on every core: `expected` CPUs in all
/// must come up, each making its rep of a per-core EBB by its own miss. Returns a line
/// for the console.
pub fn check(expected: usize) -> Result<alloc::string::String, alloc::string::String> {
    use alloc::format;
    if !(1..=cpu::percpu::MAX_CPUS).contains(&expected) {
        return Err(format!(
            "{expected} CPUs: this kernel runs 1 to {}",
            cpu::percpu::MAX_CPUS
        ));
    }
    let node = EbbNode::new(NodeConfig::with_cores(expected));
    let (ebb, root) = PerCore::create_on(&node, |_core| AtomicU64::new(0))
        .map_err(|e| format!("the per-core EBB: {e}"))?;
    *SHARED.lock() = Some((node.clone(), ebb));
    let started = cpu::clock::now_ns();
    start(touch);
    while TOUCHED.load(Ordering::Acquire) < expected - 1
        && cpu::clock::now_ns() - started < 2_000_000_000
    {
        core::hint::spin_loop();
    }
    let arrived = TOUCHED.load(Ordering::Acquire);
    let took = (cpu::clock::now_ns() - started) / 1000;
    let binding = node
        .bind(CoreId::new(0))
        .map_err(|e| format!("core 0: {e}"))?;
    ebb.with(|rep| rep.fetch_add(1, Ordering::Relaxed));
    drop(binding);
    let reps = root.reps().count();
    let total: u64 = root.reps().map(|(_, r)| r.load(Ordering::Relaxed)).sum();
    if arrived + 1 != expected || reps != expected || total != expected as u64 {
        return Err(format!(
            "{} of {expected} CPUs up, {reps} reps, total {total}",
            arrived + 1
        ));
    }
    Ok(format!(
        "{expected} CPUs up in {took} us; each made its rep of a per-core EBB by its own miss ({reps} reps, total {total})"
    ))
}
