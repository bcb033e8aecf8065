//! The applications the `sesa` command and the native kernel are built with: the
//! paper's distributed counter, `cat` through the offloaded file system, and the data
//! store. Each is an [`App`] like any user's; [`builtin`] is their table.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering::SeqCst};
use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::KvSettings;
use crate::app::{App, AppError, Apps, NodeContext};
use crate::elastic::PoolAddress;
use crate::offload::Stream;

/// The applications built in: [`Counter`], [`Cat`] and [`Kv`].
pub fn builtin() -> Apps {
    Apps::new().with::<Counter>().with::<Cat>().with::<Kv>()
}

/// The distributed counter: every core of every node increments one counter EBB.
pub struct Counter;

/// What the counter's nodes are asked to do.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct CounterSettings {
    /// Increments per core (without a pool).
    pub incs: u64,
    /// The frontend's work pool: lease chunks of counting from it, elastically, instead
    /// of counting `incs` on every core.
    pub pool: Option<PoolAddress>,
}

impl App for Counter {
    const NAME: &'static str = "counter";
    type Settings = CounterSettings;
    /// This node's increments.
    type Outcome = i64;

    async fn run(node: NodeContext, settings: CounterSettings) -> Result<i64, AppError> {
        let failed = |e: &dyn core::fmt::Display| AppError::Failed(format!("{e}"));
        let Some(pool) = settings.pool else {
            return sesa_apps::counter::count_on_all_cores(settings.incs)
                .await
                .map_err(|e| failed(&e));
        };
        // Elastic: count chunks leased from the frontend's pool.
        let counting = Arc::new(AtomicBool::new(true));
        let watched = counting.clone();
        // The counter's departure event: wait until the chunk in hand is counted and
        // reported, so no count is lost when this node leaves.
        node.on_departure(move || {
            let watched = watched.clone();
            async move {
                while watched.load(SeqCst) {
                    sesa_event::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let result =
            crate::elastic::count_from_pool(node.messenger(), pool, node.leaving_flag()).await;
        counting.store(false, SeqCst);
        result.map_err(|e| failed(&e))
    }
}

/// Prints files through the offloaded console: node `i` reads (through the offloaded
/// file system) and prints every file whose position `p` has `p % nodes == i - 1`.
pub struct Cat;

/// Files `cat` printed, and files it could not.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Printed {
    /// Printed.
    pub files: u32,
    /// Refused or unreadable (each reported on stderr by its node).
    pub failed: u32,
}

impl App for Cat {
    const NAME: &'static str = "cat";
    /// Paths, as the user gave them (relative to the frontend's directory).
    type Settings = Vec<String>;
    type Outcome = Printed;

    async fn run(node: NodeContext, files: Vec<String>) -> Result<Printed, AppError> {
        let offload = node.offload();
        let mut printed = Printed::default();
        let mine = files
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 % node.nodes() == node.id() - 1)
            .map(|(_, f)| f);
        for file in mine {
            match offload.read(file).await {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    offload.print(Stream::Out, &text).await?;
                    printed.files += 1;
                }
                Err(e) => {
                    offload.print(Stream::Err, &format!("cat: {e}\n")).await?;
                    printed.failed += 1;
                }
            }
        }
        Ok(printed)
    }
}

/// The memcached-compatible data store: every node serves clients on its own port and
/// the nodes hold the keys together (see `sesa_apps::memcache::cluster`). A node's part
/// completes once it serves; the store runs until the frontend is stopped.
pub struct Kv;

/// Where a node of the store serves.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct Serving {
    /// The client port (on the settings' listen address, as the frontend's host sees it).
    pub port: u16,
    /// The node as a member of the store's views.
    pub member: sesa_apps::memcache::cluster::Member,
}

impl App for Kv {
    const NAME: &'static str = "kv";
    type Settings = KvSettings;
    type Outcome = Serving;

    async fn run(node: NodeContext, settings: KvSettings) -> Result<Serving, AppError> {
        let (port, member) =
            crate::kv::start_on_node(node.messenger(), node.id(), &settings, node.host())
                .await
                .map_err(AppError::Failed)?;
        Ok(Serving { port, member })
    }
}

/// The data store as its frontend sees it (`sesa status`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStatus {
    /// The current view's epoch.
    pub epoch: u64,
    /// Owners per key.
    pub replicas: u32,
    /// How keys are placed (`Partitioned`, `Central` or `Cached`).
    pub layout: String,
    /// Each serving node's client port (on [`StoreStatus::listen`]), by node id.
    pub ports: alloc::collections::BTreeMap<u32, u16>,
    /// The address the client ports are on (`sesa kv -l`; `None`: 127.0.0.1, from a
    /// frontend older than the option).
    #[serde(default)]
    pub listen: Option<core::net::IpAddr>,
    /// The latest move of keys to a new view (`None` before the first change).
    pub rebalance: Option<sesa_apps::memcache::cluster::Rebalance>,
}
