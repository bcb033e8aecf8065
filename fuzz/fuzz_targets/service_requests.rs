//! A peer's call, as a typed service's server reads it: a method id and a body decoded
//! as the request of the store's, the id map's (the naming service of global EBBs),
//! node control, registry or offload service (`sesa_exec::service::decode_request`). Nothing may panic; a body
//! that decodes must name the method it came with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesa_apps::memcache::cluster::StoreService;
use sesa_exec::idmap::IdMapService;
use sesa_exec::service::{Service, decode_request};
use sesa_node::offload::OffloadService;
use sesa_node::{ControlService, RegistryService};

/// Decodes `payload` as a call of `method` to `S`; a request that decodes names it.
fn call<S: Service>(method: u16, payload: &[u8]) {
    if let Ok(request) = decode_request::<S>(method, payload) {
        assert_eq!(S::method(&request), method);
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the service, the next two the method id.
    let [which, m0, m1, payload @ ..] = data else {
        return;
    };
    let method = u16::from_le_bytes([*m0, *m1]) % 16;
    match which % 5 {
        0 => call::<StoreService>(method, payload),
        1 => call::<IdMapService>(method, payload),
        2 => call::<ControlService>(method, payload),
        3 => call::<RegistryService>(method, payload),
        _ => call::<OffloadService>(method, payload),
    }
});
