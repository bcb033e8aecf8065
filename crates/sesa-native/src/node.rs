//! A native node on the network: the executive's messenger, unchanged, on the native
//! event loop, serving an EBB to hosted nodes.
//!
//! First part: the node listens for the messenger's authenticated connections and serves
//! a counter at a well-known static EBB id; a hosted node connects (through QEMU's user
//! network), authenticates with the cluster secret, and calls it. Joining a frontend's
//! cluster (`sesa run --native`) comes next.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use core::time::Duration;

use sesa_ebb::{EbbNode, NodeId, NodeShared};
use sesa_exec::{Identity, Messenger, MessengerConfig, RemoteError, RemoteRep, Request, Secret};

use crate::println;

/// The static EBB index of the counter a native node serves.
pub const COUNTER_INDEX: u32 = 3;
/// The counter's methods: add one and return the count (`u64`, little-endian) ...
pub const INC: u16 = 1;
/// ... and stop the node (after the reply has gone).
pub const STOP: u16 = 2;
/// The messenger's port.
pub const PORT: u16 = 7000;

/// The counter service: one rep for the node.
struct Counter(AtomicU64);

impl RemoteRep for Counter {
    fn handle(&self, request: Request<'_>) -> Result<Vec<u8>, RemoteError> {
        match request.method {
            INC => Ok((self.0.fetch_add(1, Relaxed) + 1).to_le_bytes().to_vec()),
            STOP => {
                println!(
                    "sesa-native: node: node {} asked it to stop",
                    request.from.node
                );
                sesa_event::spawn_local(async {
                    // Time for the reply to leave.
                    sesa_event::sleep(Duration::from_millis(100)).await;
                    sesa_event::stop(0);
                });
                Ok(Vec::new())
            }
            _ => Err(RemoteError::NoHandler),
        }
    }
}

/// Parses 64 hex digits into a cluster secret.
pub fn secret_from_hex(hex: &str) -> Option<Secret> {
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Secret::from_bytes(bytes))
}

/// Runs node `id` of the cluster with `secret`: serves the counter through the messenger
/// until a peer asks it to stop.
pub async fn serve(id: NodeId, secret: Secret) -> Result<(), alloc::string::String> {
    use alloc::format;
    let me = Identity {
        node: id,
        // A native node has no disk: each boot is a new life of the node.
        generation: sesa_event::random_u64() >> 1,
    };
    let messenger = Messenger::create(MessengerConfig::new(me, secret))
        .map_err(|e| format!("messenger: {e}"))?;
    let root = Arc::new(NodeShared::new(|| Counter(AtomicU64::new(0))));
    let counter = EbbNode::current()
        .and_then(|node| node.create_static(COUNTER_INDEX, root))
        .map_err(|e| format!("the counter EBB: {e}"))?;
    messenger
        .serve(counter)
        .await
        .map_err(|e| format!("serving the counter: {e}"))?;
    let addr = messenger
        .listen(core::net::SocketAddr::from(([0, 0, 0, 0], PORT)))
        .await
        .map_err(|e| format!("listening: {e}"))?;
    println!("sesa-native: node {id}: messenger listening on {addr}");
    // Serves until STOP ends the loop.
    core::future::pending::<()>().await;
    Ok(())
}

/// The guest port of the messenger of a node that joins a frontend (forwarded by QEMU).
pub const JOIN_MESSENGER_PORT: u16 = 7000;
/// The guest port of the data store's clients on such a node.
pub const JOIN_CLIENTS_PORT: u16 = 11211;

/// What `join` needs from the command line: `join <frontend> <registry> <id>
/// <messenger host port> <clients host port>`.
pub struct JoinArgs {
    /// The frontend's messenger address, as the host sees it (127.0.0.1:port).
    pub frontend: core::net::SocketAddr,
    /// The registry EBB's raw id.
    pub registry: u64,
    /// This node's id.
    pub id: NodeId,
    /// The host ports forwarded to [`JOIN_MESSENGER_PORT`] and [`JOIN_CLIENTS_PORT`].
    pub messenger_port: u16,
    /// See `messenger_port`.
    pub clients_port: u16,
}

impl JoinArgs {
    /// Parses the words after `join`.
    pub fn parse<'a>(mut words: impl Iterator<Item = &'a str>) -> Option<JoinArgs> {
        Some(JoinArgs {
            frontend: words.next()?.parse().ok()?,
            registry: words.next()?.parse().ok()?,
            id: NodeId::new(words.next()?.parse().ok()?),
            messenger_port: words.next()?.parse().ok()?,
            clients_port: words.next()?.parse().ok()?,
        })
    }
}

/// Runs this machine as node `args.id` of the frontend's application: the same code as a
/// hosted node (`sesa-node`), behind QEMU's port forwarding. Returns when the frontend
/// lets go of the node (`Ok`) or is lost.
///
/// # Errors
/// The frontend cannot be joined, or was lost.
pub async fn join(
    args: JoinArgs,
    secret: Secret,
    heap_bytes: u64,
    apps: sesa_node::app::Apps,
) -> Result<(), alloc::string::String> {
    use sesa_node::run::{Addressing, Forward, NodeParams};
    let registry = sesa_ebb::EbbId::from_raw(args.registry)
        .ok_or_else(|| alloc::format!("{} is not an EBB id", args.registry))?;
    println!(
        "sesa-native: node {} joining the frontend at {}",
        args.id, args.frontend
    );
    sesa_node::run::run(NodeParams {
        id: args.id,
        secret,
        frontend: args.frontend,
        registry,
        addressing: Addressing::Forwarded {
            messenger: Forward {
                guest: JOIN_MESSENGER_PORT,
                host: args.messenger_port,
            },
            clients: Forward {
                guest: JOIN_CLIENTS_PORT,
                host: args.clients_port,
            },
        },
        membership: sesa_exec::MembershipConfig::tolerant_local(),
        pid: 0,
        platform: sesa_node::Platform::Native,
        // Items may take half the heap: the rest is their table, the connections and
        // the stack's socket buffers (an eighth).
        memory_max: Some(usize::try_from(heap_bytes / 2).unwrap_or(usize::MAX)),
        // The applications this image is built with.
        apps,
    })
    .await
}
