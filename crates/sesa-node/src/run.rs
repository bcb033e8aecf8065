//! A node's life in an application: join, serve, register, run what the frontend asks,
//! stop when it lets go.
//!
//! [`run`] connects to the frontend (the messenger's authenticated handshake), listens
//! for the other members, joins the SWIM membership through the frontend, serves the
//! node's control EBB ([`ControlService`]: run an application, report its figures,
//! leave) and registers with the
//! frontend's registry, whose answer names the offload service. It returns when the
//! frontend's connection is lost for good (an error: no node outlives its frontend; a
//! connection reset or a short cut is mended by dialling again, for up to
//! [`FRONTEND_GRACE`]), or after
//! the frontend let it go ([`Control::Leave`], with a drain). A platform adds its own ways to
//! stop (a hosted node: its stdin closing, SIGINT/SIGTERM).

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddr};
use core::sync::atomic::{AtomicBool, Ordering::SeqCst};
use core::time::Duration;

use sesa_ebb::{CoreId, EbbId, NodeId, NodeShared};
use sesa_event::net::NetError;
use sesa_exec::GlobalIdMap;
use sesa_exec::global::GlobalEbbs;
use sesa_exec::{
    Client, ConnectError, Departures, Identity, Membership, MembershipConfig, Messenger,
    MessengerConfig, MessengerRef, NodeIdentity, Secret,
};

use crate::app::{Apps, NodeContext};
use crate::offload::OffloadClient;
use crate::{
    ADMIN_FIRST, Control, ControlError, ControlReply, ControlService, NamesView, NodeStatus,
    Register, Registered, Registry, RegistryService,
};

/// A port of the node's as the frontend's host sees it: `host` on 127.0.0.1 forwarded
/// to `guest` on the node.
#[derive(Clone, Copy, Debug)]
pub struct Forward {
    /// The node's own port.
    pub guest: u16,
    /// The port on the frontend's host.
    pub host: u16,
}

/// How the node's listening addresses look from the frontend's host.
#[derive(Clone, Copy, Debug)]
pub enum Addressing {
    /// The node is a process on the frontend's host: it listens on 127.0.0.1, on ports
    /// the OS picks (or the store's settings name).
    Loopback,
    /// The node has an address of its own that every member reaches (a machine on a
    /// network, a simulated node): it listens there, on ports the OS picks (or the
    /// store's settings name).
    Own(core::net::IpAddr),
    /// The node is behind port forwarding (a native node on QEMU's user network): it
    /// listens on fixed ports of its own, which the host forwards from 127.0.0.1.
    Forwarded {
        /// The messenger's port.
        messenger: Forward,
        /// The data store's client port.
        clients: Forward,
    },
}

/// What an application may need to know of the node it runs on (the data store: its
/// client port's addressing, the pid its `stats` report, its memory bound).
#[derive(Clone, Copy, Debug)]
pub struct Host {
    /// How the node's ports look from the frontend's host.
    pub addressing: Addressing,
    /// The node's process id, for `stats` (0 for a native node).
    pub pid: u32,
    /// The most memory the store's items may take here (a native node: half its heap,
    /// the rest being the table, connections and the stack); `None`: what the settings
    /// say.
    pub memory_max: Option<usize>,
}

/// How often a node announces itself to the frontend's membership again.
const REANNOUNCE: Duration = Duration::from_secs(2);

/// How many nodes hold each entry of the global id map (each global EBB's name).
pub const NAME_REPLICAS: usize = 2;

/// What a node needs to know to join.
pub struct NodeParams {
    /// Its id.
    pub id: NodeId,
    /// The cluster secret.
    pub secret: Secret,
    /// The frontend's messenger address.
    pub frontend: SocketAddr,
    /// The frontend's registry EBB.
    pub registry: EbbId,
    /// How its addresses look from outside.
    pub addressing: Addressing,
    /// SWIM's timing.
    pub membership: MembershipConfig,
    /// Its process id (0 for a native node).
    pub pid: u32,
    /// What it runs on, for `sesa status`.
    pub platform: crate::Platform,
    /// The most memory the data store's items may take on this node (`None`: what the
    /// application's settings say).
    pub memory_max: Option<usize>,
    /// The applications this node runs.
    pub apps: Apps,
}

/// Runs the node until the frontend lets go of it (`Ok`) or is lost (`Err`).
///
/// # Errors
/// The frontend cannot be joined, or its connection was lost: the reason, for the
/// node's console.
pub async fn run(p: NodeParams) -> Result<(), String> {
    let NodeParams {
        id,
        secret,
        frontend,
        registry,
        addressing,
        membership,
        pid,
        platform,
        memory_max,
        apps,
    } = p;
    let apps = Arc::new(apps);
    let host = Host {
        addressing,
        pid,
        memory_max,
    };
    let messenger = join_frontend(id, secret, frontend).await?;
    // Listen too, so other members can reach this node, and join the SWIM membership
    // through the frontend, under the address the others reach it at.
    let (listen, seen_at) = match addressing {
        Addressing::Loopback => (SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), None),
        Addressing::Own(ip) => (SocketAddr::new(ip, 0), None),
        Addressing::Forwarded { messenger: m, .. } => (
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, m.guest)),
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, m.host))),
        ),
    };
    let bound = messenger
        .listen(listen)
        .await
        .map_err(|e| format!("listening on {listen}: {e}"))?;
    let addr = seen_at.unwrap_or(bound);
    let members = Membership::start(messenger, addr, membership)
        .await
        .map_err(|e| format!("starting the membership: {e}"))?;
    let seed = NodeIdentity {
        node: NodeId::FRONTEND,
        generation: 1,
        addr: frontend,
    };
    members
        .announce(seed)
        .await
        .map_err(|e| format!("announcing the frontend: {e}"))?;
    // A node the others declared down while it was cut off, and that missed the news,
    // would stay out of their membership for good: nobody would probe it, nor connect to
    // it again. So it announces itself to the frontend now and then; the frontend then
    // tells it it was declared down (it rejoins under a new generation) or sends it the
    // members it missed.
    sesa_event::spawn_local(async move {
        loop {
            sesa_event::sleep(REANNOUNCE).await;
            if members.announce(seed).await.is_err() {
                return;
            }
        }
    });
    let started = sesa_event::now();
    let (control, _) = NodeShared::create(|| ()).map_err(|e| format!("the control EBB: {e}"))?;
    // This node's part of the global id map, the naming service of global EBBs: the
    // frontend sends it the members' views.
    let names = GlobalIdMap::start(messenger, id, NAME_REPLICAS)
        .await
        .map_err(|e| format!("starting the global id map: {e}"))?;
    let global = Arc::new(GlobalEbbs::new(names.clone(), id, 1).map_err(|e| format!("{e}"))?);
    let names_store = names.member().store;
    // Filled in by the registration reply, before any application runs: the frontend's
    // offload service.
    let services = Arc::new(spin::Once::<EbbId>::new());
    let known = services.clone();
    // Planned leave: set `leaving`, then the departure handlers drain this node.
    let leaving = Arc::new(AtomicBool::new(false));
    let let_go = leaving.clone();
    let departures = Arc::new(Departures::new());
    let me = id;
    sesa_exec::service::serve::<ControlService, _, _>(
        messenger,
        control.id(),
        move |_from, request| {
            let services = known.clone();
            let (leaving, departures) = (leaving.clone(), departures.clone());
            let (apps, names, global) = (apps.clone(), names.clone(), global.clone());
            async move {
                let request = match request {
                    Control::Leave => {
                        leaving.store(true, SeqCst);
                        departures.depart().await;
                        // Stop once this reply is on its way.
                        sesa_event::spawn_local(async {
                            sesa_event::sleep(Duration::from_millis(100)).await;
                            sesa_event::stop(0);
                        });
                        return Ok(ControlReply::Left);
                    }
                    Control::Stats => {
                        let status = local_status(messenger, me, started, pid, platform).await;
                        return Ok(ControlReply::Stats(status));
                    }
                    Control::InstallNames(view) => {
                        let copied = install_names(messenger, me, &names, view)
                            .await
                            .map_err(ControlError::Names)?;
                        return Ok(ControlReply::NamesInstalled(copied as u64));
                    }
                    Control::ActivateNames(view) => {
                        // A late activation of an older view changes nothing.
                        if names.activate(view.epoch) {
                            names.set_settled(view.members);
                        }
                        return Ok(ControlReply::NamesActive);
                    }
                    Control::RunApp(request) => request,
                };
                let service = services.get().ok_or(ControlError::NotRegistered)?;
                let node = NodeContext {
                    id: me,
                    nodes: request.nodes,
                    offload: OffloadClient::new(messenger, NodeId::FRONTEND, *service),
                    global,
                    leaving,
                    departures,
                    host,
                };
                let outcome = apps.run(node, &request).await.map_err(ControlError::App)?;
                Ok(ControlReply::Ran(outcome))
            }
        },
    )
    .await
    .map_err(|e| format!("serving the control EBB: {e}"))?;
    let registration = Register {
        node: id,
        generation: 1,
        control: control.id(),
        names: names_store,
        cores: sesa_event::cores() as u32,
        pid,
        platform,
    };
    let registry =
        Client::<RegistryService>::new(messenger, NodeId::FRONTEND, CoreId::new(0), registry);
    match registry.call(Registry::Register(registration)).await {
        Ok(Registered::Services { offload }) => services.call_once(|| offload),
        Ok(other) => return Err(format!("the registry answered {other:?} to a registration")),
        Err(e) => return Err(format!("registering with the frontend: {e}")),
    };
    watch_frontend(messenger, frontend, &let_go).await
}

/// How long a node tries to reach every member of a view of the id map (the
/// membership layer makes the connections) and to copy its entries to them.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Installs view `view` of the id map on node `me` and copies its entries to their
/// replicas in it; done once every copy is taken and `messenger` is connected to every
/// member (the view is of use only then). Copies go to every replica reachable at
/// once, so that a node cut off from one member still hands its entries to the others;
/// the rest are tried again for up to [`CONNECT_WAIT`]. Every pass copies every entry
/// again, a successful one too: a replica takes a rebalance's copy whatever the
/// sender's view, so a node still on an older view may copy entries here after a pass,
/// and the next passes them on (with one pass only, `sesa sim --workload names --faults
/// wide --seed 694` lost a name). Returns how many copies the last pass made.
async fn install_names(
    messenger: MessengerRef,
    me: NodeId,
    names: &GlobalIdMap,
    view: NamesView,
) -> Result<usize, String> {
    let nodes: Vec<NodeId> = view.members.iter().map(|m| m.node).collect();
    names.set_members(view.epoch, view.members);
    let deadline = sesa_event::now() + CONNECT_WAIT;
    loop {
        let copied = names.rebalance().await;
        let peers = messenger.peers().await.unwrap_or_default();
        let missing = nodes
            .iter()
            .find(|n| **n != me && !peers.iter().any(|p| p.node == **n));
        match (copied, missing) {
            (Ok(copied), None) => return Ok(copied),
            (_, Some(n)) if sesa_event::now() > deadline => {
                return Err(format!("not connected to node {n} in {CONNECT_WAIT:?}"));
            }
            (Err(e), _) if sesa_event::now() > deadline => return Err(format!("{e}")),
            _ => sesa_event::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A messenger for `node`, connected to (and authenticated by) the frontend at `addr`.
///
/// # Errors
/// The messenger cannot be made, or the frontend refused or cannot be reached.
pub async fn join_frontend(
    node: NodeId,
    secret: Secret,
    addr: SocketAddr,
) -> Result<MessengerRef, String> {
    let me = Identity {
        node,
        generation: 1,
    };
    let messenger = Messenger::create(MessengerConfig::new(me, secret))
        .map_err(|e| format!("the messenger: {e}"))?;
    // A cut that heals (or a frontend still starting to listen) is waited out, for up
    // to `FRONTEND_GRACE`, as for a running node; a refusal (nobody listens there, or
    // the frontend refused this node) is final.
    let deadline = sesa_event::now() + FRONTEND_GRACE;
    loop {
        let e = match messenger.connect(addr).await {
            Ok(_) => return Ok(messenger),
            Err(e) => e,
        };
        let fatal = !matches!(
            e,
            ConnectError::TimedOut
                | ConnectError::Net(
                    NetError::TimedOut
                        | NetError::Reset
                        | NetError::BrokenPipe
                        | NetError::UnexpectedEof
                )
        );
        if fatal || sesa_event::now() > deadline {
            return Err(format!("joining the frontend at {addr}: {e}"));
        }
        sesa_event::sleep(Duration::from_millis(100)).await;
    }
}

/// This node's own figures (the frontend reports its own with it too).
pub async fn local_status(
    messenger: MessengerRef,
    node: NodeId,
    started: sesa_event::Instant,
    pid: u32,
    platform: crate::Platform,
) -> NodeStatus {
    let peers = messenger.peers().await.unwrap_or_default();
    NodeStatus {
        node,
        generation: 1,
        pid,
        platform,
        cores: sesa_event::cores() as u32,
        ebbs: sesa_ebb::EbbNode::current().map_or(0, |n| n.live_ebbs()),
        reps: sesa_event::on_all_cores(|_| sesa_ebb::reps_on_this_core())
            .await
            .into_iter()
            .map(|r| r.unwrap_or(0))
            .sum(),
        cpu_wait_pct: sesa_event::on_all_cores(|_| sesa_event::cpu_wait_pct())
            .await
            .into_iter()
            .filter_map(|r| r.ok().flatten())
            .max(),
        peers: peers
            .iter()
            .map(|p| p.node)
            .filter(|n| *n < ADMIN_FIRST)
            .collect(),
        messages: messenger.stats().await.unwrap_or_default(),
        uptime_ms: (sesa_event::now() - started).as_millis() as u64,
        state: "up".into(),
    }
}

/// How long a node whose connection to the frontend broke (a reset, a short cut) keeps
/// trying to make it again before it stops: no node outlives its frontend by more.
pub const FRONTEND_GRACE: Duration = Duration::from_secs(10);

/// Returns when the frontend's connection is lost for good: an error (the node stops
/// with it) once the frontend refuses a new one (it is gone) or none could be made for
/// [`FRONTEND_GRACE`], unless the frontend
/// had let this node go (`Control::Leave`), in which case the frontend may well exit
/// before this node's own delayed stop.
async fn watch_frontend(
    messenger: MessengerRef,
    frontend: SocketAddr,
    let_go: &AtomicBool,
) -> Result<(), String> {
    let mut lost_since = None;
    loop {
        sesa_event::sleep(Duration::from_millis(200)).await;
        let peers = messenger
            .peers()
            .await
            .map_err(|e| format!("the messenger: {e}"))?;
        if peers.iter().any(|p| p.node == NodeId::FRONTEND) {
            lost_since = None;
            continue;
        }
        if let_go.load(SeqCst) {
            return Ok(());
        }
        let since = *lost_since.get_or_insert_with(sesa_event::now);
        if sesa_event::now() - since > FRONTEND_GRACE {
            return Err(format!(
                "lost the connection to the frontend, and could not make it again in {FRONTEND_GRACE:?}"
            ));
        }
        // A connection reset, or a cut that may heal: dial the frontend again (it
        // authenticates this node as before). Refused means nobody listens there any
        // more: the frontend is gone, and so is this node.
        let dial = sesa_event::timeout(Duration::from_secs(1), messenger.connect(frontend)).await;
        if let Some(Err(ConnectError::Net(NetError::Refused))) = dial {
            return Err("lost the connection to the frontend, which is gone".into());
        }
    }
}
