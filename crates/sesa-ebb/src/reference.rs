//! `EbbRef<T>`: the typed, `Copy` name of an EBB through which its reps are reached.

use alloc::sync::Arc;
use core::any::TypeId;
use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;

use crate::table::{self, lookup};
use crate::{EbbError, EbbId, EbbNode, EbbRoot};

/// A reference to an EBB whose reps are of type `T`.
///
/// It is only a name (an [`EbbId`] and a type): `Copy`, `Send` and `Sync` whatever `T`
/// is, so it can be stored anywhere and shipped to other cores and nodes. What it names
/// depends on where it is used: [`EbbRef::with`] on a core lends *that core's* rep.
///
/// Every `EbbRef<T>` was checked against the type its EBB was created with (by
/// [`EbbNode::create`] or [`EbbNode::lookup`]), and an id is never reused for another
/// EBB (the generation changes), so the hit path needs no type check.
pub struct EbbRef<T> {
    id: EbbId,
    _rep: PhantomData<fn() -> T>,
}

impl<T: 'static> EbbRef<T> {
    /// Only for ids whose EBB was created (or looked up) with rep type `T`.
    pub(crate) fn new_checked(id: EbbId) -> Self {
        EbbRef {
            id,
            _rep: PhantomData,
        }
    }

    /// The EBB's id.
    pub fn id(self) -> EbbId {
        self.id
    }

    /// Calls `f` with this core's rep, creating it through the EBB's miss handler on the
    /// first access at this core.
    ///
    /// On a hit this costs, beyond calling `f` on a plain reference: one slot load from the
    /// core's thread-local binding and two predictable branches (inline or heap part, and
    /// the tag compare). `docs/benchmarks.md` has the measured cost.
    ///
    /// # Why a closure
    /// The rep is lent for the duration of `f` only. `f` must accept a reference of *any*
    /// lifetime, so it can neither return it nor store it anywhere that outlives the call:
    /// the compiler rejects both. Since `f` is synchronous it cannot hold the rep across an
    /// `.await` either, so the borrow ends before the event that took it does — which is
    /// what lets a core drop reps of destroyed EBBs between events without reference
    /// counts on the call path. And a rep that is not `Sync` can never be seen by another
    /// thread, because the only way to reach it is from its own core's table.
    ///
    /// ```compile_fail
    /// # use sesa_ebb::*;
    /// # let node = EbbNode::new(NodeConfig::with_cores(1));
    /// # let _core = node.bind(CoreId::new(0)).unwrap();
    /// let (ebb, _root) = PerCore::create(|_core| 5u64).unwrap();
    /// let escaped: &u64 = ebb.with(|rep| rep); // error: the borrow cannot leave `with`
    /// ```
    ///
    /// ```compile_fail
    /// # use sesa_ebb::*;
    /// # let node = EbbNode::new(NodeConfig::with_cores(1));
    /// # let _core = node.bind(CoreId::new(0)).unwrap();
    /// let (ebb, _root) = PerCore::create(|_core| 5u64).unwrap();
    /// let mut stash: Option<&u64> = None;
    /// ebb.with(|rep| stash = Some(rep)); // error: nor be stored outside it
    /// ```
    ///
    /// # Panics
    /// If the access misses and the miss fails (see [`EbbRef::try_with`] for the errors);
    /// use `try_with` where a miss can legitimately fail.
    #[inline(always)]
    #[track_caller]
    pub fn with<R>(self, f: impl FnOnce(&T) -> R) -> R {
        match lookup(self.id) {
            // SAFETY: see `lend`.
            Some(rep) => f(unsafe { lend(rep) }),
            None => self.with_after_miss(f),
        }
    }

    /// Like [`EbbRef::with`], returning the miss's error instead of panicking.
    ///
    /// # Errors
    /// [`EbbError::NotOnCore`] off a core; [`EbbError::NoSuchEbb`] if the EBB was
    /// destroyed; [`EbbError::MissRefused`] if its miss handler refused this core.
    #[inline(always)]
    pub fn try_with<R>(self, f: impl FnOnce(&T) -> R) -> Result<R, EbbError> {
        match lookup(self.id) {
            // SAFETY: see `lend`.
            Some(rep) => Ok(f(unsafe { lend(rep) })),
            None => self.try_with_after_miss(f),
        }
    }

    // The miss paths live in their own cold functions so the hit path stays a leaf with
    // no stack frame: measured, the inlined miss call's frame alone cost ~20% of a call.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn with_after_miss<R>(self, f: impl FnOnce(&T) -> R) -> R {
        match self.try_with_after_miss(f) {
            Ok(result) => result,
            Err(error) => access_failed(self.id, error),
        }
    }

    #[cold]
    #[inline(never)]
    fn try_with_after_miss<R>(self, f: impl FnOnce(&T) -> R) -> Result<R, EbbError> {
        let rep = table::miss(self.id, TypeId::of::<T>(), core::any::type_name::<T>())?;
        // SAFETY: see `lend`.
        Ok(f(unsafe { lend(rep) }))
    }

    /// Destroys the EBB on the current core's node (see [`EbbNode::destroy`]).
    ///
    /// # Errors
    /// [`EbbError::NotOnCore`] off a core; [`EbbError::NoSuchEbb`] if already destroyed.
    pub fn destroy(self) -> Result<(), EbbError> {
        EbbNode::current()?.destroy(self.id)
    }

    /// The EBB's root, as its concrete type, from the current core's node.
    ///
    /// # Errors
    /// [`EbbError::NotOnCore`], [`EbbError::NoSuchEbb`] or [`EbbError::RootTypeMismatch`].
    pub fn root<R: EbbRoot<Rep = T>>(self) -> Result<Arc<R>, EbbError> {
        EbbNode::current()?.root(self.id)
    }
}

/// Lends a rep found in this core's table for `id` as a `&T`.
///
/// # Safety
/// `rep` must come from this core's translation table slot for an `EbbRef<T>`'s id (a
/// hit, or the install of a miss), and the reference must not outlive the call of the
/// closure it is passed to. Then: the slot is tagged with this exact id, so it was
/// filled by a miss on this core for this EBB, whose rep type was checked to be `T` (an
/// `EbbRef<T>` exists only for ids created with rep type `T`, and ids are never reused).
/// The rep stays alive until this core reclaims the slot, which happens only at a
/// quiescent point, never while the closure runs; the closure's higher-ranked signature
/// keeps the borrow from outliving the call.
#[inline(always)]
unsafe fn lend<'a, T>(rep: core::ptr::NonNull<()>) -> &'a T {
    // SAFETY: forwarded from this function's contract.
    unsafe { rep.cast::<T>().as_ref() }
}

#[cold]
#[inline(never)]
#[track_caller]
fn access_failed(id: EbbId, error: EbbError) -> ! {
    panic!("access to {id} failed: {error}")
}

impl<T> Clone for EbbRef<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for EbbRef<T> {}

impl<T> PartialEq for EbbRef<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<T> Eq for EbbRef<T> {}

impl<T> Hash for EbbRef<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

impl<T> fmt::Debug for EbbRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EbbRef<{}>({})", core::any::type_name::<T>(), self.id)
    }
}
