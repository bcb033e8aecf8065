//! The synchronisation primitives the object model uses, behind one facade.
//!
//! Three builds, one code path:
//! - `no_std` (native): `spin` locks. Only the miss and lifecycle paths lock; the call
//!   path never does.
//! - `std` (hosted): `std::sync::Mutex`, which parks instead of spinning when the OS
//!   preempts the holder.
//! - `shuttle` (tests): shuttle's instrumented primitives, so a randomized scheduler can
//!   interleave the miss and reclaim protocols at every synchronisation point.

#[cfg(feature = "shuttle")]
pub(crate) use shuttle::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

#[cfg(not(feature = "shuttle"))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

/// A mutual-exclusion lock whose `lock` never fails (poisoning is ignored: every
/// structure guarded here is left consistent at each point where user code can panic).
pub(crate) struct Mutex<T>(Inner<T>);

#[cfg(feature = "shuttle")]
type Inner<T> = shuttle::sync::Mutex<T>;
#[cfg(all(feature = "std", not(feature = "shuttle")))]
type Inner<T> = std::sync::Mutex<T>;
#[cfg(not(feature = "std"))]
type Inner<T> = spin::Mutex<T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(Inner::new(value))
    }

    #[cfg(feature = "std")]
    pub(crate) fn lock(&self) -> impl core::ops::DerefMut<Target = T> + '_ {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(not(feature = "std"))]
    pub(crate) fn lock(&self) -> impl core::ops::DerefMut<Target = T> + '_ {
        self.0.lock()
    }
}
