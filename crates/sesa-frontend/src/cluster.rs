//! Many nodes as one application: the frontend's setup and its [`Cluster`] handle, node
//! providers (processes and QEMU), the node process, and `sesa status` / `sesa scale`.
//!
//! The frontend (node 0) listens for nodes, launches them through a [`NodeProvider`],
//! forwards their output prefixed by node, waits until each has registered, then hands
//! a [`Cluster`] to the application's [`Application::frontend`]. The application
//! therefore looks like one local process: one command, one output, one exit status,
//! and Ctrl-C stops everything. The frontend also serves the nodes' offloaded console,
//! files and environment ([`crate::offload`]), and answers `sesa status` and
//! `sesa scale` through its admin service.
//!
//! A node ([`node`]) reads the cluster secret (the `SESA_SECRET` variable, or the first
//! line of its standard input), connects to the frontend, joins the SWIM membership,
//! serves its control EBB, and registers with the frontend's registry. The registry is
//! static EBB 1, so a node needs no id from anyone; a node without an id gets one from
//! the registry. It stops when the frontend closes its standard input (normal
//! shutdown), asks it to leave, or is lost, and on SIGINT/SIGTERM. So a `kill -9` of
//! the frontend leaves no node running.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use sesa_ebb::{CoreId, EbbId, NodeId, NodeShared};
use sesa_exec::service::{self, Client, Service, ServiceError};
use sesa_exec::{
    Identity, MemberEvent, Membership, MembershipConfig, Messenger, MessengerConfig, MessengerRef,
    RemoteError, RemoteRep, Request, Secret,
};
use sesa_hosted::{Config, Exit, Runtime};
use sesa_node::app::{App, Apps, RunApp};
use sesa_node::offload::OffloadService;
use sesa_node::{
    ADMIN_FIRST, ADMIN_INDEX, Control, ControlReply, ControlService, REGISTRY_INDEX, Registered,
    Registry as RegistryRequest, RegistryError, RegistryService,
};
pub use sesa_node::{NodeStatus, Register};

use crate::Application;
use crate::events::{Console, Event, EventSink};
use crate::names::Names;
use crate::roster::{Action, Roster};

/// The frontend's admin service, behind `sesa status` and `sesa scale` ([`Admin`]
/// requests).
pub struct AdminService;

/// What `sesa status` and `sesa scale` ask the frontend.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub enum Admin {
    /// The application's state, gathered live from every node.
    Status,
    /// Grow or shrink to this many nodes; answered when done.
    Scale(u32),
}

/// The admin service's answers.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum AdminReply {
    /// The application's state.
    Status(AppStatus),
    /// What scaling did.
    Scaled(String),
}

/// Why the admin service refused.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Scaling to no node.
    #[error("an application needs at least 1 node")]
    NoNodes,
    /// The application does not scale, or not now.
    #[error(
        "this application cannot scale now (the elastic counter can, while it counts, and the store)"
    )]
    CannotScale,
    /// The application ended before the scale completed.
    #[error("the application finished while scaling")]
    Finished,
    /// Scaling took longer than its bound.
    #[error("scaling did not finish within a minute")]
    TimedOut,
}

impl Service for AdminService {
    const NAME: &'static str = "admin";
    type Request = Admin;
    type Reply = AdminReply;
    type Error = AdminError;

    fn method(request: &Admin) -> u16 {
        match request {
            Admin::Status => 1,
            Admin::Scale(_) => 2,
        }
    }
}

/// A scale request between the admin service and the frontend's elastic loop.
#[derive(Default)]
struct ScaleState {
    /// Whether the running application can scale (the elastic counter and the store can).
    accepting: bool,
    /// Whether it ever could: a request before then waits for it (up to
    /// [`ACCEPT_WAIT`]: the application may still be starting).
    accepted: bool,
    /// The latest target, not yet picked up.
    target: Option<u32>,
    /// Requests made, and requests completed (the loop sets `served`).
    requested: u64,
    served: u64,
    /// The outcome of the last completed request.
    outcome: String,
}

/// What `sesa status` prints.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct AppStatus {
    /// The application.
    pub app: String,
    /// The frontend (node 0) and every registered node.
    pub nodes: Vec<NodeStatus>,
    /// What the application reports of itself (`Cluster::show_status`), if anything.
    pub details: Option<AppDetails>,
}

/// Where `sesa status` reads an application's own status from ([`Cluster::show_status`]).
type StatusSource = std::sync::Arc<dyn Fn() -> Option<AppDetails> + Send + Sync>;

/// An application's own status: a JSON value under a key (`sesa status --json` shows it
/// as a field of the status object) and the lines `sesa status` prints.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct AppDetails {
    /// The field's name (the store's: `store`).
    pub key: String,
    /// The value, as JSON text.
    pub json: String,
    /// The lines for the table.
    pub lines: Vec<String>,
}

impl AppStatus {
    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = format!("application: {}\n", self.app);
        out += "node  gen  platform  pid      cores  ebbs  reps  cpu wait  peers        frames in/out      rate in/out (/s)  state\n";
        for n in &self.nodes {
            let secs = (n.uptime_ms.max(1)) as f64 / 1e3;
            let peers = n
                .peers
                .iter()
                .map(NodeId::to_string)
                .collect::<Vec<_>>()
                .join(",");
            out += &format!(
                "{:<5} {:<4} {:<9} {:<8} {:<6} {:<5} {:<5} {:<9} {:<12} {:>8}/{:<8} {:>8.0}/{:<8.0} {}\n",
                n.node,
                n.generation,
                n.platform,
                n.pid,
                n.cores,
                n.ebbs,
                n.reps,
                n.cpu_wait_pct
                    .map_or_else(|| "-".to_owned(), |pct| format!("{pct}%")),
                if peers.is_empty() {
                    "-".to_owned()
                } else {
                    peers
                },
                n.messages.frames_in,
                n.messages.frames_out,
                n.messages.frames_in as f64 / secs,
                n.messages.frames_out as f64 / secs,
                n.state,
            );
        }
        for line in self.details.iter().flat_map(|d| &d.lines) {
            out += line;
            out.push('\n');
        }
        out
    }

    /// The status as JSON: `app`, `nodes`, and the application's own value under its key.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::json!({ "app": self.app, "nodes": self.nodes });
        if let Some(d) = &self.details {
            let own = serde_json::from_str(&d.json).unwrap_or(serde_json::Value::Null);
            value[d.key.as_str()] = own;
        }
        value
    }
}

/// How long nodes have to start and register.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest the frontend waits for the naming service's first view before the
/// application starts.
const NAMES_START: Duration = Duration::from_secs(5);

/// The longest [`Cluster::leave`] waits for a node taken out of the view to hand its
/// entries of the naming service over before it asks the node to leave anyway.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(15);

/// The frontend's registry of joined nodes (a node-shared EBB, served remotely). Its
/// answer to a registration is the id of the offload service.
pub struct Registry {
    nodes: Mutex<BTreeMap<NodeId, Register>>,
    /// The service a registered node is told of.
    offload: EbbId,
    /// The next node id to hand out (shared with the elastic loop's launches).
    next_id: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// Every node registered so far.
fn registered(registry: &NodeShared<Registry>) -> Vec<Register> {
    registry
        .rep()
        .map(|r| {
            r.nodes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

impl RemoteRep for Registry {
    fn handle(&self, request: Request<'_>) -> Result<Vec<u8>, RemoteError> {
        service::handle::<RegistryService>(request, |from, request| match request {
            RegistryRequest::Join => {
                let id = self
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if id >= ADMIN_FIRST.get() {
                    return Err(RegistryError::OutOfIds);
                }
                Ok(Registered::Id(NodeId::new(id)))
            }
            RegistryRequest::Register(r) => {
                if r.node != from.node {
                    return Err(RegistryError::NotItself {
                        caller: from.node,
                        named: r.node,
                    });
                }
                self.nodes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(r.node, r);
                Ok(Registered::Services {
                    offload: self.offload,
                })
            }
        })
    }
}

/// What the frontend asks of a node provider.
#[derive(Clone)]
pub struct NodeSpec {
    /// The node's id (1..).
    pub id: NodeId,
    /// The frontend's address.
    pub join: SocketAddr,
    /// The frontend's registry EBB.
    pub registry: EbbId,
    /// Cores for the node (default: all of its machine).
    pub cores: Option<usize>,
    /// The cluster secret.
    pub secret: Secret,
}

/// Starts nodes for an application: local processes and QEMUs (`LocalProcesses`), or
/// the simulator's simulated nodes.
pub trait NodeProvider {
    /// Starts one node; returns its process id (or another handle a user can find).
    ///
    /// # Errors
    /// If the node cannot be started.
    fn launch(&mut self, spec: &NodeSpec) -> anyhow::Result<u32>;
    /// Whether any node has exited; `Some((id, status))` for the first one found.
    fn exited(&mut self) -> Option<(NodeId, String)>;
    /// Asks node `id` to stop (closes its standard input) and returns at once; a node
    /// still running `grace` later is killed by a later [`NodeProvider::exited`] call.
    fn stop_node(&mut self, id: NodeId, grace: Duration);
    /// Asks every node to stop (closes their standard input), waits up to `grace`, then
    /// kills what is left.
    fn stop_all(&mut self, grace: Duration);
}

/// QEMU's accelerator for native nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// QEMU's own translator (no hypervisor needed).
    Tcg,
    /// KVM (hardware, or this project's machines' kvm_pvm).
    Kvm,
}

impl Accel {
    /// QEMU's name for it (`-accel tcg|kvm`).
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Native nodes: the kernel of `crates/sesa-native`, one QEMU per node.
#[derive(Clone, Debug)]
pub struct NativeNodes {
    /// The kernel image.
    pub kernel: std::path::PathBuf,
    /// QEMU's accelerator.
    pub accel: Accel,
    /// Only the nodes with ids up to this one are native (a mixed application); `None`:
    /// every node, those added later included.
    pub up_to: Option<u32>,
    /// Where QEMU forwards the data store's client port of node 1 from (`sesa kv -l`
    /// and `--port`; IPv4: QEMU's user network forwards from one). Node `i` gets port
    /// `+ i - 1`, as hosted nodes do; port 0: free ports.
    pub clients: std::net::SocketAddrV4,
}

impl NativeNodes {
    /// KVM where `/dev/kvm` opens (hardware KVM, or this project's kvm_pvm: the kernel's
    /// Rust code runs in ring 3, which kvm_pvm runs natively); TCG otherwise.
    pub fn default_accel() -> Accel {
        let opens = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if opens { Accel::Kvm } else { Accel::Tcg }
    }

    fn covers(&self, id: NodeId) -> bool {
        self.up_to.is_none_or(|k| id.get() <= k)
    }
}

/// Guest memory of a native node, MiB: its heap is a quarter (at most 256 MiB).
pub const NATIVE_RAM_MB: u32 = 1024;

/// QEMU for a native node, before its devices and command line: `-M microvm` with its
/// RTC (the node's wall clock), `cpus` CPUs and `ram_mb` MiB under `accel`, the serial
/// console on stdio, `isa-debug-exit` for the exit status. The CPU model gives the node
/// RDRAND: TCG's `max`, or under KVM the host's, less IA32_ARCH_CAPABILITIES (which this
/// project's kvm_pvm refuses to set, aborting QEMU; the guest does not use it).
pub fn qemu_command(accel: Accel, ram_mb: u32, cpus: usize) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", accel.as_str(), "-M", "microvm,rtc=on"])
        .arg("-cpu")
        .arg(if accel == Accel::Kvm {
            "host,-arch-capabilities"
        } else {
            "max"
        })
        .args(["-m", &ram_mb.to_string(), "-smp", &cpus.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    cmd
}

/// Nodes as child processes of the frontend: this same executable (`sesa node`, or an
/// application's own binary), or
/// QEMU booting the native kernel for the nodes [`NativeNodes`] covers.
pub struct LocalProcesses {
    children: Vec<(NodeId, Child, Option<ChildStdin>)>,
    /// Nodes asked to stop, with the moment to kill them if they have not.
    stopping: Vec<(NodeId, Child, Instant)>,
    /// Which nodes are QEMUs (they do not stop when their stdin closes: a node stops
    /// itself when let go or when it loses the frontend, or is killed).
    native: Option<NativeNodes>,
    /// `sesa node --idle-spins` for the hosted nodes (default: the runtime's).
    idle_spins: Option<u32>,
    /// The arguments that make this executable a node, before `--join`.
    node_args: Vec<String>,
    /// A command each hosted node runs under (`{id}`: the node's id), if any.
    prefix: Vec<String>,
    /// Where it reports nodes it had to kill.
    events: std::sync::Arc<dyn EventSink>,
}

impl LocalProcesses {
    /// A provider whose nodes `native` covers run natively.
    pub fn with_native(native: Option<NativeNodes>) -> Self {
        LocalProcesses {
            children: Vec::new(),
            stopping: Vec::new(),
            native,
            idle_spins: None,
            node_args: vec!["node".into()],
            prefix: Vec::new(),
            events: std::sync::Arc::new(Console),
        }
    }

    /// Reports through `events` (default: [`Console`]).
    #[must_use]
    pub fn with_events(mut self, events: std::sync::Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    /// Hosted nodes start as this executable with `args` before `--join ...` (default:
    /// `node`, as `sesa node`).
    #[must_use]
    pub fn with_node_args(mut self, args: Vec<String>) -> Self {
        self.node_args = args;
        self
    }

    /// Hosted nodes start under `prefix`, a command and its arguments in which `{id}`
    /// stands for the node's id: `["ip", "netns", "exec", "ns{id}"]` starts node 3 as
    /// `ip netns exec ns3 sesa node ...`. The command must exec the node (its process
    /// id is the node's: the frontend stops it by that id). Empty: none.
    #[must_use]
    pub fn with_prefix(mut self, prefix: Vec<String>) -> Self {
        self.prefix = prefix;
        self
    }

    /// Hosted nodes start with `sesa node --idle-spins <spins>` (see
    /// `sesa_hosted::Config::idle_spins`).
    #[must_use]
    pub fn with_idle_spins(mut self, spins: Option<u32>) -> Self {
        self.idle_spins = spins;
        self
    }

    /// QEMU for node `spec.id`: the kernel's `join` command, the messenger's port
    /// forwarded from a free port of 127.0.0.1 and the store's from
    /// [`NativeNodes::clients`].
    fn qemu(native: &NativeNodes, spec: &NodeSpec) -> anyhow::Result<Command> {
        let free = |host: std::net::Ipv4Addr| -> anyhow::Result<u16> {
            Ok(std::net::TcpListener::bind((host, 0))?.local_addr()?.port())
        };
        let host = *native.clients.ip();
        let clients = match native.clients.port() {
            0 => free(host)?,
            base => u16::try_from(u32::from(base) + spec.id.get() - 1)
                .map_err(|_| anyhow!("node {}'s port would be above 65535", spec.id))?,
        };
        let messenger = free(std::net::Ipv4Addr::LOCALHOST)?;
        let cores = spec.cores.unwrap_or(1);
        let mut cmd = qemu_command(native.accel, NATIVE_RAM_MB, cores);
        cmd.arg("-netdev")
            .arg(format!(
                "user,id=n0,hostfwd=tcp:127.0.0.1:{messenger}-:7000,\
                 hostfwd=tcp:{host}:{clients}-:11211"
            ))
            .args(["-device", "virtio-net-device,netdev=n0", "-kernel"])
            .arg(&native.kernel)
            .arg("-append")
            .arg(format!(
                "join {cores} {} {} {} {messenger} {clients}",
                spec.join,
                spec.registry.raw(),
                spec.id
            ));
        Ok(cmd)
    }
}

impl NodeProvider for LocalProcesses {
    fn launch(&mut self, spec: &NodeSpec) -> anyhow::Result<u32> {
        let native = self.native.as_ref().filter(|n| n.covers(spec.id));
        let mut cmd = match native {
            Some(native) => {
                if !native.kernel.is_file() {
                    bail!(
                        "no native kernel at {} (build it: cargo build --release \
                         --manifest-path crates/sesa-native/Cargo.toml)",
                        native.kernel.display()
                    );
                }
                Self::qemu(native, spec)?
            }
            None => {
                let exe = std::env::current_exe().context("finding the sesa executable")?;
                let id = spec.id.to_string();
                let mut prefix = self.prefix.iter().map(|a| a.replace("{id}", &id));
                let mut cmd = match prefix.next() {
                    Some(program) => {
                        let mut cmd = Command::new(program);
                        cmd.args(prefix).arg(exe);
                        cmd
                    }
                    None => Command::new(exe),
                };
                cmd.args(&self.node_args)
                    .args(["--join", &spec.join.to_string()])
                    .args(["--registry", &spec.registry.raw().to_string()])
                    .args(["--id", &spec.id.to_string()]);
                if let Some(cores) = spec.cores {
                    cmd.args(["--cores", &cores.to_string()]);
                }
                if let Some(spins) = self.idle_spins {
                    cmd.args(["--idle-spins", &spins.to_string()]);
                }
                cmd
            }
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| match native {
            Some(_) => "starting QEMU for a native node (qemu-system-x86_64)",
            None => "starting a node process",
        })?;
        let pid = child.id();
        let mut stdin = child.stdin.take().context("node stdin")?;
        // The secret goes through the pipe, not the command line (which others can read);
        // a native node reads it from its serial console.
        writeln!(stdin, "{}", spec.secret.to_hex()).context("handing the node its secret")?;
        let id = spec.id;
        if let Some(out) = child.stdout.take() {
            // A native node's serial console is its log (its application's output comes
            // through the offloaded console): it goes to stderr, as a hosted node's log.
            match native {
                Some(_) => forward(out, move |line| eprintln!("[node {id}] {line}")),
                None => forward(out, move |line| println!("[node {id}] {line}")),
            }
        }
        if let Some(err) = child.stderr.take() {
            forward(err, move |line| eprintln!("[node {id}] {line}"));
        }
        self.children.push((id, child, Some(stdin)));
        Ok(pid)
    }

    fn exited(&mut self) -> Option<(NodeId, String)> {
        // Reap nodes that were asked to stop; kill the ones past their grace.
        let events = &self.events;
        self.stopping
            .retain_mut(|(id, child, deadline)| match child.try_wait() {
                Ok(None) if Instant::now() < *deadline => true,
                Ok(None) => {
                    events.report(Event::Killed { node: *id });
                    let _ = child.kill();
                    let _ = child.wait();
                    false
                }
                _ => false,
            });
        // Each exit is reported once: the child is forgotten after.
        let i = self
            .children
            .iter_mut()
            .position(|(_, child, _)| matches!(child.try_wait(), Ok(Some(_))))?;
        let (id, mut child, _) = self.children.remove(i);
        let status = child
            .wait()
            .map_or_else(|e| e.to_string(), |s| s.to_string());
        Some((id, status))
    }

    fn stop_node(&mut self, id: NodeId, grace: Duration) {
        let Some(i) = self.children.iter().position(|(n, _, _)| *n == id) else {
            return;
        };
        let (_, child, stdin) = self.children.remove(i);
        // Closing stdin is the node's signal to stop; it is reaped by `exited`.
        drop(stdin);
        self.stopping.push((id, child, Instant::now() + grace));
    }

    fn stop_all(&mut self, grace: Duration) {
        for (_, _, stdin) in &mut self.children {
            drop(stdin.take());
        }
        for (id, child, _) in self.stopping.drain(..) {
            self.children.push((id, child, None));
        }
        let deadline = Instant::now() + grace;
        let (native, events) = (&self.native, &self.events);
        for (id, child, _) in &mut self.children {
            if native.as_ref().is_some_and(|n| n.covers(*id)) {
                // A native node has nothing to save (its output is already on its
                // console) and does not watch its stdin: QEMU is stopped now.
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        events.report(Event::Killed { node: *id });
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.children.clear();
    }
}

impl Drop for LocalProcesses {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(3));
    }
}

/// Copies a child's output line by line through `emit` (on its own thread).
fn forward(stream: impl std::io::Read + Send + 'static, emit: impl Fn(&str) + Send + 'static) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(line) => emit(&line),
                Err(_) => break,
            }
        }
    });
}

/// How the frontend runs an application.
pub struct FrontendConfig {
    /// How many nodes to launch.
    pub nodes: u32,
    /// Cores per node (default: all of its machine).
    pub cores_per_node: Option<usize>,
    /// Directories the nodes may use through the offloaded file system.
    pub grants: Vec<std::path::PathBuf>,
    /// Which nodes run natively (`None`: every node is a hosted process).
    pub native: Option<NativeNodes>,
    /// Empty polls before an idle core of a hosted node parks (default: the runtime's;
    /// `sesa_hosted::Config::idle_spins`).
    pub idle_spins: Option<u32>,
    /// The arguments that make this executable a hosted node, before `--join ...`
    /// (`["node"]` for `sesa`; [`crate::main`] uses its own).
    pub node_args: Vec<String>,
    /// Where the frontend's events go (the `sesa` command: [`Console`]).
    pub events: std::sync::Arc<dyn EventSink>,
    /// Where the frontend's messenger listens for its nodes (local processes:
    /// 127.0.0.1, a port the OS picks).
    pub listen: SocketAddr,
    /// A command each hosted node process runs under (see
    /// [`LocalProcesses::with_prefix`]); empty: none.
    pub node_prefix: Vec<String>,
    /// Whether the frontend publishes the file `sesa status` and `sesa scale` find it
    /// by (not in a simulation, whose frontends are not processes).
    pub publish: bool,
    /// SWIM's timing.
    pub membership: MembershipConfig,
}

impl FrontendConfig {
    /// A frontend of `nodes` local node processes launched as `node_args`, reporting to
    /// `events`, with everything else at its default.
    pub fn local(
        nodes: u32,
        node_args: Vec<String>,
        events: std::sync::Arc<dyn EventSink>,
    ) -> Self {
        FrontendConfig {
            nodes,
            cores_per_node: None,
            grants: Vec::new(),
            native: None,
            idle_spins: None,
            node_args,
            events,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            node_prefix: Vec::new(),
            publish: true,
            membership: MembershipConfig::tolerant_local(),
        }
    }
}

/// Runs application `A` on local node processes, as their frontend: starts the nodes,
/// waits until they have joined, then runs [`Application::frontend`]. Its output is the
/// application's result. The nodes are stopped when it returns, and when the frontend
/// is stopped (a signal).
///
/// # Errors
/// If a node fails to start or register, or the application's frontend side failed.
pub fn run<A: Application>(
    config: FrontendConfig,
    settings: A::Settings,
) -> anyhow::Result<Exit<anyhow::Result<A::Output>>> {
    if config.nodes == 0 {
        bail!("an application needs at least 1 node");
    }
    let grants = crate::offload::Grants::new(&config.grants)?;
    let runtime = Runtime::new(Config {
        cores: Some(1),
        handle_signals: true,
        ..Config::default()
    })?;
    Ok(runtime.run(move || async move {
        let mut provider = LocalProcesses::with_native(config.native.clone())
            .with_idle_spins(config.idle_spins)
            .with_node_args(config.node_args.clone())
            .with_prefix(config.node_prefix.clone())
            .with_events(config.events.clone());
        let result = drive::<A>(&mut provider, &config, grants, settings).await;
        // Orderly shutdown of the nodes whatever happened (they exit when their stdin
        // closes); a signal to the frontend drops this future and `provider` with it.
        provider.stop_all(Duration::from_secs(5));
        result
    })?)
}

/// Runs application `A` as the frontend of the nodes `provider` starts, on whatever
/// platform the caller runs (a hosted runtime: [`run`]; the simulator, whose provider
/// starts simulated nodes): starts `config.nodes` nodes, waits until they have joined,
/// then runs [`Application::frontend`]. The caller stops the nodes afterwards.
///
/// # Errors
/// If a node fails to start or register, or the application's frontend side failed.
pub async fn drive<A: Application>(
    provider: &mut dyn NodeProvider,
    config: &FrontendConfig,
    grants: crate::offload::Grants,
    settings: A::Settings,
) -> anyhow::Result<A::Output> {
    let mut cluster = Cluster::start(provider, config, grants, <A::Node as App>::NAME).await?;
    A::frontend(&mut cluster, settings).await
}

/// How long a scale request made while the application is starting waits for it to
/// take requests (an application that never scales is said so after this).
const ACCEPT_WAIT: Duration = Duration::from_secs(10);

/// The admin side of `sesa scale`: hands the target to the elastic loop and waits until
/// it is reached (or a minute has passed).
async fn serve_scale(scale: &Mutex<ScaleState>, target: u32) -> Result<String, AdminError> {
    if target == 0 {
        return Err(AdminError::NoNodes);
    }
    let asked = sesa_event::now();
    let request = loop {
        {
            let mut s = scale.lock().unwrap_or_else(|p| p.into_inner());
            if s.accepting {
                s.target = Some(target);
                s.requested += 1;
                break s.requested;
            }
            if s.accepted || sesa_event::now() - asked > ACCEPT_WAIT {
                return Err(AdminError::CannotScale);
            }
        }
        sesa_event::sleep(Duration::from_millis(5)).await;
    };
    let deadline = sesa_event::now() + Duration::from_secs(60);
    loop {
        {
            let s = scale.lock().unwrap_or_else(|p| p.into_inner());
            if s.served >= request {
                return Ok(s.outcome.clone());
            }
            if !s.accepting {
                return Err(AdminError::Finished);
            }
        }
        if sesa_event::now() > deadline {
            return Err(AdminError::TimedOut);
        }
        sesa_event::sleep(Duration::from_millis(5)).await;
    }
}

/// The frontend's handle on a running application's nodes, for
/// [`Application::frontend`]: run the application on nodes, launch more, notice the
/// ones lost, answer `sesa scale`, and report to `sesa status`.
pub struct Cluster<'a> {
    messenger: MessengerRef,
    provider: &'a mut dyn NodeProvider,
    registry: std::sync::Arc<NodeShared<Registry>>,
    scale: std::sync::Arc<Mutex<ScaleState>>,
    spec: NodeSpec,
    /// Members SWIM declared down since the last look.
    down: std::sync::Arc<Mutex<Vec<NodeId>>>,
    /// Node ids to hand out (shared with the registry's `JOIN`).
    next_id: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// The application's own status for `sesa status` (shared with the admin service).
    details: std::sync::Arc<Mutex<Option<StatusSource>>>,
    /// The process id of each node launched (shared with the admin service).
    pids: std::sync::Arc<Mutex<BTreeMap<NodeId, u32>>>,
    /// The nodes launched at the start, all joined.
    first: BTreeMap<NodeId, Register>,
    /// The views of the nodes' global id map (the naming service of global EBBs).
    names: Names,
    /// The file `sesa status` and `sesa scale` find the frontend by, removed when the
    /// application ends.
    _published: Option<Published>,
    /// Where the frontend's events go.
    events: std::sync::Arc<dyn EventSink>,
    /// Nodes whose process has exited ([`Cluster::observe`] saw it).
    ended: std::collections::BTreeSet<NodeId>,
    /// A node exit seen while the frontend started, not yet reported.
    exited_at_start: Option<(NodeId, String)>,
}

impl<'a> Cluster<'a> {
    /// Sets the frontend up (messenger, SWIM membership, offload, registry and admin
    /// services, the published application file), launches `config.nodes` nodes through
    /// `provider` and waits until every one has registered.
    async fn start(
        provider: &'a mut dyn NodeProvider,
        config: &FrontendConfig,
        grants: crate::offload::Grants,
        app_name: &'static str,
    ) -> anyhow::Result<Cluster<'a>> {
        let (nodes, cores) = (config.nodes, config.cores_per_node);
        let mut bytes = [0u8; 32];
        sesa_event::fill_random(&mut bytes);
        let secret = Secret::from_bytes(bytes);
        let me = Identity {
            node: NodeId::FRONTEND,
            generation: 1,
        };
        let messenger = Messenger::create(MessengerConfig::new(me, secret.clone()))?;
        let join = messenger.listen(config.listen).await?;
        // SWIM membership: the frontend learns of a hung or crashed node within a second,
        // even when its TCP connection stays open (a node stopped with SIGSTOP).
        let members = Membership::start(messenger, join, config.membership.clone()).await?;
        let down = std::sync::Arc::new(Mutex::new(Vec::<NodeId>::new()));
        let noted = down.clone();
        members
            .subscribe(move |event| {
                if let MemberEvent::Down(id) = event {
                    noted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(id.node);
                }
            })
            .await?;
        // The offload service: console, files and environment, served on this core.
        let (offload, _) = NodeShared::create(|| ())?;
        let grants = std::sync::Arc::new(grants);
        service::serve::<OffloadService, _, _>(messenger, offload.id(), move |_from, request| {
            let grants = grants.clone();
            async move { grants.serve(request) }
        })
        .await?;
        let offload_id = offload.id();
        let next_id = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(nodes + 1));
        let ids = next_id.clone();
        let registry_root = std::sync::Arc::new(NodeShared::new(move || Registry {
            nodes: Mutex::new(BTreeMap::new()),
            offload: offload_id,
            next_id: ids.clone(),
        }));
        let registry =
            sesa_ebb::EbbNode::current()?.create_static(REGISTRY_INDEX, registry_root.clone())?;
        messenger.serve(registry).await?;
        // The admin service behind `sesa status`.
        let admin = sesa_ebb::EbbNode::current()?
            .create_static(ADMIN_INDEX, std::sync::Arc::new(NodeShared::new(|| ())))?;
        let started = sesa_event::now();
        let registry_for_admin = registry_root.clone();
        // Process ids of the launched nodes: a native node does not know its QEMU's.
        let pids: std::sync::Arc<Mutex<BTreeMap<NodeId, u32>>> = Default::default();
        let pids_for_admin = pids.clone();
        let scale = std::sync::Arc::new(Mutex::new(ScaleState::default()));
        let scale_for_admin = scale.clone();
        let details: std::sync::Arc<Mutex<Option<StatusSource>>> = Default::default();
        let details_for_admin = details.clone();
        service::serve::<AdminService, _, _>(messenger, admin.id(), move |_from, request| {
            let registry = registry_for_admin.clone();
            let scale = scale_for_admin.clone();
            let details = details_for_admin.clone();
            let pids = pids_for_admin.clone();
            async move {
                if let Admin::Scale(target) = request {
                    return serve_scale(&scale, target).await.map(AdminReply::Scaled);
                }
                let mut frontend = sesa_node::run::local_status(
                    messenger,
                    NodeId::FRONTEND,
                    started,
                    std::process::id(),
                    sesa_node::Platform::Hosted,
                )
                .await;
                frontend.pid = std::process::id();
                let mut nodes = vec![frontend];
                for r in registered(&registry) {
                    let node =
                        Client::<ControlService>::new(messenger, r.node, CoreId::new(0), r.control);
                    let asked = match node.call(Control::Stats).await {
                        Ok(ControlReply::Stats(status)) => Some(status),
                        _ => None,
                    };
                    let launched = pids
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&r.node)
                        .copied();
                    nodes.push(match asked {
                        Some(n) if n.pid == 0 => NodeStatus {
                            pid: launched.unwrap_or(0),
                            ..n
                        },
                        Some(n) => n,
                        None => NodeStatus {
                            node: r.node,
                            generation: r.generation,
                            pid: r.pid,
                            platform: r.platform,
                            cores: r.cores,
                            ebbs: 0,
                            reps: 0,
                            cpu_wait_pct: None,
                            peers: Vec::new(),
                            messages: Default::default(),
                            uptime_ms: 0,
                            state: "unreachable".into(),
                        },
                    });
                }
                // Read when asked: the application only keeps its figures current.
                let source = details.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let details = source.and_then(|source| source());
                Ok(AdminReply::Status(AppStatus {
                    app: app_name.into(),
                    nodes,
                    details,
                }))
            }
        })
        .await?;
        let published = match config.publish {
            true => Some(publish(&AppFile {
                pid: std::process::id(),
                app: app_name.into(),
                addr: join,
                secret: secret.to_hex(),
                admin: admin.id().raw(),
            })?),
            false => None,
        };
        for id in (1..=nodes).map(NodeId::new) {
            let spec = NodeSpec {
                id,
                join,
                registry: registry.id(),
                cores,
                secret: secret.clone(),
            };
            let pid = provider.launch(&spec)?;
            config.events.report(Event::Started { node: id, pid });
            pids.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, pid);
        }
        // Wait for every node to register (the registry's rep exists once one has).
        let started = sesa_event::now();
        let joined = loop {
            let joined = registry_root
                .rep()
                .map(|r| r.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone())
                .unwrap_or_default();
            if joined.len() == nodes as usize {
                break joined;
            }
            if let Some((id, status)) = provider.exited() {
                bail!("node {id} exited before joining ({status})");
            }
            if sesa_event::now() - started > JOIN_TIMEOUT {
                bail!(
                    "only {} of {nodes} nodes joined within {JOIN_TIMEOUT:?}",
                    joined.len()
                );
            }
            sesa_event::sleep(Duration::from_millis(5)).await;
        };
        for r in joined.values() {
            config.events.report(Event::Joined {
                node: r.node,
                cores: r.cores,
            });
        }
        // The naming service of global EBBs: the nodes' id map, its first view made of
        // the first nodes. Global EBBs can be named once it is active: the application
        // starts then, or without it after `NAMES_START` or once a node has exited (a
        // node lost holds the view up until the application's roster drops it; a
        // node's first names wait for it too).
        let names = Names::start(messenger, config.events.clone());
        names.change(joined.values().cloned().collect(), Vec::new());
        let asked = sesa_event::now();
        let mut exited_at_start = None;
        while !names.settled() && sesa_event::now() - asked < NAMES_START {
            exited_at_start = provider.exited();
            if exited_at_start.is_some() {
                break;
            }
            sesa_event::sleep(Duration::from_millis(5)).await;
        }
        let spec = NodeSpec {
            id: NodeId::FRONTEND,
            join,
            registry: registry.id(),
            cores,
            secret,
        };
        Ok(Cluster {
            messenger,
            provider,
            registry: registry_root,
            scale,
            spec,
            down,
            next_id,
            details,
            pids,
            first: joined,
            names,
            _published: published,
            events: config.events.clone(),
            ended: std::collections::BTreeSet::new(),
            exited_at_start,
        })
    }

    /// Reports `event` (the `sesa` command prints it on stderr).
    pub fn report(&self, event: Event) {
        self.events.report(event);
    }

    /// The frontend's messenger (node 0): calls to the nodes' EBBs.
    pub fn messenger(&self) -> MessengerRef {
        self.messenger
    }

    /// The nodes launched at the start (ids `1..=nodes`), all registered.
    pub fn first_nodes(&self) -> &BTreeMap<NodeId, Register> {
        &self.first
    }

    /// Every node registered so far, the first ones included (a node lost stays listed).
    pub fn registered(&self) -> Vec<Register> {
        registered(&self.registry)
    }

    /// Runs `A`'s part on node `node` with `settings`; resolves to that node's outcome.
    /// The future owns what it needs, so it can be spawned.
    pub fn run_on<A: App>(
        &self,
        node: &Register,
        settings: &A::Settings,
    ) -> impl Future<Output = anyhow::Result<A::Outcome>> + 'static {
        let (messenger, id, control) = (self.messenger, node.node, node.control);
        let request = RunApp::new::<A>(self.first.len() as u32, settings)
            .map_err(|e| anyhow!("encoding the settings: {e}"));
        async move {
            let node = Client::<ControlService>::new(messenger, id, CoreId::new(0), control);
            let reply = node
                .call(Control::RunApp(request?))
                .await
                .with_context(|| format!("node {id}"))?;
            let ControlReply::Ran(outcome) = reply else {
                bail!("node {id} answered {reply:?} to running {}", A::NAME);
            };
            postcard::from_bytes::<A::Outcome>(&outcome)
                .with_context(|| format!("node {id}'s outcome does not decode"))
        }
    }

    /// Runs `A` once on every first node at the same time; each node's outcome, by node.
    ///
    /// # Errors
    /// A node failed or was lost: the first such error.
    pub async fn run_everywhere<A: App>(
        &self,
        settings: &A::Settings,
    ) -> anyhow::Result<Vec<(NodeId, A::Outcome)>> {
        let calls: Vec<_> = self
            .first
            .values()
            .map(|r| {
                (
                    r.node,
                    sesa_event::spawn_local(self.run_on::<A>(r, settings)),
                )
            })
            .collect();
        let mut outcomes = Vec::with_capacity(calls.len());
        for (node, call) in calls {
            outcomes.push((node, call.await??));
        }
        Ok(outcomes)
    }

    /// Asks node `node` to leave (its departure handlers run, then it stops); resolves
    /// when it has drained. A node taken out of the view first hands its entries of the
    /// naming service over (for up to [`HANDOVER_WAIT`]).
    pub fn leave(&self, node: NodeId) -> impl Future<Output = anyhow::Result<()>> + 'static {
        let messenger = self.messenger;
        let control = self.control_of(node);
        let handed_over = self.names.handed_over(node, HANDOVER_WAIT);
        let events = self.events.clone();
        async move {
            let control = control.with_context(|| format!("node {node} is not registered"))?;
            if !handed_over.await {
                events.report(Event::Note(format!(
                    "node {node} leaves without having handed its names over in \
                     {HANDOVER_WAIT:?} (their other replica keeps them)"
                )));
            }
            Client::<ControlService>::new(messenger, node, CoreId::new(0), control)
                .call(Control::Leave)
                .await?;
            anyhow::Ok(())
        }
    }

    /// Launches one more node (it registers later: watch [`Cluster::registered`]); its id.
    ///
    /// # Errors
    /// The node cannot be started.
    pub fn launch(&mut self) -> anyhow::Result<NodeId> {
        let id = NodeId::new(
            self.next_id
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        );
        let spec = NodeSpec {
            id,
            ..self.spec.clone()
        };
        let pid = self.provider.launch(&spec)?;
        self.report(Event::Started { node: id, pid });
        self.pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, pid);
        Ok(id)
    }

    /// Whether node `node`'s process has exited, as [`Cluster::observe`] saw (a node
    /// stopped after it was lost, say: an application may wait for that before it
    /// goes on without the node).
    pub fn has_exited(&self, node: NodeId) -> bool {
        self.ended.contains(&node)
    }

    /// A node whose process has exited, with its status (each reported once).
    pub fn exited(&mut self) -> Option<(NodeId, String)> {
        self.exited_at_start
            .take()
            .or_else(|| self.provider.exited())
    }

    /// Stops node `node`'s process: asked at once, killed if it has not stopped after
    /// `grace`.
    pub fn stop_node(&mut self, node: NodeId, grace: Duration) {
        self.provider.stop_node(node, grace);
    }

    /// Node `node`'s control EBB, if it is registered.
    fn control_of(&self, node: NodeId) -> Option<EbbId> {
        self.registered()
            .into_iter()
            .find(|r| r.node == node)
            .map(|r| r.control)
    }

    /// Whether node `node` answers a call to its control EBB within `within`: a node
    /// SWIM declared down that answers was only slow or cut off from some members (to
    /// drop it would lose what only it holds).
    pub fn answers(&self, node: NodeId, within: Duration) -> impl Future<Output = bool> + 'static {
        let messenger = self.messenger;
        let control = self.control_of(node);
        async move {
            let Some(control) = control else {
                return false;
            };
            let node = Client::<ControlService>::new(messenger, node, CoreId::new(0), control);
            let call = sesa_event::timeout(within, node.call(Control::Stats)).await;
            matches!(call, Some(Ok(ControlReply::Stats(_))))
        }
    }

    /// Whether node `node`, declared down by SWIM, may be dropped without losing names
    /// of global EBBs: it does not answer within `within`, the naming service has
    /// taken the newest view of the members (every name on its replicas), and every
    /// other member of `members` answers (a crash not reported yet would make it a
    /// second loss). An application whose nodes create global EBBs drops a node only
    /// then; else the node may hold the only copy of some names, and it stays (their
    /// lookups fail meanwhile) until it answers or its process exits.
    pub async fn may_drop(&self, node: NodeId, members: &[NodeId], within: Duration) -> bool {
        if self.answers(node, within).await || !self.names_settled() {
            return false;
        }
        let others: Vec<NodeId> = members.iter().copied().filter(|m| *m != node).collect();
        if others.is_empty() {
            return false;
        }
        for other in others {
            if self.has_exited(other) || !self.answers(other, within).await {
                return false;
            }
        }
        self.names_settled()
    }

    /// Whether the naming service of global EBBs has taken the newest view of the
    /// members (every name on its replicas among them, every node acting on it).
    pub fn names_settled(&self) -> bool {
        self.names.settled()
    }

    /// Nodes SWIM declared down since the last look.
    pub fn take_down(&self) -> Vec<NodeId> {
        std::mem::take(&mut *self.down.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether `sesa scale` requests are taken now.
    pub fn accept_scaling(&self, accepting: bool) {
        let mut s = self.scale.lock().unwrap_or_else(|p| p.into_inner());
        s.accepting = accepting;
        s.accepted |= accepting;
    }

    /// The latest scale request not yet picked up: (target nodes, request number).
    pub fn take_scale_request(&self) -> Option<(u32, u64)> {
        let mut s = self.scale.lock().unwrap_or_else(|p| p.into_inner());
        let target = s.target.take()?;
        Some((target, s.requested))
    }

    /// Completes scale requests up to `request`, with what `sesa scale` prints.
    pub fn scale_served(&self, request: u64, outcome: String) {
        let mut s = self.scale.lock().unwrap_or_else(|p| p.into_inner());
        s.served = request;
        s.outcome = outcome;
    }

    /// Tells `roster` what happened since the last look: nodes registered, processes
    /// exited, the latest scale request. (Not SWIM's verdicts, [`Cluster::take_down`]:
    /// an application may first check that a node is silent.)
    pub fn observe(&mut self, roster: &mut Roster) {
        for r in self.registered() {
            roster.registered(&r);
        }
        while let Some((node, status)) = self.exited() {
            self.ended.insert(node);
            roster.exited(node, &status);
        }
        if let Some((target, request)) = self.take_scale_request() {
            roster.scale_to(target, request, sesa_event::now());
        }
    }

    /// Does `action` if it is the frontend's own (launch a node, stop one, answer a scale
    /// request) and returns `None`; returns the others, the application's to do (a
    /// node to start is reported as joined first, if it came after the first nodes).
    ///
    /// # Errors
    /// A node cannot be launched.
    pub fn act(&mut self, roster: &mut Roster, action: Action) -> anyhow::Result<Option<Action>> {
        match action {
            Action::Launch => roster.launched(self.launch()?),
            Action::Stop { node, grace } => self.stop_node(node, grace),
            Action::Scaled { request, outcome } => self.scale_served(request, outcome.to_string()),
            Action::ChangeView { members, leaving } => {
                // The naming service follows the application's members.
                let registered = self.registered();
                let pick = |ids: &[NodeId]| -> Vec<Register> {
                    registered
                        .iter()
                        .filter(|r| ids.contains(&r.node))
                        .cloned()
                        .collect()
                };
                self.names.change(pick(&members), pick(&leaving));
                return Ok(Some(Action::ChangeView { members, leaving }));
            }
            Action::Lost { node, cause } => {
                self.names.gone(node);
                return Ok(Some(Action::Lost { node, cause }));
            }
            Action::Left { node, clean } => {
                self.names.gone(node);
                return Ok(Some(Action::Left { node, clean }));
            }
            Action::Start { node, joined } => {
                if joined {
                    self.report(Event::Joined {
                        node: node.node,
                        cores: node.cores,
                    });
                }
                return Ok(Some(Action::Start { node, joined }));
            }
            other => return Ok(Some(other)),
        }
        Ok(None)
    }

    /// What `sesa status` shows of the application itself: `status`, read when a status
    /// is asked for, as JSON under `key`, and its `lines` under the table of nodes. The
    /// application keeps `status` current; nothing is encoded until someone asks.
    pub fn show_status<T: Serialize + Send + 'static>(
        &self,
        key: &str,
        status: std::sync::Arc<Mutex<T>>,
        lines: impl Fn(&T) -> Vec<String> + Send + Sync + 'static,
    ) {
        let key = key.to_owned();
        let source: StatusSource = std::sync::Arc::new(move || {
            let status = status.lock().unwrap_or_else(|p| p.into_inner());
            // A value that does not encode as JSON shows as null, with its lines.
            let json = serde_json::to_string(&*status).unwrap_or_else(|_| "null".into());
            Some(AppDetails {
                key: key.clone(),
                json,
                lines: lines(&status),
            })
        });
        *self.details.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }
}

/// What a running frontend publishes for `sesa status`: how to reach it. Written to a
/// file only its user can read (it holds the cluster secret).
#[derive(Serialize, Deserialize, Debug, Clone)]
struct AppFile {
    pid: u32,
    app: String,
    addr: SocketAddr,
    secret: String,
    admin: u64,
}

/// Where application files live: `$XDG_RUNTIME_DIR/sesa`, else `/tmp/sesa-<uid>`.
fn app_dir() -> std::path::PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => std::path::PathBuf::from(dir).join("sesa"),
        None => {
            let uid = std::fs::metadata("/proc/self").map_or(0, |m| {
                use std::os::unix::fs::MetadataExt;
                m.uid()
            });
            std::env::temp_dir().join(format!("sesa-{uid}"))
        }
    }
}

/// Removes the application file when the frontend ends.
struct Published(std::path::PathBuf);

impl Drop for Published {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn publish(file: &AppFile) -> anyhow::Result<Published> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = app_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // The file holds the cluster secret: refuse a directory someone else could read or
    // swap (in a shared /tmp another user could have created it first).
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(&dir)?;
        let me = std::fs::metadata("/proc/self")?.uid();
        anyhow::ensure!(
            meta.is_dir() && meta.uid() == me && meta.mode() & 0o077 == 0,
            "{} must be a directory owned by this user with mode 0700",
            dir.display()
        );
    }
    let path = dir.join(format!("{}.json", file.pid));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(&serde_json::to_vec(file)?)?;
    Ok(Published(path))
}

/// Calls the admin service of a running application (the newest, or frontend `pid`).
fn admin_call(pid: Option<u32>, request: Admin) -> anyhow::Result<AdminReply> {
    let dir = app_dir();
    // A file whose frontend is gone (killed with -9) is stale: remove it.
    let live = |path: &std::path::Path| {
        let pid = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_file(path);
        }
        alive
    };
    let file = match pid {
        Some(pid) => dir.join(format!("{pid}.json")),
        None => std::fs::read_dir(&dir)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json") && live(&e.path()))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.path())
            .context("no sesa application is running (none published in the runtime directory)")?,
    };
    let published: AppFile = serde_json::from_slice(
        &std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
    )?;
    let secret = Secret::from_hex(&published.secret).context("a corrupt application file")?;
    call_frontend_once::<AdminService>(secret, published.addr, published.admin, request)
}

/// The state of a running application: `sesa status`.
///
/// # Errors
/// No application is running (for this user), or it cannot be reached.
pub fn status(pid: Option<u32>) -> anyhow::Result<AppStatus> {
    match admin_call(pid, Admin::Status)? {
        AdminReply::Status(status) => Ok(status),
        other => bail!("the frontend answered {other:?} to a status request"),
    }
}

/// Grows or shrinks a running application to `nodes` nodes: `sesa scale`. Returns when
/// it is done, with what happened.
///
/// # Errors
/// No application is running, it cannot scale, or scaling failed.
pub fn scale(pid: Option<u32>, nodes: u32) -> anyhow::Result<String> {
    match admin_call(pid, Admin::Scale(nodes))? {
        AdminReply::Scaled(outcome) => Ok(outcome),
        other => bail!("the frontend answered {other:?} to a scale request"),
    }
}

/// Arguments of a node process (`sesa node ...`, `<program> --sesa-node ...`).
#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// The frontend's address.
    #[arg(long)]
    pub join: SocketAddr,
    /// The frontend's registry EBB id (default: its well-known static id).
    #[arg(long)]
    pub registry: Option<u64>,
    /// This node's id, 1 and up (default: the frontend assigns one).
    #[arg(long)]
    pub id: Option<u32>,
    /// Cores (default: all the process may use).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Empty polls of an idle core before it sleeps (default 2000; none while the
    /// machine's CPUs are oversubscribed).
    #[arg(long)]
    pub idle_spins: Option<u32>,
}

/// Runs this process as a node running `apps`, until the frontend lets go of it.
///
/// # Errors
/// If the secret is missing or the node cannot join.
pub fn node(args: NodeArgs, apps: Apps) -> anyhow::Result<Exit<anyhow::Result<()>>> {
    let (secret, from_stdin) = match std::env::var("SESA_SECRET") {
        Ok(hex) => (hex, false),
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the cluster secret from stdin")?;
            (line.trim().to_owned(), true)
        }
    };
    let secret = Secret::from_hex(&secret).context("the cluster secret must be 64 hex digits")?;
    let registry_id = args
        .registry
        .unwrap_or(EbbId::static_id(REGISTRY_INDEX).raw());
    let id = match args.id.map(NodeId::new) {
        Some(NodeId::FRONTEND) => bail!("node id {} is the frontend's", NodeId::FRONTEND),
        Some(id) => id,
        None => ask_for_an_id(&secret, args.join, registry_id)?,
    };
    let defaults = Config::default();
    let runtime = Runtime::new(Config {
        cores: args.cores,
        handle_signals: true,
        idle_spins: args.idle_spins.unwrap_or(defaults.idle_spins),
        ..defaults
    })?;
    let registry = EbbId::from_raw(registry_id).context("bad registry id")?;
    let addressing = match route_to(args.join)? {
        ip if ip.is_loopback() => sesa_node::run::Addressing::Loopback,
        ip => sesa_node::run::Addressing::Own(ip),
    };
    Ok(runtime.run(move || async move {
        if from_stdin {
            sesa_event::spawn_local(stop_when_stdin_closes());
        }
        sesa_node::run::run(sesa_node::run::NodeParams {
            id,
            secret,
            frontend: args.join,
            registry,
            addressing,
            membership: MembershipConfig::tolerant_local(),
            pid: std::process::id(),
            platform: sesa_node::Platform::Hosted,
            memory_max: None,
            apps,
        })
        .await
        .map_err(|e| anyhow!(e))
    })?)
}

/// The address this machine reaches `frontend` from: where a node listens so that the
/// frontend and the other members reach it (127.0.0.1 for a frontend on this machine;
/// the node's own address when it is in another network namespace or on another
/// machine). A UDP socket's `connect` only picks the route; nothing is sent.
fn route_to(frontend: SocketAddr) -> anyhow::Result<std::net::IpAddr> {
    let any: SocketAddr = match frontend {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any).context("a socket to find the route")?;
    socket
        .connect(frontend)
        .with_context(|| format!("no route to the frontend at {frontend}"))?;
    Ok(socket.local_addr()?.ip())
}

/// A node arriving by hand has no id yet: it asks the frontend's registry for one.
fn ask_for_an_id(secret: &Secret, join: SocketAddr, registry: u64) -> anyhow::Result<NodeId> {
    match call_frontend_once::<RegistryService>(
        secret.clone(),
        join,
        registry,
        RegistryRequest::Join,
    )? {
        Registered::Id(id) => Ok(id),
        other => bail!("the registry answered {other:?} to a request for an id"),
    }
}

/// Makes one call to a service of the frontend at `addr`, from a short-lived runtime,
/// authenticated under a provisional admin identity (for `sesa status`, `sesa scale`, and
/// nodes asking for an id).
fn call_frontend_once<S: Service>(
    secret: Secret,
    addr: SocketAddr,
    service: u64,
    request: S::Request,
) -> anyhow::Result<S::Reply>
where
    S::Request: Send,
    S::Reply: Send,
    S::Error: Send + Sync,
{
    let runtime = Runtime::new(Config {
        cores: Some(1),
        pin_threads: false,
        ..Config::default()
    })?;
    let exit = runtime.run(move || async move {
        let provisional = NodeId::new(ADMIN_FIRST.get() + (std::process::id() & 0xffff));
        let messenger = sesa_node::run::join_frontend(provisional, secret, addr)
            .await
            .map_err(|e| anyhow!(e))?;
        let service = EbbId::from_raw(service).context("bad service id")?;
        let reply = Client::<S>::new(messenger, NodeId::FRONTEND, CoreId::new(0), service)
            .call(request)
            .await;
        messenger.disconnect_all().await?;
        reply.map_err(|e: ServiceError<S::Error>| anyhow!("{e}"))
    })?;
    match exit {
        Exit::Completed(reply) => reply,
        other => bail!("stopped ({})", other.code()),
    }
}

/// The frontend holds our stdin open; EOF means it is done with us (or died).
async fn stop_when_stdin_closes() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    sesa_event::stop(0);
}
