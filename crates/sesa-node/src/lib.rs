//! # sesa-node: a node of an application, on any platform
//!
//! A frontend (`sesa-frontend`: `sesa run`, `sesa kv`, or an application's own binary)
//! starts N nodes: hosted ones (processes) and native ones (a kernel image under QEMU).
//! This crate is what every one of them runs, written against the object model, the
//! event API and the executive only, so both platforms run the same code:
//! [`run`](mod@run) joins the frontend (authenticated messenger, SWIM membership),
//! serves the node's control EBB ([`ControlService`]: run an application, report
//! figures, leave with a drain), registers with the frontend's registry
//! ([`RegistryService`]), and stops when the frontend lets go of it or is lost.
//! [`offload`] is the node's side of the frontend's console, files and environment.
//!
//! [`app`] is the application API's node side: an application is a type implementing
//! [`app::App`], and a node runs the applications of the [`app::Apps`] table it was
//! built with (the built-in ones are crates under `apps/`).
//!
//! The wire types between the frontend and its nodes live here too (the services,
//! [`app::RunApp`], [`Register`], [`NodeStatus`]), so that the two sides cannot drift
//! apart. The frontend itself (launching nodes, the registry, the offload service) is
//! the `sesa-frontend` crate: it needs an OS.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use sesa_ebb::{EbbId, NodeId};

pub mod app;
pub mod micro;
pub mod offload;
pub mod run;

/// Node ids from here up are for `sesa status` clients, not nodes.
pub const ADMIN_FIRST: NodeId = NodeId::new(0xFFFF_0000);

/// The registry is a static EBB at this index on the frontend: a node knows its id
/// (`EbbId::static_id(1)`) without being told.
pub const REGISTRY_INDEX: u32 = 1;

/// The frontend's admin service (`sesa status`, `sesa scale`) is a static EBB at this
/// index on the frontend.
pub const ADMIN_INDEX: u32 = 2;

/// The frontend's registry of nodes ([`Registry`] requests).
pub struct RegistryService;

/// What a node asks the frontend's registry.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Registry {
    /// A node announces itself, ready for work; the answer names the offload service.
    Register(Register),
    /// A node arriving by hand (`sesa node --join`) asks for an id.
    Join,
}

/// The registry's answers.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// Registered: the frontend's services for its nodes are these EBBs.
    Services {
        /// The offload service (console, files, environment).
        offload: EbbId,
    },
    /// The id for a node arriving by hand.
    Id(NodeId),
}

/// Why the registry refused.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    /// A node may only register itself (its id is the one it authenticated with).
    NotItself {
        /// The id it authenticated with.
        caller: NodeId,
        /// The id it tried to register.
        named: NodeId,
    },
    /// Every node id has been handed out.
    OutOfIds,
}

impl core::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegistryError::NotItself { caller, named } => {
                write!(
                    f,
                    "node {caller} may not register node {named}: only itself"
                )
            }
            RegistryError::OutOfIds => f.write_str("out of node ids"),
        }
    }
}

impl sesa_exec::Service for RegistryService {
    const NAME: &'static str = "registry";
    type Request = Registry;
    type Reply = Registered;
    type Error = RegistryError;

    fn method(request: &Registry) -> u16 {
        match request {
            Registry::Register(_) => 1,
            Registry::Join => 2,
        }
    }
}

/// A node's control EBB, called by the frontend ([`Control`] requests).
pub struct ControlService;

/// What the frontend asks a node.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Control {
    /// Run (this node's part of) an application; the answer is its encoded outcome.
    RunApp(app::RunApp),
    /// Report this node's figures.
    Stats,
    /// Leave the application (planned, with drain): answered once drained.
    Leave,
    /// Install a view of the global id map's members (the naming service of global
    /// EBBs), then copy this node's entries to their replicas in it: answered once
    /// they are. A node taken out of the view gets it too (it hands its entries over).
    InstallNames(NamesView),
    /// Act on the view installed: every member of it has installed it and copied its
    /// entries over (so it is the settled one too).
    ActivateNames(NamesView),
}

/// The members of the global id map in one of its views (numbered by the frontend,
/// growing with each change).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NamesView {
    /// The view's number.
    pub epoch: u64,
    /// Its members.
    pub members: Vec<sesa_exec::Member>,
}

/// A node's answers.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum ControlReply {
    /// The application's part completed: its outcome, encoded.
    Ran(Vec<u8>),
    /// The node's figures.
    Stats(NodeStatus),
    /// Drained: the node stops.
    Left,
    /// The id map's view is installed, and this node's entries are on their replicas
    /// in it (how many copies were taken).
    NamesInstalled(u64),
    /// The id map's view is active.
    NamesActive,
}

/// Why a node refused.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// Asked to run an application before its registration was answered.
    NotRegistered,
    /// The application's part failed.
    App(app::AppError),
    /// The id map's entries could not all be copied to their replicas (why).
    Names(String),
}

impl core::fmt::Display for ControlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ControlError::NotRegistered => f.write_str("the node has not registered yet"),
            ControlError::App(e) => e.fmt(f),
            ControlError::Names(why) => write!(f, "the id map: {why}"),
        }
    }
}

impl sesa_exec::Service for ControlService {
    const NAME: &'static str = "node control";
    type Request = Control;
    type Reply = ControlReply;
    type Error = ControlError;

    fn method(request: &Control) -> u16 {
        match request {
            Control::RunApp(_) => 1,
            Control::Stats => 2,
            Control::Leave => 3,
            Control::InstallNames(_) => 4,
            Control::ActivateNames(_) => 5,
        }
    }
}

/// What kind of machine a node runs on.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// A process on a legacy OS (Linux).
    Hosted,
    /// The native kernel, booted on a (virtual) machine.
    Native,
    /// A node of the deterministic simulator (`sesa sim`).
    Simulated,
}

impl Platform {
    /// `hosted` or `native`.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Hosted => "hosted",
            Platform::Native => "native",
            Platform::Simulated => "simulated",
        }
    }
}

impl core::fmt::Display for Platform {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Through `pad`, so that widths and alignment apply (the status table).
        f.pad(self.as_str())
    }
}

/// What a node tells the frontend when it joins.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// Its id.
    pub node: NodeId,
    /// Its generation.
    pub generation: u64,
    /// Its control EBB.
    pub control: EbbId,
    /// Its store of the global id map (the naming service's part on this node).
    pub names: EbbId,
    /// Its cores.
    pub cores: u32,
    /// Its process id (0 for a native node: its QEMU is the frontend's child).
    pub pid: u32,
    /// What it runs on.
    pub platform: Platform,
}

/// One node's figures, as `sesa status` shows them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node id (0 is the frontend).
    pub node: NodeId,
    /// Generation.
    pub generation: u64,
    /// Process id (a native node's QEMU's, filled in by the frontend).
    pub pid: u32,
    /// What it runs on.
    pub platform: Platform,
    /// Cores.
    pub cores: u32,
    /// Live EBBs on the node.
    pub ebbs: usize,
    /// Reps on all its cores.
    pub reps: usize,
    /// The most any of its cores' threads lately waited for a CPU (percent of the time;
    /// above 10% its idle cores stop spinning), where the platform measures it.
    pub cpu_wait_pct: Option<u32>,
    /// Nodes it is connected to.
    pub peers: Vec<NodeId>,
    /// Its messenger's counters.
    pub messages: sesa_exec::MessengerStats,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// "up", or why its figures could not be read.
    pub state: String,
}
