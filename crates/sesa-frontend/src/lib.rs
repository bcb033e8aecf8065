//! # sesa-frontend: the frontend of a sesa application, as a library
//!
//! The paper's library OS runs an application on a set of nodes and a *frontend* on a
//! legacy OS that launches them, makes them look like one local process and serves the
//! legacy functions they offload (console, files). This crate is that frontend, for any
//! application:
//!
//! - [`Application`] is the application API's frontend side: what the frontend does
//!   once the nodes have joined (run the node side, [`sesa_node::app::App`], on every
//!   node and combine the outcomes; or drive an elastic loop through the [`Cluster`]).
//! - [`run`] runs an application as the frontend of local node processes (or QEMUs
//!   booting the native kernel, [`NativeNodes`]); [`node`] is a node process.
//! - [`Program`] and [`main`] make an application its own program: the same binary is
//!   the frontend and, launched by it, each hosted node.
//! - [`offload`] is the frontend's side of the offloaded console, files (confined to
//!   the directories granted) and environment; [`status`] and [`scale`] reach a running
//!   application (`sesa status`, `sesa scale`).
//!
//! # Writing an application
//!
//! An application is a crate that depends on `sesa-node` (the node side, `no_std`),
//! `sesa-frontend` (this crate) and whatever EBBs it uses. The example prints a line
//! from every node through the frontend's console and counts the nodes that did:
//!
//! ```no_run
//! use sesa_frontend::{Application, Cluster, Program};
//! use sesa_node::app::{App, AppError, NodeContext};
//! use sesa_node::offload::Stream;
//!
//! struct Hello;
//!
//! impl App for Hello {
//!     const NAME: &'static str = "hello";
//!     type Settings = String;
//!     type Outcome = u32;
//!
//!     async fn run(node: NodeContext, greeting: String) -> Result<u32, AppError> {
//!         let line = format!("{greeting} from node {}\n", node.id());
//!         node.offload().print(Stream::Out, &line).await?;
//!         Ok(1)
//!     }
//! }
//!
//! impl Application for Hello {
//!     type Node = Hello;
//!     type Settings = String;
//!     type Output = std::process::ExitCode;
//!
//!     async fn frontend(
//!         cluster: &mut Cluster<'_>,
//!         greeting: String,
//!     ) -> anyhow::Result<std::process::ExitCode> {
//!         let said: u32 = cluster
//!             .run_everywhere::<Hello>(&greeting)
//!             .await?
//!             .into_iter()
//!             .map(|(_node, n)| n)
//!             .sum();
//!         println!("{said} node(s) said {greeting}");
//!         Ok(std::process::ExitCode::SUCCESS)
//!     }
//! }
//!
//! /// `hello --nodes 3 [--grant DIR] [--native-nodes 1] --greeting hi`
//! #[derive(clap::Args)]
//! struct Args {
//!     #[arg(long, default_value = "hello")]
//!     greeting: String,
//! }
//!
//! impl Program for Hello {
//!     type Args = Args;
//!     fn settings(args: Args) -> anyhow::Result<String> {
//!         Ok(args.greeting)
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     sesa_frontend::main::<Hello>()
//! }
//! ```
//!
//! `examples/wordfreq` in the repository is a complete one: a word-frequency EBB with
//! per-core reps, input read through the offloaded file system.

#![forbid(unsafe_code)]

use std::process::{ExitCode, Termination};

use anyhow::bail;
use clap::{FromArgMatches, Parser};
use sesa_node::app::{App, Apps};

pub mod cluster;
pub mod events;
mod names;
pub mod offload;
pub mod roster;

pub use cluster::{
    Accel, AppDetails, AppStatus, Cluster, FrontendConfig, JOIN_TIMEOUT, LocalProcesses,
    NATIVE_RAM_MB, NativeNodes, NodeArgs, NodeProvider, NodeSpec, NodeStatus, Register, drive,
    node, qemu_command, run, scale, status,
};
pub use events::{Console, Event, EventSink, Recorded};
pub use roster::Roster;
pub use sesa_hosted::Exit;

/// The application API's frontend side: what the frontend does once the first nodes
/// have joined.
///
/// It runs as an event on the frontend's one core. It ends the application by
/// returning: the frontend then stops every node. An application that serves until it
/// is stopped (the data store) never returns; a signal stops it.
#[allow(async_fn_in_trait)] // Events are per-core and not `Send`: no bound is wanted.
pub trait Application: 'static {
    /// The node side: what every node runs.
    type Node: App;
    /// What the frontend starts from (the user's request): often the node side's
    /// settings, sent to every node as they are.
    type Settings: Send + 'static;
    /// The application's end result (it leaves the frontend's runtime thread).
    type Output: Send + 'static;

    /// The frontend's part: typically [`Cluster::run_everywhere`], then combining the
    /// outcomes; an elastic application also launches nodes and answers `sesa scale`
    /// through `cluster`.
    ///
    /// # Errors
    /// The application failed (a node lost, a node's part failed...).
    async fn frontend(
        cluster: &mut Cluster<'_>,
        settings: Self::Settings,
    ) -> anyhow::Result<Self::Output>;
}

/// An application that is a program of its own: its binary is the frontend, and
/// launched by it, each hosted node. [`main`] parses the frontend's options and
/// [`Program::Args`].
pub trait Program: Application {
    /// The application's own options and arguments.
    type Args: clap::Args;

    /// The settings every node gets, from the arguments.
    ///
    /// # Errors
    /// Arguments that make no settings: the message is printed and the program fails.
    fn settings(args: Self::Args) -> anyhow::Result<Self::Settings>;

    /// The applications a node of this program runs (default: this one alone).
    fn apps() -> Apps {
        Apps::new().with::<Self::Node>()
    }
}

/// Where and how nodes run natively (`--native`, `--native-nodes K`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NativeArgs {
    /// Run the nodes natively: the native kernel booted by QEMU, one QEMU per node (its
    /// cores: --cores, default 1).
    #[arg(long)]
    pub native: bool,
    /// Run only this many of the nodes natively (the first ones by id) and the others
    /// as hosted processes: a mixed application.
    #[arg(long, value_name = "K")]
    pub native_nodes: Option<u32>,
    /// The native kernel (default: $SESA_KERNEL, else
    /// crates/sesa-native/target/release/sesa-kernel under the current directory).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<std::path::PathBuf>,
    /// QEMU's accelerator for native nodes (default: kvm where /dev/kvm opens, else
    /// tcg).
    #[arg(long, value_enum)]
    pub accel: Option<Accel>,
}

impl NativeArgs {
    /// Whether any node is to run natively.
    pub fn wanted(&self) -> bool {
        self.native || self.native_nodes.is_some()
    }

    /// The native nodes asked for, if any; `clients` is where the first node's client
    /// port (the data store's) is forwarded from.
    pub fn nodes(self, clients: std::net::SocketAddrV4) -> Option<NativeNodes> {
        if !self.wanted() {
            return None;
        }
        let kernel = self
            .kernel
            .or_else(|| std::env::var_os("SESA_KERNEL").map(Into::into))
            .unwrap_or_else(|| "crates/sesa-native/target/release/sesa-kernel".into());
        Some(NativeNodes {
            kernel,
            accel: self.accel.unwrap_or_else(NativeNodes::default_accel),
            up_to: self.native_nodes,
            clients,
        })
    }
}

/// Builds a native image: the binary `bin` of the crate at `manifest` (a workspace of
/// its own, built with `panic = "abort"`), in release mode and `--locked`, into
/// `target_dir` (default: the crate's own `target`; images may share the kernel's, whose
/// dependencies are theirs). Runs the cargo that runs this process where there is one
/// (`$CARGO`), else `cargo`. Its path.
///
/// # Errors
/// Cargo cannot run, or the build failed.
pub fn build_native_image(
    manifest: &std::path::Path,
    target_dir: Option<&std::path::Path>,
    bin: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--manifest-path",
        ])
        .arg(manifest);
    if let Some(dir) = target_dir {
        command.arg("--target-dir").arg(dir);
    }
    let status = command
        .status()
        .map_err(|e| anyhow::anyhow!("running cargo to build {}: {e}", manifest.display()))?;
    anyhow::ensure!(
        status.success(),
        "building {}: {status}",
        manifest.display()
    );
    let target = match target_dir {
        Some(dir) => dir.to_path_buf(),
        None => manifest
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("target"),
    };
    Ok(target.join("release").join(bin))
}

/// The client address of an application without a store: its native nodes' client port
/// is forwarded, unused, from any free port of 127.0.0.1.
pub const NO_CLIENTS: std::net::SocketAddrV4 =
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0);

/// The first argument that makes a [`Program`]'s binary a node (the frontend launches
/// it so); not for people.
pub const NODE_ARG: &str = "--sesa-node";

/// The frontend's options of a [`Program`], around the application's own.
#[derive(Parser)]
struct Launch<A: clap::Args> {
    /// Node processes to run the application on (launched by this process, the
    /// frontend).
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// Cores per node (default: all the process may use).
    #[arg(long)]
    cores: Option<usize>,
    /// A directory the nodes may read and write through the offloaded file system
    /// (repeatable); nothing else is reachable.
    #[arg(long = "grant", value_name = "DIR")]
    grants: Vec<std::path::PathBuf>,
    #[command(flatten)]
    native: NativeArgs,
    #[command(flatten)]
    app: A,
}

/// A node process of a [`Program`] (its binary run as `<program> --sesa-node ...`).
#[derive(Parser)]
struct NodeLaunch {
    #[command(flatten)]
    args: NodeArgs,
}

/// The `main` of a [`Program`]: as launched by a user, the frontend (its options:
/// `--nodes N`, `--cores C`, `--grant DIR`, `--native`, `--native-nodes K`, `--kernel`,
/// `--accel`, then the application's own); as launched by the frontend
/// (`--sesa-node ...`), one hosted node.
pub fn main<P: Program>() -> ExitCode
where
    P::Output: Termination,
{
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let result = if args.get(1).is_some_and(|a| a == NODE_ARG) {
        args.remove(1);
        run_node(NodeLaunch::parse_from(args).args, P::apps(), P::Node::NAME)
    } else {
        let name = args
            .first()
            .and_then(|a| std::path::Path::new(a).file_name())
            .map_or_else(
                || P::Node::NAME.to_owned(),
                |n| n.to_string_lossy().into_owned(),
            );
        // Once per process: the name lives as long as the program.
        let name: &'static str = Box::leak(name.into_boxed_str());
        let command = <Launch<P::Args> as clap::CommandFactory>::command().name(name);
        match Launch::<P::Args>::from_arg_matches(&command.get_matches_from(args)) {
            Ok(launch) => run_frontend::<P>(launch),
            Err(e) => e.exit(),
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}: {e:#}", P::Node::NAME);
            ExitCode::FAILURE
        }
    }
}

fn run_frontend<P: Program>(launch: Launch<P::Args>) -> anyhow::Result<ExitCode>
where
    P::Output: Termination,
{
    if launch.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let settings = P::settings(launch.app)?;
    let config = FrontendConfig {
        cores_per_node: launch.cores,
        grants: launch.grants,
        native: launch.native.nodes(NO_CLIENTS),
        ..FrontendConfig::local(
            launch.nodes,
            vec![NODE_ARG.into()],
            std::sync::Arc::new(Console),
        )
    };
    match run::<P>(config, settings)? {
        Exit::Completed(output) => Ok(output?.report()),
        other => {
            eprintln!("{}: stopped before the application finished", P::Node::NAME);
            Ok(ExitCode::from(u8::try_from(other.code()).unwrap_or(1)))
        }
    }
}

/// Runs this process as a node running `apps` (see [`node`]); its exit status. A failure
/// is reported on stderr as `<name> node <id>: <why>`.
///
/// # Errors
/// The secret is missing, or the runtime cannot start.
pub fn run_node(args: NodeArgs, apps: Apps, name: &str) -> anyhow::Result<ExitCode> {
    let id = args.id;
    Ok(match node(args, apps)? {
        Exit::Completed(Err(e)) => {
            let id = id.map_or_else(|| "(joining)".to_owned(), |i| i.to_string());
            eprintln!("{name} node {id}: {e:#}");
            ExitCode::FAILURE
        }
        other => ExitCode::from(u8::try_from(other.code()).unwrap_or(1)),
    })
}
