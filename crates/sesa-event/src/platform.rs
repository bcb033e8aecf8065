//! The platform seam: everything an event-driven program needs from below.
//!
//! One [`Platform`] object exists per core; the runtime installs it as the current
//! platform of the core's thread ([`enter`]) for as long as the core's loop runs. The
//! hosted runtime implements it on Linux threads and tokio; a native kernel and the
//! deterministic simulator implement the same trait, so nothing above this seam (the
//! object model, the executive, applications) knows which one it runs on.
//!
//! Time, timers, randomness, cross-core wake-ups and sockets enter only through here.

use alloc::boxed::Box;
use core::future::Future;
use core::pin::Pin;
use sesa_ebb::CoreId;

use crate::net::Net;
use crate::{Instant, ShipError};

/// An event shipped to another core: a closure run there, once, between other events.
pub type Event = Box<dyn FnOnce() + Send>;

/// A task for this core's loop: a future polled only on this core.
pub type LocalTask = Pin<Box<dyn Future<Output = ()>>>;

/// An idle handler: run when the core has nothing else to do; returns whether it found
/// work (if any handler did, the core keeps polling instead of parking).
pub type IdleHandler = Box<dyn FnMut() -> bool>;

/// Names an installed idle handler, to remove it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IdleHandlerId(pub u64);

/// One core's view of its platform.
///
/// # Contract for implementors
/// - Events and tasks of one core run on that core's thread only, one at a time, never
///   preempted by another event of the same core (non-preemptive loops).
/// - [`Platform::ship`] appends to the target core's inbox; events from one core to
///   another run in the order they were shipped, and never inline in the caller, even
///   when the target is the caller's own core.
/// - Between events the loop calls [`sesa_ebb::quiesce`] (before every shipped event),
///   so destroyed EBBs are reclaimed.
/// - A panicking event is reported with its core and location, and the loop goes on.
pub trait Platform {
    /// This core.
    fn core(&self) -> CoreId;
    /// How many cores the node has.
    fn cores(&self) -> usize;
    /// The monotonic clock.
    fn now(&self) -> Instant;
    /// Seconds since the Unix epoch on the wall clock (for protocols that speak absolute
    /// times, like memcached's expiry); the simulator gives a virtual one.
    fn unix_time(&self) -> u64;
    /// Starts `task` on this core.
    fn spawn_local(&self, task: LocalTask);
    /// Sends `event` to `core`'s inbox.
    ///
    /// # Errors
    /// The event is handed back if `core` does not exist or the runtime is stopping.
    fn ship(&self, core: CoreId, event: Event) -> Result<(), ShipError>;
    /// A future that completes at `deadline` (or at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> LocalTask;
    /// A future that lets this core's other tasks, and the I/O and timers they wait
    /// for, run before it completes (`sesa_event::yield_now`). The default puts the
    /// task back in the core's run queue at once, which lets the other ready tasks run;
    /// a platform whose I/O is polled only now and then between tasks overrides it, so
    /// that a task that computes for long in slices does not starve the network.
    fn yield_now(&self) -> LocalTask {
        Box::pin(YieldOnce(false))
    }
    /// The share of the time (percent) this core's thread lately spent runnable but
    /// waiting for a CPU, where the platform measures it (a hosted core does, and spins
    /// while idle only when it is low); `None` elsewhere.
    fn cpu_wait_pct(&self) -> Option<u32> {
        None
    }
    /// Installs an idle handler on this core.
    fn add_idle_handler(&self, handler: IdleHandler) -> IdleHandlerId;
    /// Removes an idle handler; `false` if it was not installed on this core.
    fn remove_idle_handler(&self, id: IdleHandlerId) -> bool;
    /// Fills `buf` with cryptographically secure random bytes (seeded ones under
    /// simulation).
    fn fill_random(&self, buf: &mut [u8]);
    /// Stops every core's loop; the runtime returns `exit_code`.
    fn stop(&self, exit_code: i32);
    /// The network.
    fn net(&self) -> &dyn Net;
}

/// Pending once (waking itself at once), then ready: the portable yield.
pub(crate) struct YieldOnce(pub(crate) bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut core::task::Context<'_>) -> core::task::Poll<()> {
        if self.0 {
            return core::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        core::task::Poll::Pending
    }
}

#[cfg(feature = "std")]
mod binding {
    use alloc::rc::Rc;
    use core::cell::RefCell;

    use super::Platform;

    std::thread_local! {
        static CURRENT: RefCell<Option<Rc<dyn Platform>>> = const { RefCell::new(None) };
    }

    pub(crate) fn with<R>(f: impl FnOnce(Option<&dyn Platform>) -> R) -> R {
        CURRENT.with(|c| {
            let current = c.borrow().clone();
            f(current.as_deref())
        })
    }

    pub(crate) fn set(platform: Option<Rc<dyn Platform>>) -> Option<Rc<dyn Platform>> {
        CURRENT.with(|c| core::mem::replace(&mut *c.borrow_mut(), platform))
    }
}

#[cfg(not(feature = "std"))]
#[allow(unsafe_code)] // a platform-provided extern symbol
mod binding {
    use alloc::rc::Rc;

    use super::Platform;

    unsafe extern "Rust" {
        /// Defined by the native platform: the calling CPU's current platform slot.
        fn __sesa_event_current() -> &'static core::cell::RefCell<Option<Rc<dyn Platform>>>;
    }

    pub(crate) fn with<R>(f: impl FnOnce(Option<&dyn Platform>) -> R) -> R {
        // SAFETY: the native platform's contract: the calling CPU's own slot, which lives
        // as long as the kernel and is touched only by that CPU.
        let slot = unsafe { __sesa_event_current() };
        let current = slot.borrow().clone();
        f(current.as_deref())
    }

    pub(crate) fn set(platform: Option<Rc<dyn Platform>>) -> Option<Rc<dyn Platform>> {
        // SAFETY: as in `with`.
        let slot = unsafe { __sesa_event_current() };
        core::mem::replace(&mut *slot.borrow_mut(), platform)
    }
}

pub(crate) use binding::with as with_current;

/// Makes `platform` the calling thread's current platform until the guard drops.
///
/// Runtimes call this on each core's thread before running any event there.
pub fn enter(platform: alloc::rc::Rc<dyn Platform>) -> EnterGuard {
    EnterGuard {
        previous: Some(binding::set(Some(platform))),
    }
}

/// Restores the previous current platform when dropped.
pub struct EnterGuard {
    previous: Option<Option<alloc::rc::Rc<dyn Platform>>>,
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            binding::set(previous);
        }
    }
}
