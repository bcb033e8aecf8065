//! virtio devices on `-M microvm`'s MMIO slots, and the DMA rules the drivers need.
//!
//! Memory is identity-mapped (virtual = physical), so DMA buffers are heap allocations
//! whose addresses the device uses as they are.

use core::alloc::Layout;
use core::ptr::NonNull;

use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

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
