//! Building blocks for platforms that run their own loops (the native kernel, the
//! simulator): a timer queue, the idle handlers of a core, and wake-up lists for tasks.
//! The hosted platform gets timers and wake-ups from tokio and uses only
//! [`IdleHandlers`].

use alloc::collections::BinaryHeap;
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::task::Waker;

use crate::{IdleHandler, IdleHandlerId, Instant};

struct Timer {
    at: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest timer must come out first;
    /// timers due at the same time fire in the order they were added.
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Wakers to wake at deadlines, earliest first (ties in the order added). For one
/// thread: it is not `Sync`.
#[derive(Default)]
pub struct TimerQueue {
    heap: RefCell<BinaryHeap<Timer>>,
    next: Cell<u64>,
}

impl TimerQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes `waker` once `at` has come.
    pub fn add(&self, at: Instant, waker: Waker) {
        let seq = self.next.get();
        self.next.set(seq + 1);
        self.heap.borrow_mut().push(Timer { at, seq, waker });
    }

    /// The earliest deadline queued.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.borrow().peek().map(|t| t.at)
    }

    /// Wakes every waker whose deadline is at or before `now`; whether there was any.
    pub fn wake_due(&self, now: Instant) -> bool {
        let mut woke = false;
        loop {
            // Popped, then woken with the queue released (a wake-up may add a timer).
            let due = {
                let mut heap = self.heap.borrow_mut();
                match heap.peek() {
                    Some(t) if t.at <= now => heap.pop(),
                    _ => None,
                }
            };
            match due {
                Some(t) => {
                    t.waker.wake();
                    woke = true;
                }
                None => return woke,
            }
        }
    }

    /// Drops every timer.
    pub fn clear(&self) {
        self.heap.borrow_mut().clear();
    }
}

/// A core's idle handlers (see [`crate::add_idle_handler`]). A handler may add or remove
/// handlers, itself included, while the handlers run.
#[derive(Default)]
pub struct IdleHandlers {
    handlers: RefCell<Vec<(IdleHandlerId, IdleHandler)>>,
    /// Removals asked for while the handlers were running (and so out of `handlers`).
    removed: RefCell<Vec<IdleHandlerId>>,
    running: Cell<bool>,
    next: Cell<u64>,
}

impl IdleHandlers {
    /// No handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs `handler`.
    pub fn add(&self, handler: IdleHandler) -> IdleHandlerId {
        let id = IdleHandlerId(self.next.get());
        self.next.set(id.0 + 1);
        self.handlers.borrow_mut().push((id, handler));
        id
    }

    /// Removes a handler; `false` if there is no such handler.
    pub fn remove(&self, id: IdleHandlerId) -> bool {
        let mut handlers = self.handlers.borrow_mut();
        if let Some(i) = handlers.iter().position(|(h, _)| *h == id) {
            drop(handlers.remove(i));
            return true;
        }
        // While the handlers run they are out of `handlers`: a removal is recorded and
        // applied when they are put back.
        let removable =
            self.running.get() && id.0 < self.next.get() && !self.removed.borrow().contains(&id);
        if removable {
            self.removed.borrow_mut().push(id);
        }
        removable
    }

    /// Takes every handler out (to drop them where the caller chooses: a core being
    /// torn down drops them with its platform still current).
    pub fn take_all(&self) -> Vec<IdleHandler> {
        let handlers = core::mem::take(&mut *self.handlers.borrow_mut());
        handlers.into_iter().map(|(_, h)| h).collect()
    }

    /// Whether no handler is installed.
    pub fn is_empty(&self) -> bool {
        self.handlers.borrow().is_empty()
    }

    /// Runs every handler once through `call`, which returns whether the handler found
    /// work, or `None` to drop it (it panicked, say); whether any found work.
    pub fn run(&self, mut call: impl FnMut(&mut IdleHandler) -> Option<bool>) -> bool {
        if self.is_empty() {
            return false;
        }
        // Taken out while they run, so a handler may add or remove handlers.
        let mut handlers = core::mem::take(&mut *self.handlers.borrow_mut());
        self.running.set(true);
        let mut busy = false;
        handlers.retain_mut(|(_, handler)| match call(handler) {
            Some(found_work) => {
                busy |= found_work;
                true
            }
            None => false,
        });
        self.running.set(false);
        let mut current = self.handlers.borrow_mut();
        let added = core::mem::replace(&mut *current, handlers);
        current.extend(added);
        let removed = core::mem::take(&mut *self.removed.borrow_mut());
        current.retain(|(id, _)| !removed.contains(id));
        busy
    }
}

/// What a wake-up from any core does after putting its key on the list, so that a loop
/// asleep on its core sees it (the native platform sends an IPI to a sleeping core).
pub type Nudge = Arc<dyn Fn() + Send + Sync>;

/// The tasks woken since a loop last looked: each task's waker pushes the task's key
/// here, from any core (so wakers are `Send + Sync`, as `Waker` requires), then calls
/// the list's [`Nudge`], if it has one.
pub struct WakeList<K>(Arc<spin::Mutex<Vec<K>>>, Option<Nudge>);

impl<K> Clone for WakeList<K> {
    fn clone(&self) -> Self {
        WakeList(self.0.clone(), self.1.clone())
    }
}

impl<K> Default for WakeList<K> {
    fn default() -> Self {
        WakeList(Arc::new(spin::Mutex::new(Vec::new())), None)
    }
}

struct KeyWaker<K> {
    key: K,
    list: WakeList<K>,
}

impl<K: Copy + Send + Sync + 'static> Wake for KeyWaker<K> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.list.0.lock().push(self.key);
        if let Some(nudge) = &self.list.1 {
            nudge();
        }
    }
}

impl<K: Copy + Send + Sync + 'static> WakeList<K> {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list whose wake-ups call `nudge` after putting their key on it.
    pub fn with_nudge(nudge: Nudge) -> Self {
        WakeList(Arc::new(spin::Mutex::new(Vec::new())), Some(nudge))
    }

    /// A waker that puts `key` on this list.
    pub fn waker(&self, key: K) -> Waker {
        Waker::from(Arc::new(KeyWaker {
            key,
            list: self.clone(),
        }))
    }

    /// Puts `key` on the list (a task that is ready from the start).
    pub fn push(&self, key: K) {
        self.0.lock().push(key);
    }

    /// The keys woken since the last call, in the order they were woken.
    pub fn take(&self) -> Vec<K> {
        core::mem::take(&mut *self.0.lock())
    }

    /// Whether no key is waiting.
    pub fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::boxed::Box;
    use alloc::rc::Rc;
    use alloc::vec;
    use core::cell::RefCell;

    use super::*;

    #[test]
    fn timers_wake_in_deadline_order_ties_in_the_order_added() {
        let woken = WakeList::<u32>::new();
        let timers = TimerQueue::new();
        for (key, at) in [(1, 30), (2, 10), (3, 20), (4, 10)] {
            timers.add(Instant::from_nanos(at), woken.waker(key));
        }
        assert_eq!(timers.next_deadline(), Some(Instant::from_nanos(10)));
        assert!(!timers.wake_due(Instant::from_nanos(9)));
        assert!(timers.wake_due(Instant::from_nanos(20)));
        assert_eq!(woken.take(), vec![2, 4, 3]);
        assert!(woken.is_empty());
        assert!(timers.wake_due(Instant::from_nanos(u64::MAX)));
        assert_eq!(woken.take(), vec![1]);
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn an_idle_handler_can_remove_itself_and_add_another_while_they_run() {
        let idle = Rc::new(IdleHandlers::new());
        let ran = Rc::new(RefCell::new(vec![]));
        let (i2, r2) = (idle.clone(), ran.clone());
        let me = Rc::new(core::cell::Cell::new(IdleHandlerId(u64::MAX)));
        let me2 = me.clone();
        let id = idle.add(Box::new(move || {
            r2.borrow_mut().push("first");
            assert!(i2.remove(me2.get()), "removing itself while running");
            let r3 = r2.clone();
            i2.add(Box::new(move || {
                r3.borrow_mut().push("added");
                false
            }));
            true
        }));
        me.set(id);
        assert!(idle.run(|h| Some(h())));
        assert!(!idle.run(|h| Some(h())));
        assert_eq!(*ran.borrow(), ["first", "added"]);
        // A handler the caller drops (it panicked, say) is gone.
        assert!(!idle.run(|_| None));
        assert!(idle.is_empty());
        assert!(!idle.remove(id));
    }
}
