//! Departure events: what a node does before a *planned* leave.
//!
//! Elastic shrink must not lose state. When a node is asked to leave, every registered
//! departure handler runs (in registration order, each awaited) before the node stops,
//! so EBBs can move their reps' state elsewhere: finish and hand back work in progress,
//! ship data to the nodes that take over its keys. A crash gives no such chance; that
//! is what replication is for.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;

type Handler = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync>;

/// A node's departure handlers.
#[derive(Default)]
pub struct Departures {
    handlers: spin::Mutex<Vec<Handler>>,
}

impl Departures {
    /// No handlers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler`, run (on the core that runs the departure) when the node leaves.
    pub fn on_departure<F, Fut>(&self, handler: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.handlers
            .lock()
            .push(Box::new(move || Box::pin(handler())));
    }

    /// Runs every handler, in order, each to completion.
    pub async fn depart(&self) {
        let mut i = 0;
        // Each handler is started outside the lock: it may register more (they run too).
        while let Some(run) = self.handlers.lock().get(i).map(|h| h()) {
            run.await;
            i += 1;
        }
    }

    /// How many handlers are registered.
    pub fn len(&self) -> usize {
        self.handlers.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
