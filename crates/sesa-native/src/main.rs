//! `sesa-kernel`: the native image with the built-in applications (the counter, `cat`
//! and the data store), which `sesa run --native` and `sesa kv --native` boot.

#![no_std]
#![no_main]

use sesa_node::app::Apps;

/// The built-in applications (the same table as the `sesa` binary's).
fn builtin() -> Apps {
    Apps::new()
        .with::<sesa_counter::Counter>()
        .with::<sesa_cat::Cat>()
        .with::<sesa_kv::Kv>()
}

sesa_native::entry!(builtin);
