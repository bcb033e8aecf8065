//! Reporting panics of events with their core and location.
//!
//! A panic inside an event never wedges a loop: shipped events run under
//! `catch_unwind`, tasks are isolated by tokio, idle handlers that panic are removed. The
//! hook below makes every such panic visible, once, with where it happened.

use std::cell::Cell;
use std::sync::Once;

use sesa_ebb::CoreId;

std::thread_local! {
    /// The core this thread runs, for the panic hook.
    static CORE: Cell<Option<CoreId>> = const { Cell::new(None) };
}

pub(crate) fn set_thread_core(core: Option<CoreId>) {
    CORE.with(|c| c.set(core));
}

/// Installs (once per process) a panic hook that reports panics on core threads as
/// `sesa: event panicked on core N at FILE:LINE:COL: MESSAGE`, and leaves panics of other
/// threads to the hook that was there before.
pub(crate) fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let Some(core) = CORE.with(|c| c.get()) else {
                return previous(info);
            };
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_else(|| "an unknown location".into());
            let message = payload_message(info.payload());
            eprintln!("sesa: event panicked on {core} at {location}: {message}");
            tracing::error!(core = core.get(), %location, %message, "event panicked");
        }));
    });
}

pub(crate) fn payload_message(payload: &dyn std::any::Any) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_owned()
    }
}
