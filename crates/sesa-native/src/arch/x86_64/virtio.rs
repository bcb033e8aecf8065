//! virtio devices on `-M microvm`'s MMIO slots, and the DMA rules the drivers need.
//!
//! Memory is identity-mapped (virtual = physical), so DMA buffers are heap allocations
//! whose addresses the device uses as they are.

use alloc::rc::Rc;
use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;

use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// microvm's virtio-mmio slots: 32 of 512 bytes from here.
const MMIO_BASE: usize = 0xfeb0_0000;
const MMIO_SLOT: usize = 0x200;
const MMIO_SLOTS: usize = 32;
/// "virt", little-endian: the magic at the start of a virtio-mmio slot.
const MAGIC: u32 = 0x7472_6976;

/// The first virtio device of type `kind` on the MMIO slots.
pub fn find(kind: DeviceType) -> Option<(usize, MmioTransport<'static>)> {
    (0..MMIO_SLOTS).find_map(|slot| {
        let addr = MMIO_BASE + slot * MMIO_SLOT;
        // SAFETY: the slots are identity-mapped (uncached) by the boot page tables, and
        // reading a slot's magic has no side effect.
        let magic = unsafe { core::ptr::read_volatile(addr as *const u32) };
        if magic != MAGIC {
            return None;
        }
        let header = NonNull::new(addr as *mut VirtIOHeader)?;
        // SAFETY: `addr` is a virtio-mmio register block (checked above) of `MMIO_SLOT`
        // bytes that nothing else in the kernel uses; the transport owns it from here.
        let transport = unsafe { MmioTransport::new(header, MMIO_SLOT) }.ok()?;
        (transport.device_type() == kind).then_some((slot, transport))
    })
}

/// The interrupt line (GSI) of slot `slot`: what QEMU told Linux on the command line
/// (`virtio_mmio.device=512@0xfeb00e00:12`), when it did (without ACPI); otherwise
/// microvm's wiring: GSI 24 + slot on its second I/O APIC, else 16 + slot.
pub fn gsi(slot: usize, command_line: &str) -> u32 {
    let addr = MMIO_BASE + slot * MMIO_SLOT;
    let told = command_line.split_ascii_whitespace().find_map(|word| {
        let (_, at) = word.strip_prefix("virtio_mmio.device=")?.split_once('@')?;
        let (base, irq) = at.split_once(':')?;
        let base = usize::from_str_radix(base.strip_prefix("0x")?, 16).ok()?;
        (base == addr).then(|| irq.parse().ok())?
    });
    told.unwrap_or(if super::ioapic::has_second() {
        24 + slot as u32
    } else {
        16 + slot as u32
    })
}

/// The DMA rules for identity-mapped memory.
pub struct IdentityHal;

fn pages(count: usize) -> Layout {
    // A page count the driver asks for is small; an overflow here is a driver bug.
    Layout::from_size_align(count * PAGE_SIZE, PAGE_SIZE).expect("a DMA layout")
}

// SAFETY: allocations are zeroed, page-aligned and live until `dma_dealloc`; addresses
// given to the device are the memory's own (identity mapping), so a device sees exactly
// the bytes the driver does.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(count: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // SAFETY: the layout has a non-zero size (the driver asks for at least a page).
        let ptr = unsafe { alloc::alloc::alloc_zeroed(pages(count)) };
        let ptr = NonNull::new(ptr).expect("memory for virtio queues");
        (ptr.as_ptr() as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, count: usize) -> i32 {
        // SAFETY: `vaddr` came from `dma_alloc` with this page count (the trait's
        // contract).
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), pages(count)) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("a non-null MMIO address")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Frames in flight each way (descriptors per virtqueue).
pub const NET_QUEUE: usize = 64;
/// Bytes per frame buffer: a full Ethernet frame and the virtio header.
const NET_FRAME: usize = 2048;

type NetRaw = virtio_drivers::device::net::VirtIONetRaw<
    IdentityHal,
    NoEventIdx<MmioTransport<'static>>,
    NET_QUEUE,
>;

/// A transport that hides the device's `VIRTIO_F_EVENT_IDX` from the driver, so the
/// plain flag (`VRING_AVAIL_F_NO_INTERRUPT`) is what switches a queue's interrupts.
///
/// With event indices negotiated, `virtio-drivers` moves `used_event` to the newest
/// entry whenever it takes one and ignores requests to turn interrupts off: the device
/// then interrupts for every frame it delivers or sends, also while the loop polls. The
/// line had to be masked at the I/O APIC instead, eight emulated register accesses and
/// (under KVM) a change of QEMU's interrupt routes around every sleep, and a frame that
/// came while it was masked lost its only interrupt. With the flag, turning interrupts
/// on or off is a write to guest memory the device reads.
///
/// It also holds back the driver's queue notifications (each an emulated register
/// write: an exit to the hypervisor) until [`HeldNotifications::flush`]: the frames one
/// poll of the stack sends cost one notification, not one each.
pub struct NoEventIdx<T> {
    transport: T,
    held: HeldNotifications,
}

/// Queue notifications held back from a virtio-mmio device, and its notification
/// register, where [`HeldNotifications::flush`] writes them (as the transport would).
#[derive(Clone)]
pub struct HeldNotifications {
    /// A bit per queue (indices below 64; others are not held).
    pending: Rc<Cell<u64>>,
    /// The slot's QueueNotify register.
    register: usize,
}

/// QueueNotify's offset in a virtio-mmio slot (legacy and modern alike).
const QUEUE_NOTIFY: usize = 0x50;

impl HeldNotifications {
    fn new(slot: usize) -> Self {
        HeldNotifications {
            pending: Rc::new(Cell::new(0)),
            register: MMIO_BASE + slot * MMIO_SLOT + QUEUE_NOTIFY,
        }
    }

    /// Tells the device of the queues notified since the last flush.
    pub fn flush(&self) {
        let mut pending = self.pending.take();
        while pending != 0 {
            let queue = pending.trailing_zeros();
            pending &= pending - 1;
            // SAFETY: the register of the slot whose transport this belongs to
            // (identity-mapped, uncached); writing a queue's index there is what the
            // transport's own `notify` does.
            unsafe { core::ptr::write_volatile(self.register as *mut u32, queue) };
        }
    }
}

/// `VIRTIO_F_EVENT_IDX` (the virtio spec's feature bit 29).
const EVENT_IDX: u64 = 1 << 29;

impl<T: Transport> Transport for NoEventIdx<T> {
    fn device_type(&self) -> DeviceType {
        self.transport.device_type()
    }

    fn read_device_features(&mut self) -> u64 {
        self.transport.read_device_features() & !EVENT_IDX
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        self.transport
            .write_driver_features(driver_features & !EVENT_IDX);
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.transport.max_queue_size(queue)
    }

    fn notify(&mut self, queue: u16) {
        match 1u64.checked_shl(u32::from(queue)) {
            Some(bit) => self.held.pending.set(self.held.pending.get() | bit),
            None => self.transport.notify(queue),
        }
    }

    fn get_status(&self) -> DeviceStatus {
        self.transport.get_status()
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.transport.set_status(status);
    }

    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.transport.set_guest_page_size(guest_page_size);
    }

    fn requires_legacy_layout(&self) -> bool {
        self.transport.requires_legacy_layout()
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.transport
            .queue_set(queue, size, descriptors, driver_area, device_area);
    }

    fn queue_unset(&mut self, queue: u16) {
        self.transport.queue_unset(queue);
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.transport.queue_used(queue)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.transport.ack_interrupt()
    }

    fn read_config_generation(&self) -> u32 {
        self.transport.read_config_generation()
    }

    fn read_config_space<V: FromBytes + IntoBytes>(
        &self,
        offset: usize,
    ) -> virtio_drivers::Result<V> {
        self.transport.read_config_space(offset)
    }

    fn write_config_space<V: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: V,
    ) -> virtio_drivers::Result<()> {
        self.transport.write_config_space(offset, value)
    }
}

/// A frame the device delivered: its buffer (lent out until [`NetQueues::give_back`]),
/// and where the packet lies in it.
pub struct Received {
    slot: usize,
    buffer: &'static mut [u8],
    start: usize,
    len: usize,
}

impl Received {
    /// The frame's bytes.
    pub fn packet(&self) -> &[u8] {
        &self.buffer[self.start..self.start + self.len]
    }
}

/// virtio-net with sends that do not wait. `virtio-drivers`' buffered driver waits after
/// every frame until the device has taken it (a round trip through QEMU's I/O thread
/// per frame); here up to [`NET_QUEUE`] frames are in flight each way, and the buffers
/// of sent frames are taken back as the device finishes with them.
///
/// The frame buffers are allocated once and never freed (the device may hold any of
/// them at any time, and the network lives as long as the kernel runs).
pub struct NetQueues {
    raw: NetRaw,
    /// Receive buffers by slot (`None` while lent out as a [`Received`]).
    rx: [Option<&'static mut [u8]>; NET_QUEUE],
    /// The receive slot each device token stands for.
    rx_slot: [Option<usize>; NET_QUEUE],
    tx: [&'static mut [u8]; NET_QUEUE],
    /// The send slot (and the length given) each device token stands for.
    tx_slot: [Option<(usize, usize)>; NET_QUEUE],
    tx_free: alloc::vec::Vec<usize>,
    held: HeldNotifications,
}

fn frame_buffer() -> &'static mut [u8] {
    alloc::boxed::Box::leak(alloc::vec![0u8; NET_FRAME].into_boxed_slice())
}

impl NetQueues {
    /// Initialises the device in virtio-mmio slot `slot` and gives it every receive
    /// buffer.
    ///
    /// # Errors
    /// The driver refused the device or a buffer.
    pub fn new(
        slot: usize,
        transport: MmioTransport<'static>,
    ) -> Result<Self, virtio_drivers::Error> {
        let held = HeldNotifications::new(slot);
        let mut queues = NetQueues {
            raw: NetRaw::new(NoEventIdx {
                transport,
                held: held.clone(),
            })?,
            held,
            rx: core::array::from_fn(|_| Some(frame_buffer())),
            rx_slot: [None; NET_QUEUE],
            tx: core::array::from_fn(|_| frame_buffer()),
            tx_slot: [None; NET_QUEUE],
            tx_free: (0..NET_QUEUE).collect(),
        };
        for slot in 0..NET_QUEUE {
            queues.post_receive(slot)?;
        }
        queues.flush();
        Ok(queues)
    }

    fn post_receive(&mut self, slot: usize) -> Result<(), virtio_drivers::Error> {
        let buffer = self.rx[slot]
            .as_deref_mut()
            .ok_or(virtio_drivers::Error::InvalidParam)?;
        // SAFETY: the buffer is never freed, and is not touched again until the device
        // gives it back through `poll_receive` (`received` below).
        let token = unsafe { self.raw.receive_begin(buffer) }?;
        self.rx_slot[usize::from(token) % NET_QUEUE] = Some(slot);
        Ok(())
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.raw.mac_address()
    }

    /// Whether a received frame waits.
    pub fn can_recv(&self) -> bool {
        self.raw.poll_receive().is_some()
    }

    /// The next received frame, if one waits.
    pub fn received(&mut self) -> Option<Received> {
        let token = self.raw.poll_receive()?;
        let slot = self.rx_slot[usize::from(token) % NET_QUEUE].take()?;
        let buffer = self.rx[slot].as_deref_mut()?;
        // SAFETY: `slot`'s buffer is the one given with this token (`post_receive`).
        match unsafe { self.raw.receive_complete(token, buffer) } {
            Ok((start, len)) => Some(Received {
                slot,
                buffer: self.rx[slot].take()?,
                start,
                len,
            }),
            Err(_) => {
                // Nothing usable came: the buffer goes back for the next frame.
                let _ = self.post_receive(slot);
                None
            }
        }
    }

    /// Gives a received frame's buffer back to the device.
    ///
    /// # Errors
    /// The driver refused it (the receive ring is a buffer shorter).
    pub fn give_back(&mut self, frame: Received) -> Result<(), virtio_drivers::Error> {
        self.rx[frame.slot] = Some(frame.buffer);
        self.post_receive(frame.slot)
    }

    /// Takes back the buffers of the frames the device has sent.
    fn reclaim(&mut self) {
        while let Some(token) = self.raw.poll_transmit() {
            let Some((slot, len)) = self.tx_slot[usize::from(token) % NET_QUEUE].take() else {
                break;
            };
            // SAFETY: the same buffer, with the same length, as given with this token.
            let _ = unsafe { self.raw.transmit_complete(token, &self.tx[slot][..len]) };
            self.tx_free.push(slot);
        }
    }

    /// Whether a frame can be sent now (a buffer is free, after taking back the sent
    /// ones).
    pub fn can_send(&mut self) -> bool {
        self.reclaim();
        !self.tx_free.is_empty()
    }

    /// Sends a frame of `len` bytes that `fill` writes; does not wait for the device.
    /// Without a free buffer (see [`NetQueues::can_send`]) the frame is dropped, as a
    /// full link drops it, and `fill` writes into a scratch buffer.
    ///
    /// # Errors
    /// The driver refused the frame (it is dropped).
    pub fn send<R>(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> (R, Result<(), virtio_drivers::Error>) {
        self.reclaim();
        let Some(slot) = self.tx_free.pop() else {
            let mut scratch = alloc::vec![0u8; len];
            return (fill(&mut scratch), Err(virtio_drivers::Error::QueueFull));
        };
        let header = match self.raw.fill_buffer_header(self.tx[slot]) {
            Ok(header) if header + len <= NET_FRAME => header,
            _ => {
                self.tx_free.push(slot);
                let mut scratch = alloc::vec![0u8; len];
                return (fill(&mut scratch), Err(virtio_drivers::Error::InvalidParam));
            }
        };
        let result = fill(&mut self.tx[slot][header..header + len]);
        // SAFETY: the buffer is never freed, and is not touched again until the device
        // is done with it (`reclaim`, through `poll_transmit`).
        match unsafe { self.raw.transmit_begin(&self.tx[slot][..header + len]) } {
            Ok(token) => {
                self.tx_slot[usize::from(token) % NET_QUEUE] = Some((slot, header + len));
                (result, Ok(()))
            }
            Err(e) => {
                self.tx_free.push(slot);
                (result, Err(e))
            }
        }
    }

    /// Tells the device of the frames and receive buffers given to it since the last
    /// flush (held back until now: see [`NoEventIdx`]). Whoever gives the device work
    /// flushes before the core can sleep: the network's poll does, after the stack's.
    pub fn flush(&mut self) {
        self.held.flush();
    }

    /// Acknowledges the device's interrupt.
    pub fn ack_interrupt(&mut self) {
        self.raw.ack_interrupt();
    }

    /// Lets the device interrupt when frames arrive (and when sent ones are done).
    /// A look at the queues after this sees every frame the device delivered without
    /// interrupting.
    pub fn enable_interrupts(&mut self) {
        self.raw.enable_interrupts();
        // The flag's store before the driver's next load of the used rings (x86 lets a
        // load pass an earlier store): the device adds a frame, then reads the flag
        // (QEMU fences between them), so either it sees interrupts on, or the load sees
        // its frame. Without this a frame could come with neither, and wait for the nap.
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }

    /// Asks the device not to interrupt (the loop polls).
    pub fn disable_interrupts(&mut self) {
        self.raw.disable_interrupts();
    }
}
