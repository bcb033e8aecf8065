//! The event API that application code calls: on the current core's platform.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::future::{Future, poll_fn};
use core::task::Poll;
use core::time::Duration;
use sesa_ebb::{CoreId, EbbRef};

use crate::join::{JoinHandle, completion as pair};
use crate::net::{Listener, Stream};
use crate::platform::{IdleHandlerId, Platform, with_current};
use crate::{EventError, Instant, ShipError};

fn platform<R>(f: impl FnOnce(&dyn Platform) -> R) -> Result<R, EventError> {
    with_current(|p| p.map(f).ok_or(EventError::NotOnCore))
}

#[track_caller]
fn on_core<R>(f: impl FnOnce(&dyn Platform) -> R) -> R {
    match platform(f) {
        Ok(r) => r,
        Err(_) => panic!("not on a sesa core: call this from an event of a running runtime"),
    }
}

/// The core the calling event runs on, or `None` outside a runtime.
pub fn try_current_core() -> Option<CoreId> {
    platform(|p| p.core()).ok()
}

/// The core the calling event runs on.
///
/// # Panics
/// Outside a running runtime (as do the other functions here that do not return a
/// `Result`).
#[track_caller]
pub fn current_core() -> CoreId {
    on_core(|p| p.core())
}

/// How many cores this node has.
#[track_caller]
pub fn cores() -> usize {
    on_core(|p| p.cores())
}

/// Every core of this node.
#[track_caller]
pub fn all_cores() -> impl Iterator<Item = CoreId> {
    (0..cores() as u32).map(CoreId::new)
}

/// The platform's monotonic clock.
#[track_caller]
pub fn now() -> Instant {
    on_core(|p| p.now())
}

/// Seconds since the Unix epoch, from the platform's wall clock.
#[track_caller]
pub fn unix_time() -> u64 {
    on_core(|p| p.unix_time())
}

/// Runs `future` on this core, concurrently with the caller.
#[track_caller]
pub fn spawn_local<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    on_core(|p| {
        let (done, handle) = pair(p.core());
        p.spawn_local(Box::pin(async move { done.complete(Ok(future.await)) }));
        handle
    })
}

/// Sends `event` to run on `core` (fire and forget). The cheapest form of function
/// shipping: one allocation and one queue push; the target wakes if it was parked.
///
/// # Errors
/// Hands the event back if there is no such core, the runtime is stopping, or this is
/// not a core.
pub fn ship(core: CoreId, event: impl FnOnce() + Send + 'static) -> Result<(), ShipError> {
    let event: crate::Event = Box::new(event);
    with_current(|p| match p {
        Some(p) => p.ship(core, event),
        None => Err(ShipError::new(EventError::NotOnCore, event)),
    })
}

/// Runs `f` on `core` and returns its result: function shipping.
///
/// The result comes back to this core as another shipped event, so awaiting it costs
/// two inbox hops and no cross-thread wake when both cores are busy or spinning.
/// A panic in `f` is reported on `core` and returned here as [`EventError::Panicked`].
#[track_caller]
pub fn spawn_on<F, R>(core: CoreId, f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let origin = current_core();
    let (done, handle) = pair(core);
    let shipped = ship(core, move || {
        let result = f();
        // If this core cannot reach the origin any more (the runtime is stopping), the
        // completer is dropped with the returned event and the handle fails.
        let _ = ship(origin, move || done.complete(Ok(result)));
    });
    match shipped {
        Ok(()) => handle,
        Err(e) => {
            let error = e.error;
            drop(e.event);
            JoinHandle::ready(Err(error))
        }
    }
}

/// Runs the future that `f` makes on `core` and returns its output. `f` is shipped; the
/// future itself is built on `core`, so it need not be `Send`.
#[track_caller]
pub fn spawn_on_async<F, Fut>(core: CoreId, f: F) -> JoinHandle<Fut::Output>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    let origin = current_core();
    let (done, handle) = pair(core);
    let shipped = ship(core, move || {
        let future = f();
        on_core(|p| {
            p.spawn_local(Box::pin(async move {
                let result = future.await;
                let _ = ship(origin, move || done.complete(Ok(result)));
            }))
        });
    });
    match shipped {
        Ok(()) => handle,
        Err(e) => JoinHandle::ready(Err(e.into_error())),
    }
}

/// Runs `f(core)` on every core of the node and collects the results in core order.
#[track_caller]
pub fn on_all_cores<F, R>(f: F) -> impl Future<Output = Vec<Result<R, EventError>>>
where
    F: Fn(CoreId) -> R + Send + Sync + 'static,
    R: Send + 'static,
{
    let f = alloc::sync::Arc::new(f);
    let handles: Vec<_> = all_cores()
        .map(|core| {
            let f = f.clone();
            spawn_on(core, move || f(core))
        })
        .collect();
    async move {
        let mut results = Vec::with_capacity(handles.len());
        for handle in handles {
            results.push(handle.await);
        }
        results
    }
}

/// Destroys an EBB and waits until no core can reach its reps any more: every core has
/// passed a quiescent point after the destruction and dropped what it held.
///
/// # Errors
/// [`EventError::Ebb`] if the EBB does not exist; a core failing to answer.
pub async fn destroy<T: 'static>(ebb: EbbRef<T>) -> Result<(), EventError> {
    ebb.destroy()?;
    // Each core runs `quiesce` before every shipped event, so once this no-op has run on
    // a core, that core has reclaimed.
    for result in on_all_cores(|_| ()).await {
        result?;
    }
    Ok(())
}

/// Completes at `deadline`.
#[track_caller]
pub fn sleep_until(deadline: Instant) -> impl Future<Output = ()> {
    on_core(|p| p.sleep_until(deadline))
}

/// Completes after `duration`.
#[track_caller]
pub fn sleep(duration: Duration) -> impl Future<Output = ()> {
    on_core(|p| p.sleep_until(p.now() + duration))
}

/// `future`'s output, or `None` if `deadline` comes first (the future is then dropped).
#[track_caller]
pub fn timeout_at<F: Future>(
    deadline: Instant,
    future: F,
) -> impl Future<Output = Option<F::Output>> {
    let timer = sleep_until(deadline);
    async move {
        let mut future = core::pin::pin!(future);
        let mut timer = core::pin::pin!(timer);
        poll_fn(|cx| {
            if let Poll::Ready(out) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await
    }
}

/// `future`'s output, or `None` if `limit` passes first (the future is then dropped).
#[track_caller]
pub fn timeout<F: Future>(limit: Duration, future: F) -> impl Future<Output = Option<F::Output>> {
    timeout_at(now() + limit, future)
}

/// Lets the core's other events, and the I/O they wait for, run before continuing
/// (see [`Platform::yield_now`]). Off a core, it only returns to the caller's executor
/// once.
pub async fn yield_now() {
    match platform(|p| p.yield_now()) {
        Ok(yielding) => yielding.await,
        Err(_) => crate::platform::YieldOnce(false).await,
    }
}

/// The share of the time (percent) the calling core's thread lately waited for a CPU,
/// where its platform measures it (see [`Platform::cpu_wait_pct`]).
#[track_caller]
pub fn cpu_wait_pct() -> Option<u32> {
    on_core(|p| p.cpu_wait_pct())
}

/// Installs `handler` to run whenever this core is idle (a poller: a NIC ring, a
/// queue). While any handler reports work, the core keeps polling instead of parking.
#[track_caller]
pub fn add_idle_handler(handler: impl FnMut() -> bool + 'static) -> IdleHandlerId {
    on_core(|p| p.add_idle_handler(Box::new(handler)))
}

/// Removes an idle handler installed on this core.
#[track_caller]
pub fn remove_idle_handler(id: IdleHandlerId) -> bool {
    on_core(|p| p.remove_idle_handler(id))
}

/// Fills `buf` with random bytes from the platform.
#[track_caller]
pub fn fill_random(buf: &mut [u8]) {
    on_core(|p| p.fill_random(buf))
}

/// A random `u64` from the platform.
#[track_caller]
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// Stops every core of the runtime; it returns `exit_code`.
#[track_caller]
pub fn stop(exit_code: i32) {
    on_core(|p| p.stop(exit_code))
}

/// Listens for TCP connections on `addr`, through the platform's network.
///
/// # Errors
/// The platform's error, e.g. the address is in use.
pub fn tcp_listen(addr: core::net::SocketAddr) -> Result<Listener, EventError> {
    platform(|p| p.net().listen(addr))?
        .map(Listener::new)
        .map_err(EventError::Net)
}

/// Listens for TCP connections on `addr` on this core, sharing the address with the
/// other cores' shared listeners: each gets a share of the connections (see
/// [`Net::listen_shared`](crate::net::Net::listen_shared)). This is how a server accepts
/// on every core without a core that hands connections out.
///
/// # Errors
/// The platform's error, e.g. the address is in use by a listener that does not share.
pub fn tcp_listen_shared(addr: core::net::SocketAddr) -> Result<Listener, EventError> {
    platform(|p| p.net().listen_shared(addr))?
        .map(Listener::new)
        .map_err(EventError::Net)
}

/// Connects to `addr` over TCP, through the platform's network.
///
/// # Errors
/// [`EventError::Net`] if the connection fails.
pub async fn tcp_connect(addr: core::net::SocketAddr) -> Result<Stream, EventError> {
    let connecting = platform(|p| p.net().connect(addr))?;
    connecting.await.map(Stream::new).map_err(EventError::Net)
}
