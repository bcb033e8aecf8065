//! # sesa-apps: applications built from EBBs
//!
//! The application layer: code written only against the object model (`sesa-ebb`) and
//! the event API (`sesa-event`), so it runs on any platform. For now, the paper's
//! distributed counter ([`counter`]); the data store and the language runtimes follow.

#![forbid(unsafe_code)]

pub mod counter;
pub mod memcache;
