//! Which core is this? The one thing the object model needs from below.
//!
//! The fast path of every EBB call reads the current core's translation table through
//! this binding, so it must cost what a thread-local read costs and no more:
//! - with feature `std`, a `const`-initialised `thread_local!` (one `fs:`-relative load
//!   on x86-64 Linux, no lazy-initialisation check);
//! - without it, the platform defines `__sesa_ebb_current` (a per-CPU variable on the
//!   native kernel) and the linker resolves it; a missing definition is a link error,
//!   not a silent fallback.

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

#[cfg(not(feature = "std"))]
unsafe extern "Rust" {
    /// Defined by the native platform: the calling CPU's binding, valid for the life of
    /// the kernel and touched only by that CPU.
    fn __sesa_ebb_current() -> &'static CurrentCore;
}

#[cfg(not(feature = "std"))]
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
