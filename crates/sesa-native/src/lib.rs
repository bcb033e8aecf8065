//! # sesa-native: a sesa node as a unikernel, linked with its application
//!
//! The native platform of the paper's library OS (section 4.3): the runtime linked with
//! the application and booted directly on a (virtual) machine, with no OS under it. This
//! crate is a library: an application's native image is a `no_std`, `no_main` binary of
//! its own that names its applications with [`entry!`] and is linked by this crate's
//! script (its build script forwards `DEP_SESA_NATIVE_LINK_ARGS`, see below). The
//! `sesa-kernel` binary of this crate is such an image with the built-in applications:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! fn apps() -> sesa_node::app::Apps {
//!     sesa_node::app::Apps::new().with::<sesa_counter::Counter>() // ...
//! }
//! sesa_native::entry!(apps);
//! ```
//!
//! and an application crate's image build script is
//!
//! ```ignore
//! fn main() {
//!     for arg in std::env::var("DEP_SESA_NATIVE_LINK_ARGS").unwrap().split('\x1f') {
//!         println!("cargo:rustc-link-arg-bins={arg}");
//!     }
//! }
//! ```
//!
//! It boots on QEMU `-M microvm` through the PVH entry point (under TCG or KVM): long
//! mode and SSE, the serial console, the loader's memory map and command line, a heap
//! (talc, with per-CPU caches) and a frame allocator, panics and CPU exceptions reported,
//! an exit status through QEMU's `isa-debug-exit` device. The object model (`sesa-ebb`)
//! and the event model (`sesa-event`, `runtime.rs`: one loop per core, APIC timers,
//! wake-up IPIs) run unchanged, with the network (virtio-net under smoltcp behind
//! `sesa_event`'s TCP API, `net.rs`) and the executive's messenger, so that a native
//! node joins an application's frontend like a hosted one (`node.rs`, through
//! `sesa-node`).
//!
//! It builds on stable Rust for the x86_64-unknown-linux-gnu target with that target's
//! prebuilt `core`, linked by `linker.ld` (see `build.rs`), in a workspace of its own
//! (built with `panic = "abort"`):
//! `cargo build --release --manifest-path crates/sesa-native/Cargo.toml`.
//!
//! The command line selects what to run: empty boots and exits with success; `panic`
//! panics (the test of the panic path); `fault` reads unmapped memory (the test of the
//! CPU exception path: reported with vector, instruction and address, exit status 5);
//! `events` runs checks of the event model on the native loops (`runtime.rs`;
//! `events <cpus>` on that many cores, with `-smp <cpus>`); `smp <cpus>` starts the
//! application processors and checks the object model on each (`smp.rs`, boot with
//! `-smp <cpus>`); `node <id> <secret>` runs the messenger and serves a counter EBB to
//! hosted nodes (`node.rs`; needs RDRAND: `-cpu max`); `join ...` joins a frontend as a
//! node of an application (what the frontend's QEMU launcher passes); `kv` and `bench`
//! serve the data store and run the micro-benchmarks; `echo` serves TCP echo on port 7
//! over virtio-net to one client, then exits with success.

//!
//! ## How it works
//!
//! A kernel for QEMU/KVM, built on stable Rust for the x86_64-unknown-linux-gnu target
//! with that target's prebuilt `core`, linked at 1 MiB by `linker.ld` (`build.rs` passes
//! the flags, and gives them to application images through `links` metadata). It is a
//! library: an image is a `no_std`, `no_main` binary whose `main.rs` is
//! `sesa_native::entry!(apps)` (the applications its nodes run); `sesa-kernel` is the
//! image with the built-in applications. **Its Rust code runs in ring 3**: each CPU goes through ring 0 in assembly
//! only (`boot.rs`: `cpu_to_ring3` sets the GS base, a TSS with a ring-0 interrupt stack
//! and an all-zero I/O bitmap, the IDT, then `iretq`s to ring 3 with interrupts on; the
//! pages are user pages). Ring 0 runs only the interrupt and exception stubs and the idle
//! gate (a ring-3 `hlt` faults into it; a per-CPU `kicked` flag set by the wake-up and
//! device stubs makes it return at once if a wake-up came first). That is what lets the
//! kernel run under kvm_pvm, which emulates ring 0 and cannot emulate SSE; under TCG and
//! hardware KVM it costs nothing measurable. A workspace of its own, because it is built with `panic = "abort"` while the
//! hosted crates unwind to isolate a panicking event. `arch/x86_64/boot.rs` is the 32-bit
//! PVH entry (a Xen `PHYS32_ENTRY` note): identity page tables for the first GiB, PAE, long
//! mode, SSE, a 64-bit GDT, then `kernel_main`. `arch/x86_64/mem.rs` provides `memcpy` and
//! its kin (`rep movsb`). `console.rs` is the COM1 serial console. The kernel reads the
//! PVH start information (memory map, command line); `memory.rs` makes a heap (talc, a
//! quarter of the usable memory, with a per-CPU cache of freed blocks up to 2 KiB in front
//! of it, kept in the CPU's per-CPU block) and a frame allocator of the rest; `arch/x86_64/percpu.rs`
//! keeps the address of each CPU's object-model binding at `gs:[8]` (`sesa-ebb`'s feature
//! `gs-current`: every EBB call reads it inline, as a hosted one reads a thread-local), so
//! `sesa-ebb` runs unchanged (the boot runs the paper's
//! counter as an EBB). It ends through `isa-debug-exit`. `arch/x86_64/clock.rs` calibrates the TSC against the
//! PIT (neither accelerator here reports its rate). `arch/x86_64/virtio.rs` finds virtio
//! devices on microvm's MMIO slots (the boot maps the fourth GiB uncached for them) and
//! gives `virtio-drivers` its DMA rules (identity mapping) and finds a slot's interrupt line;
//! its `NetQueues` drives virtio-net through the driver's raw interface, with frames in
//! flight both ways (the driver's buffered interface waits after every frame sent).
//! `arch/x86_64/rtc.rs` reads the CMOS clock once (the wall clock: the TSC's time added to
//! it). `arch/x86_64/ioapic.rs` routes the virtio-net line to core 0's device vector.
//!
//! `runtime.rs` is the native event loop: `sesa-event`'s `Platform` on the bare machine,
//! one loop per core (the APs run theirs): tasks polled when woken, shipped events in
//! order after a quiescent point (each core's inbox a FIFO the others push to), sleeps on
//! the calibrated clock, `stop` ending every loop; `-append "events 4"` checks it. `net.rs` is
//! its network: `sesa_event::net::Net` over smoltcp (listeners keep a backlog of listening
//! sockets; a socket's state change wakes the tasks waiting on the network), polled every
//! turn; `-append echo` serves TCP echo through it. `node.rs` runs the executive's
//! messenger (`sesa-exec`, unchanged) on that loop and serves a counter at a static EBB
//! id; hosted nodes authenticate and call it (`-append "node <id> <secret>"`, with
//! `-cpu max` for RDRAND). `arch/x86_64/idt.rs` reports CPU exceptions (vector, instruction, faulting address)
//! and ends with the panic status instead of a silent reset (`-append fault` tests it).
//! `arch/x86_64/percpu.rs` gives each CPU a block of its own (the
//! object model's and the event model's "current" slots), found through its GS base;
//! `arch/x86_64/smp.rs` starts the application processors (INIT-SIPI-SIPI through the
//! local APIC, a real-mode trampoline at 0x8000 into long mode on the boot page tables, a
//! stack each; after real mode they take the boot CPU's own way into long mode,
//! `enter_long_mode` in `boot.rs`), which then run their core's loop (or, for `-append "smp 4"`, bind their
//! core and miss on a per-core EBB). `arch/x86_64/apic.rs` gives each core the local
//! APIC's one-shot timer (measured against the TSC) and wake-up IPIs: a loop idle for
//! 2 ms sleeps (through the idle gate) until its next deadline, the device's interrupt, or
//! a wake-up IPI from a core that ships it an event, wakes one of its tasks or stops the
//! loops (at most 100 ms, a bound). The device may interrupt only while core 0 sleeps (`net.rs`:
//! `prepare_sleep`, `after_sleep`; virtio's per-queue flag, a write to memory the device
//! reads, so `virtio.rs` hides the event-index feature, under which `virtio-drivers`
//! cannot turn interrupts off; the I/O APIC line stays unmasked): under load the loop
//! polls. The network belongs to
//! core 0 (smoltcp is single-threaded); the other cores' shared listeners get no
//! connections, so a server on every core takes its connections on core 0 and ships the
//! work out (`runtime.rs`: `OnCoreZero`). The node's peers are named by host addresses
//! (127.0.0.1:port, forwarded by QEMU): `net.rs` connects to the host's loopback through
//! QEMU's gateway.
//!
//! Commands beyond the checks: `kv <cores> <MiB>` serves the data store (`kv.rs`:
//! sesa-apps' server, unchanged); `join <cores> <frontend> <registry> <id> <messenger
//! port> <clients port>` is a node of a frontend's application (`node.rs`: `sesa-node`'s
//! `run`, unchanged; the secret arrives on the serial console, which the frontend writes
//! through QEMU's stdin); `bench <cores> [quick]` prints `sesa_node::micro`'s figures.
//! `profile=<hz>` beside any command samples where the CPUs are (`profile.rs`: every
//! CPU's APIC timer made periodic, the timer's stub in `idt.rs` notes the interrupted
//! address; a task on core 0 prints the addresses seen most per 64 Ki samples), and
//! `scripts/native-profile.py` names the functions: the host's `perf` cannot see into a
//! guest under kvm_pvm. `sesa bench kv --native <kernel> --kernel-args profile=10000`
//! profiles a store node under load.
#![no_std]
// Unsafe code lives in three places only, each allowed below with its reason.
#![deny(unsafe_code)]

extern crate alloc;

// The machine: boot, page tables, descriptor tables, port and MMIO access, the APIC.
#[allow(unsafe_code)]
mod arch;
mod console;
mod kv;
// The heap and frame allocators: the global allocator over memory the loader gave.
#[allow(unsafe_code)]
mod memory;
mod net;
mod node;
mod probes;
mod profile;
// The event loop: quiescent points (`sesa_ebb::quiesce`) between events.
#[allow(unsafe_code)]
mod runtime;
mod smp;

use arch::x86_64 as cpu;

/// How the kernel ends. QEMU's `isa-debug-exit` device (port 0xf4) makes QEMU exit with
/// status `(code << 1) | 1`: 1 for success, 3 for a failure, 5 after a panic.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
enum Exit {
    Success = 0,
    Failure = 1,
    Panic = 2,
}

fn exit(code: Exit) -> ! {
    cpu::outl(0xf4, code as u32);
    // Without the device (another machine or VMM), stop here.
    cpu::halt()
}

/// Defines the image's entry: the boot code calls it in long mode on the boot stack, and
/// it runs the kernel ([`start`]) with the applications `$apps()` returns (a path to a
/// `fn() -> sesa_node::app::Apps`). Once per image, in its binary crate.
#[macro_export]
macro_rules! entry {
    ($apps:path) => {
        /// The boot code's call into Rust (`arch/x86_64/boot.rs` of `sesa-native`).
        #[unsafe(no_mangle)]
        extern "C" fn kernel_main(start_info: u32) -> ! {
            $crate::start(start_info, $apps)
        }
    };
}

/// The kernel: boots with the PVH start information at `start_info` (a physical
/// address), then runs what the command line says; a node that joins an application
/// runs the applications `apps` returns. Called by [`entry!`]'s `kernel_main`.
pub fn start(start_info: u32, apps: fn() -> sesa_node::app::Apps) -> ! {
    // The boot CPU's own block, before anything uses the object or event model; then
    // CPU exceptions are reported instead of resetting the machine.
    cpu::idt::init();
    console::init();
    println!("sesa-native {}: booted", env!("CARGO_PKG_VERSION"));
    let Some(info) = cpu::StartInfo::at(start_info) else {
        println!("sesa-native: no PVH start information at {start_info:#x}");
        exit(Exit::Failure);
    };
    // QEMU's table ends with an empty entry: skipped.
    let map = info.memory_map().iter().filter(|r| r.size > 0);
    let usable: u64 = map.clone().filter(|r| r.kind == 1).map(|r| r.size).sum();
    println!(
        "sesa-native: memory map of {} regions, {} MiB usable",
        map.clone().count(),
        usable >> 20
    );
    for r in map {
        println!(
            "sesa-native:   {:#012x}..{:#012x} type {}",
            r.addr,
            r.addr + r.size,
            r.kind
        );
    }
    let Some(mut memory) = memory::init(info.memory_map()) else {
        println!("sesa-native: not enough memory for a heap");
        exit(Exit::Failure);
    };
    println!(
        "sesa-native: heap of {} MiB, {} free frames of 4 KiB",
        memory.heap_bytes >> 20,
        memory.frames.total()
    );
    if memory.regions_ignored > 0 {
        println!(
            "sesa-native: {} usable memory regions past the first 32 left unused",
            memory.regions_ignored
        );
    }
    if let Err(why) = probes::check_frames(&mut memory.frames) {
        println!("sesa-native: frame allocator: {why}");
        exit(Exit::Failure);
    }
    match probes::counter_on_this_core() {
        Ok(total) => println!("sesa-native: EBB counter on core 0: {total}"),
        Err(why) => {
            println!("sesa-native: EBB counter: {why}");
            exit(Exit::Failure);
        }
    }
    match cpu::clock::calibrate() {
        Some(hz) => println!(
            "sesa-native: TSC at {} MHz (against the PIT)",
            hz / 1_000_000
        ),
        None => println!("sesa-native: no PIT: the clock is not calibrated"),
    }
    match cpu::rtc::init(cpu::clock::now_ns()) {
        Some(unix) => println!("sesa-native: wall clock {unix} (Unix seconds, CMOS RTC)"),
        None => println!("sesa-native: no RTC: wall time counts from boot"),
    }
    // The APIC's timer is measured against the calibrated clock.
    cpu::apic::init(0);
    let line = info.command_line();
    println!("sesa-native: command line {line:?}");
    match profile::rate(line) {
        None => {}
        Some(Ok(hz)) => profile::start(hz),
        Some(Err(word)) => {
            println!("sesa-native: {word:?}: the profiler's rate is a number of samples a second");
            exit(Exit::Failure);
        }
    }
    // QEMU's microvm appends `virtio_mmio.device=...` words for Linux; they are not ours.
    // `profile=<hz>` is an option of every command.
    let mut words = line
        .split_ascii_whitespace()
        .filter(|w| !w.starts_with("virtio_mmio.") && !w.starts_with("profile="));
    match words.next() {
        None => {}
        Some("panic") => panic!("the command line asked for a panic"),
        Some("fault") => {
            let value = cpu::idt::read_unmapped(0x10_0000_0000);
            println!("sesa-native: read {value:#x} where nothing is mapped");
            exit(Exit::Failure);
        }
        Some("smp") => {
            let expected = words.next().and_then(|w| w.parse().ok()).unwrap_or(1);
            match smp::check(expected) {
                Ok(report) => println!("sesa-native: smp: {report}"),
                Err(why) => {
                    println!("sesa-native: smp: {why}");
                    exit(Exit::Failure);
                }
            }
        }
        Some("events") => {
            let cores = words.next().and_then(|w| w.parse().ok()).unwrap_or(1);
            run_or_fail(cores, None, move || async move {
                match probes::events_check(cores).await {
                    Ok(report) => println!("sesa-native: events: ok ({report})"),
                    Err(why) => {
                        println!("sesa-native: events: {why}");
                        sesa_event::stop(1);
                    }
                }
            });
        }
        Some("node") => {
            let (Some(id), Some(secret)) = (
                words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .map(sesa_ebb::NodeId::new),
                words.next().and_then(node::secret_from_hex),
            ) else {
                println!("sesa-native: usage: node <id> <secret: 64 hex digits>");
                exit(Exit::Failure);
            };
            let net = start_net(line, memory.heap_bytes);
            run_or_fail(1, Some(net), move || async move {
                if let Err(why) = node::serve(id, secret).await {
                    println!("sesa-native: node: {why}");
                    sesa_event::stop(1);
                }
            });
        }
        Some("join") => {
            let cores = match words.next().and_then(|w| w.parse().ok()) {
                Some(cores) => cores,
                None => usage_of_join(),
            };
            let Some(args) = node::JoinArgs::parse(&mut words) else {
                usage_of_join()
            };
            // The secret comes on the console's input, never the command line (which
            // anyone on the host can read in QEMU's).
            let Some(secret) = console::read_line(128, 10_000_000_000).and_then(|line| {
                core::str::from_utf8(&line)
                    .ok()
                    .and_then(node::secret_from_hex)
            }) else {
                println!(
                    "sesa-native: join: no cluster secret (64 hex digits) on the console within 10 s"
                );
                exit(Exit::Failure);
            };
            let heap_bytes = memory.heap_bytes;
            let net = start_net(line, heap_bytes);
            run_or_fail(cores, Some(net), move || async move {
                match node::join(args, secret, heap_bytes, apps()).await {
                    Ok(()) => println!("sesa-native: join: the frontend let this node go"),
                    Err(why) => {
                        println!("sesa-native: join: {why}");
                        sesa_event::stop(1);
                    }
                }
            });
        }
        Some("bench") => {
            let cores = words.next().and_then(|w| w.parse().ok()).unwrap_or(1);
            let sizes = match words.next() {
                Some("quick") => sesa_node::micro::Sizes::QUICK,
                _ => sesa_node::micro::Sizes::FULL,
            };
            run_or_fail(cores, None, move || async move {
                match sesa_node::micro::measure(sizes).await {
                    Ok(f) => println!(
                        "sesa-native: micro cores={} ebb_call_ns={} ebb_inline_ns={} \
                         counter_ebb_mops={} counter_atomic_mops={} miss_ns={} \
                         spawn_rtt_p50_ns={} spawn_rtt_p99_ns={} spawn_mops={}",
                        f.cores,
                        f.ebb_call_ns,
                        f.ebb_inline_ns,
                        f.counter_ebb_mops,
                        f.counter_atomic_mops,
                        f.miss_ns,
                        f.spawn_rtt_p50_ns,
                        f.spawn_rtt_p99_ns,
                        f.spawn_mops
                    ),
                    Err(why) => {
                        println!("sesa-native: micro: {why}");
                        sesa_event::stop(1);
                        return;
                    }
                }
                match probes::heap_bench(sizes.incs_per_core / 4, sizes.runs).await {
                    Ok((cached, talc)) => println!(
                        "sesa-native: heap (64-byte allocation and free, every core at once) \
                         cached_ns={cached} talc_ns={talc}"
                    ),
                    Err(why) => {
                        println!("sesa-native: heap: {why}");
                        sesa_event::stop(1);
                    }
                }
            });
        }
        Some("kv") => {
            let cores = words.next().and_then(|w| w.parse().ok()).unwrap_or(1);
            let memory_mb = words
                .next()
                .and_then(|w| w.parse().ok())
                .unwrap_or(kv::DEFAULT_MEMORY_MB);
            let heap_bytes = memory.heap_bytes;
            let net = start_net(line, memory.heap_bytes);
            run_or_fail(cores, Some(net), move || async move {
                if let Err(why) = kv::serve(memory_mb, heap_bytes).await {
                    println!("sesa-native: kv: {why}");
                    sesa_event::stop(1);
                }
            });
        }
        Some("echo") => {
            let net = start_net(line, memory.heap_bytes);
            run_or_fail(1, Some(net), || async {
                if let Err(why) = probes::echo_once(7).await {
                    println!("sesa-native: echo: {why}");
                    sesa_event::stop(1);
                }
            });
        }
        Some(other) => {
            println!("sesa-native: unknown command {other:?}");
            exit(Exit::Failure);
        }
    }
    println!("sesa-native: done");
    exit(Exit::Success)
}

fn usage_of_join() -> ! {
    println!(
        "sesa-native: usage: join <cores> <frontend address> <registry id> <node id> \
         <messenger host port> <clients host port> (and the secret on the console)"
    );
    exit(Exit::Failure);
}

/// Runs the event loops (`runtime::run`); a failure ends the kernel with the failure
/// status (the loops said why on the console).
fn run_or_fail<F, Fut>(cores: usize, net: Option<net::NativeNet>, main: F)
where
    F: FnOnce() -> Fut + 'static,
    Fut: core::future::Future<Output = ()> + 'static,
{
    let profiling = cpu::apic::profiling();
    let main = move || async move {
        if profiling {
            sesa_event::spawn_local(profile::report());
        }
        main().await;
    };
    if runtime::run(cores, net, main) != 0 {
        exit(Exit::Failure);
    }
}

/// Brings the network up, or ends the run saying why.
fn start_net(command_line: &str, heap_bytes: u64) -> net::NativeNet {
    match net::NativeNet::start(command_line, heap_bytes) {
        Ok(net) => net,
        Err(why) => {
            println!("sesa-native: net: {why}");
            exit(Exit::Failure);
        }
    }
}

/// A CPU exception (from `arch/x86_64/idt.rs`): reported like a panic, and the end.
pub fn exception(vector: u64, error: u64, rip: u64, cr2: Option<u64>) -> ! {
    let name = match vector {
        0 => "divide error",
        1 => "debug",
        2 => "non-maskable interrupt",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack fault",
        13 => "general protection",
        14 => "page fault",
        16 => "x87 floating point",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating point",
        _ => "reserved",
    };
    match cr2 {
        Some(addr) => println!(
            "sesa-native: CPU exception {vector} ({name}) at {rip:#x}, error code {error:#x}, address {addr:#x}"
        ),
        None => println!(
            "sesa-native: CPU exception {vector} ({name}) at {rip:#x}, error code {error:#x}"
        ),
    }
    exit(Exit::Panic)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => println!(
            "sesa-native: panicked at {}:{}:{}: {}",
            at.file(),
            at.line(),
            at.column(),
            info.message()
        ),
        None => println!("sesa-native: panicked: {}", info.message()),
    }
    exit(Exit::Panic)
}
