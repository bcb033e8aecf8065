//! # sesa-native: a sesa node as a unikernel (first part: boot)
//!
//! The native platform of the paper's library OS (section 4.3): the runtime linked with
//! the application and booted directly on a (virtual) machine, with no OS under it.
//! This first part boots on QEMU (`-M microvm` through the PVH entry point, under TCG or
//! KVM): it brings up long mode and SSE, prints on the serial console, reads the
//! memory map and command line the loader passed, reports a panic with its location,
//! and ends with an exit status through QEMU's `isa-debug-exit` device.
//!
//! Still to come (issue "native runtime"): a frame allocator and heap, the application
//! processors and per-core event loops with the portable object model, virtio-net and
//! the messenger, so that a native node joins a cluster.
//!
//! It builds on stable Rust for the x86_64-unknown-linux-gnu target with that target's
//! prebuilt `core`, linked by `linker.ld` (see `build.rs`), in a workspace of its own:
//! `cargo build --release --manifest-path crates/sesa-native/Cargo.toml`.
//!
//! The command line selects what to run: empty boots and exits with success; `panic`
//! panics (the test of the panic path).

#![no_std]
#![no_main]

mod arch;
mod console;

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

/// Called by the boot code, in long mode on the boot stack, with the physical address
/// of the PVH start information.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(start_info: u32) -> ! {
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
    let command = info.command_line();
    println!("sesa-native: command line {command:?}");
    match command {
        "" => {}
        "panic" => panic!("the command line asked for a panic"),
        other => {
            println!("sesa-native: unknown command {other:?}");
            exit(Exit::Failure);
        }
    }
    println!("sesa-native: done");
    exit(Exit::Success)
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
