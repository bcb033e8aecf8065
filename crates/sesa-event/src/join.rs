//! [`JoinHandle`]: the result of an event, delivered once.
//!
//! # Protocol
//! A result travels from the event's core back to the core that started it *as another
//! shipped event* (see `spawn_on`), so that it is set, and its waiter woken, on the
//! waiter's own core: the wake is then a local task wake (no cross-thread signal), and a
//! core that is spinning idle picks the reply up within a few hundred nanoseconds.
//! Only failures (the sender dropped unsent, e.g. by a panic or a stopping core) complete
//! the handle from another thread; the lock makes that safe.

use alloc::sync::Arc;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use sesa_ebb::CoreId;

use crate::EventError;

enum State<T> {
    Waiting(Option<Waker>),
    Done(Result<T, EventError>),
    Taken,
}

struct Shared<T> {
    state: spin::Mutex<State<T>>,
}

/// Completes a [`JoinHandle`]. Dropping it unsent fails the handle: with
/// [`EventError::Panicked`] if the thread is unwinding, else [`EventError::Canceled`].
pub struct Completer<T> {
    shared: Option<Arc<Shared<T>>>,
    core: CoreId,
}

/// The result of an event, as a future. Dropping it does not cancel the event (so it is
/// fine to drop for fire-and-forget work).
pub struct JoinHandle<T> {
    shared: Arc<Shared<T>>,
}

/// A [`JoinHandle`] completed by hand, for services that answer later (a reply from the
/// network, say). `core` is where the work happens, for error reports. Complete it on
/// the waiter's own core when you can (ship the completion there): the wake-up is then
/// local.
pub fn completion<T>(core: CoreId) -> (Completer<T>, JoinHandle<T>) {
    let shared = Arc::new(Shared {
        state: spin::Mutex::new(State::Waiting(None)),
    });
    (
        Completer {
            shared: Some(shared.clone()),
            core,
        },
        JoinHandle { shared },
    )
}

impl<T> JoinHandle<T> {
    /// A handle that is already complete.
    pub fn ready(result: Result<T, EventError>) -> Self {
        JoinHandle {
            shared: Arc::new(Shared {
                state: spin::Mutex::new(State::Done(result)),
            }),
        }
    }

    /// Whether the result has arrived.
    pub fn is_finished(&self) -> bool {
        matches!(*self.shared.state.lock(), State::Done(_) | State::Taken)
    }
}

impl<T> Completer<T> {
    /// Delivers the result and wakes the waiter.
    pub fn complete(mut self, result: Result<T, EventError>) {
        if let Some(shared) = self.shared.take() {
            finish(&shared, result);
        }
    }
}

fn finish<T>(shared: &Shared<T>, result: Result<T, EventError>) {
    let waker = {
        let mut state = shared.state.lock();
        match core::mem::replace(&mut *state, State::Done(result)) {
            State::Waiting(waker) => waker,
            // Completed twice cannot happen (`complete` consumes the completer).
            _ => unreachable!("a JoinHandle completed twice"),
        }
    };
    // Woken outside the lock: the waker may run arbitrary scheduler code.
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let error = if unwinding() {
                EventError::Panicked { core: self.core }
            } else {
                EventError::Canceled { core: self.core }
            };
            finish(&shared, Err(error));
        }
    }
}

#[cfg(feature = "std")]
fn unwinding() -> bool {
    std::thread::panicking()
}

#[cfg(not(feature = "std"))]
fn unwinding() -> bool {
    false
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, EventError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.shared.state.lock();
        match &mut *state {
            State::Waiting(waker) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            State::Done(_) => match core::mem::replace(&mut *state, State::Taken) {
                State::Done(result) => Poll::Ready(result),
                _ => unreachable!(),
            },
            State::Taken => panic!("JoinHandle polled after it returned its result"),
        }
    }
}

// SAFETY-free `Send` reasoning: `Shared<T>` holds a `T` behind a lock and moves it
// between threads, so `Completer<T>` and `JoinHandle<T>` are `Send` exactly when `T`
// is, which is what the auto traits derive from `Arc<spin::Mutex<State<T>>>`.
