//! Which core is this? The one thing the object model needs from below.
//!
//! The fast path of every EBB call reads the current core's translation table through
//! this binding, so it must cost what a thread-local read costs and no more:
//! - with feature `std`, a `const`-initialised `thread_local!` (one `fs:`-relative load
//!   on x86-64 Linux, no lazy-initialisation check);
//! - without it, on x86-64 with feature `gs-current`, one `gs:`-relative load: the
//!   platform keeps the address of the calling CPU's binding at `gs:[GS_CURRENT]` (the
//!   native kernel's per-CPU block). The load is inlined into every call site, as the
//!   thread-local one is; a call to a platform function per EBB call was measured at
//!   twice the hosted call's cost;
//! - otherwise, the platform defines `__sesa_ebb_current` (a per-CPU variable found
//!   however the platform finds it) and the linker resolves it; a missing definition is
//!   a link error, not a silent fallback.

use core::cell::Cell;

use crate::table::{CoreTable, Slot};

/// How many table slots live inside the per-thread binding itself (8 KiB). An id whose
/// index is below this is looked up at a fixed offset from the thread pointer, so its hit
/// path has the same chain of dependent loads as a plain thread-local pointer. The first
/// ids of a node (its system EBBs) get these; higher indices use the heap table.
pub(crate) const INLINE_SLOTS: usize = 512;

/// The heap part of the per-thread (per-core) binding: the translation table's slots for
/// indices from [`INLINE_SLOTS`] up, cached here so the hit path needs no pointer chase
/// through the table itself.
///
/// `slots` always points to `mask + 1` initialised slots, a power of two: the hit path
/// indexes with `index & mask` and needs no bounds check. An index beyond the table lands
/// on a slot whose tag cannot match (tags hold the full index), which is a miss.
#[derive(Clone, Copy)]
pub(crate) struct Binding {
    pub(crate) slots: *const Slot,
    pub(crate) mask: usize,
    pub(crate) table: *const CoreTable,
}

impl Binding {
    /// An unbound thread: one empty slot, so every lookup misses.
    pub(crate) const NONE: Binding = Binding {
        slots: &EMPTY_TABLE.0,
        mask: 0,
        table: core::ptr::null(),
    };
}

/// The one-slot table of unbound threads and of cores that have no rep yet.
pub(crate) struct EmptyTable(pub(crate) Slot);

// SAFETY: the empty table is never written (installs go to a core's own table), and its
// slot holds no pointer to anything (tag 0, null rep).
unsafe impl Sync for EmptyTable {}

pub(crate) static EMPTY_TABLE: EmptyTable = EmptyTable(Slot::EMPTY);

/// A table slot kept inside the binding (see [`INLINE_SLOTS`]).
pub(crate) struct InlineSlot {
    pub(crate) tag: Cell<u64>,
    pub(crate) rep: Cell<*const ()>,
}

/// Storage for one core's binding. Platforms without `std` define one per core and
/// return it from `__sesa_ebb_current`. All zeroes when unbound (so it costs no space in
/// an executable's data).
pub struct CurrentCore {
    pub(crate) binding: Cell<Binding>,
    pub(crate) inline: [InlineSlot; INLINE_SLOTS],
}

impl CurrentCore {
    /// An unbound core.
    pub const fn new() -> Self {
        CurrentCore {
            binding: Cell::new(Binding::NONE),
            inline: [const {
                InlineSlot {
                    tag: Cell::new(0),
                    rep: Cell::new(core::ptr::null()),
                }
            }; INLINE_SLOTS],
        }
    }
}

impl Default for CurrentCore {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(feature = "std", not(feature = "shuttle")))]
std::thread_local! {
    static CURRENT: CurrentCore = const { CurrentCore::new() };
}

#[cfg(feature = "shuttle")]
shuttle::thread_local! {
    static CURRENT: CurrentCore = CurrentCore::new();
}

#[cfg(feature = "std")]
#[inline(always)]
pub(crate) fn with<R>(f: impl FnOnce(&CurrentCore) -> R) -> R {
    CURRENT.with(f)
}

/// With feature `gs-current` (x86-64, without `std`): where the platform keeps the
/// address of the calling CPU's [`CurrentCore`], as an offset from the GS base. The
/// platform must store it before any EBB is used on that CPU and never change it while
/// the CPU runs code of this crate; the binding must live as long as the kernel and be
/// touched only by that CPU.
pub const GS_CURRENT: usize = 8;

#[cfg(all(feature = "gs-current", not(target_arch = "x86_64")))]
compile_error!("feature `gs-current` needs x86-64 (the binding is found through GS)");

#[cfg(all(not(feature = "std"), feature = "gs-current", target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn with<R>(f: impl FnOnce(&CurrentCore) -> R) -> R {
    let current: *const CurrentCore;
    // SAFETY: the platform's contract for `gs-current` (see `GS_CURRENT`): the word at
    // `gs:[GS_CURRENT]` is the address of the calling CPU's binding, which lives as
    // long as the kernel. The load touches nothing else (`readonly`), and gives the same
    // address every time on a CPU (`pure`: repeated loads may be merged; code here never
    // moves to another CPU between them, as loops are per core and non-preemptive).
    unsafe {
        core::arch::asm!(
            "mov {}, gs:[{slot}]",
            out(reg) current,
            slot = const GS_CURRENT,
            options(nostack, readonly, pure, preserves_flags),
        );
        f(&*current)
    }
}

#[cfg(all(not(feature = "std"), not(feature = "gs-current")))]
unsafe extern "Rust" {
    /// Defined by the native platform: the calling CPU's binding, valid for the life of
    /// the kernel and touched only by that CPU.
    fn __sesa_ebb_current() -> &'static CurrentCore;
}

#[cfg(all(not(feature = "std"), not(feature = "gs-current")))]
#[inline(always)]
pub(crate) fn with<R>(f: impl FnOnce(&CurrentCore) -> R) -> R {
    // SAFETY: the platform's contract for `__sesa_ebb_current` (see its declaration):
    // it returns the calling CPU's own binding, which lives as long as the kernel.
    f(unsafe { __sesa_ebb_current() })
}

#[inline(always)]
pub(crate) fn get() -> Binding {
    with(|c| c.binding.get())
}

pub(crate) fn set(binding: Binding) {
    with(|c| c.binding.set(binding))
}
