//! A node's part of the data store: its partitions, the cluster layer over them, and
//! its clients' listener.

use alloc::format;
use alloc::string::String;
use core::net::{Ipv4Addr, SocketAddr};

use sesa_apps::memcache::cluster::{self as store, Member};
use sesa_apps::memcache::{protocol::Limits, server};
use sesa_exec::{MessengerRef, NodeId};

use sesa_node::run::{Addressing, Host};

use crate::KvSettings;

/// Checks that `memory_bytes` of items fit under `memory_max`.
///
/// # Errors
/// They do not: the reason, in MiB.
pub fn check_memory(memory_bytes: usize, memory_max: Option<usize>) -> Result<(), String> {
    match memory_max {
        Some(max) if memory_bytes > max => Err(format!(
            "{} MiB of items do not fit this node, which allows {} MiB (half its heap; give \
             QEMU more memory)",
            memory_bytes >> 20,
            max >> 20
        )),
        _ => Ok(()),
    }
}

/// Creates the store on this node (node `me`), serves clients on every core, and joins
/// the store's messages. Returns the clients' address (as clients on the frontend's
/// host reach it) and the node as a view member.
///
/// # Errors
/// The port is taken, or the node's runtime refused.
pub async fn start_on_node(
    messenger: MessengerRef,
    me: NodeId,
    settings: &KvSettings,
    host: Host,
) -> Result<(SocketAddr, Member), String> {
    check_memory(settings.memory_bytes, host.memory_max)?;
    let config = server::KvConfig {
        limits: Limits {
            item_max: settings.item_max,
            ..Limits::default()
        },
        memory_bytes: settings.memory_bytes,
        max_connections: settings.max_connections,
        pid: host.pid,
    };
    let kv = server::Kv::create(&config).map_err(|e| format!("the store's EBB: {e}"))?;
    let (node, kv) = store::Node::start(messenger, kv)
        .await
        .map_err(|e| format!("joining the store: {e}"))?;
    // Where to listen, and where clients reach it (`None`: the port bound, on the same
    // address).
    let (listen, seen_at) = match host.addressing {
        Addressing::Loopback => (SocketAddr::new(settings.listen, port(settings, me)?), None),
        Addressing::Own(ip) => (SocketAddr::new(ip, port(settings, me)?), None),
        Addressing::Forwarded { clients, .. } => (
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, clients.guest)),
            Some(SocketAddr::new(settings.listen, clients.host)),
        ),
    };
    let bound = server::serve_every_core(kv, listen)
        .await
        .map_err(|e| format!("node {me} listening on {listen}: {e}"))?;
    let mut addr = seen_at.unwrap_or(SocketAddr::new(listen.ip(), bound.port()));
    if addr.ip().is_unspecified() {
        // Listening on every interface: clients are told the address given for them.
        addr.set_ip(settings.advertise.unwrap_or(Ipv4Addr::LOCALHOST.into()));
    }
    let mut member = node.member();
    member.addr = Some(addr);
    Ok((addr, member))
}

/// Node `me`'s client port: the OS's pick (0), or the settings' base port plus the node's
/// place.
fn port(settings: &KvSettings, me: NodeId) -> Result<u16, String> {
    match settings.port {
        0 => Ok(0),
        base => u16::try_from(u32::from(base) + me.get() - 1)
            .map_err(|_| format!("node {me}'s port would be above 65535")),
    }
}
