//! Roots and miss handlers: how an EBB decides what each location gets.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::any::Any;
use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::{CoreId, EbbId, EbbNode, MissError};

/// The node-wide part of an EBB: it outlives every rep and answers access misses.
///
/// A root is shared by all cores of a node (hence `Send + Sync`); reps need not be. The
/// first time an EBB is accessed on a core, the runtime calls [`EbbRoot::miss`] *on that
/// core*; what the handler returns is cached in the core's translation table, so later
/// accesses on the core are a table hit and never reach the root again (until the EBB is
/// destroyed).
///
/// The handler may build a new rep for this core ([`Install::local`]), map a rep that
/// other cores share ([`Install::shared`]), install a forwarding rep (a `local` rep whose
/// methods ship work elsewhere, as [`sesa_event`'s `Central`] does), or refuse with a
/// [`MissError`], which the caller sees as [`EbbError::MissRefused`](crate::EbbError).
///
/// # Re-entrancy
/// A handler may access other EBBs, and even this EBB (the nested access misses again;
/// the first install wins and the other candidate is dropped). It must not block.
///
/// [`sesa_event`'s `Central`]: https://docs.rs/sesa-event
pub trait EbbRoot: Send + Sync + 'static {
    /// The type of this EBB's reps: what [`EbbRef::with`](crate::EbbRef::with) lends.
    type Rep: 'static;

    /// Decides what core `cx.core()` gets for this EBB. Runs on that core.
    fn miss(&self, cx: &MissContext<'_>) -> Result<Install<Self::Rep>, MissError>;
}

/// Where an access missed.
pub struct MissContext<'a> {
    pub(crate) id: EbbId,
    pub(crate) core: CoreId,
    pub(crate) node: &'a EbbNode,
}

impl MissContext<'_> {
    /// The EBB that missed.
    pub fn id(&self) -> EbbId {
        self.id
    }

    /// The core the access came from (and on which the handler runs).
    pub fn core(&self) -> CoreId {
        self.core
    }

    /// How many cores the node has.
    pub fn cores(&self) -> usize {
        self.node.cores()
    }

    /// The node.
    pub fn node(&self) -> &EbbNode {
        self.node
    }
}

/// What a miss handler installs in the missing core's translation table.
///
/// The table keeps the rep alive until the EBB is destroyed, and drops it *on this core*
/// (so a `local` rep may be `!Send`).
pub struct Install<T> {
    pub(crate) ptr: NonNull<()>,
    pub(crate) owner: Owner,
    _rep: PhantomData<*const T>,
}

/// Ownership of an installed rep, type-erased so one table holds reps of every type.
pub(crate) struct Owner {
    ptr: NonNull<()>,
    drop: unsafe fn(NonNull<()>),
}

impl Owner {
    /// Drops the rep this owner holds.
    pub(crate) fn release(self) {
        // SAFETY: `ptr` and `drop` were paired by `Install::local`/`Install::shared`, and
        // an `Owner` is consumed exactly once (it is not `Clone`).
        unsafe { (self.drop)(self.ptr) }
    }
}

impl<T: 'static> Install<T> {
    /// A rep for this core alone, owned by the core's table.
    pub fn local(rep: Box<T>) -> Self {
        unsafe fn drop_box<T>(ptr: NonNull<()>) {
            // SAFETY: `ptr` came from `Box::into_raw` of a `Box<T>` in `Install::local`,
            // and the owner releases it once.
            drop(unsafe { Box::from_raw(ptr.as_ptr() as *mut T) })
        }
        let ptr = NonNull::from(Box::leak(rep)).cast::<()>();
        Install {
            ptr,
            owner: Owner {
                ptr,
                drop: drop_box::<T>,
            },
            _rep: PhantomData,
        }
    }
}

impl<T: Send + Sync + 'static> Install<T> {
    /// A rep shared with other cores (or kept by the root); this core's table holds one
    /// reference to it.
    pub fn shared(rep: Arc<T>) -> Self {
        unsafe fn drop_arc<T>(ptr: NonNull<()>) {
            // SAFETY: `ptr` came from `Arc::into_raw` in `Install::shared` and the owner
            // releases that one strong count once.
            drop(unsafe { Arc::from_raw(ptr.as_ptr() as *const T) })
        }
        // SAFETY: `Arc::into_raw` never returns null.
        let ptr = unsafe { NonNull::new_unchecked(Arc::into_raw(rep) as *mut ()) };
        Install {
            ptr,
            owner: Owner {
                ptr,
                drop: drop_arc::<T>,
            },
            _rep: PhantomData,
        }
    }
}

/// An installed rep without its type: what the table stores.
pub(crate) struct Erased {
    pub(crate) ptr: NonNull<()>,
    pub(crate) owner: Owner,
}

/// The object-safe face of [`EbbRoot`], stored in the id map.
pub(crate) trait ErasedRoot: Any + Send + Sync {
    fn miss_erased(&self, cx: &MissContext<'_>) -> Result<Erased, MissError>;
    fn rep_type_name(&self) -> &'static str;
}

impl<R: EbbRoot> ErasedRoot for R {
    fn miss_erased(&self, cx: &MissContext<'_>) -> Result<Erased, MissError> {
        let install = self.miss(cx)?;
        Ok(Erased {
            ptr: install.ptr,
            owner: install.owner,
        })
    }

    fn rep_type_name(&self) -> &'static str {
        core::any::type_name::<R::Rep>()
    }
}
