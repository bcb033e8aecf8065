//! # sesa-kv: the memcached-compatible data store, as a sesa application
//!
//! The paper's elastic data store (its hash-table EBB, section 4.4) as an application
//! crate: the node side ([`Kv`], `no_std`: the native kernel links it) starts a node's
//! part of the store (`sesa_apps::memcache`: its partitions, the cluster layer, the
//! clients' listener on every core); the frontend side (feature `frontend`,
//! [`KvFrontend`]) starts the store on every node, hands out views of the store's nodes,
//! and changes the view when a node joins (`sesa scale`, or by hand), is asked to leave,
//! or is lost, then waits until every node has moved its keys.

#![cfg_attr(not(feature = "frontend"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use serde::{Deserialize, Serialize};
use sesa_node::app::{App, AppError, NodeContext};

#[cfg(feature = "frontend")]
mod frontend;
mod node;

#[cfg(feature = "frontend")]
pub use frontend::KvFrontend;
pub use node::{check_memory, start_on_node};

/// How the data store runs on each node.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct KvSettings {
    /// Node `i` listens on `port + i - 1` (0: every node picks a free port). A node
    /// behind port forwarding (native) serves on the port its provider forwarded.
    pub port: u16,
    /// The address the nodes' client ports are on (like memcached's `-l`): 127.0.0.1
    /// keeps the store on this machine, 0.0.0.0 opens it to every interface. (A
    /// native node's provider forwards its port from this address.)
    pub listen: core::net::IpAddr,
    /// Memory for items per node, in bytes.
    pub memory_bytes: usize,
    /// Largest item, in bytes.
    pub item_max: usize,
    /// Client connections per node.
    pub max_connections: u64,
    /// Owners per key.
    pub replicas: u32,
    /// How keys are placed on the nodes.
    pub layout: sesa_apps::memcache::cluster::Layout,
    /// Which nodes own a key of a partitioned store (`ketama`: the one a ketama
    /// client picks is the key's primary).
    pub placement: sesa_apps::memcache::cluster::Placement,
    /// The address clients are told to reach the nodes at (`config get cluster`) when
    /// they listen on every interface (`listen` 0.0.0.0 or ::); `None`: 127.0.0.1.
    pub advertise: Option<core::net::IpAddr>,
}

/// The memcached-compatible data store: every node serves clients on its own port and
/// the nodes hold the keys together (see `sesa_apps::memcache::cluster`). A node's part
/// completes once it serves; the store runs until the frontend is stopped.
pub struct Kv;

/// Where a node of the store serves.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct Serving {
    /// Where clients reach it (as the frontend's host sees it).
    pub addr: core::net::SocketAddr,
    /// The node as a member of the store's views.
    pub member: sesa_apps::memcache::cluster::Member,
}

impl App for Kv {
    const NAME: &'static str = "kv";
    type Settings = KvSettings;
    type Outcome = Serving;

    async fn run(node: NodeContext, settings: KvSettings) -> Result<Serving, AppError> {
        let (addr, member) =
            crate::start_on_node(node.messenger(), node.id(), &settings, node.host())
                .await
                .map_err(AppError::Failed)?;
        Ok(Serving { addr, member })
    }
}

/// The data store as its frontend sees it (`sesa status`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStatus {
    /// The current view's epoch.
    pub epoch: u64,
    /// Owners per key.
    pub replicas: u32,
    /// How keys are placed (`Partitioned`, `Partitioned (ketama)`, `Central` or
    /// `Cached`).
    pub layout: String,
    /// Each serving node's client port (on [`StoreStatus::listen`]), by node id.
    pub ports: alloc::collections::BTreeMap<sesa_exec::NodeId, u16>,
    /// The address the client ports are on (`sesa kv -l`; `None`: 127.0.0.1, from a
    /// frontend older than the option).
    #[serde(default)]
    pub listen: Option<core::net::IpAddr>,
    /// The latest move of keys to a new view (`None` before the first change).
    pub rebalance: Option<sesa_apps::memcache::cluster::Rebalance>,
}

impl StoreStatus {
    /// The lines `sesa status` prints for the store.
    pub fn lines(&self) -> alloc::vec::Vec<String> {
        let mut lines = alloc::vec![format!(
            "store: view {}, {} owner(s) per key, {} layout",
            self.epoch, self.replicas, self.layout
        )];
        let listen = self.listen.unwrap_or([127, 0, 0, 1].into());
        for (node, &port) in &self.ports {
            let addr = core::net::SocketAddr::new(listen, port);
            lines.push(format!("  node {node} serves clients on {addr}"));
        }
        if let Some(r) = &self.rebalance {
            lines.push(format!("  last rebalance: {}", r.line()));
        }
        lines
    }
}
