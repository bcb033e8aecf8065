//! A core's inbox: the queue other cores ship events into, and the protocol that wakes
//! the core only when it has to.
//!
//! # Why a protocol
//! Waking a parked thread costs ~35-60 us per cross-core round trip here (a futex or
//! eventfd write, the scheduler, a cold cache); a core that is still spinning notices a
//! push in well under a microsecond. So the receiver advertises what it is doing, and a
//! sender pays for a wake-up only when the receiver has committed to sleeping.
//!
//! # States (one atomic byte, written by both sides)
//! - `ACTIVE`: the receiver will look at the queue again without being woken (its inbox
//!   task is running or scheduled).
//! - `SPINNING`: the core is idle and polling the queue in its before-park hook. A
//!   sender switches it to `ACTIVE` and does *not* wake anyone; the spinner sees that.
//! - `IDLE`: the inbox task is parked with its waker registered, and nobody polls. A
//!   sender that swaps `IDLE -> ACTIVE` owns the wake-up and calls the waker.
//!
//! # Why no wake-up is lost
//! Both sides use the store-buffering pattern with `SeqCst` fences: a sender *pushes,
//! then reads the state*; the receiver *publishes `IDLE`, then reads the queue*. With a
//! fence between each pair, at least one of them sees the other's write: either the
//! sender sees `IDLE` (and wakes), or the receiver sees the event (and stays awake).
//! `tests/shuttle_inbox.rs` checks this under randomized schedules.
//!
//! The receiver re-checks twice: in [`Inbox::arm`] (so an event that raced the task's
//! last pop runs at once) and at the end of [`Inbox::idle`] (the backstop before the
//! thread parks). Either alone prevents a lost wake-up; shuttle finds the deadlock when
//! both are removed.

use std::task::Waker;

use crossbeam_queue::SegQueue;

use crate::sync::{AtomicU8, Mutex, Ordering::SeqCst, fence};

const ACTIVE: u8 = 0;
const IDLE: u8 = 1;
const SPINNING: u8 = 2;

/// A multi-producer, single-consumer queue of `T` with the wake-up protocol.
pub struct Inbox<T> {
    queue: SegQueue<T>,
    state: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

/// What the before-park hook should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Idle {
    /// Work arrived (or a poller found some): wake the inbox task locally, do not park.
    Resume,
    /// Nothing to do: let the thread park. A sender will wake it.
    Park,
}

impl<T> Default for Inbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Inbox<T> {
    /// An empty inbox whose receiver is `ACTIVE`.
    pub fn new() -> Self {
        Inbox {
            queue: SegQueue::new(),
            state: AtomicU8::new(ACTIVE),
            waker: Mutex::new(None),
        }
    }

    /// Sender: appends `item` and wakes the receiver if it committed to sleeping.
    pub fn push(&self, item: T) {
        self.queue.push(item);
        fence(SeqCst);
        // Fast path: the receiver will look again on its own.
        if self.state.load(SeqCst) == ACTIVE {
            return;
        }
        if self.state.swap(ACTIVE, SeqCst) == IDLE {
            self.wake();
        }
    }

    /// Receiver: the next item, if any.
    pub fn pop(&self) -> Option<T> {
        self.queue.pop()
    }

    /// Receiver, after finding the queue empty: registers `waker` and commits to sleeping.
    /// Returns `false` if an item arrived meanwhile (keep draining instead).
    pub fn arm(&self, waker: &Waker) -> bool {
        {
            let mut slot = self.waker.lock().unwrap_or_else(|p| p.into_inner());
            if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *slot = Some(waker.clone());
            }
        }
        self.state.store(IDLE, SeqCst);
        fence(SeqCst);
        if self.queue.is_empty() {
            return true;
        }
        // Something arrived between our last pop and publishing IDLE. Take the duty
        // back; if a sender already swapped to ACTIVE it has woken us too, which only
        // costs one spurious poll.
        self.state.store(ACTIVE, SeqCst);
        false
    }

    /// Receiver's idle hook (before its thread parks): spins up to `spins` rounds
    /// watching the queue, calling `poll_idle` (the core's idle handlers) each round,
    /// then commits to `IDLE`.
    pub fn idle(&self, spins: u32, mut poll_idle: impl FnMut() -> bool) -> Idle {
        if self
            .state
            .compare_exchange(IDLE, SPINNING, SeqCst, SeqCst)
            .is_err()
        {
            // ACTIVE: a sender took the wake-up duty and has already woken the task.
            return Idle::Park;
        }
        for _ in 0..spins {
            if self.state.load(SeqCst) != SPINNING || !self.queue.is_empty() || poll_idle() {
                self.state.store(ACTIVE, SeqCst);
                return Idle::Resume;
            }
            std::hint::spin_loop();
            #[cfg(feature = "shuttle")]
            shuttle::thread::yield_now();
        }
        if self
            .state
            .compare_exchange(SPINNING, IDLE, SeqCst, SeqCst)
            .is_err()
        {
            // A sender switched SPINNING -> ACTIVE without waking: ours to handle.
            self.state.store(ACTIVE, SeqCst);
            return Idle::Resume;
        }
        fence(SeqCst);
        if self.queue.is_empty() {
            return Idle::Park;
        }
        match self.state.swap(ACTIVE, SeqCst) {
            IDLE => Idle::Resume,
            // A sender saw IDLE and woke the task: it is scheduled already.
            _ => Idle::Park,
        }
    }

    /// Wakes the inbox task (from any thread; from the core's own thread the wake is a
    /// local reschedule).
    pub fn wake(&self) {
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}
