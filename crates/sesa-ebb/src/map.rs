//! The node-local id map: `EbbId -> root`, and the lifecycle of ids.
//!
//! # Protocol (who touches what, and when)
//! An index moves through three states, always under the map's lock:
//!
//! ```text
//!            create                 destroy               last core reclaims
//!   Free ─────────────▶ Live ─────────────────▶ Dying ──────────────────────▶ Free
//!   (generation g)     (id = index.g)         (seq = s,                    (generation g+1)
//!                                              pending = cores)
//! ```
//!
//! - *Live*: misses on any core may look the root up and install reps.
//! - *Dying*: new misses fail with `NoSuchEbb`; reps already installed stay usable until
//!   their core next reaches a quiescent point (between events), where
//!   [`CoreTable::reclaim`](crate::table::CoreTable) clears its slot, drops its rep and
//!   decrements `pending`. Destructions are numbered by `seq`, and each core remembers the
//!   last `seq` it has processed, so a core handles each destruction exactly once, even
//!   one that happened before that core ever touched the EBB.
//! - The core that brings `pending` to zero frees the index with the next generation and
//!   drops the root. No table can still hold the old id then, which is what makes the
//!   table's "slot is empty or holds this exact id" invariant true.
//!
//! `epoch` publishes the newest `seq` so that the check a core makes between events is
//! one atomic load when nothing was destroyed.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::TypeId;
use core::num::NonZeroU32;

use crate::root::ErasedRoot;
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::{EbbError, EbbId};

/// Indices below this are *static*: `insert` never hands them out; `insert_static`
/// claims one for a system EBB whose id must be known in advance (the same on every
/// node), as EbbRT's static ids were.
pub const STATIC_INDICES: u32 = 16;

pub(crate) struct LocalIdMap {
    inner: Mutex<Inner>,
    /// The `seq` of the newest destruction (0: none yet).
    epoch: AtomicU64,
    limit: usize,
}

struct Inner {
    entries: Vec<Entry>,
    /// Free indices, reused last-freed-first (their generation already advanced).
    free: Vec<u32>,
    /// Destructions not yet processed by every core, in `seq` order.
    dying: VecDeque<Destruction>,
    next_seq: u64,
    live: usize,
}

struct Entry {
    generation: NonZeroU32,
    state: State,
}

enum State {
    Free,
    Live(Live),
    Dying(Live),
    /// The generation space of this index is used up; it is never handed out again.
    Retired,
}

#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) root: Arc<dyn ErasedRoot>,
    pub(crate) rep_type: TypeId,
}

struct Destruction {
    seq: u64,
    id: EbbId,
    pending: usize,
}

/// What a core must do for one destruction it has not processed yet.
pub(crate) struct Reclaim {
    pub(crate) id: EbbId,
    /// Set when this core was the last one: the root, to drop outside the lock.
    pub(crate) root: Option<Arc<dyn ErasedRoot>>,
}

impl LocalIdMap {
    pub(crate) fn new(limit: usize) -> Self {
        LocalIdMap {
            inner: Mutex::new(Inner {
                // Static indices exist from the start but are never on the free list.
                entries: (0..STATIC_INDICES)
                    .map(|_| Entry {
                        generation: NonZeroU32::MIN,
                        state: State::Free,
                    })
                    .collect(),
                free: Vec::new(),
                dying: VecDeque::new(),
                next_seq: 1,
                live: 0,
            }),
            epoch: AtomicU64::new(0),
            limit,
        }
    }

    /// Allocates an id for `root`. Node-local: no round trip to anyone.
    pub(crate) fn insert(&self, live: Live) -> Result<EbbId, EbbError> {
        let mut inner = self.inner.lock();
        // Count every dynamic index not yet back on the free list, so the limit also
        // bounds memory held by destroyed-but-not-yet-reclaimed EBBs. (Static indices are
        // a fixed handful and do not count.)
        let in_use = inner.entries.len() - STATIC_INDICES as usize - inner.free.len();
        if in_use >= self.limit {
            return Err(EbbError::IdsExhausted { limit: self.limit });
        }
        let index = match inner.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(inner.entries.len())
                    .map_err(|_| EbbError::IdsExhausted { limit: self.limit })?;
                inner.entries.push(Entry {
                    generation: NonZeroU32::MIN,
                    state: State::Free,
                });
                index
            }
        };
        let entry = &mut inner.entries[index as usize];
        assert!(
            matches!(entry.state, State::Free),
            "free list held a used index"
        );
        entry.state = State::Live(live);
        let id = EbbId::from_parts(index, entry.generation);
        inner.live += 1;
        Ok(id)
    }

    /// Claims static index `index` for `root`: its id is `(index, generation 1)`. A static
    /// index is claimed once for the node's life (destroying it retires the index).
    pub(crate) fn insert_static(&self, index: u32, live: Live) -> Result<EbbId, EbbError> {
        let mut inner = self.inner.lock();
        let entry = inner
            .entries
            .get_mut(index as usize)
            .filter(|_| index < STATIC_INDICES)
            .ok_or(EbbError::StaticIdUnavailable { index })?;
        if entry.generation != NonZeroU32::MIN || !matches!(entry.state, State::Free) {
            return Err(EbbError::StaticIdUnavailable { index });
        }
        entry.state = State::Live(live);
        inner.live += 1;
        Ok(EbbId::from_parts(index, NonZeroU32::MIN))
    }

    /// The root of a live EBB whose reps are of type `rep_type`.
    pub(crate) fn live(&self, id: EbbId) -> Result<Live, EbbError> {
        let inner = self.inner.lock();
        match inner.entries.get(id.index() as usize) {
            Some(Entry {
                generation,
                state: State::Live(live),
            }) if generation.get() == id.generation() => Ok(live.clone()),
            _ => Err(EbbError::NoSuchEbb { id }),
        }
    }

    /// Starts destroying `id`: no new rep can be installed from now on.
    pub(crate) fn destroy(&self, id: EbbId, cores: usize) -> Result<(), EbbError> {
        let mut inner = self.inner.lock();
        let seq = inner.next_seq;
        let entry = inner
            .entries
            .get_mut(id.index() as usize)
            .filter(|e| e.generation.get() == id.generation())
            .ok_or(EbbError::NoSuchEbb { id })?;
        let live = match core::mem::replace(&mut entry.state, State::Free) {
            State::Live(live) => live,
            other => {
                entry.state = other;
                return Err(EbbError::NoSuchEbb { id });
            }
        };
        entry.state = State::Dying(live);
        inner.next_seq += 1;
        inner.live -= 1;
        inner.dying.push_back(Destruction {
            seq,
            id,
            pending: cores,
        });
        // Release: a core that sees this epoch sees the `dying` entry (it also takes the
        // lock, but the epoch is read without it).
        self.epoch.store(seq, Ordering::Release);
        Ok(())
    }

    /// The newest destruction's `seq`; a core whose own mark equals it has nothing to do.
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Records that one core has processed every destruction after `acked`, returning
    /// what it must clear and its new mark. The caller must clear its slots for the
    /// returned ids before running any other event: a finished index may be handed out
    /// again as soon as the lock is released.
    pub(crate) fn acknowledge(&self, acked: u64) -> (Vec<Reclaim>, u64) {
        let mut inner = self.inner.lock();
        let mut work = Vec::new();
        let mut mark = acked;
        let mut i = 0;
        while i < inner.dying.len() {
            let d = &mut inner.dying[i];
            if d.seq <= acked {
                i += 1;
                continue;
            }
            mark = mark.max(d.seq);
            d.pending -= 1;
            let id = d.id;
            if d.pending == 0 {
                inner.dying.remove(i);
                let root = inner.free_index(id);
                work.push(Reclaim {
                    id,
                    root: Some(root),
                });
            } else {
                work.push(Reclaim { id, root: None });
                i += 1;
            }
        }
        (work, mark)
    }

    /// How many EBBs are live (created and not destroyed).
    pub(crate) fn live_count(&self) -> usize {
        self.inner.lock().live
    }

    /// How many destroyed EBBs still wait for some core to reclaim their reps.
    pub(crate) fn dying_count(&self) -> usize {
        self.inner.lock().dying.len()
    }
}

impl Inner {
    /// Returns a dying index to the free list with its next generation; gives the root
    /// back to be dropped outside the lock.
    fn free_index(&mut self, id: EbbId) -> Arc<dyn ErasedRoot> {
        let entry = &mut self.entries[id.index() as usize];
        let live = match core::mem::replace(&mut entry.state, State::Free) {
            State::Dying(live) => live,
            _ => unreachable!("only a dying entry is freed"),
        };
        if id.index() < STATIC_INDICES {
            // A static id names one EBB for the node's life: never reuse it.
            entry.state = State::Retired;
            return live.root;
        }
        match entry.generation.checked_add(1) {
            Some(next) => {
                entry.generation = next;
                self.free.push(id.index());
            }
            // Four billion reuses of one index: retire it rather than let a generation
            // repeat, which could let an ancient stale reference match again.
            None => entry.state = State::Retired,
        }
        live.root
    }
}
