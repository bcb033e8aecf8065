//! The clock: the time-stamp counter, calibrated against the PIT at boot.
//!
//! Neither QEMU's TCG nor this machine's KVM offers the TSC frequency through CPUID
//! (see native-notes), so it is measured: the PIT's channel 0 counts down at
//! 1.193182 MHz; the TSC ticks counted while the PIT counts a known number of its own
//! give the TSC's rate.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{inb, outb};

/// The PIT's input clock.
const PIT_HZ: u64 = 1_193_182;
/// PIT ticks to measure over (5 ms: one tick of error is 0.02%).
const PIT_SPAN: u64 = 5_966;

static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC tick in 32.32 fixed point (0 before calibration): `now_ns` is a
/// multiply and a shift. It divided 128-bit numbers before, which the kernel's profile
/// showed at about 5% of a loaded store node's time (the loop and smoltcp read the
/// clock often). The error is below 2^-32 of the time.
static NS_PER_TICK_32: AtomicU64 = AtomicU64::new(0);

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` reads a counter; no memory, no side effects (CR4.TSD is clear, so
    // it is allowed at any privilege level).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Channel 0's current count (latched, so the two bytes belong together).
fn pit_count() -> u16 {
    outb(0x43, 0x00); // latch channel 0
    let lo = inb(0x40);
    let hi = inb(0x40);
    u16::from_le_bytes([lo, hi])
}

/// Measures the TSC's rate against the PIT; returns it in Hz, or `None` if the PIT does
/// not count (a machine without one).
pub fn calibrate() -> Option<u64> {
    // Channel 0, lobyte/hibyte, mode 2 (rate generator), binary; the full range.
    outb(0x43, 0x34);
    outb(0x40, 0xff);
    outb(0x40, 0xff);
    let start = pit_count();
    let t0 = rdtsc();
    let mut elapsed = 0u64;
    let mut last = start;
    let mut spins = 0u64;
    while elapsed < PIT_SPAN {
        let now = pit_count();
        // Counting down, wrapping at 0xffff.
        elapsed += u64::from(last.wrapping_sub(now));
        last = now;
        spins += 1;
        if spins > 50_000_000 {
            return None;
        }
    }
    let t1 = rdtsc();
    let hz = (t1 - t0) * PIT_HZ / elapsed;
    TSC_AT_BOOT.store(t0, Relaxed);
    // Below 2^42 for any TSC faster than 1 MHz, so a tick count below 2^64 keeps the
    // product within 106 bits.
    let per_tick = (1_000_000_000u128 << 32) / u128::from(hz.max(1));
    NS_PER_TICK_32.store(u64::try_from(per_tick).unwrap_or(u64::MAX), Relaxed);
    Some(hz)
}

/// Nanoseconds since calibration (0 before it).
pub fn now_ns() -> u64 {
    let ticks = rdtsc().saturating_sub(TSC_AT_BOOT.load(Relaxed));
    ((u128::from(ticks) * u128::from(NS_PER_TICK_32.load(Relaxed))) >> 32) as u64
}
