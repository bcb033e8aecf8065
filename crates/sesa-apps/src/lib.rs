//! # sesa-apps: applications built from EBBs
//!
//! The application layer: code written only against the object model (`sesa-ebb`) and
//! the event API (`sesa-event`), so it runs on any platform: the paper's
//! distributed counter ([`counter`]) and the memcached-compatible data store
//! ([`memcache`]).
//!
//! `no_std` + `alloc`: the hosted runtime, the simulator and the native kernel run the
//! same code. What a platform knows and this crate cannot ask (the process id for
//! `stats`) comes in through the configuration.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod counter;
pub mod memcache;
