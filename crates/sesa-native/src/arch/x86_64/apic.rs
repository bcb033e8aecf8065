//! The local APIC: its one-shot timer (to sleep an idle core until its next deadline),
//! fixed IPIs (to wake a sleeping core when another ships it an event), and the
//! broadcasts that start the other CPUs.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::clock;
use super::percpu::MAX_CPUS;

const LAPIC: usize = 0xfee0_0000;
const ID: usize = 0x20;
const SVR: usize = 0xf0;
const ICR_LOW: usize = 0x300;
const ICR_HIGH: usize = 0x310;
const LVT_TIMER: usize = 0x320;
const TIMER_INITIAL: usize = 0x380;
const TIMER_CURRENT: usize = 0x390;
const TIMER_DIVIDE: usize = 0x3e0;

/// The timer's vector, and the wake-up IPI's (both only wake `hlt`).
pub const TIMER_VECTOR: u8 = 0x20;
/// See [`TIMER_VECTOR`].
pub const WAKE_VECTOR: u8 = 0x21;
/// The vector devices' interrupts arrive on (through the I/O APIC).
pub const DEVICE_VECTOR: u8 = 0x22;
/// The spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Each CPU index's APIC id.
static IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// Timer ticks per microsecond (divide by 1), measured by the boot CPU.
static TICKS_PER_US: AtomicU64 = AtomicU64::new(0);

fn write(register: usize, value: u32) {
    // SAFETY: the local APIC's registers are identity-mapped (uncached) by the boot page
    // tables; each CPU addresses its own APIC at this address.
    unsafe { core::ptr::write_volatile((LAPIC + register) as *mut u32, value) }
}

fn read(register: usize) -> u32 {
    // SAFETY: as for `write`; these reads have no effect.
    unsafe { core::ptr::read_volatile((LAPIC + register) as *const u32) }
}

/// Enables the calling CPU's APIC with its timer in one-shot mode, and notes its id as
/// CPU `index`'s. The boot CPU (index 0) also measures the timer's rate against the TSC.
pub fn init(index: usize) {
    write(SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    write(TIMER_DIVIDE, 0xb); // divide by 1
    write(LVT_TIMER, u32::from(TIMER_VECTOR)); // one-shot, not masked
    IDS[index].store(read(ID) >> 24, Ordering::Release);
    if index == 0 {
        // Count down for 1 ms of TSC time, masked so that no interrupt comes of it.
        write(LVT_TIMER, 0x1_0000 | u32::from(TIMER_VECTOR));
        write(TIMER_INITIAL, u32::MAX);
        let until = clock::now_ns() + 1_000_000;
        while clock::now_ns() < until {
            core::hint::spin_loop();
        }
        let ticks = u64::from(u32::MAX - read(TIMER_CURRENT));
        write(TIMER_INITIAL, 0);
        write(LVT_TIMER, u32::from(TIMER_VECTOR));
        TICKS_PER_US.store((ticks / 1000).max(1), Ordering::Release);
    }
    match PROFILE_TICKS.load(Ordering::Acquire) {
        0 => {}
        ticks => periodic(ticks),
    }
}

/// Timer ticks between profiling samples (`profile.rs`); 0: not profiling.
static PROFILE_TICKS: AtomicU64 = AtomicU64::new(0);

/// Whether the timers are periodic for the profiler ([`start_profiling`]).
pub fn profiling() -> bool {
    PROFILE_TICKS.load(Ordering::Relaxed) != 0
}

/// Makes every CPU's timer periodic, `hz` times a second, so the timer's stub samples
/// where the CPU is (`idt.rs`): the calling CPU's now, the others' as they start
/// ([`init`]). Call on the boot CPU, after its [`init`] and before the others start.
/// A sleeping CPU then wakes at every tick (its sleeps end at most a period late).
pub fn start_profiling(hz: u32) {
    let us = (1_000_000 / u64::from(hz.max(1))).max(1);
    let ticks = (us * TICKS_PER_US.load(Ordering::Acquire)).clamp(1, u64::from(u32::MAX));
    PROFILE_TICKS.store(ticks, Ordering::Release);
    periodic(ticks);
}

fn periodic(ticks: u64) {
    write(LVT_TIMER, 1 << 17 | u32::from(TIMER_VECTOR)); // periodic, not masked
    write(TIMER_INITIAL, ticks as u32);
}

/// Arms the calling CPU's timer to fire once after `ns` (while profiling, the periodic
/// timer wakes it instead).
pub fn arm(ns: u64) {
    if profiling() {
        return;
    }
    let ticks = (ns / 1000).max(1) * TICKS_PER_US.load(Ordering::Acquire);
    write(TIMER_INITIAL, ticks.min(u64::from(u32::MAX)) as u32);
}

/// Sends an IPI (`icr_low`: delivery mode, vector) to every CPU but this one and waits
/// until the APIC has delivered it.
pub fn broadcast(icr_low: u32) {
    write(ICR_HIGH, 0);
    write(ICR_LOW, icr_low | 0xc_0000); // shorthand: all excluding self
    while read(ICR_LOW) & (1 << 12) != 0 {
        core::hint::spin_loop();
    }
}

/// CPU `index`'s APIC id.
pub fn id_of(index: usize) -> u32 {
    IDS[index].load(Ordering::Acquire)
}

/// Wakes CPU `index` (if it sleeps in [`idle`]).
pub fn wake(index: usize) {
    let id = IDS[index].load(Ordering::Acquire);
    write(ICR_HIGH, id << 24);
    write(ICR_LOW, u32::from(WAKE_VECTOR)); // fixed, physical destination
}

/// Sleeps until an interrupt (the timer, a wake-up IPI, a device), through the idle
/// gate (ring 3 may not halt): a wake-up IPI or device interrupt taken since the last
/// sleep ends this one at once, so none is lost between the decision to sleep and the
/// halt.
pub fn idle() {
    // SAFETY: in ring 3 `hlt` faults into the idle gate (`idt.rs`), which halts until an
    // interrupt and returns past it; it touches only this CPU's `kicked` flag. (In ring
    // 0, as on the exception path, it is a plain halt with interrupts off.)
    unsafe { core::arch::asm!("hlt", options(nomem, nostack)) }
}
