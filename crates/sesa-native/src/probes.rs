//! The kernel's boot probes: what the command line can ask a machine to check about
//! itself (the event model through the platform conformance suite, the frame
//! allocator, the object model on core 0, TCP echo, the heap's costs), each reporting on
//! the console. The boot (`crate::start`) runs them.

use crate::arch::x86_64 as cpu;
use crate::{memory, println};

/// An allocation and free of a 64-byte block on every core at once, `n` times each, with
/// the per-CPU heap caches and with talc alone, interleaved `runs` times: the medians,
/// in ns per pair on each core.
pub(crate) async fn heap_bench(n: u64, runs: usize) -> Result<(f64, f64), sesa_event::EventError> {
    const BLOCK: core::alloc::Layout = core::alloc::Layout::new::<[u8; 64]>();
    let cores = sesa_event::cores() as f64;
    let cached = || memory::global_alloc_free(BLOCK);
    let (mut with_caches, mut talc) = (alloc::vec::Vec::new(), alloc::vec::Vec::new());
    for _ in 0..runs.max(1) {
        let mops = sesa_node::micro::counter_mops(n.max(1), cached).await?;
        with_caches.push(1e3 * cores / mops);
        let mops =
            sesa_node::micro::counter_mops(n.max(1), || memory::talc_alloc_free(BLOCK)).await?;
        talc.push(1e3 * cores / mops);
    }
    Ok((
        sesa_node::micro::median(with_caches),
        sesa_node::micro::median(talc),
    ))
}

/// The event model on this machine: the platform conformance suite
/// (`sesa_event::conformance`, every check but those that need panics to unwind: this
/// kernel aborts on a panic; the entropy check where the CPU has RDRAND), then what
/// only a native node without a network device must do.
pub(crate) async fn events_check(
    cores: usize,
) -> Result<alloc::string::String, alloc::string::String> {
    use alloc::format;
    use sesa_event::conformance::{self, Needs};
    if sesa_event::cores() != cores {
        return Err(format!(
            "{} core(s) run, {cores} were asked for",
            sesa_event::cores()
        ));
    }
    let entropy = cpu::entropy::available();
    if !entropy {
        println!(
            "sesa-native: events: no RDRAND (QEMU's -cpu max has it): the entropy check is skipped"
        );
    }
    let results = conformance::run(|c| {
        c.runs_here()
            && match c.needs {
                Needs::Unwinding => false,
                Needs::Entropy => entropy,
                Needs::TwoCores | Needs::Nothing => true,
            }
    })
    .await;
    for (name, result) in &results {
        match result {
            Ok(()) => println!("sesa-native: events: {name}: ok"),
            Err(why) => println!("sesa-native: events: {name}: FAILED: {why}"),
        }
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if failed > 0 {
        return Err(format!(
            "{failed} of {} conformance check(s) failed",
            results.len()
        ));
    }
    // Without a network device, the network seam says so rather than pretend.
    match sesa_event::tcp_listen("0.0.0.0:7000".parse().map_err(|_| "an address")?) {
        Ok(_) => return Err("listen worked on a machine without a network device".into()),
        Err(e) if format!("{e}").contains("no network device") => {}
        Err(e) => return Err(format!("listen failed otherwise: {e}")),
    }
    Ok(format!(
        "{cores} core(s); {} conformance checks passed",
        results.len()
    ))
}

/// TCP echo on `port` for one client, through the event model's network
/// (`sesa_event::tcp_listen`, as any application would), until the client closes its
/// side.
pub(crate) async fn echo_once(port: u16) -> Result<(), sesa_event::EventError> {
    let addr = core::net::SocketAddr::from(([0, 0, 0, 0], port));
    let listener = sesa_event::tcp_listen(addr)?;
    println!("sesa-native: echo on port {port}");
    let (mut stream, peer) = listener
        .accept()
        .await
        .map_err(sesa_event::EventError::Net)?;
    let mut buf = alloc::vec![0u8; 4096];
    let mut echoed = 0u64;
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(sesa_event::EventError::Net)?;
        if n == 0 {
            break;
        }
        stream
            .write_all(&buf[..n])
            .await
            .map_err(sesa_event::EventError::Net)?;
        echoed += n as u64;
    }
    stream
        .shutdown()
        .await
        .map_err(sesa_event::EventError::Net)?;
    println!(
        "sesa-native: echo: served one client ({peer}), {echoed} bytes; {} device interrupts",
        cpu::idt::device_interrupts()
    );
    // Let the stack send the last bytes and the close before the loop stops.
    sesa_event::sleep(core::time::Duration::from_millis(20)).await;
    Ok(())
}

/// Takes frames and gives them back: distinct, aligned, and counted.
pub(crate) fn check_frames(frames: &mut memory::Frames) -> Result<(), &'static str> {
    let before = frames.available();
    let taken: alloc::vec::Vec<u64> = (0..64).filter_map(|_| frames.alloc()).collect();
    if taken.len() != 64 || frames.available() != before - 64 {
        return Err("could not take 64 frames");
    }
    let mut sorted = taken.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != 64 || taken.iter().any(|f| !f.is_multiple_of(memory::FRAME)) {
        return Err("frames repeated or misaligned");
    }
    for f in taken {
        frames.free(f);
    }
    (frames.available() == before)
        .then_some(())
        .ok_or("frames lost on the way back")
}

/// The paper's distributed counter with the portable object model, unchanged: an EBB
/// with per-core reps, whose rep on this core is made by its miss handler on the first
/// increment; the total is read through the root.
pub(crate) fn counter_on_this_core() -> Result<i64, sesa_ebb::EbbError> {
    use core::sync::atomic::{AtomicI64, Ordering::Relaxed};
    use sesa_ebb::{CoreId, EbbNode, NodeConfig, PerCore};
    let node = EbbNode::new(NodeConfig::with_cores(1));
    let _bound = node.bind(CoreId::new(0))?;
    let (counter, root) = PerCore::create_on(&node, |_core| AtomicI64::new(0))?;
    for _ in 0..1000 {
        counter.with(|rep| rep.store(rep.load(Relaxed) + 1, Relaxed));
    }
    Ok(root.reps().map(|(_, rep)| rep.load(Relaxed)).sum())
}
