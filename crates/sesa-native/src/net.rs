//! The network: virtio-net (`virtio-drivers`) under a TCP/IP stack (`smoltcp`), as the
//! event loop's `sesa_event::net::Net`.
//!
//! One interface with a static address (QEMU's user network hands out 10.0.2.15 behind
//! the gateway 10.0.2.2; the host's loopback, where the other nodes are, is reached
//! through the gateway). Core 0's loop polls the stack every turn ([`NativeNet::poll`]);
//! when a socket's state changed, every task waiting on the network is woken and looks
//! again (spurious wake-ups are cheap next to the bookkeeping of per-socket wakers).
//!
//! Interrupts and polling, as the paper's event loops switch between them: under load
//! the loop polls and the device is asked not to interrupt; when core 0 goes to sleep
//! ([`NativeNet::prepare_sleep`]) the device's interrupts are turned on (virtio's flag
//! in each queue: memory the device reads, no exit to the hypervisor; the line, routed
//! through the I/O APIC, stays unmasked), so the next frame wakes it; awake, they are
//! turned off again ([`NativeNet::after_sleep`]).
//!
//! Limits, explicit: IPv4 only; a listener keeps [`BACKLOG`] sockets listening, so more
//! connections arriving at once than that are refused until some are accepted; a
//! stream's buffers are [`SOCKET_BUFFER`] bytes each way, and all sockets' buffers take
//! at most an eighth of the heap (about 120 sockets with QEMU's `-m 256`, 500 with
//! `-m 1024`; more connections are refused until some close); the stack runs on core 0 only
//! (the other cores get its connections' work shipped to them).

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::net::{IpAddr, SocketAddr};
use core::task::{Context, Poll, Waker};

use sesa_event::net::{Accepted, Connecting, Net, NetError, TcpListener, TcpStream};
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use virtio_drivers::transport::DeviceType;

use crate::cpu::clock;
use crate::cpu::virtio::{NetQueues, Received, find, gsi};
use crate::cpu::{apic, ioapic};
use crate::println;

/// Sockets a listener keeps listening.
pub const BACKLOG: usize = 16;
/// Bytes of each stream's receive and of its send buffer.
pub const SOCKET_BUFFER: usize = 64 * 1024;
/// The first local port of outgoing connections.
const EPHEMERAL: u16 = 49152;

/// The virtio-net device as a smoltcp device.
struct NetDevice(Rc<RefCell<NetQueues>>);

struct Rx(Rc<RefCell<NetQueues>>, Option<Received>);
struct Tx(Rc<RefCell<NetQueues>>);

impl Device for NetDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx)> {
        let mut nic = self.0.borrow_mut();
        if !nic.can_recv() || !nic.can_send() {
            return None;
        }
        let frame = nic.received()?;
        Some((Rx(self.0.clone(), Some(frame)), Tx(self.0.clone())))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx> {
        self.0.borrow_mut().can_send().then(|| Tx(self.0.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(1);
        caps.medium = Medium::Ethernet;
        caps
    }
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(mut self, f: F) -> R {
        let frame = self.1.take().expect("a receive token holds its frame");
        // The device is not borrowed while the stack reads the frame (it may send).
        let result = f(frame.packet());
        // Back to the device for the next frame; failing here would only shrink the
        // receive ring, which the next frames would show.
        if let Err(e) = self.0.borrow_mut().give_back(frame) {
            println!("sesa-native: net: a receive buffer was not given back: {e:?}");
        }
        result
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let (result, sent) = self.0.borrow_mut().send(len, f);
        if let Err(e) = sent {
            println!("sesa-native: net: a frame was not sent: {e:?}");
        }
        result
    }
}

fn now() -> Instant {
    Instant::from_micros((clock::now_ns() / 1000) as i64)
}

/// Why the network could not start.
pub enum StartError {
    /// No virtio-net device on the MMIO slots.
    NoDevice,
    /// The driver refused the device.
    Driver(virtio_drivers::Error),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::NoDevice => f.write_str("no virtio-net device"),
            StartError::Driver(e) => write!(f, "the virtio-net driver refused the device: {e}"),
        }
    }
}

struct Stack {
    iface: Interface,
    device: NetDevice,
    sockets: SocketSet<'static>,
    /// Tasks waiting for some socket's state to change.
    waiters: Vec<Waker>,
    /// Sockets their owners dropped: removed once closed.
    closing: Vec<SocketHandle>,
    next_port: u16,
    /// The device's interrupt line, when it reaches core 0 (routed through the I/O
    /// APIC).
    interrupt: Option<u32>,
    /// The device interrupts taken (`idt::device_interrupts`) when the device's was
    /// last acknowledged: only an interrupt taken since needs one (an emulated register
    /// write: an exit to QEMU) before the next sleep.
    acked: u64,
    /// The most sockets at once: their buffers may take an eighth of the heap.
    max_sockets: usize,
    /// When running out of sockets was last said (the console is told once a second).
    full_said: u64,
}

impl Stack {
    fn socket(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    /// A fresh socket, unless the stack holds [`Stack::max_sockets`] already.
    fn new_socket(&mut self) -> Option<SocketHandle> {
        if self.sockets.iter().count() >= self.max_sockets {
            let now = clock::now_ns();
            if now.saturating_sub(self.full_said) >= 1_000_000_000 {
                self.full_said = now;
                println!(
                    "sesa-native: net: {} sockets, the most this heap allows: new connections \
                     are refused until some close",
                    self.max_sockets
                );
            }
            return None;
        }
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        );
        // ACKs delayed 100 µs, not smoltcp's 10 ms: with 10 ms QEMU's user network sent
        // little per ACK and 2 MB into the node took 15 s. Not zero either: a reply made
        // within 100 µs carries the ACK instead of a packet of its own, a device
        // notification (an exit under KVM) fewer per request: 25-30% less CPU per
        // request at depth 1 (TCG and kvm_pvm), for 2 MB in 0.20-0.24 s instead of 0.1.
        socket.set_ack_delay(Some(smoltcp::time::Duration::from_micros(100)));
        Some(self.sockets.add(socket))
    }

    fn wait(&mut self, cx: &Context<'_>) {
        if !self.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            self.waiters.push(cx.waker().clone());
        }
    }
}

/// The network of the native event loop.
#[derive(Clone)]
pub struct NativeNet(Rc<RefCell<Stack>>);

impl NativeNet {
    /// Finds the virtio-net device, routes its interrupt to core 0 (its line from
    /// `command_line` or microvm's wiring) and brings the interface up at 10.0.2.15/24.
    /// Without a routable interrupt the network still works, polled: it says so.
    ///
    /// # Errors
    /// No device, or the driver refused it.
    pub fn start(command_line: &str, heap_bytes: u64) -> Result<NativeNet, StartError> {
        let (slot, transport) = find(DeviceType::Network).ok_or(StartError::NoDevice)?;
        let mut nic = NetQueues::new(slot, transport).map_err(StartError::Driver)?;
        // Polled while the loop runs; interrupts only while core 0 sleeps.
        nic.disable_interrupts();
        let gsi = gsi(slot, command_line);
        let interrupt = match ioapic::route(gsi, apic::DEVICE_VECTOR, apic::id_of(0)) {
            Ok(()) => Some(gsi),
            Err(why) => {
                println!("sesa-native: net: GSI {gsi}: {why}: the device is only polled");
                None
            }
        };
        let mac = nic.mac();
        let mut device = NetDevice(Rc::new(RefCell::new(nic)));
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        let mut iface = Interface::new(config, &mut device, now());
        iface.update_ip_addrs(|addrs| {
            // One address: the vector has room.
            let _ = addrs.push(IpCidr::new(IpAddress::v4(10, 0, 2, 15), 24));
        });
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(10, 0, 2, 2));
        println!("sesa-native: net: virtio-net {mac:02x?} (interrupt: GSI {gsi}), 10.0.2.15/24");
        Ok(NativeNet(Rc::new(RefCell::new(Stack {
            iface,
            device,
            sockets: SocketSet::new(vec![]),
            waiters: Vec::new(),
            closing: Vec::new(),
            next_port: EPHEMERAL,
            interrupt,
            // Unlike any count: the first sleep acknowledges whatever the device raised
            // before its line was routed (a raised line makes no new edge).
            acked: u64::MAX,
            max_sockets: usize::try_from(heap_bytes / 8)
                .unwrap_or(usize::MAX)
                .div_euclid(2 * SOCKET_BUFFER)
                .max(BACKLOG + 1),
            full_said: 0,
        }))))
    }

    /// Whether the device can wake core 0 with an interrupt.
    pub fn interrupts(&self) -> bool {
        self.0.borrow().interrupt.is_some()
    }

    /// Before core 0 sleeps: turns the device's interrupts on and acknowledges what it
    /// raised since the last time, so that the next frame is a new edge. `None`: frames
    /// are already waiting (poll instead of sleeping); else the clock's time (ns) by
    /// which the stack must be polled again for its own timers (`u64::MAX`: none).
    pub fn prepare_sleep(&self) -> Option<u64> {
        let mut stack = self.0.borrow_mut();
        stack.interrupt?;
        {
            let taken = crate::cpu::idt::device_interrupts();
            let acked = stack.acked;
            stack.acked = taken;
            let mut nic = stack.device.0.borrow_mut();
            nic.enable_interrupts();
            if taken != acked {
                nic.ack_interrupt();
            }
            if nic.can_recv() {
                nic.disable_interrupts();
                return None;
            }
        }
        let Stack { iface, sockets, .. } = &mut *stack;
        Some(match iface.poll_at(now(), sockets) {
            Some(at) => u64::try_from(at.total_micros()).unwrap_or(0) * 1000,
            None => u64::MAX,
        })
    }

    /// After core 0 woke: interrupts off again (the loop polls the device).
    pub fn after_sleep(&self) {
        self.0.borrow().device.0.borrow_mut().disable_interrupts();
    }

    /// Moves frames in and out; wakes the waiting tasks if a socket changed. Whether
    /// anything changed.
    pub fn poll(&self) -> bool {
        let mut stack = self.0.borrow_mut();
        let Stack {
            iface,
            device,
            sockets,
            ..
        } = &mut *stack;
        let changed = iface.poll(now(), device, sockets) == PollResult::SocketStateChanged;
        // One notification for what this poll sent (and the receive buffers it gave
        // back), not one per frame. The device is given work only here (and when it is
        // set up), so nothing it was given waits for a sleeping core.
        device.0.borrow_mut().flush();
        // Dropped sockets go once their close is done.
        let mut closing = core::mem::take(&mut stack.closing);
        closing.retain(|&h| {
            // TIME-WAIT is over too: it only guards against a late duplicate segment of
            // the old connection, and its buffers are better given to a new one.
            let done = matches!(
                stack.socket(h).state(),
                tcp::State::Closed | tcp::State::TimeWait
            );
            if done {
                stack.sockets.remove(h);
            }
            !done
        });
        stack.closing = closing;
        if changed {
            let waiters = core::mem::take(&mut stack.waiters);
            drop(stack);
            waiters.into_iter().for_each(Waker::wake);
        }
        changed
    }
}

fn out_of_sockets() -> NetError {
    NetError::Other("out of sockets: the stack holds the most its heap allows".into())
}

fn endpoint(addr: SocketAddr) -> Result<IpEndpoint, NetError> {
    match addr.ip() {
        IpAddr::V4(ip) => Ok(IpEndpoint::new(IpAddress::Ipv4(ip), addr.port())),
        IpAddr::V6(_) => Err(NetError::AddrNotAvailable),
    }
}

fn socket_addr(endpoint: IpEndpoint) -> SocketAddr {
    let IpAddress::Ipv4(ip) = endpoint.addr;
    SocketAddr::new(IpAddr::V4(ip), endpoint.port)
}

/// Where to connect for `addr`: the node's peers name each other by the addresses the
/// host sees, on its loopback; QEMU's user network reaches the host's loopback through
/// the gateway.
fn host_side(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => SocketAddr::new(
            IpAddr::V4(core::net::Ipv4Addr::new(10, 0, 2, 2)),
            addr.port(),
        ),
        _ => addr,
    }
}

impl Net for NativeNet {
    fn listen(&self, addr: SocketAddr) -> Result<Box<dyn TcpListener>, NetError> {
        endpoint(addr)?;
        if addr.port() == 0 {
            return Err(NetError::Other(
                "listening on port 0 is not supported here".into(),
            ));
        }
        let mut stack = self.0.borrow_mut();
        let taken = stack.sockets.iter().any(|(_, s)| match s {
            smoltcp::socket::Socket::Tcp(t) => {
                t.state() == tcp::State::Listen && t.listen_endpoint().port == addr.port()
            }
            #[allow(unreachable_patterns)]
            _ => false,
        });
        if taken {
            return Err(NetError::AddrInUse);
        }
        let mut listening = Vec::new();
        for _ in 0..BACKLOG {
            let listened = stack.new_socket().ok_or_else(out_of_sockets).and_then(|h| {
                stack
                    .socket(h)
                    .listen(addr.port())
                    .map(|()| h)
                    .map_err(|e| {
                        stack.sockets.remove(h);
                        NetError::Other(alloc::format!("listen: {e:?}"))
                    })
            });
            match listened {
                Ok(h) => listening.push(h),
                Err(e) => {
                    for h in listening {
                        stack.sockets.remove(h);
                    }
                    return Err(e);
                }
            }
        }
        Ok(Box::new(NativeListener {
            stack: self.0.clone(),
            addr,
            listening: RefCell::new(listening),
        }))
    }

    fn listen_shared(&self, addr: SocketAddr) -> Result<Box<dyn TcpListener>, NetError> {
        // One core: a shared listener is a listener.
        self.listen(addr)
    }

    fn connect(&self, addr: SocketAddr) -> Connecting {
        let stack = self.0.clone();
        Box::pin(async move {
            let remote = endpoint(host_side(addr))?;
            let handle = {
                let mut guard = stack.borrow_mut();
                let s = &mut *guard;
                let port = s.next_port;
                s.next_port = if port == u16::MAX {
                    EPHEMERAL
                } else {
                    port + 1
                };
                let h = s.new_socket().ok_or_else(out_of_sockets)?;
                let Stack { iface, sockets, .. } = s;
                if let Err(e) =
                    sockets
                        .get_mut::<tcp::Socket>(h)
                        .connect(iface.context(), remote, port)
                {
                    sockets.remove(h);
                    return Err(NetError::Other(alloc::format!("connect: {e:?}")));
                }
                h
            };
            core::future::poll_fn(|cx| {
                let mut s = stack.borrow_mut();
                match s.socket(handle).state() {
                    tcp::State::Established => Poll::Ready(Ok(())),
                    tcp::State::Closed | tcp::State::TimeWait => {
                        s.sockets.remove(handle);
                        Poll::Ready(Err(NetError::Refused))
                    }
                    _ => {
                        s.wait(cx);
                        Poll::Pending
                    }
                }
            })
            .await?;
            Ok(Box::new(NativeStream {
                stack,
                handle,
                peer: addr,
            }) as Box<dyn TcpStream>)
        })
    }
}

struct NativeListener {
    stack: Rc<RefCell<Stack>>,
    addr: SocketAddr,
    listening: RefCell<Vec<SocketHandle>>,
}

impl TcpListener for NativeListener {
    fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.addr)
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<Accepted, NetError>> {
        let mut stack = self.stack.borrow_mut();
        let mut listening = self.listening.borrow_mut();
        // A backlog that shrank at the socket limit grows back as sockets close.
        while listening.len() < BACKLOG {
            let Some(fresh) = stack.new_socket() else {
                break;
            };
            let _ = stack.socket(fresh).listen(self.addr.port());
            listening.push(fresh);
        }
        for i in 0..listening.len() {
            let h = listening[i];
            let (state, remote) = {
                let s = stack.socket(h);
                (s.state(), s.remote_endpoint())
            };
            match (state, remote) {
                (tcp::State::Listen | tcp::State::SynReceived, _) => {}
                (tcp::State::Closed, _) => {
                    // A connection that failed before it was accepted: listen again.
                    let _ = stack.socket(h).listen(self.addr.port());
                }
                (_, Some(remote)) => {
                    // Taken by a client: hand it out, and listen on a fresh socket if the
                    // stack may have one more (else the backlog shrinks until sockets
                    // close: connections beyond the limit are refused).
                    listening.swap_remove(i);
                    if let Some(fresh) = stack.new_socket() {
                        let _ = stack.socket(fresh).listen(self.addr.port());
                        listening.push(fresh);
                    }
                    let peer = socket_addr(remote);
                    let stream = NativeStream {
                        stack: self.stack.clone(),
                        handle: h,
                        peer,
                    };
                    return Poll::Ready(Ok((Box::new(stream) as Box<dyn TcpStream>, peer)));
                }
                (_, None) => {}
            }
        }
        stack.wait(cx);
        Poll::Pending
    }
}

impl Drop for NativeListener {
    fn drop(&mut self) {
        let mut stack = self.stack.borrow_mut();
        for h in self.listening.borrow_mut().drain(..) {
            if stack.socket(h).state() == tcp::State::Listen {
                // No peer to tell: its buffers are free at once (a listener opened and
                // dropped, as `serve_every_core`'s probe does, costs nothing after).
                stack.sockets.remove(h);
            } else {
                // A half-open connection: the reset goes out at the next poll.
                stack.socket(h).abort();
                stack.closing.push(h);
            }
        }
    }
}

struct NativeStream {
    stack: Rc<RefCell<Stack>>,
    handle: SocketHandle,
    peer: SocketAddr,
}

impl TcpStream for NativeStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, NetError>> {
        let mut stack = self.stack.borrow_mut();
        let socket = stack.socket(self.handle);
        if socket.can_recv() {
            return Poll::Ready(
                socket
                    .recv_slice(buf)
                    .map_err(|e| NetError::Other(alloc::format!("recv: {e:?}"))),
            );
        }
        if !socket.may_recv() {
            // The peer closed its side (or the connection is gone): the end.
            return Poll::Ready(Ok(0));
        }
        stack.wait(cx);
        Poll::Pending
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, NetError>> {
        let mut stack = self.stack.borrow_mut();
        let socket = stack.socket(self.handle);
        if !socket.may_send() {
            return Poll::Ready(Err(NetError::BrokenPipe));
        }
        if socket.can_send() {
            return Poll::Ready(
                socket
                    .send_slice(buf)
                    .map_err(|e| NetError::Other(alloc::format!("send: {e:?}"))),
            );
        }
        stack.wait(cx);
        Poll::Pending
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        // The stack sends what is queued at its next poll, every turn of the loop.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        self.stack.borrow_mut().socket(self.handle).close();
        Poll::Ready(Ok(()))
    }

    fn peer_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.peer)
    }

    fn set_nodelay(&self, nodelay: bool) -> Result<(), NetError> {
        self.stack
            .borrow_mut()
            .socket(self.handle)
            .set_nagle_enabled(!nodelay);
        Ok(())
    }
}

impl Drop for NativeStream {
    fn drop(&mut self) {
        let mut stack = self.stack.borrow_mut();
        stack.socket(self.handle).close();
        stack.closing.push(self.handle);
    }
}
