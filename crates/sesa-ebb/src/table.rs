//! The per-core translation table: `EbbId index -> this core's rep`.
//!
//! # Who touches what
//! A table belongs to exactly one core and is touched only by the thread bound to that
//! core (a [`CoreBinding`] is `!Send`), so it needs no atomics and no locks:
//! - the **hit path** ([`lookup`]) reads `slots[index]` through the pointer cached in the
//!   thread's binding and compares the slot's tag with the full id;
//! - the **miss path** ([`miss`]) asks the node's id map for the root, runs the EBB's
//!   miss handler (user code, which may itself miss), then installs the result;
//! - **reclamation** ([`CoreTable::reclaim`]) clears the slots of destroyed EBBs and drops
//!   their reps, only at a quiescent point (between events).
//!
//! Invariant (kept on in release builds): a slot is either empty (tag 0) or holds the rep
//! of the live-or-dying EBB whose *full* id is the tag. The id map reuses an index only
//! after every core has cleared it, so installing never overwrites another EBB's rep.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::TypeId;
use core::cell::{Cell, UnsafeCell};
use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use crate::current::{self, Binding};
use crate::root::{Erased, MissContext, Owner};
use crate::{CoreId, EbbError, EbbId, EbbNode};

/// One entry of a translation table. `repr(C)` and 16 bytes: tag and rep share a cache
/// line, so a hit touches one line of the table.
#[repr(C)]
pub(crate) struct Slot {
    /// The raw id of the EBB whose rep this is, or 0 if the slot is empty.
    pub(crate) tag: u64,
    pub(crate) rep: *const (),
}

impl Slot {
    pub(crate) const EMPTY: Slot = Slot {
        tag: 0,
        rep: core::ptr::null(),
    };
}

/// The hit path: this core's rep for `id`, if it has one. One slot load and one
/// compare-and-branch (plus one predictable branch choosing the inline or heap part).
#[inline(always)]
pub(crate) fn lookup(id: EbbId) -> Option<NonNull<()>> {
    current::with(|cur| {
        let index = id.index() as usize;
        let (tag, rep) = match cur.inline.get(index) {
            Some(slot) => (slot.tag.get(), slot.rep.get()),
            None => {
                let binding = cur.binding.get();
                // SAFETY: `slots` points to `mask + 1` initialised slots (this thread's
                // heap table, or the static empty one); the binding is updated whenever
                // the table reallocates, and only this thread touches the table.
                let slot = unsafe { &*binding.slots.add(index & binding.mask) };
                (slot.tag, slot.rep)
            }
        };
        if tag == id.raw() {
            // SAFETY: a slot's tag is non-zero (it equals an id) only while `rep` holds
            // the non-null pointer `install` stored with it.
            return Some(unsafe { NonNull::new_unchecked(rep as *mut ()) });
        }
        None
    })
}

/// The miss path: runs the EBB's miss handler on this core and caches what it installs.
#[cold]
#[inline(never)]
pub(crate) fn miss(
    id: EbbId,
    rep_type: TypeId,
    rep_name: &'static str,
) -> Result<NonNull<()>, EbbError> {
    let binding = current::get();
    if binding.table.is_null() {
        return Err(EbbError::NotOnCore);
    }
    // SAFETY: a non-null `table` in the binding points to the table of the
    // `CoreBinding` that set it, which clears the binding before it drops the table.
    let table = unsafe { &*binding.table };
    table.miss(id, rep_type, rep_name)
}

/// The translation table of one core of one node.
pub(crate) struct CoreTable {
    node: Arc<EbbNode>,
    core: CoreId,
    slots: UnsafeCell<Vec<Slot>>,
    /// Parallel to `slots`: how to drop each installed rep. Kept apart so the hit path's
    /// slots stay 16 bytes.
    owners: UnsafeCell<Vec<Option<Owner>>>,
    /// The newest destruction this core has processed (see `map`'s protocol).
    acked: Cell<u64>,
    /// One past the highest inline slot ever installed: what parking saves and restores.
    inline_used: Cell<usize>,
}

impl CoreTable {
    fn binding(&self) -> Binding {
        // SAFETY: only the owning thread touches `slots`, and not re-entrantly here.
        let slots = unsafe { &*self.slots.get() };
        debug_assert!(slots.is_empty() || slots.len().is_power_of_two());
        match slots.len() {
            0 => Binding {
                table: self,
                ..Binding::NONE
            },
            len => Binding {
                slots: slots.as_ptr(),
                mask: len - 1,
                table: self,
            },
        }
    }

    fn miss(
        &self,
        id: EbbId,
        rep_type: TypeId,
        rep_name: &'static str,
    ) -> Result<NonNull<()>, EbbError> {
        let live = self.node.map.live(id)?;
        if live.rep_type != rep_type {
            return Err(EbbError::TypeMismatch {
                id,
                requested: rep_name,
                actual: live.root.rep_type_name(),
            });
        }
        let cx = MissContext {
            id,
            core: self.core,
            node: &self.node,
        };
        // The map lock is not held here: the handler is user code and may miss again.
        let erased = live
            .root
            .miss_erased(&cx)
            .map_err(|source| EbbError::MissRefused {
                id,
                core: self.core,
                source,
            })?;
        Ok(self.install(id, erased))
    }

    fn install(&self, id: EbbId, erased: Erased) -> NonNull<()> {
        // A nested access (the handler touching this same EBB) may have installed a rep
        // already; the first install wins and ours is dropped, as in a race between cores.
        if let Some(rep) = lookup(id) {
            erased.owner.release();
            return rep;
        }
        let index = id.index() as usize;
        self.set_slot(index, id.raw(), erased.ptr.as_ptr());
        {
            // SAFETY: only this thread touches the table, and no reference into `owners`
            // is live.
            let owners = unsafe { &mut *self.owners.get() };
            if index >= owners.len() {
                owners.resize_with((index + 1).next_power_of_two().max(64), || None);
            }
            owners[index] = Some(erased.owner);
        }
        erased.ptr
    }

    /// This core's slot `index`: its tag (0 if empty) and rep.
    fn slot(&self, index: usize) -> (u64, *const ()) {
        current::with(|cur| match cur.inline.get(index) {
            Some(slot) => (slot.tag.get(), slot.rep.get()),
            None => {
                // SAFETY: only this thread touches the table; no reference into it is live.
                let slots = unsafe { &*self.slots.get() };
                slots
                    .get(index)
                    .map_or((0, ptr::null()), |s| (s.tag, s.rep))
            }
        })
    }

    /// Writes slot `index`: installs `(tag, rep)`, or empties it with `(0, null)`.
    fn set_slot(&self, index: usize, tag: u64, rep: *const ()) {
        let installing = tag != 0;
        if installing {
            assert_eq!(
                self.slot(index).0,
                0,
                "translation table invariant broken: ebb {tag:#x} installs over another EBB's rep"
            );
        }
        let inline = current::with(|cur| match cur.inline.get(index) {
            Some(slot) => {
                slot.tag.set(tag);
                slot.rep.set(rep);
                true
            }
            None => false,
        });
        if inline {
            if installing && index >= self.inline_used.get() {
                self.inline_used.set(index + 1);
            }
            return;
        }
        // SAFETY: only this thread touches the table, and no reference into `slots` is
        // live: the hit path copies what it needs and lets go.
        let slots = unsafe { &mut *self.slots.get() };
        if index >= slots.len() {
            if !installing {
                return;
            }
            // Always a power of two: the hit path masks instead of bounds-checking.
            slots.resize_with((index + 1).next_power_of_two().max(64), || Slot::EMPTY);
        }
        slots[index] = Slot { tag, rep };
        current::set(self.binding());
    }

    /// Processes destructions this core has not seen: clears their slots and drops their
    /// reps here. Returns how many reps were dropped.
    ///
    /// # Safety
    /// Must be called at a quiescent point of this core: no rep borrowed through
    /// [`EbbRef::with`](crate::EbbRef::with) may be live on this thread.
    pub(crate) unsafe fn reclaim(&self) -> usize {
        if self.node.map.epoch() == self.acked.get() {
            return 0;
        }
        let (work, mark) = self.node.map.acknowledge(self.acked.get());
        self.acked.set(mark);
        let mut dropped = Vec::new();
        for item in &work {
            let index = item.id.index() as usize;
            if self.slot(index).0 == item.id.raw() {
                self.set_slot(index, 0, ptr::null());
                // SAFETY: only this thread touches the table; no reference into it is live.
                let owners = unsafe { &mut *self.owners.get() };
                dropped.extend(owners[index].take());
            }
        }
        // Every slot is cleared before any rep's `Drop` (user code) runs: a drop may touch
        // a new EBB that already reuses one of these indices.
        let count = dropped.len();
        for owner in dropped {
            owner.release();
        }
        // Roots of EBBs this core finished last go after their reps (a root may own data
        // its reps point into).
        let roots: Vec<_> = work.into_iter().filter_map(|w| w.root).collect();
        drop(roots);
        count
    }

    /// Drops every rep this core holds, for unbinding. Reps whose `Drop` misses on other
    /// EBBs get those installed again; a few passes empty the table.
    fn clear(&self) {
        for _ in 0..16 {
            let dropped: Vec<Owner> = {
                // SAFETY: only this thread touches the table; no reference into it is live.
                let owners = unsafe { &mut *self.owners.get() };
                let dropped: Vec<Owner> = owners.iter_mut().filter_map(Option::take).collect();
                current::with(|cur| {
                    for slot in &cur.inline {
                        slot.tag.set(0);
                        slot.rep.set(ptr::null());
                    }
                });
                // SAFETY: as above.
                let slots = unsafe { &mut *self.slots.get() };
                slots.iter_mut().for_each(|s| *s = Slot::EMPTY);
                dropped
            };
            if dropped.is_empty() {
                return;
            }
            dropped.into_iter().for_each(Owner::release);
        }
    }
}

/// This thread's claim on one core of a node: while it lives, EBB accesses on this thread
/// use that core's translation table.
///
/// Not `Send`: a core's table must only ever be used by one thread, which is what lets
/// the hit path go without atomics. Dropping the binding drops every rep the core holds
/// (on this thread) and frees the core for another binding.
pub struct CoreBinding {
    table: alloc::boxed::Box<CoreTable>,
    _not_send: PhantomData<*const ()>,
}

impl CoreBinding {
    pub(crate) fn new(node: Arc<EbbNode>, core: CoreId) -> Result<Self, EbbError> {
        if !current::get().table.is_null() {
            return Err(EbbError::Bind {
                core,
                why: "this thread is already bound to a core",
            });
        }
        node.claim_core(core)?;
        let table = alloc::boxed::Box::new(CoreTable {
            node,
            core,
            slots: UnsafeCell::new(Vec::new()),
            owners: UnsafeCell::new(Vec::new()),
            acked: Cell::new(0),
            inline_used: Cell::new(0),
        });
        current::set(table.binding());
        Ok(CoreBinding {
            table,
            _not_send: PhantomData,
        })
    }

    /// The core this binding claims.
    pub fn core(&self) -> CoreId {
        self.table.core
    }

    /// The node.
    pub fn node(&self) -> &Arc<EbbNode> {
        &self.table.node
    }

    /// Takes this core off the calling thread, keeping its reps, so that the thread can
    /// bind another core (of this node or another) and come back to this one later with
    /// [`ParkedCore::unpark`]. This is how a platform multiplexes many cores on one
    /// thread (the deterministic simulator runs whole clusters on one).
    ///
    /// Call it only at a quiescent point of the core: no rep of it may be lent out
    /// ([`EbbRef::with`](crate::EbbRef::with) cannot be on the stack), which holds
    /// between events.
    #[allow(unsafe_code)] // moving the table out of a type with a destructor
    pub fn park(self) -> ParkedCore {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so the table is moved, not
        // duplicated.
        let table = unsafe { ptr::read(&this.table) };
        let used = table.inline_used.get();
        let inline = current::with(|cur| {
            cur.inline[..used]
                .iter()
                .map(|slot| (slot.tag.replace(0), slot.rep.replace(ptr::null())))
                .collect()
        });
        current::set(Binding::NONE);
        ParkedCore {
            table: Some(table),
            inline,
        }
    }
}

/// A core taken off its thread by [`CoreBinding::park`], with its reps.
///
/// Not `Send`, like the binding: it comes back on the thread that parked it. Dropping it
/// binds it again to drop its reps (their destructors may use the object model), which
/// needs the thread to be unbound; on a bound thread its reps are leaked instead, and
/// the core stays claimed.
pub struct ParkedCore {
    table: Option<alloc::boxed::Box<CoreTable>>,
    /// The inline part of the table (see `current::INLINE_SLOTS`) up to its highest
    /// used slot: (tag, rep).
    inline: Vec<(u64, *const ())>,
}

impl ParkedCore {
    /// The core.
    pub fn core(&self) -> CoreId {
        self.table.as_ref().map_or(CoreId::new(0), |t| t.core)
    }

    /// Binds the core to the calling thread again, as it was when parked.
    ///
    /// # Errors
    /// The thread is bound to a core already (the parked core is handed back).
    pub fn unpark(mut self) -> Result<CoreBinding, (ParkedCore, EbbError)> {
        if !current::get().table.is_null() {
            let core = self.core();
            return Err((
                self,
                EbbError::Bind {
                    core,
                    why: "this thread is already bound to a core",
                },
            ));
        }
        let table = self
            .table
            .take()
            .expect("a parked core holds its table until unparked or dropped");
        current::with(|cur| {
            for (slot, &(tag, rep)) in cur.inline.iter().zip(&self.inline) {
                slot.tag.set(tag);
                slot.rep.set(rep);
            }
        });
        current::set(table.binding());
        Ok(CoreBinding {
            table,
            _not_send: PhantomData,
        })
    }
}

impl Drop for ParkedCore {
    fn drop(&mut self) {
        let Some(table) = self.table.take() else {
            return;
        };
        let parked = ParkedCore {
            table: Some(table),
            inline: core::mem::take(&mut self.inline),
        };
        match parked.unpark() {
            Ok(binding) => drop(binding),
            Err((mut parked, _)) => {
                // Dropping reps needs the core bound; without that, leaking them is the
                // safe choice (a rep freed while another core's binding points at its
                // slots would be worse).
                if let Some(table) = parked.table.take() {
                    core::mem::forget(table);
                }
            }
        }
    }
}

impl Drop for CoreBinding {
    fn drop(&mut self) {
        self.table.clear();
        current::set(Binding::NONE);
        self.table.node.release_core(self.table.core);
    }
}

/// The current core's table, if this thread is bound.
pub(crate) fn current_table<'a>() -> Option<&'a CoreTable> {
    let binding = current::get();
    // SAFETY: as in `miss`: the binding's table outlives the binding. The returned
    // reference is only used within the caller's call frame on this thread.
    (!binding.table.is_null()).then(|| unsafe { &*binding.table })
}

impl CoreTable {
    pub(crate) fn node(&self) -> &Arc<EbbNode> {
        &self.node
    }

    pub(crate) fn core(&self) -> CoreId {
        self.core
    }

    /// How many reps this core holds.
    pub(crate) fn reps(&self) -> usize {
        // SAFETY: only this thread touches the table; no reference into it is live.
        let owners = unsafe { &*self.owners.get() };
        owners.iter().filter(|o| o.is_some()).count()
    }
}
