//! Per-CPU state: one block per CPU, found through the CPU's GS base, which the boot
//! path points at the CPU's own block (and the block's first word at itself) before the
//! CPU leaves ring 0 (`boot.rs`, `cpu_to_ring3`), and its second word at the block's
//! object-model binding (read inline by `sesa-ebb`, feature `gs-current`). The object
//! model's and the event model's "current" slots live here, so each core has its own, and the flag the
//! interrupt stubs set to say a sleeping CPU has been woken.

use alloc::rc::Rc;
use core::cell::RefCell;
use core::sync::atomic::{AtomicPtr, AtomicU8};

use sesa_ebb::CurrentCore;
use sesa_event::Platform;

/// CPUs the kernel runs at most (more are left halted).
pub const MAX_CPUS: usize = 16;

/// One CPU's block. `repr(C)` with the self pointer first: `gs:[0]` reads it.
#[repr(C)]
pub struct Cpu {
    this: AtomicPtr<Cpu>,
    /// The address of `ebb`, where the object model reads it inline on every EBB call
    /// (`gs:[sesa_ebb::GS_CURRENT]`); set with `this` by the boot path.
    ebb_current: AtomicPtr<CurrentCore>,
    /// Set by the wake-up and device interrupts' stubs, cleared by the idle gate
    /// (`idt.rs`): a wake-up that came before the CPU halted ends its next halt at once.
    kicked: AtomicU8,
    ebb: CurrentCore,
    platform: RefCell<Option<Rc<dyn Platform>>>,
    heap: crate::memory::HeapCache,
}

// SAFETY: a block is used only by the CPU whose GS base points at it (the boot path
// gives each CPU its own index), as `CurrentCore` and the platform slot require; `this`
// is written once, by that CPU in ring 0, before it uses its block; `kicked` is atomic.
unsafe impl Sync for Cpu {}

pub(super) static CPUS: [Cpu; MAX_CPUS] = [const {
    Cpu {
        this: AtomicPtr::new(core::ptr::null_mut()),
        ebb_current: AtomicPtr::new(core::ptr::null_mut()),
        kicked: AtomicU8::new(0),
        ebb: CurrentCore::new(),
        platform: RefCell::new(None),
        heap: crate::memory::HeapCache::new(),
    }
}; MAX_CPUS];

/// The size of a block (the boot path finds CPU `i`'s at `CPUS + i * CPU_SIZE`).
pub const CPU_SIZE: usize = core::mem::size_of::<Cpu>();
/// Where a block's `kicked` flag is (the interrupt stubs address it through GS).
pub const KICKED_OFFSET: usize = core::mem::offset_of!(Cpu, kicked);
/// Where a block's `ebb` binding is, and where its address goes (the boot path).
pub const EBB_OFFSET: usize = core::mem::offset_of!(Cpu, ebb);
/// See [`EBB_OFFSET`].
pub const EBB_CURRENT_OFFSET: usize = core::mem::offset_of!(Cpu, ebb_current);
const _: () = assert!(EBB_CURRENT_OFFSET == sesa_ebb::GS_CURRENT);

/// The calling CPU's block.
fn this_cpu() -> &'static Cpu {
    let ptr: *const Cpu;
    // SAFETY: `gs:[0]` is the `this` field of the block the boot path gave this CPU
    // before any Rust code ran on it.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) ptr, options(nostack, readonly, preserves_flags));
        &*ptr
    }
}

/// The event model's "which platform is this core's" (`sesa-event`'s `platform.rs`):
/// the calling CPU's slot.
#[unsafe(no_mangle)]
fn __sesa_event_current() -> &'static RefCell<Option<Rc<dyn Platform>>> {
    &this_cpu().platform
}

/// The calling CPU's heap cache (the boot path gives the CPU its block before any Rust
/// code, the allocator included, runs on it).
pub fn heap_cache() -> &'static crate::memory::HeapCache {
    &this_cpu().heap
}

/// The first physical address past the kernel image (from the link script).
pub fn kernel_end() -> u64 {
    unsafe extern "C" {
        static __kernel_end: u8;
    }
    // Only the symbol's address is taken (no read); the linker defines it.
    core::ptr::addr_of!(__kernel_end) as u64
}
