//! The event layer's errors.

use sesa_ebb::{CoreId, EbbError};

use crate::platform::Event;

/// Why an event's result did not arrive, or an event could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The event panicked on `core` (the panic itself is reported there, with location).
    #[error("the event panicked on {core}")]
    Panicked {
        /// Where it ran.
        core: CoreId,
    },
    /// The event was dropped without running: its core stopped first.
    #[error("the event was dropped unrun: {core} stopped")]
    Canceled {
        /// Where it was sent.
        core: CoreId,
    },
    /// No such core on this node.
    #[error("{core} does not exist (this node has {cores} cores)")]
    NoSuchCore {
        /// The requested core.
        core: CoreId,
        /// How many the node has.
        cores: usize,
    },
    /// The runtime is stopping and accepts no more events.
    #[error("the runtime is stopping")]
    Stopping,
    /// The calling thread is not a core of a running sesa runtime.
    #[error("not on a sesa core: events can only be started from inside a running runtime")]
    NotOnCore,
    /// An EBB operation failed.
    #[error(transparent)]
    Ebb(#[from] EbbError),
    /// A network operation failed.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
}

/// A failed [`ship`](crate::ship): why, and the event, handed back unrun.
pub struct ShipError {
    /// Why it could not be sent.
    pub error: EventError,
    /// The event, so the caller can run it elsewhere or drop it.
    pub event: Event,
}

impl core::fmt::Debug for ShipError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShipError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl core::fmt::Display for ShipError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "could not ship the event: {}", self.error)
    }
}

impl core::error::Error for ShipError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl ShipError {
    /// A ship error for `event`.
    pub fn new(error: EventError, event: Event) -> Self {
        ShipError { error, event }
    }

    /// Drops the event and keeps the reason.
    pub fn into_error(self) -> EventError {
        self.error
    }
}

/// Allows `?` on ships inside functions returning `EventError`.
impl From<ShipError> for EventError {
    fn from(e: ShipError) -> Self {
        e.error
    }
}
