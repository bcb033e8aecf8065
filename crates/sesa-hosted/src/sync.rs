//! Atomics and the lock used by the inbox protocol: std's, or shuttle's under the
//! `shuttle` feature so its randomized scheduler can interleave senders and the receiver
//! at every step of the protocol.

#[cfg(feature = "shuttle")]
pub(crate) use shuttle::sync::{
    Mutex,
    atomic::{AtomicU8, Ordering, fence},
};

#[cfg(not(feature = "shuttle"))]
pub(crate) use std::sync::{
    Mutex,
    atomic::{AtomicU8, Ordering, fence},
};
