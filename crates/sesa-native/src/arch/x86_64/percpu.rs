//! Per-CPU state. One CPU runs the kernel so far (the application processors come with
//! the per-core event loops); each will get its own block, found through its GS base.

use alloc::rc::Rc;
use core::cell::RefCell;

use sesa_ebb::CurrentCore;
use sesa_event::Platform;

struct Cpu {
    ebb: CurrentCore,
    platform: RefCell<Option<Rc<dyn Platform>>>,
}

// SAFETY: only the boot CPU runs kernel code so far, so this block is touched by that
// CPU alone, as `CurrentCore` and the platform slot require; with SMP each CPU will have
// its own.
unsafe impl Sync for Cpu {}

static BOOT_CPU: Cpu = Cpu {
    ebb: CurrentCore::new(),
    platform: RefCell::new(None),
};

/// The object model's "which core is this" (`sesa-ebb`'s `current.rs`): the calling
/// CPU's binding.
#[unsafe(no_mangle)]
fn __sesa_ebb_current() -> &'static CurrentCore {
    &BOOT_CPU.ebb
}

/// The event model's "which platform is this core's" (`sesa-event`'s `platform.rs`):
/// the calling CPU's slot.
#[unsafe(no_mangle)]
fn __sesa_event_current() -> &'static RefCell<Option<Rc<dyn Platform>>> {
    &BOOT_CPU.platform
}

/// The first physical address past the kernel image (from the link script).
pub fn kernel_end() -> u64 {
    unsafe extern "C" {
        static __kernel_end: u8;
    }
    // Only the symbol's address is taken (no read); the linker defines it.
    core::ptr::addr_of!(__kernel_end) as u64
}
