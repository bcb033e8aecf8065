//! The object model's errors.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

use crate::{CoreId, EbbId};

/// Why an EBB operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EbbError {
    /// The calling thread is not a core of any node (no [`CoreBinding`](crate::CoreBinding)).
    #[error("this thread is not bound to a core of an EBB node")]
    NotOnCore,
    /// The id names no live EBB: it was destroyed, or never created on this node.
    #[error("{id} does not exist on this node (destroyed, or never created here)")]
    NoSuchEbb {
        /// The id that was looked up.
        id: EbbId,
    },
    /// The EBB exists but its reps are of another type than the reference asked for.
    #[error("{id} has representatives of type {actual}, not {requested}")]
    TypeMismatch {
        /// The EBB.
        id: EbbId,
        /// The rep type the caller asked for.
        requested: &'static str,
        /// The rep type the EBB was created with.
        actual: &'static str,
    },
    /// The EBB's root is of another type than the caller asked for.
    #[error("{id} has a root of another type than {requested}")]
    RootTypeMismatch {
        /// The EBB.
        id: EbbId,
        /// The root type the caller asked for.
        requested: &'static str,
    },
    /// The EBB's miss handler refused to give this core a rep.
    #[error("the miss handler of {id} refused {core}: {source}")]
    MissRefused {
        /// The EBB.
        id: EbbId,
        /// Where the access missed.
        core: CoreId,
        /// The handler's reason.
        source: MissError,
    },
    /// The node has as many live (or not yet reclaimed) EBBs as its limit allows.
    #[error("out of EBB ids: {limit} EBBs are live or awaiting reclamation")]
    IdsExhausted {
        /// The node's configured limit (`NodeConfig::ebbs_max`).
        limit: usize,
    },
    /// A static id that does not exist or was already claimed.
    #[error("static EBB index {index} is out of range or already claimed")]
    StaticIdUnavailable {
        /// The index.
        index: u32,
    },
    /// A core index outside the node, or a core that is already bound to a thread.
    #[error("cannot bind {core}: {why}")]
    Bind {
        /// The core.
        core: CoreId,
        /// What is wrong.
        why: &'static str,
    },
}

/// The reason a miss handler gives for refusing a location.
pub struct MissError(Box<dyn core::error::Error + Send + Sync>);

impl MissError {
    /// A refusal with this message.
    pub fn new(message: impl Into<String>) -> Self {
        MissError(Box::from(message.into()))
    }

    /// A refusal caused by this error.
    pub fn from_error(error: impl core::error::Error + Send + Sync + 'static) -> Self {
        MissError(Box::new(error))
    }
}

impl fmt::Debug for MissError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for MissError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl core::error::Error for MissError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        self.0.source()
    }
}
