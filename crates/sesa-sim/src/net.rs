//! The simulated network: TCP as the executive and the data store see it.
//!
//! sesa's protocols run over streams, so the faults here are the ones a stream shows:
//! - **delay**: each write arrives after a latency drawn per write (bytes of one stream
//!   stay in order; streams race each other, so messages on different connections are
//!   reordered);
//! - **partition**: bytes between two cut nodes are held until the cut heals, and
//!   connection attempts across it time out;
//! - **crash**: a crashed node's connections are reset (its peers read what it had
//!   sent, then an error), its listeners vanish (connecting is refused);
//! - **close**: a node that exits, or drops a stream, closes it (the peer reads the end);
//! - **reset**: the connections between two nodes are reset, as when their packets are
//!   lost for longer than the peers wait (`Sim::reset`).
//!
//! Drops and duplicates of single messages do not exist on a stream; a lost stream is
//! the reset above. Addresses: each node has its IP; `127.0.0.1` and `0.0.0.0` mean the
//! node itself, so a listener bound there is reachable only from its own node.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use sesa_event::net::{Accepted, Connecting, Net, NetError, TcpListener, TcpStream};

use crate::world::{NodeKey, Sleep, World};

/// Bytes one direction of a connection holds in flight before writes wait (a socket's
/// send and receive buffers together).
const WINDOW: usize = 1 << 20;
/// How long a connection attempt across a partition waits before it times out.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The first port handed out for port 0 and for the client side of connections.
const EPHEMERAL: u16 = 32768;

/// How a side's end of a stream reaches its peer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Close {
    /// The end of the stream (a clean close, or a process that exited).
    Eof,
    /// A reset (a process that was killed).
    Reset,
}

/// One direction of a connection: bytes from `from` to the other side.
#[derive(Default)]
struct Pipe {
    /// (delivery time, bytes) in order; `offset` bytes of the front one are read.
    segments: VecDeque<(u64, Vec<u8>)>,
    offset: usize,
    buffered: usize,
    /// The writer's end, delivered after its last bytes.
    end: Option<(u64, Close)>,
    /// The reader is gone: writes fail with this.
    reader_gone: Option<NetError>,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

struct Conn {
    /// The two sides' nodes and addresses; pipe `i` carries bytes written by side `i`.
    nodes: [NodeKey; 2],
    ips: [Ipv4Addr; 2],
    addrs: [SocketAddr; 2],
    pipes: [RefCell<Pipe>; 2],
}

impl Conn {
    fn wake_all(&self) {
        for pipe in &self.pipes {
            let mut p = pipe.borrow_mut();
            if let Some(w) = p.reader.take() {
                w.wake();
            }
            if let Some(w) = p.writer.take() {
                w.wake();
            }
        }
    }
}

struct Queue {
    pending: RefCell<VecDeque<Accepted>>,
    waker: RefCell<Option<Waker>>,
}

/// The listeners at one address: one, or a group of shared ones (one per core).
struct Group {
    node: NodeKey,
    shared: bool,
    queues: Vec<Weak<Queue>>,
}

/// The network of a simulation.
#[derive(Default)]
pub(crate) struct Network {
    listeners: RefCell<BTreeMap<(Ipv4Addr, u16), Group>>,
    conns: RefCell<Vec<Weak<Conn>>>,
    /// Cut directions: bytes from the first address to the second wait.
    cuts: RefCell<BTreeSet<(Ipv4Addr, Ipv4Addr)>>,
    next_port: Cell<u16>,
}

impl Network {
    fn port(&self) -> u16 {
        let p = self.next_port.get();
        let port = EPHEMERAL.wrapping_add(p % (u16::MAX - EPHEMERAL));
        self.next_port.set(p.wrapping_add(1));
        port
    }

    /// Whether bytes from `from` to `to` wait.
    pub(crate) fn cut(&self, from: Ipv4Addr, to: Ipv4Addr) -> bool {
        from != to && self.cuts.borrow().contains(&(from, to))
    }

    pub(crate) fn partition(&self, a: Ipv4Addr, b: Ipv4Addr) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    pub(crate) fn cut_one_way(&self, from: Ipv4Addr, to: Ipv4Addr) {
        if from != to {
            self.cuts.borrow_mut().insert((from, to));
        }
    }

    /// Resets every connection between `a` and `b` (both sides read an error after what
    /// was already delivered): what a stream shows when its packets are lost for longer
    /// than the peers wait, or a middlebox drops its state. Returns how many.
    pub(crate) fn reset_between(&self, world: &World, a: Ipv4Addr, b: Ipv4Addr) -> usize {
        let mut n = 0;
        for conn in self.live_conns() {
            let ips = conn.ips;
            if (ips[0] == a && ips[1] == b) || (ips[0] == b && ips[1] == a) {
                end_side(world, &conn, 0, Close::Reset);
                end_side(world, &conn, 1, Close::Reset);
                n += 1;
            }
        }
        n
    }

    pub(crate) fn heal(&self) {
        self.cuts.borrow_mut().clear();
        // Held bytes can now be read: every reader looks again.
        for conn in self.live_conns() {
            conn.wake_all();
        }
    }

    fn live_conns(&self) -> Vec<Rc<Conn>> {
        let mut conns = self.conns.borrow_mut();
        conns.retain(|c| c.strong_count() > 0);
        conns.iter().filter_map(Weak::upgrade).collect()
    }

    /// A node ended: its listeners go, its connections close or reset.
    pub(crate) fn node_ended(&self, world: &World, node: NodeKey, close: Close) {
        self.listeners.borrow_mut().retain(|_, g| g.node != node);
        for conn in self.live_conns() {
            for side in 0..2 {
                if conn.nodes[side] == node {
                    end_side(world, &conn, side, close);
                }
            }
        }
    }
}

/// Side `side` of `conn` is closed: its bytes are followed by `close`, and it reads no
/// more (the peer's writes fail).
fn end_side(world: &World, conn: &Conn, side: usize, close: Close) {
    let latency = world.draw(world.config.latency);
    {
        let mut out = conn.pipes[side].borrow_mut();
        if out.end.is_none() {
            let after = out.segments.back().map_or(0, |s| s.0);
            let at = (world.now() + latency).max(after);
            out.end = Some((at, close));
            if let Some(w) = out.reader.take() {
                world.wake_at(at, w);
            }
        }
    }
    let mut inbound = conn.pipes[1 - side].borrow_mut();
    if inbound.reader_gone.is_none() {
        inbound.reader_gone = Some(match close {
            Close::Eof => NetError::BrokenPipe,
            Close::Reset => NetError::Reset,
        });
        inbound.segments.clear();
        inbound.offset = 0;
        inbound.buffered = 0;
        if let Some(w) = inbound.writer.take() {
            w.wake();
        }
    }
}

/// A node's view of the network (its platform's `Net`).
pub(crate) struct SimNet {
    world: Weak<World>,
    node: NodeKey,
    ip: Ipv4Addr,
}

impl SimNet {
    pub(crate) fn new(world: Weak<World>, node: NodeKey, ip: Ipv4Addr) -> Self {
        SimNet { world, node, ip }
    }

    fn world(&self) -> Result<Rc<World>, NetError> {
        self.world
            .upgrade()
            .ok_or_else(|| NetError::Other("the simulation has ended".into()))
    }

    /// The node-level address `addr` names, seen from this node.
    fn resolve(&self, addr: SocketAddr) -> Result<Ipv4Addr, NetError> {
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() || ip.is_unspecified() => Ok(self.ip),
            IpAddr::V4(ip) => Ok(ip),
            IpAddr::V6(_) => Err(NetError::AddrNotAvailable),
        }
    }

    fn bind(&self, addr: SocketAddr, shared: bool) -> Result<Box<dyn TcpListener>, NetError> {
        let world = self.world()?;
        let ip = self.resolve(addr)?;
        if ip != self.ip {
            return Err(NetError::AddrNotAvailable);
        }
        let net = &world.net;
        let mut listeners = net.listeners.borrow_mut();
        let port = match addr.port() {
            0 => loop {
                let p = net.port();
                if !listeners.contains_key(&(ip, p)) {
                    break p;
                }
            },
            p => p,
        };
        let queue = Rc::new(Queue {
            pending: RefCell::new(VecDeque::new()),
            waker: RefCell::new(None),
        });
        match listeners.get_mut(&(ip, port)) {
            Some(group) => {
                group.queues.retain(|q| q.strong_count() > 0);
                let joins_group = shared && group.shared && group.node == self.node;
                if !joins_group && !group.queues.is_empty() {
                    return Err(NetError::AddrInUse);
                }
                group.node = self.node;
                group.shared = shared;
                group.queues.push(Rc::downgrade(&queue));
            }
            None => {
                listeners.insert(
                    (ip, port),
                    Group {
                        node: self.node,
                        shared,
                        queues: vec![Rc::downgrade(&queue)],
                    },
                );
            }
        }
        Ok(Box::new(SimListener {
            queue,
            addr: SocketAddr::new(addr.ip(), port),
        }))
    }
}

impl Net for SimNet {
    fn listen(&self, addr: SocketAddr) -> Result<Box<dyn TcpListener>, NetError> {
        self.bind(addr, false)
    }

    fn listen_shared(&self, addr: SocketAddr) -> Result<Box<dyn TcpListener>, NetError> {
        self.bind(addr, true)
    }

    fn connect(&self, addr: SocketAddr) -> Connecting {
        let (world, node, ip) = (self.world.clone(), self.node, self.ip);
        let target = self.resolve(addr);
        Box::pin(async move {
            let target = target?;
            let w = world
                .upgrade()
                .ok_or_else(|| NetError::Other("the simulation has ended".into()))?;
            // The SYN's way there.
            let syn = w.draw(w.config.latency);
            sleep(&world, w.now() + syn).await;
            if w.net.cut(ip, target) || w.net.cut(target, ip) {
                sleep(&world, w.now() + CONNECT_TIMEOUT.as_nanos() as u64).await;
                return Err(NetError::TimedOut);
            }
            let queue = {
                let listeners = w.net.listeners.borrow();
                let group = listeners.get(&(target, addr.port()));
                let live: Vec<Rc<Queue>> = group
                    .map(|g| g.queues.iter().filter_map(Weak::upgrade).collect())
                    .unwrap_or_default();
                if live.is_empty() {
                    None
                } else {
                    // A shared group spreads connections at random (SO_REUSEPORT
                    // hashes; either way no core is chosen by the client).
                    let i = w.random().below(live.len() as u64) as usize;
                    Some(live[i].clone())
                }
            };
            let Some(queue) = queue else {
                return Err(NetError::Refused);
            };
            let Some(server_node) = w.node_at(target) else {
                return Err(NetError::Refused);
            };
            let local = SocketAddr::new(IpAddr::V4(ip), w.net.port());
            let conn = Rc::new(Conn {
                nodes: [node, server_node.key],
                ips: [ip, target],
                addrs: [local, SocketAddr::new(IpAddr::V4(target), addr.port())],
                pipes: [RefCell::new(Pipe::default()), RefCell::new(Pipe::default())],
            });
            w.net.conns.borrow_mut().push(Rc::downgrade(&conn));
            let server_end = SimStream {
                world: world.clone(),
                conn: conn.clone(),
                side: 1,
            };
            queue
                .pending
                .borrow_mut()
                .push_back((Box::new(server_end), local));
            if let Some(waker) = queue.waker.borrow_mut().take() {
                waker.wake();
            }
            // The SYN-ACK's way back.
            let back = w.draw(w.config.latency);
            sleep(&world, w.now() + back).await;
            Ok(Box::new(SimStream {
                world,
                conn,
                side: 0,
            }) as Box<dyn TcpStream>)
        })
    }
}

async fn sleep(world: &Weak<World>, deadline: u64) {
    Sleep {
        world: world.clone(),
        deadline,
        armed: false,
    }
    .await;
}

struct SimListener {
    queue: Rc<Queue>,
    addr: SocketAddr,
}

impl TcpListener for SimListener {
    fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.addr)
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<Accepted, NetError>> {
        if let Some(accepted) = self.queue.pending.borrow_mut().pop_front() {
            return Poll::Ready(Ok(accepted));
        }
        *self.queue.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

struct SimStream {
    world: Weak<World>,
    conn: Rc<Conn>,
    side: usize,
}

impl SimStream {
    fn world(&self) -> Result<Rc<World>, NetError> {
        self.world
            .upgrade()
            .ok_or_else(|| NetError::Other("the simulation has ended".into()))
    }
}

impl TcpStream for SimStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, NetError>> {
        let world = self.world()?;
        let now = world.now();
        // What this side reads, the other side sent.
        let cut = world
            .net
            .cut(self.conn.ips[1 - self.side], self.conn.ips[self.side]);
        let mut pipe = self.conn.pipes[1 - self.side].borrow_mut();
        let mut n = 0;
        while !cut && n < buf.len() {
            let Pipe {
                segments, offset, ..
            } = &mut *pipe;
            let Some((at, bytes)) = segments.front() else {
                break;
            };
            if *at > now {
                break;
            }
            let take = (bytes.len() - *offset).min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&bytes[*offset..*offset + take]);
            n += take;
            *offset += take;
            if *offset == bytes.len() {
                segments.pop_front();
                *offset = 0;
            }
        }
        if n > 0 || buf.is_empty() {
            pipe.buffered -= n;
            if let Some(w) = pipe.writer.take() {
                w.wake();
            }
            world.record(&[now, 6, n as u64]);
            return Poll::Ready(Ok(n));
        }
        if !cut
            && pipe.segments.is_empty()
            && let Some((at, close)) = pipe.end
            && at <= now
        {
            return Poll::Ready(match close {
                Close::Eof => Ok(0),
                Close::Reset => Err(NetError::Reset),
            });
        }
        // Nothing due: wait for the next delivery (a timer), or for a write (the
        // writer wakes us) or a heal.
        let next = pipe.segments.front().map(|s| s.0).or(pipe.end.map(|e| e.0));
        if let Some(at) = next
            && !cut
        {
            world.wake_at(at, cx.waker().clone());
        }
        pipe.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, NetError>> {
        let world = self.world()?;
        let mut pipe = self.conn.pipes[self.side].borrow_mut();
        if let Some(e) = &pipe.reader_gone {
            return Poll::Ready(Err(e.clone()));
        }
        if pipe.end.is_some() {
            return Poll::Ready(Err(NetError::BrokenPipe));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if pipe.buffered >= WINDOW {
            pipe.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(WINDOW - pipe.buffered);
        let after = pipe.segments.back().map_or(0, |s| s.0);
        let at = (world.now() + world.draw(world.config.latency)).max(after);
        pipe.segments.push_back((at, buf[..n].to_vec()));
        pipe.buffered += n;
        world.record(&[world.now(), 7, n as u64]);
        if let Some(w) = pipe.reader.take() {
            world.wake_at(at, w);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        let world = self.world()?;
        let latency = world.draw(world.config.latency);
        let mut out = self.conn.pipes[self.side].borrow_mut();
        if out.end.is_none() {
            let after = out.segments.back().map_or(0, |s| s.0);
            let at = (world.now() + latency).max(after);
            out.end = Some((at, Close::Eof));
            if let Some(w) = out.reader.take() {
                world.wake_at(at, w);
            }
        }
        Poll::Ready(Ok(()))
    }

    fn peer_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.conn.addrs[1 - self.side])
    }

    fn set_nodelay(&self, _nodelay: bool) -> Result<(), NetError> {
        Ok(())
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        if let Some(world) = self.world.upgrade() {
            end_side(&world, &self.conn, self.side, Close::Eof);
        }
    }
}
