//! Ready-made roots for the common shapes of an EBB.
//!
//! - [`PerCore`]: a rep per core, created on that core by its first access; the root can
//!   enumerate them (the paper's distributed counter aggregates `val` this way).
//! - [`NodeShared`]: one rep per node, created by the first access on any core and mapped
//!   by every other core's miss.
//! - One central rep reached by function shipping needs the event layer; it is
//!   `sesa_event::Central`.
//! - Anything else: implement [`EbbRoot`] by hand.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::ptr;

use crate::sync::{AtomicPtr, Mutex, Ordering};
use crate::{CoreId, EbbError, EbbNode, EbbRef, EbbRoot, Install, MissContext, MissError};

type PerCoreInit<R> = Box<dyn Fn(CoreId) -> R + Send + Sync>;

/// A root whose every core gets its own rep, built on that core by its first access.
///
/// Reps are `Send + Sync` because the root enumerates them from any core (for
/// aggregation); each is written only by its own core if the EBB follows the
/// single-writer discipline (as the counter does with relaxed loads and stores), so a rep
/// never bounces between caches on the hot path. Put per-rep data that other cores read
/// in a [`CachePadded`](crossbeam_utils::CachePadded) so two cores' reps never share a
/// cache line.
///
/// ```
/// use sesa_ebb::{CoreId, EbbNode, NodeConfig, PerCore};
/// use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
///
/// let node = EbbNode::new(NodeConfig::with_cores(1));
/// let _core = node.bind(CoreId::new(0)).unwrap();
/// let (hits, root) = PerCore::create(|_core| AtomicU64::new(0)).unwrap();
/// hits.with(|rep| rep.fetch_add(1, Relaxed));
/// let total: u64 = root.reps().map(|(_core, rep)| rep.load(Relaxed)).sum();
/// assert_eq!(total, 1);
/// ```
pub struct PerCore<R> {
    /// `reps[c]` is set once, by core `c`'s miss (`Arc::into_raw`), and freed on drop.
    reps: Box<[AtomicPtr<R>]>,
    init: PerCoreInit<R>,
}

impl<R: Send + Sync + 'static> PerCore<R> {
    /// A root for `cores` cores, building each rep with `init(core)` on that core.
    pub fn new(cores: usize, init: impl Fn(CoreId) -> R + Send + Sync + 'static) -> Self {
        PerCore {
            reps: (0..cores)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
            init: Box::new(init),
        }
    }

    /// Creates a per-core EBB on the current core's node.
    ///
    /// # Errors
    /// [`EbbError::NotOnCore`] off a core, or [`EbbNode::create`]'s errors.
    pub fn create(
        init: impl Fn(CoreId) -> R + Send + Sync + 'static,
    ) -> Result<(EbbRef<R>, Arc<Self>), EbbError> {
        let node = EbbNode::current()?;
        Self::create_on(&node, init)
    }

    /// Creates a per-core EBB on `node`.
    ///
    /// # Errors
    /// As [`EbbNode::create`].
    pub fn create_on(
        node: &EbbNode,
        init: impl Fn(CoreId) -> R + Send + Sync + 'static,
    ) -> Result<(EbbRef<R>, Arc<Self>), EbbError> {
        let root = Arc::new(Self::new(node.cores(), init));
        let ebb = node.create_shared(root.clone())?;
        Ok((ebb, root))
    }

    /// The reps that exist so far, with their cores. A core that has not accessed the EBB
    /// has none (that is the point of lazy creation).
    pub fn reps(&self) -> impl Iterator<Item = (CoreId, &R)> + '_ {
        self.reps.iter().enumerate().filter_map(|(core, slot)| {
            let rep = slot.load(Ordering::Acquire);
            // SAFETY: a non-null slot holds an `Arc<R>` strong count owned by `self`,
            // released only in `Drop`, so the rep outlives this borrow of `self`.
            (!rep.is_null()).then(|| (CoreId::new(core as u32), unsafe { &*rep }))
        })
    }

    /// Core `core`'s rep, if that core has accessed the EBB.
    pub fn rep(&self, core: CoreId) -> Option<&R> {
        let rep = self.reps.get(core.index())?.load(Ordering::Acquire);
        // SAFETY: as in `reps`.
        (!rep.is_null()).then(|| unsafe { &*rep })
    }
}

impl<R: Send + Sync + 'static> EbbRoot for PerCore<R> {
    type Rep = R;

    fn miss(&self, cx: &MissContext<'_>) -> Result<Install<R>, MissError> {
        let slot = self.reps.get(cx.core().index()).ok_or_else(|| {
            MissError::new(alloc::format!(
                "per-core root was built for {} cores",
                self.reps.len()
            ))
        })?;
        let fresh = Arc::new((self.init)(cx.core()));
        let raw = Arc::into_raw(fresh.clone()) as *mut R;
        match slot.compare_exchange(ptr::null_mut(), raw, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(Install::shared(fresh)),
            Err(existing) => {
                // Only this core writes its slot, so this is a second table for the same
                // core (after an unbind and rebind): keep the rep it already had.
                // SAFETY: `raw` came from `Arc::into_raw` just above and was not published.
                drop(unsafe { Arc::from_raw(raw) });
                // SAFETY: `existing` holds a strong count owned by the root, which
                // outlives this call; we take one more for the table.
                let kept = unsafe {
                    Arc::increment_strong_count(existing);
                    Arc::from_raw(existing)
                };
                Ok(Install::shared(kept))
            }
        }
    }
}

impl<R> Drop for PerCore<R> {
    fn drop(&mut self) {
        for slot in self.reps.iter() {
            let rep = slot.swap(ptr::null_mut(), Ordering::AcqRel);
            if !rep.is_null() {
                // SAFETY: the slot's strong count, taken in `miss` with `Arc::into_raw`.
                drop(unsafe { Arc::from_raw(rep) });
            }
        }
    }
}

/// A root with one rep for the whole node, built by the first access on any core and
/// shared by every core's table.
///
/// `init` runs once, under the root's lock; it must not access this same EBB.
pub struct NodeShared<R> {
    rep: Mutex<Option<Arc<R>>>,
    init: Box<dyn Fn() -> R + Send + Sync>,
}

impl<R: Send + Sync + 'static> NodeShared<R> {
    /// A root building its rep with `init`.
    pub fn new(init: impl Fn() -> R + Send + Sync + 'static) -> Self {
        NodeShared {
            rep: Mutex::new(None),
            init: Box::new(init),
        }
    }

    /// Creates a node-shared EBB on the current core's node.
    ///
    /// # Errors
    /// [`EbbError::NotOnCore`] off a core, or [`EbbNode::create`]'s errors.
    pub fn create(
        init: impl Fn() -> R + Send + Sync + 'static,
    ) -> Result<(EbbRef<R>, Arc<Self>), EbbError> {
        let node = EbbNode::current()?;
        let root = Arc::new(Self::new(init));
        let ebb = node.create_shared(root.clone())?;
        Ok((ebb, root))
    }

    /// The rep, if some core has accessed the EBB.
    pub fn rep(&self) -> Option<Arc<R>> {
        self.rep.lock().clone()
    }
}

impl<R: Send + Sync + 'static> EbbRoot for NodeShared<R> {
    type Rep = R;

    fn miss(&self, _cx: &MissContext<'_>) -> Result<Install<R>, MissError> {
        let rep = self
            .rep
            .lock()
            .get_or_insert_with(|| Arc::new((self.init)()))
            .clone();
        Ok(Install::shared(rep))
    }
}
