//! A node's object-model state: its cores and its id map.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::any::{Any, TypeId};

use crate::map::{Live, LocalIdMap};
use crate::sync::{AtomicBool, Ordering};
use crate::table::{self, CoreBinding};
use crate::{CoreId, EbbError, EbbId, EbbRef, EbbRoot};

/// Sizes of a node's object model. Every limit is explicit.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// How many cores the node has (each bound by one thread).
    pub cores: usize,
    /// How many EBBs may be live or awaiting reclamation at once; creating one more fails
    /// with [`EbbError::IdsExhausted`].
    pub ebbs_max: usize,
}

impl NodeConfig {
    /// A node with `cores` cores and the default EBB limit (1,048,576).
    pub fn with_cores(cores: usize) -> Self {
        NodeConfig {
            cores,
            ebbs_max: 1 << 20,
        }
    }
}

/// One node of an application, as the object model sees it: a fixed set of cores, each
/// with its translation table (bound by a thread), and the node-local id map of roots.
pub struct EbbNode {
    pub(crate) map: LocalIdMap,
    cores: usize,
    bound: Box<[AtomicBool]>,
}

impl EbbNode {
    /// A node with no EBBs yet.
    ///
    /// # Panics
    /// If `config.cores` is 0 or above `u32::MAX`.
    pub fn new(config: NodeConfig) -> Arc<Self> {
        assert!(
            config.cores > 0 && u32::try_from(config.cores).is_ok(),
            "a node needs 1..=u32::MAX cores, not {}",
            config.cores
        );
        Arc::new(EbbNode {
            map: LocalIdMap::new(config.ebbs_max),
            cores: config.cores,
            bound: (0..config.cores).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    /// The node the calling thread's core belongs to.
    ///
    /// # Errors
    /// [`EbbError::NotOnCore`] if the thread is not bound.
    pub fn current() -> Result<Arc<EbbNode>, EbbError> {
        table::current_table()
            .map(|t| t.node().clone())
            .ok_or(EbbError::NotOnCore)
    }

    /// How many cores the node has.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// Binds the calling thread to `core`: from now on EBB accesses on this thread use
    /// that core's translation table.
    ///
    /// # Errors
    /// [`EbbError::Bind`] if `core` is out of range, already bound, or this thread is
    /// already bound.
    pub fn bind(self: &Arc<Self>, core: CoreId) -> Result<CoreBinding, EbbError> {
        CoreBinding::new(self.clone(), core)
    }

    pub(crate) fn claim_core(&self, core: CoreId) -> Result<(), EbbError> {
        let flag = self.bound.get(core.index()).ok_or(EbbError::Bind {
            core,
            why: "no such core on this node",
        })?;
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(|_| EbbError::Bind {
                core,
                why: "already bound to another thread",
            })
    }

    pub(crate) fn release_core(&self, core: CoreId) {
        self.bound[core.index()].store(false, Ordering::Release);
    }

    /// Creates an EBB with this root. No rep exists until the first access on some core.
    /// Allocating the id takes the node's map lock and nothing else: no round trip.
    ///
    /// # Errors
    /// [`EbbError::IdsExhausted`] when the node is at `ebbs_max`.
    pub fn create<R: EbbRoot>(&self, root: R) -> Result<EbbRef<R::Rep>, EbbError> {
        self.create_shared(Arc::new(root))
    }

    /// Like [`EbbNode::create`], for a root the caller keeps a handle to (to aggregate
    /// over its reps, say).
    ///
    /// # Errors
    /// As [`EbbNode::create`].
    pub fn create_shared<R: EbbRoot>(&self, root: Arc<R>) -> Result<EbbRef<R::Rep>, EbbError> {
        let id = self.map.insert(Live {
            root,
            rep_type: TypeId::of::<R::Rep>(),
        })?;
        Ok(EbbRef::new_checked(id))
    }

    /// Creates a *static* EBB: its id is [`EbbId::static_id`]`(index)`, the same on every
    /// node, so other nodes can address it without being told (a system service such as
    /// a frontend's registry). `index` must be below
    /// [`STATIC_INDICES`](crate::STATIC_INDICES) and unclaimed on this node.
    ///
    /// # Errors
    /// [`EbbError::StaticIdUnavailable`].
    pub fn create_static<R: EbbRoot>(
        &self,
        index: u32,
        root: Arc<R>,
    ) -> Result<EbbRef<R::Rep>, EbbError> {
        let id = self.map.insert_static(
            index,
            Live {
                root,
                rep_type: TypeId::of::<R::Rep>(),
            },
        )?;
        Ok(EbbRef::new_checked(id))
    }

    /// A typed reference to the live EBB `id`, checked against the type it was created
    /// with.
    ///
    /// # Errors
    /// [`EbbError::NoSuchEbb`] or [`EbbError::TypeMismatch`].
    pub fn lookup<T: 'static>(&self, id: EbbId) -> Result<EbbRef<T>, EbbError> {
        let live = self.map.live(id)?;
        if live.rep_type != TypeId::of::<T>() {
            return Err(EbbError::TypeMismatch {
                id,
                requested: core::any::type_name::<T>(),
                actual: live.root.rep_type_name(),
            });
        }
        Ok(EbbRef::new_checked(id))
    }

    /// The root of the live EBB `id`, as its concrete type.
    ///
    /// # Errors
    /// [`EbbError::NoSuchEbb`] or [`EbbError::RootTypeMismatch`].
    pub fn root<R: EbbRoot>(&self, id: EbbId) -> Result<Arc<R>, EbbError> {
        let root: Arc<dyn Any + Send + Sync> = self.map.live(id)?.root;
        root.downcast::<R>()
            .map_err(|_| EbbError::RootTypeMismatch {
                id,
                requested: core::any::type_name::<R>(),
            })
    }

    /// Destroys `id`: no core can install a rep for it any more, and each core drops the
    /// reps it has at its next quiescent point. When the last core has, the index is free
    /// for a new EBB with a new generation, and the root is dropped.
    ///
    /// Like an RCU removal, this returns before the reps are gone: an access racing with
    /// it, or made on a core before that core's next quiescent point, may still reach the
    /// rep that core already had. After every core has passed a quiescent point (the
    /// platform's `destroy` waits for exactly that), no access reaches it again.
    ///
    /// References to the destroyed EBB stay `Copy`-able and harmless: accessing through
    /// them fails with [`EbbError::NoSuchEbb`]; they never reach a later EBB's reps.
    ///
    /// # Errors
    /// [`EbbError::NoSuchEbb`] if `id` is not live.
    pub fn destroy(&self, id: EbbId) -> Result<(), EbbError> {
        self.map.destroy(id, self.cores)
    }

    /// How many EBBs are live.
    pub fn live_ebbs(&self) -> usize {
        self.map.live_count()
    }

    /// How many destroyed EBBs still wait for some core to drop its reps.
    pub fn dying_ebbs(&self) -> usize {
        self.map.dying_count()
    }
}
