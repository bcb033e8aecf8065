//! The application API, node side: what a node runs for an application.
//!
//! An application is a type that implements [`App`]: a name, its settings (what the
//! frontend sends every node), its outcome (what each node sends back) and
//! [`App::run`], this node's part. A node runs only the applications it was built with,
//! listed in an [`Apps`] table handed to [`crate::run::run`]: a hosted node's binary is
//! the application's own (it launches itself as its nodes), a native node's kernel image
//! links the table in. The frontend side of an application (what the frontend does with
//! its nodes' outcomes) is the `sesa-frontend` crate's `Application`.
//!
//! ```
//! use sesa_node::app::{App, AppError, Apps, NodeContext};
//! use serde::{Deserialize, Serialize};
//!
//! /// Every node says hello through the frontend's console.
//! struct Hello;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Greeting {
//!     text: String,
//! }
//!
//! impl App for Hello {
//!     const NAME: &'static str = "hello";
//!     type Settings = Greeting;
//!     type Outcome = u32;
//!
//!     async fn run(node: NodeContext, settings: Greeting) -> Result<u32, AppError> {
//!         let line = format!("{} from node {} of {}\n", settings.text, node.id(), node.nodes());
//!         node.offload().print(sesa_node::offload::Stream::Out, &line).await?;
//!         Ok(node.id().get())
//!     }
//! }
//!
//! let apps = Apps::new().with::<Hello>();
//! assert!(apps.names().eq(["hello"]));
//! ```

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering::SeqCst};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sesa_exec::global::GlobalEbbs;
use sesa_exec::{CallError, Departures, MessengerRef, NodeId, ServiceError};

use crate::offload::OffloadClient;
use crate::run::Host;

/// An application's node side.
///
/// The future [`App::run`] returns runs on core 0 of the node, as an event; it may ship
/// work to every core (`sesa_event::spawn_on`), create EBBs, call other nodes through
/// [`NodeContext::messenger`] and reach the frontend's console and files through
/// [`NodeContext::offload`]. Its outcome goes back to the frontend when it completes; an
/// application that serves until it is stopped (the data store) completes once it is
/// serving.
#[allow(async_fn_in_trait)] // Events are per-core and not `Send`: no bound is wanted.
pub trait App: 'static {
    /// The application's name on the wire: unique among the applications a node runs.
    const NAME: &'static str;
    /// What the frontend sends every node.
    type Settings: Serialize + DeserializeOwned + Send + 'static;
    /// What each node's part sends back.
    type Outcome: Serialize + DeserializeOwned + 'static;

    /// This node's part of the application.
    ///
    /// # Errors
    /// The part failed: the frontend reports the error with the node's id.
    async fn run(node: NodeContext, settings: Self::Settings) -> Result<Self::Outcome, AppError>;
}

/// Why a node's part of an application failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppError {
    /// This node was not built with the application.
    Unknown {
        /// The name asked for.
        app: String,
        /// The applications the node runs.
        known: Vec<String>,
    },
    /// The settings did not decode as the application's (a frontend and nodes built from
    /// different versions).
    BadSettings {
        /// The application.
        app: String,
    },
    /// A call through the executive failed (the frontend or a peer lost, say).
    Call(String),
    /// The application's own failure.
    Failed(String),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Unknown { app, known } => {
                write!(f, "this node does not run application {app:?} (it runs: ")?;
                for (i, k) in known.iter().enumerate() {
                    write!(f, "{}{k}", if i > 0 { ", " } else { "" })?;
                }
                write!(f, ")")
            }
            AppError::BadSettings { app } => write!(
                f,
                "the settings sent for {app} do not decode (are the frontend and the node the same build?)"
            ),
            AppError::Call(e) => write!(f, "a call failed: {e}"),
            AppError::Failed(e) => f.write_str(e),
        }
    }
}

impl core::error::Error for AppError {}

impl AppError {
    /// The application's own failure, said by `e`.
    pub fn failed(e: impl fmt::Display) -> Self {
        AppError::Failed(alloc::format!("{e}"))
    }
}

impl From<CallError> for AppError {
    fn from(e: CallError) -> Self {
        AppError::Call(e.to_string())
    }
}

impl<E: fmt::Display + fmt::Debug> From<ServiceError<E>> for AppError {
    fn from(e: ServiceError<E>) -> Self {
        AppError::Call(e.to_string())
    }
}

/// The frontend's request to run an application on a node (the control EBB's
/// [`crate::Control::RunApp`]); the reply is the encoded [`App::Outcome`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunApp {
    /// [`App::NAME`].
    pub app: String,
    /// The nodes the application started with (their ids are `1..=nodes`; nodes added
    /// later have higher ids).
    pub nodes: u32,
    /// The encoded [`App::Settings`].
    pub settings: Vec<u8>,
}

impl RunApp {
    /// The request to run `A` with `settings` on an application that started with
    /// `nodes` nodes.
    ///
    /// # Errors
    /// The settings cannot be encoded.
    pub fn new<A: App>(nodes: u32, settings: &A::Settings) -> Result<Self, postcard::Error> {
        Ok(RunApp {
            app: A::NAME.into(),
            nodes,
            settings: postcard::to_allocvec(settings)?,
        })
    }
}

/// What a node's part of an application works with. Cheap to clone.
#[derive(Clone)]
pub struct NodeContext {
    pub(crate) id: NodeId,
    pub(crate) nodes: u32,
    pub(crate) offload: OffloadClient,
    pub(crate) global: Arc<GlobalEbbs>,
    pub(crate) leaving: Arc<AtomicBool>,
    pub(crate) departures: Arc<Departures>,
    pub(crate) host: Host,
}

impl NodeContext {
    /// This node's id (1 and up; 0 is the frontend).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The nodes the application started with (ids `1..=nodes`; a node added later has
    /// a higher id): what a static split of the work divides by.
    pub fn nodes(&self) -> u32 {
        self.nodes
    }

    /// This node's share of `items` in a static split over the first nodes: every
    /// `nodes()`-th item from this node's place, with its index (a node added later
    /// gets none).
    pub fn share<'a, T>(&self, items: &'a [T]) -> impl Iterator<Item = (usize, &'a T)> + 'a {
        let (place, nodes) = (self.id.get().wrapping_sub(1), self.nodes.max(1));
        items
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i as u32 % nodes == place)
    }

    /// The frontend's console, files (only under the directories the user granted) and
    /// environment.
    pub fn offload(&self) -> OffloadClient {
        self.offload
    }

    /// This node's globally named EBBs: create one (reachable by its id on every node),
    /// or resolve an id (on the first access here, the global miss).
    pub fn global(&self) -> &GlobalEbbs {
        &self.global
    }

    /// The node's messenger: calls to other nodes' EBBs, and serving this node's.
    pub fn messenger(&self) -> MessengerRef {
        self.offload.messenger()
    }

    /// Whether the frontend has asked this node to leave (a planned shrink). Long-running
    /// parts check it between units of work and finish early.
    pub fn leaving(&self) -> bool {
        self.leaving.load(SeqCst)
    }

    /// The flag behind [`NodeContext::leaving`], for work that outlives a borrow.
    pub fn leaving_flag(&self) -> Arc<AtomicBool> {
        self.leaving.clone()
    }

    /// Runs `handler` when the node is asked to leave, before it stops: the place to
    /// move state elsewhere or to finish the work in hand (the node's departure event).
    pub fn on_departure<F, Fut>(&self, handler: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.departures.on_departure(handler);
    }

    /// How the node is reached from the frontend's host (its ports), its process id and
    /// its memory bound.
    pub fn host(&self) -> Host {
        self.host
    }
}

type Running = Pin<Box<dyn Future<Output = Result<Vec<u8>, AppError>>>>;
type Start = fn(NodeContext, &[u8]) -> Running;

/// The applications a node runs, by name.
#[derive(Clone, Default)]
pub struct Apps {
    entries: Vec<(&'static str, Start)>,
}

impl Apps {
    /// No application.
    pub fn new() -> Self {
        Apps::default()
    }

    /// Adds `A`.
    ///
    /// # Panics
    /// Another application of the table has `A`'s name (a programming error).
    #[must_use]
    pub fn with<A: App>(mut self) -> Self {
        assert!(
            self.entries.iter().all(|(name, _)| *name != A::NAME),
            "two applications are named {:?}",
            A::NAME
        );
        self.entries.push((A::NAME, start::<A>));
        self
    }

    /// The names, in the order they were added.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|(name, _)| *name)
    }

    /// Runs the application `request` names.
    ///
    /// # Errors
    /// The node does not run it, its settings do not decode, or it failed.
    pub async fn run(&self, node: NodeContext, request: &RunApp) -> Result<Vec<u8>, AppError> {
        let Some((_, start)) = self.entries.iter().find(|(n, _)| *n == request.app) else {
            return Err(AppError::Unknown {
                app: request.app.clone(),
                known: self.names().map(ToString::to_string).collect(),
            });
        };
        start(node, &request.settings).await
    }
}

fn start<A: App>(node: NodeContext, settings: &[u8]) -> Running {
    let settings = postcard::from_bytes::<A::Settings>(settings);
    Box::pin(async move {
        let settings = settings.map_err(|_| AppError::BadSettings {
            app: A::NAME.into(),
        })?;
        let outcome = A::run(node, settings).await?;
        postcard::to_allocvec(&outcome).map_err(|_| AppError::Failed("encoding the outcome".into()))
    })
}
