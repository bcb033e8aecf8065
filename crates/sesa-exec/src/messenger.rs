//! The messenger: one authenticated connection per peer node, and remote invocation.
//!
//! # Structure
//! A node's messenger is a [`Central`] EBB: its state (connections, pending calls,
//! served EBBs) lives on one *home* core and is `!Send`; any core reaches it through a
//! [`MessengerRef`], which ships the operation home. Each connection is driven by one task
//! on the home core that owns the stream: it reads and decodes frames, and writes the
//! frames queued for the peer in batches (everything queued since the last write goes
//! out in one `write`).
//!
//! # A call
//! `MessengerRef::call(node, core, ebb, method, payload)` encodes a `Call` frame into the
//! peer's outbox and parks a completer under a fresh call id. On the peer, the connection
//! task ships the call to `core`, where the served EBB's rep handles it. That is an
//! `EbbRef::try_with`, so if the EBB has no rep on that core yet, the access miss happens
//! there. The result comes back as a `Reply` frame and completes the call.
//!
//! # Failure
//! A peer that closes, resets, sends bad bytes or fails authentication is dropped; its
//! pending calls fail at once with [`CallError::PeerLost`]; they never hang. Bad input
//! is logged and never panics the node.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::{Future, poll_fn};
use core::net::SocketAddr;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use sesa_ebb::{CoreId, EbbError, EbbId, EbbRef, NodeId};
use sesa_event::net::{Listener, Stream};
use sesa_event::{Central, CentralRef, EventError, JoinHandle};
use sesa_wire::{
    Auth, AuthError, Call, Data, FrameDecoder, Gossip, Handshake, Hello, Limits, MsgType,
    RemoteError, Reply, Secret, WireError, encode,
};

/// Who a node is: its id and generation (a restarted node comes back with a higher
/// generation, so the cluster can tell it from its previous life).
///
/// The handshake carries it as [`sesa_wire::Identity`], the raw numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The node id.
    pub node: NodeId,
    /// The generation.
    pub generation: u64,
}

impl From<Identity> for sesa_wire::Identity {
    fn from(id: Identity) -> Self {
        sesa_wire::Identity {
            node: id.node.get(),
            generation: id.generation,
        }
    }
}

impl From<sesa_wire::Identity> for Identity {
    fn from(id: sesa_wire::Identity) -> Self {
        Identity {
            node: NodeId::new(id.node),
            generation: id.generation,
        }
    }
}

/// How a node's messenger is set up.
#[derive(Clone, Debug)]
pub struct MessengerConfig {
    /// This node.
    pub me: Identity,
    /// The cluster secret every node of the application holds.
    pub secret: Secret,
    /// Frame size limit (both directions).
    pub limits: Limits,
    /// How long a connecting peer has to complete the handshake.
    pub handshake_timeout: Duration,
    /// The core the messenger's state lives on.
    pub home: CoreId,
    /// The largest call argument accepted from a peer (data shipping reassembles up to
    /// this many bytes per transfer; default 256 MiB).
    pub transfer_max: u64,
}

/// Chunks of a large call argument are at most this big.
const CHUNK: usize = 1 << 20;

/// At most this many large calls may be arriving from one peer at once.
const TRANSFERS_MAX: usize = 16;

impl MessengerConfig {
    /// Defaults: 16 MiB frames, a 5 s handshake timeout, home on core 0.
    pub fn new(me: Identity, secret: Secret) -> Self {
        MessengerConfig {
            me,
            secret,
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(5),
            home: CoreId::new(0),
            transfer_max: 256 << 20,
        }
    }
}

/// Why a remote call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No connection to that node.
    #[error("not connected to node {0}")]
    NotConnected(NodeId),
    /// The connection to the peer was lost before the reply came.
    #[error("the connection to node {0} was lost before the reply")]
    PeerLost(NodeId),
    /// The peer answered with an error.
    #[error("node {node} answered: {error}")]
    Remote {
        /// The peer.
        node: NodeId,
        /// Its error.
        error: RemoteError,
    },
    /// The call could not be encoded (too large for a frame).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The messenger could not be reached on its home core.
    #[error(transparent)]
    Event(#[from] EventError),
}

/// Why connecting to a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The network failed.
    #[error("network: {0}")]
    Net(#[from] sesa_event::net::NetError),
    /// The peer sent bytes that are not the protocol.
    #[error("protocol: {0}")]
    Wire(#[from] WireError),
    /// Authentication failed.
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    /// The peer closed the connection during the handshake (it may have refused us).
    #[error("the peer closed the connection during the handshake")]
    Closed,
    /// The handshake took longer than `handshake_timeout`.
    #[error("the handshake timed out")]
    TimedOut,
    /// The messenger could not be reached on its home core.
    #[error(transparent)]
    Event(#[from] EventError),
}

/// A remote call as the serving rep sees it.
pub struct Request<'a> {
    /// The calling node.
    pub from: Identity,
    /// The method number (the EBB's own numbering).
    pub method: u16,
    /// The argument.
    pub payload: &'a [u8],
}

/// A rep that serves remote calls.
pub trait RemoteRep: 'static {
    /// Handles one call on this rep's core; returns the encoded result.
    ///
    /// # Errors
    /// Whatever the caller should see ([`RemoteError::NoHandler`] for an unknown method).
    fn handle(&self, request: Request<'_>) -> Result<Vec<u8>, RemoteError>;
}

type Handler = Arc<dyn Fn(Identity, u16, Vec<u8>) -> Result<Vec<u8>, RemoteError> + Send + Sync>;

/// The future an async service returns: built and polled on the serving core.
pub type ServiceFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, RemoteError>>>>;

type AsyncHandler = Arc<dyn Fn(Identity, u16, Vec<u8>) -> ServiceFuture + Send + Sync>;

/// How calls to one EBB are served.
#[derive(Clone)]
enum Service {
    /// By the rep on the named core, synchronously (`serve`).
    Rep(Handler),
    /// By a future started on the named core (`serve_async`), for work that waits.
    Async(AsyncHandler),
}
type CallResult = Result<Vec<u8>, CallError>;

/// The messenger's state on its home core.
pub struct Messenger {
    config: MessengerConfig,
    peers: RefCell<BTreeMap<NodeId, Rc<Peer>>>,
    handlers: RefCell<BTreeMap<u64, Service>>,
    this: RefCell<Option<MessengerRef>>,
    /// Where membership datagrams go (the membership service, on this core).
    gossip_sink: RefCell<Option<GossipSink>>,
    stats: RefCell<MessengerStats>,
}

/// Counters of a node's messenger, since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessengerStats {
    /// Frames received from peers (after the handshake).
    pub frames_in: u64,
    /// Frames queued for peers.
    pub frames_out: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes queued.
    pub bytes_out: u64,
    /// Remote calls served.
    pub calls_served: u64,
    /// Connections refused (failed handshakes, bad frames).
    pub refused: u64,
}

/// Receives membership datagrams on the home core.
pub type GossipSink = Rc<dyn Fn(Identity, &[u8])>;

/// One connected, authenticated peer.
struct Peer {
    identity: Identity,
    /// Encoded frames waiting for the connection task to write them.
    outbox: RefCell<Vec<u8>>,
    /// The connection task, to wake when the outbox fills or the peer is dropped.
    writer: RefCell<Option<Waker>>,
    pending: RefCell<BTreeMap<u64, Completion>>,
    next_call: Cell<u64>,
    closed: Cell<bool>,
    /// Large calls being reassembled, by transfer id.
    incoming: RefCell<BTreeMap<u64, Incoming>>,
}

/// A large call's argument, arriving in chunks.
struct Incoming {
    ebb: u64,
    core: u32,
    method: u16,
    total: u64,
    buf: Vec<u8>,
    /// Over the size limit: already answered; its chunks are dropped as they come.
    refused: bool,
}

/// Completes a call on the core that made it.
struct Completion(Box<dyn FnOnce(CallResult)>);

impl Peer {
    fn queue(
        &self,
        frame: impl FnOnce(&mut Vec<u8>) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        frame(&mut self.outbox.borrow_mut())?;
        if let Some(w) = self.writer.borrow().as_ref() {
            w.wake_by_ref();
        }
        Ok(())
    }

    /// Marks the peer gone and fails every pending call.
    fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        let pending = core::mem::take(&mut *self.pending.borrow_mut());
        let node = self.identity.node;
        for (_, done) in pending {
            (done.0)(Err(CallError::PeerLost(node)));
        }
        if let Some(w) = self.writer.borrow_mut().take() {
            w.wake();
        }
    }
}

/// A `Copy` handle to a node's messenger, usable on any core.
#[derive(Clone, Copy)]
pub struct MessengerRef(CentralRef<Messenger>);

impl Messenger {
    /// Creates the messenger EBB on the current node (its state lives on `config.home`).
    ///
    /// # Errors
    /// Off a core, or when the node is out of EBB ids.
    pub fn create(config: MessengerConfig) -> Result<MessengerRef, EbbError> {
        let home = config.home;
        let central = Central::create(home, move || Messenger {
            config,
            peers: RefCell::new(BTreeMap::new()),
            handlers: RefCell::new(BTreeMap::new()),
            this: RefCell::new(None),
            gossip_sink: RefCell::new(None),
            stats: RefCell::new(MessengerStats::default()),
        })?;
        Ok(MessengerRef(central))
    }

    fn count_out(&self, bytes: usize) {
        let mut st = self.stats.borrow_mut();
        st.frames_out += 1;
        st.bytes_out += bytes as u64;
    }

    fn count_in(&self, bytes: usize) {
        let mut st = self.stats.borrow_mut();
        st.frames_in += 1;
        st.bytes_in += bytes as u64;
    }

    fn peer(&self, node: NodeId) -> Option<Rc<Peer>> {
        self.peers.borrow().get(&node).cloned()
    }

    /// Adopts an authenticated connection: drops a stale one from an older generation,
    /// refuses a duplicate of a live one.
    fn adopt(&self, identity: Identity, stream: Stream, decoder: FrameDecoder) {
        if let Some(existing) = self.peer(identity.node) {
            if existing.identity.generation >= identity.generation && !existing.closed.get() {
                tracing::warn!(
                    node = %identity.node,
                    "refusing a second connection from an already connected node"
                );
                return;
            }
            existing.close();
        }
        let peer = Rc::new(Peer {
            identity,
            outbox: RefCell::new(Vec::new()),
            writer: RefCell::new(None),
            pending: RefCell::new(BTreeMap::new()),
            next_call: Cell::new(1),
            closed: Cell::new(false),
            incoming: RefCell::new(BTreeMap::new()),
        });
        self.peers.borrow_mut().insert(identity.node, peer.clone());
        tracing::info!(
            node = %identity.node,
            generation = identity.generation,
            "peer connected"
        );
        let Some(this) = *self.this.borrow() else {
            return;
        };
        sesa_event::spawn_local(Connection::new(this, peer, stream, decoder).run());
    }

    fn start_call(
        &self,
        node: NodeId,
        core: CoreId,
        ebb: EbbId,
        method: u16,
        payload: Vec<u8>,
        done: Completion,
    ) {
        let Some(peer) = self.peer(node).filter(|p| !p.closed.get()) else {
            return (done.0)(Err(CallError::NotConnected(node)));
        };
        let call_id = peer.next_call.get();
        peer.next_call.set(call_id + 1);
        if payload.len() > CHUNK {
            // Data shipping: the argument goes in chunks the peer reassembles.
            let limits = self.config.limits;
            let total = payload.len() as u64;
            let mut queued = Ok(());
            for (i, chunk) in payload.chunks(CHUNK).enumerate() {
                let data = Data {
                    transfer: call_id,
                    ebb: ebb.raw(),
                    core: core.get(),
                    method,
                    total,
                    offset: (i * CHUNK) as u64,
                    chunk,
                };
                queued = peer.queue(|out| encode(MsgType::Data, &data, &limits, out));
                if queued.is_err() {
                    break;
                }
                self.count_out(chunk.len());
            }
            match queued {
                Ok(()) => {
                    peer.pending.borrow_mut().insert(call_id, done);
                }
                Err(e) => (done.0)(Err(CallError::Wire(e))),
            }
            return;
        }
        let call = Call {
            call_id,
            ebb: ebb.raw(),
            core: core.get(),
            method,
            payload: &payload,
        };
        let limits = self.config.limits;
        let size = call.payload.len();
        match peer.queue(|out| encode(MsgType::Call, &call, &limits, out)) {
            Ok(()) => {
                self.count_out(size);
                peer.pending.borrow_mut().insert(call_id, done);
            }
            Err(e) => (done.0)(Err(CallError::Wire(e))),
        }
    }

    /// Serves a call that arrived from `from`: ships it to its core and queues the reply.
    fn serve(&self, peer: &Rc<Peer>, call: Call<'_>) {
        let handler = self.handlers.borrow().get(&call.ebb).cloned();
        let (call_id, core, method) = (call.call_id, CoreId::new(call.core), call.method);
        let payload = call.payload.to_vec();
        let from = peer.identity;
        let peer = peer.clone();
        let limits = self.config.limits;
        self.stats.borrow_mut().calls_served += 1;
        let this = *self.this.borrow();
        sesa_event::spawn_local(async move {
            let result = match handler {
                None => Err(RemoteError::NoHandler),
                Some(_) if core.index() >= sesa_event::cores() => Err(RemoteError::NoSuchCore),
                Some(service) => {
                    let ran = match service {
                        Service::Rep(handler) => {
                            sesa_event::spawn_on(core, move || handler(from, method, payload)).await
                        }
                        Service::Async(handler) => {
                            sesa_event::spawn_on_async(core, move || handler(from, method, payload))
                                .await
                        }
                    };
                    match ran {
                        Ok(result) => result,
                        Err(EventError::Panicked { .. }) => Err(RemoteError::Panicked),
                        Err(_) => Err(RemoteError::Stopping),
                    }
                }
            };
            if peer.closed.get() {
                return;
            }
            let reply = Reply {
                call_id,
                result: result
                    .as_deref()
                    .map(serde_bytes::Bytes::new)
                    .map_err(Clone::clone),
            };
            let queued = peer.queue(|out| encode(MsgType::Reply, &reply, &limits, out));
            if let Some(this) = this {
                this.with_home(|m| m.count_out(result.as_ref().map_or(0, Vec::len)));
            }
            if let Err(e) = queued {
                // The result is too large for a frame: tell the caller rather than hang it.
                tracing::warn!(error = %e, "reply does not fit in a frame");
                let reply = Reply {
                    call_id,
                    result: Err(RemoteError::Refused(
                        "reply larger than the frame limit".into(),
                    )),
                };
                let _ = peer.queue(|out| encode(MsgType::Reply, &reply, &limits, out));
            }
        });
    }

    /// Sends a membership datagram to `node` if connected; `false` if not.
    pub fn send_gossip(&self, node: NodeId, data: &[u8]) -> bool {
        let Some(peer) = self.peer(node).filter(|p| !p.closed.get()) else {
            return false;
        };
        let limits = self.config.limits;
        let sent = peer
            .queue(|out| encode(MsgType::Gossip, &Gossip { data }, &limits, out))
            .is_ok();
        if sent {
            self.count_out(data.len());
        }
        sent
    }

    /// Routes incoming membership datagrams to `sink`.
    pub fn set_gossip_sink(&self, sink: GossipSink) {
        *self.gossip_sink.borrow_mut() = Some(sink);
    }

    /// The counters since this messenger started.
    pub fn stats(&self) -> MessengerStats {
        *self.stats.borrow()
    }

    /// This node's identity.
    pub fn identity(&self) -> Identity {
        self.config.me
    }

    /// Whether `node` is connected.
    pub fn is_connected(&self, node: NodeId) -> bool {
        self.peer(node).is_some_and(|p| !p.closed.get())
    }

    fn complete(&self, peer: &Peer, reply: Reply<'_>) {
        let Some(done) = peer.pending.borrow_mut().remove(&reply.call_id) else {
            tracing::warn!(
                node = %peer.identity.node,
                call_id = reply.call_id,
                "reply to no pending call"
            );
            return;
        };
        let result = reply
            .result
            .map(|bytes| bytes.to_vec())
            .map_err(|error| CallError::Remote {
                node: peer.identity.node,
                error,
            });
        (done.0)(result);
    }

    fn drop_peer(&self, peer: &Rc<Peer>) {
        peer.close();
        let mut peers = self.peers.borrow_mut();
        if peers
            .get(&peer.identity.node)
            .is_some_and(|p| Rc::ptr_eq(p, peer))
        {
            peers.remove(&peer.identity.node);
        }
        tracing::info!(node = %peer.identity.node, "peer disconnected");
    }
}

impl MessengerRef {
    /// Runs `f` on the messenger's state; only on its home core (the connection tasks
    /// live there), synchronously.
    pub(crate) fn with_home<T>(self, f: impl FnOnce(&Messenger) -> T) -> Option<T> {
        self.0.with_home(f)
    }

    async fn home<T: Send + 'static>(
        self,
        f: impl FnOnce(&Messenger) -> T + Send + 'static,
    ) -> Result<T, EventError> {
        self.0
            .call(move |m| {
                // Remember our own handle, for the tasks the messenger spawns.
                m.this.borrow_mut().get_or_insert(self);
                f(m)
            })
            .await
    }

    /// Listens for peers on `addr` (on the home core); returns the bound address.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn listen(self, addr: SocketAddr) -> Result<SocketAddr, ConnectError> {
        let bound = self
            .home(move |m| {
                let listener = sesa_event::tcp_listen(addr)?;
                let local = listener.local_addr()?;
                let config = m.config.clone();
                sesa_event::spawn_local(accept_loop(self, listener, config));
                Ok::<_, ConnectError>(local)
            })
            .await??;
        Ok(bound)
    }

    /// Connects to the node listening at `addr` and authenticates it; returns who it is.
    ///
    /// # Errors
    /// The network, the handshake, or authentication failed.
    pub async fn connect(self, addr: SocketAddr) -> Result<Identity, ConnectError> {
        let handle: JoinHandle<Result<Identity, ConnectError>> = self
            .home(move |m| {
                let config = m.config.clone();
                sesa_event::spawn_local(async move {
                    let mut stream = sesa_event::tcp_connect(addr).await.map_err(|e| match e {
                        EventError::Net(n) => ConnectError::Net(n),
                        other => ConnectError::Event(other),
                    })?;
                    let _ = stream.set_nodelay(true);
                    let (peer, decoder) = handshake(&mut stream, &config).await?;
                    // This task runs on the home core: adopt synchronously.
                    self.with_home(move |m| m.adopt(peer, stream, decoder));
                    Ok(peer)
                })
            })
            .await?;
        handle.await?
    }

    /// Calls `method` of `ebb`'s rep on core `core` of node `node`; returns its encoded
    /// result. Usable from any core.
    ///
    /// # Errors
    /// See [`CallError`]: never hangs on a lost peer.
    pub async fn call(
        self,
        node: NodeId,
        core: CoreId,
        ebb: EbbId,
        method: u16,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, CallError> {
        let origin = sesa_event::current_core();
        let (tx, rx) = sesa_event::completion::<CallResult>(core);
        self.home(move |m| {
            // Completed on the home core; the result is shipped back to the caller's core
            // so the wake-up there is local.
            let done = Completion(Box::new(move |result| {
                let _ = sesa_event::ship(origin, move || tx.complete(Ok(result)));
            }));
            m.start_call(node, core, ebb, method, payload, done)
        })
        .await?;
        rx.await?
    }

    /// Serves remote calls to `ebb`: each is handled by the rep on the core it names
    /// (created there by the access miss if that core has none yet).
    ///
    /// # Errors
    /// The messenger could not be reached.
    pub async fn serve<T: RemoteRep>(self, ebb: EbbRef<T>) -> Result<(), EventError> {
        let handler: Handler = Arc::new(move |from, method, payload| {
            let request = Request {
                from,
                method,
                payload: &payload,
            };
            match ebb.try_with(|rep| rep.handle(request)) {
                Ok(result) => result,
                Err(EbbError::NoSuchEbb { .. }) => Err(RemoteError::NoSuchEbb),
                Err(e) => Err(RemoteError::Refused(e.to_string())),
            }
        });
        self.home(move |m| {
            m.handlers
                .borrow_mut()
                .insert(ebb.id().raw(), Service::Rep(handler));
        })
        .await
    }

    /// Serves remote calls to `ebb` with an async function, started on the core each call
    /// names: for operations that wait (run an application, call other nodes). The
    /// future cannot borrow a rep across its `.await`s; it reaches reps through their
    /// `EbbRef`s as any event does.
    ///
    /// # Errors
    /// The messenger could not be reached.
    pub async fn serve_async<F, Fut>(self, ebb: EbbId, f: F) -> Result<(), EventError>
    where
        F: Fn(Identity, u16, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, RemoteError>> + 'static,
    {
        let handler: AsyncHandler =
            Arc::new(move |from, method, payload| Box::pin(f(from, method, payload)));
        self.home(move |m| {
            m.handlers
                .borrow_mut()
                .insert(ebb.raw(), Service::Async(handler));
        })
        .await
    }

    /// This node's identity and the messenger's home core.
    ///
    /// # Errors
    /// The messenger could not be reached.
    pub async fn identity_and_home(self) -> Result<(Identity, CoreId), EventError> {
        self.home(|m| (m.config.me, m.config.home)).await
    }

    /// The messenger's counters.
    ///
    /// # Errors
    /// The messenger could not be reached.
    pub async fn stats(self) -> Result<MessengerStats, EventError> {
        self.home(|m| m.stats()).await
    }

    /// The nodes currently connected.
    ///
    /// # Errors
    /// The messenger could not be reached.
    pub async fn peers(self) -> Result<Vec<Identity>, EventError> {
        self.home(|m| m.peers.borrow().values().map(|p| p.identity).collect())
            .await
    }

    /// Closes every connection (pending calls fail with [`CallError::PeerLost`]).
    ///
    /// # Errors
    /// The messenger could not be reached.
    pub async fn disconnect_all(self) -> Result<(), EventError> {
        self.home(|m| {
            let peers: Vec<_> = m.peers.borrow().values().cloned().collect();
            for p in peers {
                m.drop_peer(&p);
            }
        })
        .await
    }
}

/// Frame limits before authentication: `Hello` and `Auth` are under 100 bytes.
const HANDSHAKE_LIMITS: Limits = Limits { frame_max: 1024 };

/// At most this many connections may be in their handshake at once; more are refused,
/// so a flood of unauthenticated connections cannot exhaust the node.
const HANDSHAKES_MAX: usize = 128;

async fn accept_loop(this: MessengerRef, listener: Listener, config: MessengerConfig) {
    let in_handshake = Rc::new(Cell::new(0usize));
    loop {
        let (mut stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                sesa_event::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if in_handshake.get() >= HANDSHAKES_MAX {
            tracing::warn!(%from, "refused a connection: {HANDSHAKES_MAX} handshakes already in progress");
            this.with_home(|m| m.stats.borrow_mut().refused += 1);
            continue;
        }
        in_handshake.set(in_handshake.get() + 1);
        let _ = stream.set_nodelay(true);
        let config = config.clone();
        let counted = in_handshake.clone();
        sesa_event::spawn_local(async move {
            let result = handshake(&mut stream, &config).await;
            counted.set(counted.get() - 1);
            match result {
                Ok((peer, decoder)) => {
                    this.with_home(move |m| m.adopt(peer, stream, decoder));
                }
                Err(e) => {
                    tracing::warn!(%from, error = %e, "refused a connection");
                    this.with_home(|m| m.stats.borrow_mut().refused += 1);
                    let _ = stream.shutdown().await;
                }
            }
        });
    }
}

/// Runs the handshake on a fresh stream; returns the authenticated peer and the decoder
/// (which may already hold the peer's first frames).
async fn handshake(
    stream: &mut Stream,
    config: &MessengerConfig,
) -> Result<(Identity, FrameDecoder), ConnectError> {
    let mut nonce = [0u8; 32];
    sesa_event::fill_random(&mut nonce);
    let mut hs = Handshake::new(config.me.into(), nonce, config.secret.clone());
    // Until the peer is authenticated it may only send the two small handshake frames:
    // an unauthenticated peer cannot make this node buffer a large frame.
    let mut decoder = FrameDecoder::new(HANDSHAKE_LIMITS);
    let deadline = sesa_event::now() + config.handshake_timeout;
    let exchange = async {
        let mut out = Vec::new();
        encode(MsgType::Hello, &hs.hello(), &config.limits, &mut out)?;
        stream.write_all(&out).await?;
        let hello: Hello = next_message(stream, &mut decoder, MsgType::Hello).await?;
        let auth = hs.on_hello(&hello)?;
        out.clear();
        encode(MsgType::Auth, &auth, &config.limits, &mut out)?;
        stream.write_all(&out).await?;
        let auth: Auth = next_message(stream, &mut decoder, MsgType::Auth).await?;
        Ok::<_, ConnectError>(Identity::from(hs.on_auth(&auth)?))
    };
    let peer = sesa_event::timeout_at(deadline, exchange)
        .await
        .unwrap_or(Err(ConnectError::TimedOut))?;
    decoder.set_limits(config.limits);
    Ok((peer, decoder))
}

async fn next_message<T: for<'a> serde::Deserialize<'a>>(
    stream: &mut Stream,
    decoder: &mut FrameDecoder,
    expected: MsgType,
) -> Result<T, ConnectError> {
    let mut buf = [0u8; 512];
    loop {
        if let Some(frame) = decoder.next_frame()? {
            if frame.msg_type != expected {
                return Err(
                    AuthError::OutOfOrder("unexpected message during the handshake").into(),
                );
            }
            return Ok(frame.decode::<T>()?);
        }
        match stream.read(&mut buf).await? {
            0 => return Err(ConnectError::Closed),
            n => decoder.extend(&buf[..n]),
        }
    }
}

/// Adds a chunk to its transfer; returns the whole call when it is complete.
///
/// # Errors
/// A chunk out of order, or more transfers at once than allowed: the peer is not
/// following the protocol and its connection is closed. A transfer above
/// `transfer_max` is refused with a reply instead.
fn receive_chunk(
    peer: &Rc<Peer>,
    data: Data<'_>,
    transfer_max: u64,
) -> Result<Option<(u64, Incoming)>, ConnectError> {
    let mut incoming = peer.incoming.borrow_mut();
    if data.offset == 0 {
        if data.total > transfer_max {
            // Answer now; chunks still to come for it are ignored below.
            drop(incoming);
            let reply = Reply {
                call_id: data.transfer,
                result: Err(RemoteError::Refused(alloc::format!(
                    "a {}-byte argument exceeds this node's limit of {transfer_max} bytes",
                    data.total
                ))),
            };
            let _ = peer.queue(|out| encode(MsgType::Reply, &reply, &Limits::default(), out));
            let refused = Incoming {
                ebb: data.ebb,
                core: data.core,
                method: data.method,
                total: data.total,
                buf: Vec::new(),
                refused: true,
            };
            peer.incoming.borrow_mut().insert(data.transfer, refused);
            return Ok(None);
        }
        if incoming.len() >= TRANSFERS_MAX {
            return Err(AuthError::OutOfOrder("too many large calls at once").into());
        }
        incoming.insert(
            data.transfer,
            Incoming {
                ebb: data.ebb,
                core: data.core,
                method: data.method,
                total: data.total,
                buf: Vec::with_capacity(data.total.min(CHUNK as u64 * 4) as usize),
                refused: false,
            },
        );
    }
    let Some(transfer) = incoming.get_mut(&data.transfer) else {
        return Err(AuthError::OutOfOrder("a chunk of an unknown transfer").into());
    };
    if transfer.refused {
        // Drop its chunks; forget it after the last one.
        if data.offset + data.chunk.len() as u64 >= data.total {
            incoming.remove(&data.transfer);
        }
        return Ok(None);
    }
    if data.offset != transfer.buf.len() as u64
        || data.total != transfer.total
        || data.offset + data.chunk.len() as u64 > transfer.total
    {
        return Err(AuthError::OutOfOrder("a chunk out of order").into());
    }
    transfer.buf.extend_from_slice(data.chunk);
    if transfer.buf.len() as u64 == transfer.total {
        let done = incoming.remove(&data.transfer);
        return Ok(done.map(|t| (data.transfer, t)));
    }
    Ok(None)
}

/// Drives one authenticated connection: reads and dispatches frames, writes batches.
struct Connection {
    this: MessengerRef,
    peer: Rc<Peer>,
    stream: Stream,
    decoder: FrameDecoder,
    read_buf: Vec<u8>,
    /// The batch being written, and how much of it is out.
    writing: Vec<u8>,
    written: usize,
}

impl Connection {
    fn new(this: MessengerRef, peer: Rc<Peer>, stream: Stream, decoder: FrameDecoder) -> Self {
        Connection {
            this,
            peer,
            stream,
            decoder,
            read_buf: vec![0; 64 * 1024],
            writing: Vec::new(),
            written: 0,
        }
    }

    async fn run(mut self) {
        let outcome = poll_fn(|cx| self.poll_io(cx)).await;
        if let Err(e) = outcome {
            tracing::warn!(node = %self.peer.identity.node, error = %e, "closing the connection");
        }
        let peer = self.peer.clone();
        self.this.with_home(|m| m.drop_peer(&peer));
    }

    /// Makes all the progress it can; `Ready` when the connection is over.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        *self.peer.writer.borrow_mut() = Some(cx.waker().clone());
        loop {
            if self.peer.closed.get() {
                return Poll::Ready(Ok(()));
            }
            let mut progress = false;
            // Frames already buffered (e.g. behind the handshake) first.
            if let Err(e) = self.dispatch_buffered() {
                return Poll::Ready(Err(e));
            }
            // Write: everything queued since the last write, in one batch.
            if self.written == self.writing.len() {
                self.writing.clear();
                self.written = 0;
                core::mem::swap(&mut self.writing, &mut self.peer.outbox.borrow_mut());
            }
            if self.written < self.writing.len() {
                match self.stream_poll_write(cx) {
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => {}
                }
            }
            // Read.
            match self.stream_poll_read(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(n)) => {
                    self.decoder.extend(&self.read_buf[..n]);
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {}
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    fn stream_poll_write(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<usize, sesa_event::net::NetError>> {
        self.stream.poll_write(cx, &self.writing[self.written..])
    }

    fn stream_poll_read(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<usize, sesa_event::net::NetError>> {
        self.stream.poll_read(cx, &mut self.read_buf)
    }

    /// Handles every complete frame buffered, on the home core, synchronously.
    fn dispatch_buffered(&mut self) -> Result<(), ConnectError> {
        while let Some(frame) = self.decoder.next_frame()? {
            let peer = &self.peer;
            let size = frame.payload.len();
            self.this.with_home(|m| m.count_in(size));
            match frame.msg_type {
                MsgType::Call => {
                    let call: Call<'_> = frame.decode()?;
                    self.this.with_home(|m| m.serve(peer, call));
                }
                MsgType::Reply => {
                    let reply: Reply<'_> = frame.decode()?;
                    self.this.with_home(|m| m.complete(peer, reply));
                }
                MsgType::Data => {
                    let data: Data<'_> = frame.decode()?;
                    let transfer_max = self.this.with_home(|m| m.config.transfer_max).unwrap_or(0);
                    if let Some(call) = receive_chunk(peer, data, transfer_max)? {
                        self.this.with_home(|m| {
                            let whole = Call {
                                call_id: call.0,
                                ebb: call.1.ebb,
                                core: call.1.core,
                                method: call.1.method,
                                payload: &call.1.buf,
                            };
                            m.serve(peer, whole)
                        });
                    }
                }
                MsgType::Gossip => {
                    let gossip: Gossip<'_> = frame.decode()?;
                    let sink = self
                        .this
                        .with_home(|m| m.gossip_sink.borrow().clone())
                        .flatten();
                    if let Some(sink) = sink {
                        sink(peer.identity, gossip.data);
                    }
                }
                MsgType::Hello | MsgType::Auth => {
                    return Err(
                        AuthError::OutOfOrder("a handshake message after the handshake").into(),
                    );
                }
                _ => return Err(AuthError::OutOfOrder("an unexpected message").into()),
            }
        }
        Ok(())
    }
}
