//! Per-CPU state: one block per CPU, found through the CPU's GS base, which each CPU
//! points at its own block when it starts ([`init_cpu`]). The object model's and the
//! event model's "current" slots live here, so each core has its own.

use alloc::rc::Rc;
use core::cell::RefCell;
use core::sync::atomic::{AtomicPtr, Ordering};

use sesa_ebb::CurrentCore;
use sesa_event::Platform;

/// CPUs the kernel runs at most (more are left halted).
pub const MAX_CPUS: usize = 16;

/// One CPU's block. `repr(C)` with the self pointer first: `gs:[0]` reads it.
#[repr(C)]
pub struct Cpu {
    this: AtomicPtr<Cpu>,
    ebb: CurrentCore,
    platform: RefCell<Option<Rc<dyn Platform>>>,
    heap: crate::memory::HeapCache,
}

// SAFETY: a block is used only by the CPU whose GS base points at it (`init_cpu` gives
// each CPU its own index), as `CurrentCore` and the platform slot require; `this` is an
// atomic written once before the CPU uses its block.
unsafe impl Sync for Cpu {}

static CPUS: [Cpu; MAX_CPUS] = [const {
    Cpu {
        this: AtomicPtr::new(core::ptr::null_mut()),
        ebb: CurrentCore::new(),
        platform: RefCell::new(None),
        heap: crate::memory::HeapCache::new(),
    }
}; MAX_CPUS];

/// IA32_GS_BASE.
const GS_BASE: u32 = 0xC000_0101;

/// Makes block `index` the calling CPU's. Each CPU calls it once, with its own index,
/// before anything uses the object or event model on it.
///
/// # Panics
/// If `index` is not below [`MAX_CPUS`].
pub fn init_cpu(index: usize) {
    let cpu = &CPUS[index];
    let ptr = cpu as *const Cpu as *mut Cpu;
    cpu.this.store(ptr, Ordering::Release);
    let value = ptr as u64;
    // SAFETY: writing IA32_GS_BASE changes only what `gs:` addresses; the kernel uses
    // `gs:` for nothing but this block.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") GS_BASE,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags)
        );
    }
}

/// The calling CPU's block.
fn this_cpu() -> &'static Cpu {
    let ptr: *const Cpu;
    // SAFETY: `gs:[0]` is the `this` field of the block `init_cpu` gave this CPU (the
    // boot CPU's is set first thing in `kernel_main`, an AP's first thing in `ap_main`).
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) ptr, options(nostack, readonly, preserves_flags));
        &*ptr
    }
}

/// The object model's "which core is this" (`sesa-ebb`'s `current.rs`): the calling
/// CPU's binding.
#[unsafe(no_mangle)]
fn __sesa_ebb_current() -> &'static CurrentCore {
    &this_cpu().ebb
}

/// The event model's "which platform is this core's" (`sesa-event`'s `platform.rs`):
/// the calling CPU's slot.
#[unsafe(no_mangle)]
fn __sesa_event_current() -> &'static RefCell<Option<Rc<dyn Platform>>> {
    &this_cpu().platform
}

/// The calling CPU's heap cache, or `None` before the CPU has its block (nothing
/// allocates that early, but the allocator does not rely on it).
pub fn heap_cache() -> Option<&'static crate::memory::HeapCache> {
    let ptr: *const Cpu;
    // SAFETY: as in `this_cpu`; before `init_cpu` the GS base is 0, which the check
    // below turns away (no block lives at address 0).
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) ptr, options(nostack, readonly, preserves_flags));
    }
    let ours = CPUS.as_ptr_range();
    // SAFETY: a pointer inside `CPUS` is one of its blocks, the one `init_cpu` gave
    // this CPU.
    ours.contains(&ptr).then(|| unsafe { &(*ptr).heap })
}

/// The first physical address past the kernel image (from the link script).
pub fn kernel_end() -> u64 {
    unsafe extern "C" {
        static __kernel_end: u8;
    }
    // Only the symbol's address is taken (no read); the linker defines it.
    core::ptr::addr_of!(__kernel_end) as u64
}
