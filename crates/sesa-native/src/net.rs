//! The network: virtio-net (`virtio-drivers`) under a TCP/IP stack (`smoltcp`), polled.
//!
//! First part: one interface with a static address (QEMU's user network hands out
//! 10.0.2.15 behind the gateway 10.0.2.2), and a TCP echo service, the smallest server
//! that proves frames go both ways and TCP runs. Still to come: driving it from the
//! per-core event loops (interrupts when idle, polling under load) and the messenger.

use alloc::rc::Rc;
use alloc::vec;
use core::cell::RefCell;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use virtio_drivers::device::net::{RxBuffer, VirtIONet};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::mmio::MmioTransport;

use crate::cpu::clock;
use crate::cpu::virtio::{IdentityHal, find};
use crate::println;

/// Descriptors per virtqueue.
const QUEUE: usize = 16;
/// Bytes per receive buffer: a full Ethernet frame and the virtio header.
const FRAME: usize = 2048;

type Nic = VirtIONet<IdentityHal, MmioTransport<'static>, QUEUE>;

/// The virtio-net device as a smoltcp device.
struct NetDevice(Rc<RefCell<Nic>>);

struct Rx(Rc<RefCell<Nic>>, Option<RxBuffer>);
struct Tx(Rc<RefCell<Nic>>);

impl Device for NetDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx)> {
        let mut nic = self.0.borrow_mut();
        if !nic.can_recv() || !nic.can_send() {
            return None;
        }
        let buffer = nic.receive().ok()?;
        Some((Rx(self.0.clone(), Some(buffer)), Tx(self.0.clone())))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx> {
        self.0.borrow().can_send().then(|| Tx(self.0.clone()))
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
        let buffer = self.1.take().expect("a receive token holds its buffer");
        let result = f(buffer.packet());
        // Back to the device for the next frame; failing here would only shrink the
        // receive ring, which the next frames would show.
        if let Err(e) = self.0.borrow_mut().recycle_rx_buffer(buffer) {
            println!("sesa-native: net: a receive buffer was not given back: {e:?}");
        }
        result
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut nic = self.0.borrow_mut();
        let mut buffer = nic.new_tx_buffer(len);
        let result = f(buffer.packet_mut());
        if let Err(e) = nic.send(buffer) {
            println!("sesa-native: net: a frame was not sent: {e:?}");
        }
        result
    }
}

impl core::fmt::Display for NetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NetError::NoDevice => f.write_str("no virtio-net device"),
            NetError::Driver(e) => write!(f, "the virtio-net driver refused the device: {e}"),
            NetError::NoClient => f.write_str("nobody connected in time"),
        }
    }
}

fn now() -> Instant {
    Instant::from_micros((clock::now_ns() / 1000) as i64)
}

/// Why the echo service ended without serving.
pub enum NetError {
    /// No virtio-net device on the MMIO slots.
    NoDevice,
    /// The driver refused the device.
    Driver(virtio_drivers::Error),
    /// Nobody connected in time.
    NoClient,
}

/// Serves TCP echo on `port` to one client, until it closes its side (or `limit_ns`
/// passes with nobody connecting); returns the bytes echoed.
pub fn echo_once(port: u16, limit_ns: u64) -> Result<u64, NetError> {
    let transport = find(DeviceType::Network).ok_or(NetError::NoDevice)?;
    let nic = Nic::new(transport, FRAME).map_err(NetError::Driver)?;
    let mac = nic.mac_address();
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
    let socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 16 * 1024]),
        tcp::SocketBuffer::new(vec![0; 16 * 1024]),
    );
    let mut sockets = SocketSet::new(vec![]);
    let handle = sockets.add(socket);
    // Listening on a valid port cannot fail.
    let _ = sockets.get_mut::<tcp::Socket>(handle).listen(port);
    println!(
        "sesa-native: net: virtio-net {:02x?}, 10.0.2.15/24, echo on port {port}",
        mac
    );
    let start = clock::now_ns();
    let mut echoed = 0u64;
    let mut connected = false;
    let mut buffer = [0u8; 2048];
    loop {
        iface.poll(now(), &mut device, &mut sockets);
        let socket = sockets.get_mut::<tcp::Socket>(handle);
        if !socket.is_open() {
            if connected {
                return Ok(echoed);
            }
            if clock::now_ns() - start > limit_ns {
                return Err(NetError::NoClient);
            }
            // Listening on a valid port cannot fail.
            let _ = socket.listen(port);
        }
        if socket.state() == tcp::State::Established {
            connected = true;
        }
        while socket.can_recv() && socket.can_send() {
            let room = socket.send_capacity() - socket.send_queue();
            let take = room.min(buffer.len());
            let Ok(n) = socket.recv_slice(&mut buffer[..take]) else {
                break;
            };
            if n == 0 {
                break;
            }
            // `n` bytes fit: the room was checked.
            let _ = socket.send_slice(&buffer[..n]);
            echoed += n as u64;
        }
        if connected && !socket.may_recv() && socket.send_queue() == 0 {
            // The client closed its side and has every byte back: close ours.
            socket.close();
        }
    }
}
