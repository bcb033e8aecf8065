//! # sesa-hosted: the hosted platform
//!
//! Runs a sesa node inside a Linux process: one thread per core, each pinned to a CPU and
//! running a non-preemptive event loop (a tokio current-thread `LocalRuntime`, so tokio
//! libraries and `!Send` futures work inside events), with sesa's own cross-core inbox
//! and idle policy on top (see `runtime.rs` for the loop and `inbox.rs` for the wake-up
//! protocol). It implements the [`sesa_event::Platform`] seam; applications written
//! against `sesa-event` and `sesa-ebb` run here unchanged.
//!
//! ```
//! use sesa_ebb::PerCore;
//! use sesa_hosted::{Config, Exit, Runtime};
//! use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
//!
//! let config = Config { pin_threads: false, ..Config::with_cores(2) };
//! let exit = Runtime::new(config).unwrap().run(|| async {
//!     let (hits, root) = PerCore::create(|_core| AtomicU64::new(0)).unwrap();
//!     // Every core increments its own rep; core 0 then aggregates.
//!     for result in sesa_event::on_all_cores(move |_| hits.with(|n| n.fetch_add(1, Relaxed))).await {
//!         result.unwrap();
//!     }
//!     root.reps().map(|(_, n)| n.load(Relaxed)).sum::<u64>()
//! });
//! assert_eq!(exit.unwrap(), Exit::Completed(2));
//! ```

#![deny(unsafe_code)] // allowed once: the quiescent-point call in runtime.rs

mod config;
mod contention;
mod inbox;
mod net;
mod panic;
#[allow(unsafe_code)] // `sesa_ebb::quiesce` between events
mod runtime;
mod sync;

pub use config::Config;
pub use runtime::{Exit, Runtime};

/// Why the hosted runtime could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostedError {
    /// The configuration is unusable.
    #[error("invalid runtime configuration: {0}")]
    Config(String),
    /// A core thread could not be started.
    #[error("could not start a core thread")]
    Spawn(#[source] std::io::Error),
    /// A core's tokio runtime could not be built.
    #[error("could not build a core's tokio runtime")]
    Tokio(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("could not install the SIGINT/SIGTERM handlers")]
    Signals(#[source] std::io::Error),
    /// A core could not bind its EBB translation table.
    #[error("could not bind a core")]
    Bind(#[from] sesa_ebb::EbbError),
    /// The main future panicked (the panic was reported with its location).
    #[error("the main task panicked: {0}")]
    MainPanicked(String),
    /// A core's thread died outside any event (a bug in sesa).
    #[error("a core thread crashed: {0}")]
    CoreCrashed(String),
}

#[doc(hidden)]
pub mod __private {
    //! For the shuttle test of the inbox protocol only.
    #[cfg(feature = "shuttle")]
    pub use crate::inbox::{Idle, Inbox};
}
