//! Entropy: the CPU's RDRAND, where it has one (QEMU's `-cpu max` under TCG does; its
//! default CPU model does not). There is no fallback on purpose: the messenger's
//! handshake needs unpredictable challenges, and a guessable generator would pass every
//! test while being broken.

use core::arch::x86_64::{__cpuid, _rdrand64_step};
use core::sync::atomic::{AtomicU8, Ordering};

/// What CPUID said of RDRAND: 0 not asked yet, 1 present, 2 absent (asked once: CPUID
/// traps to the hypervisor, and the answer does not change).
static RDRAND: AtomicU8 = AtomicU8::new(0);

/// Whether the CPU has RDRAND (CPUID leaf 1, ECX bit 30).
pub fn available() -> bool {
    match RDRAND.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // CPUID leaf 1 exists on every x86-64 CPU (safe since Rust 1.89).
            let present = __cpuid(1).ecx & (1 << 30) != 0;
            RDRAND.store(if present { 1 } else { 2 }, Ordering::Relaxed);
            present
        }
    }
}

#[target_feature(enable = "rdrand")]
fn step() -> Option<u64> {
    let mut value = 0u64;
    // Safe inside a function with the `rdrand` feature enabled; callers of `step` must
    // have checked the CPU has it (see `random_u64`).
    (_rdrand64_step(&mut value) == 1).then_some(value)
}

/// 64 random bits from RDRAND, or `None` without RDRAND (or if it keeps failing, which
/// Intel's guidance says to treat as a hardware fault after 10 tries).
pub fn random_u64() -> Option<u64> {
    if !available() {
        return None;
    }
    // SAFETY: RDRAND is available (checked above), the one requirement of `step`.
    (0..10).find_map(|_| unsafe { step() })
}
