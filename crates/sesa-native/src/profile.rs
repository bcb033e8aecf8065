//! A sampling profiler: where the kernel's CPUs spend their time, for the engineer who
//! tunes it (a guest under kvm_pvm is invisible to the host's `perf`).
//!
//! `profile=<hz>` anywhere on the command line makes every CPU's APIC timer periodic at
//! that rate (`apic::start_profiling`); the timer's interrupt stub notes the interrupted
//! instruction's address (`idt.rs`, 64 Ki samples at a time). A task on core 0 reports
//! each full set on the console, the addresses seen most first:
//!
//! ```text
//! sesa-native: profile: 65536 samples, 812 addresses (the first 400 follow)
//! sesa-native: profile 0x16a198 5210
//! ```
//!
//! `scripts/native-profile.py <kernel> <console log>` turns them into functions. Samples
//! in the idle gate are a sleeping CPU. Profiling costs a timer interrupt per sample (an
//! exit under KVM) and wakes sleeping CPUs at that rate: keep the rate modest (10 kHz
//! was used for docs/benchmarks.md). Without the word nothing of this runs (the stub
//! takes no sample).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::time::Duration;

use crate::cpu::idt;
use crate::println;

/// The most addresses a report lists.
const REPORTED: usize = 400;

/// The sampling rate `profile=<hz>` asks for, if a word of `command_line` does (1 Hz to
/// 100 kHz); `Err` with the word if it is not a number.
pub fn rate(command_line: &str) -> Option<Result<u32, &str>> {
    command_line.split_ascii_whitespace().find_map(|word| {
        let hz = word.strip_prefix("profile=")?;
        Some(
            hz.parse::<u32>()
                .map(|hz| hz.clamp(1, 100_000))
                .map_err(|_| word),
        )
    })
}

/// Starts sampling on every CPU at `hz` (the boot CPU's timer now, the others' as they
/// start).
pub fn start(hz: u32) {
    crate::cpu::apic::start_profiling(hz);
    idt::restart_samples();
    println!(
        "sesa-native: profiling at {hz} Hz, reports every {} samples",
        idt::PROFILE_CAP
    );
}

/// Reports each full set of samples, then takes the next (a task of core 0's loop:
/// spawned by `run_or_fail` when profiling).
pub async fn report() {
    loop {
        sesa_event::sleep(Duration::from_millis(200)).await;
        let Some(samples) = idt::samples_if_full() else {
            continue;
        };
        let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
        for rip in samples {
            *counts.entry(rip).or_default() += 1;
        }
        let mut top: Vec<(u64, u32)> = counts.into_iter().collect();
        top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        println!(
            "sesa-native: profile: {} samples, {} addresses (the first {} follow)",
            idt::PROFILE_CAP,
            top.len(),
            top.len().min(REPORTED)
        );
        for (rip, count) in top.into_iter().take(REPORTED) {
            println!("sesa-native: profile {rip:#x} {count}");
        }
        idt::restart_samples();
    }
}
