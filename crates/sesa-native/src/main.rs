//! `sesa-kernel`: the native image with the built-in applications (the counter, `cat`
//! and the data store), which `sesa run --native` and `sesa kv --native` boot.

#![no_std]
#![no_main]

sesa_native::entry!(sesa_node::builtin::builtin);
