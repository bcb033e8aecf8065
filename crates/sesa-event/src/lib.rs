//! # sesa-event: events across all layers
//!
//! The event model of sesa (the paper's section 4.2): every piece of work is an *event*
//! at a *location* (a core of a node). Each core runs one non-preemptive loop; methods of
//! EBBs are invoked by events; work moves between cores by **function shipping**
//! ([`spawn_on`]: run this closure there, give me the result) and data shipping (the
//! closure carries the data). Rust futures are events too ([`spawn_local`]).
//!
//! This crate is portable (`no_std` + `alloc`): it defines the **platform seam**
//! ([`Platform`]: cores, clock, timers, idle pollers, entropy, network) and the API that
//! applications use on top of it. A platform crate (`sesa-hosted` on Linux; later the
//! native kernel and the simulator) runs the loops and installs itself as each core's
//! current platform.
//!
//! ## Example
//! Code written against this crate runs on whichever platform runs it (`sesa-hosted`'s
//! docs run this same shape end to end):
//! ```
//! use sesa_event::{CoreId, EventError, spawn_on};
//!
//! /// Ships a computation to core 1 and returns its answer to the calling core.
//! async fn ask_core_one() -> Result<u32, EventError> {
//!     let answer = spawn_on(CoreId::new(1), || 6 * 7).await?;
//!     Ok(answer)
//! }
//! ```
//!
//! ## Rules of the road
//! - An event runs to completion (or to its next `.await`) without preemption by other
//!   events of its core; keep events short, and never block a core's thread.
//! - A rep borrowed with [`EbbRef::with`](sesa_ebb::EbbRef::with) cannot be held across
//!   an `.await` (the closure is synchronous); this is what lets cores reclaim destroyed
//!   EBBs between events.
//! - Events shipped from one core to another run in the order they were shipped.
//!
//! Every platform is checked against these rules by the same code: [`conformance`].

#![no_std]
#![deny(unsafe_code)] // allowed only for the no_std platform binding (platform.rs)

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod api;
pub mod central;
pub mod conformance;
mod error;
mod join;
pub mod net;
pub mod parts;
pub mod platform;
mod time;

pub use api::{
    add_idle_handler, all_cores, cores, cpu_wait_pct, current_core, destroy, fill_random, now,
    on_all_cores, random_u64, remove_idle_handler, ship, sleep, sleep_until, spawn_local, spawn_on,
    spawn_on_async, stop, tcp_connect, tcp_listen, tcp_listen_shared, timeout, timeout_at,
    try_current_core, unix_time, yield_now,
};
pub use central::{Central, CentralRef, CentralRep};
pub use error::{EventError, ShipError};
pub use join::{Completer, JoinHandle, completion};
pub use platform::{Event, IdleHandler, IdleHandlerId, LocalTask, Platform, enter};
pub use sesa_ebb::CoreId;
pub use time::Instant;
