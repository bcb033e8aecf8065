//! Physical memory: the loader's map becomes the kernel's heap (the global allocator,
//! `talc`) and a frame allocator of 4 KiB pages (for device queues and DMA buffers).
//!
//! Only the identity-mapped first GiB is used so far, above the kernel image.

use alloc::vec::Vec;

use crate::arch::x86_64::{MemoryRegion, boot, percpu};

/// The size of a frame.
pub const FRAME: u64 = 4096;

/// The heap takes a quarter of the usable memory, between these bounds.
const HEAP_MIN: u64 = 4 << 20;
const HEAP_MAX: u64 = 256 << 20;

/// The global allocator: talc over memory claimed at boot, behind a spinlock.
pub struct Heap(talc::TalcLock<spinning_top::RawSpinlock, talc::source::Manual>);

impl Heap {
    /// Adds `[base, base + size)` to the heap.
    ///
    /// # Safety
    /// The range is RAM, mapped, and used by nothing else for the life of the kernel.
    pub unsafe fn claim(&self, base: *mut u8, size: usize) -> bool {
        // SAFETY: the caller's contract.
        unsafe { self.0.lock().claim(base, size).is_some() }
    }
}

// SAFETY: every method forwards to talc's `GlobalAlloc`, whose contract is the same.
unsafe impl core::alloc::GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.0.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.0.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: core::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.0.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static HEAP: Heap = Heap(talc::TalcLock::new(talc::source::Manual));

/// Free physical frames, as ranges `[start, end)` of frame-aligned addresses.
pub struct Frames {
    free: Vec<(u64, u64)>,
    total: u64,
}

impl Frames {
    /// Takes one free frame.
    pub fn alloc(&mut self) -> Option<u64> {
        let (start, end) = self.free.last_mut()?;
        let frame = *start;
        *start += FRAME;
        if *start == *end {
            self.free.pop();
        }
        Some(frame)
    }

    /// Gives a frame back.
    pub fn free(&mut self, frame: u64) {
        assert!(frame.is_multiple_of(FRAME), "a frame is frame-aligned");
        self.free.push((frame, frame + FRAME));
    }

    /// Frames free now.
    pub fn available(&self) -> u64 {
        self.free.iter().map(|(s, e)| (e - s) / FRAME).sum()
    }

    /// Frames handed to the allocator at boot.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// The most usable regions [`init`] takes from the map (a fixed array: there is no heap
/// yet); further ones are counted in [`Memory::regions_ignored`] and left unused.
const REGIONS_MAX: usize = 32;

/// What [`init`] set up.
pub struct Memory {
    /// Bytes given to the heap.
    pub heap_bytes: u64,
    /// Usable regions beyond [`REGIONS_MAX`], not used.
    pub regions_ignored: usize,
    /// The frame allocator, over the rest.
    pub frames: Frames,
}

/// Sets up the heap and the frame allocator from the loader's memory map. `None` if
/// there is not enough usable memory above the kernel for the smallest heap.
pub fn init(map: &[MemoryRegion]) -> Option<Memory> {
    let floor = percpu::kernel_end();
    // Usable RAM above the kernel and inside the identity-mapped memory, frame-aligned.
    let mut regions: [(u64, u64); REGIONS_MAX] = [(0, 0); REGIONS_MAX];
    let (mut n, mut regions_ignored) = (0, 0);
    for r in map.iter().filter(|r| r.kind == 1 && r.size > 0) {
        let start = r.addr.max(floor).next_multiple_of(FRAME);
        let end = (r.addr + r.size).min(boot::MAPPED_BYTES) / FRAME * FRAME;
        if start >= end {
            continue;
        }
        if n == REGIONS_MAX {
            regions_ignored += 1;
            continue;
        }
        regions[n] = (start, end);
        n += 1;
    }
    let regions = &mut regions[..n];
    let usable: u64 = regions.iter().map(|(s, e)| e - s).sum();
    let heap_bytes = (usable / 4).clamp(HEAP_MIN, HEAP_MAX) / FRAME * FRAME;
    // The heap comes from the largest region, which must hold it.
    let largest = regions.iter_mut().max_by_key(|(s, e)| e - s)?;
    if largest.1 - largest.0 < heap_bytes {
        return None;
    }
    let heap_base = largest.0;
    largest.0 += heap_bytes;
    // SAFETY: usable RAM per the loader's map, above the kernel image, inside the
    // identity-mapped memory, and given to nothing else (it was just cut out of the
    // regions the frame allocator gets).
    if !unsafe { HEAP.claim(heap_base as usize as *mut u8, heap_bytes as usize) } {
        return None;
    }
    let free: Vec<(u64, u64)> = regions.iter().copied().filter(|(s, e)| s < e).collect();
    let total = free.iter().map(|(s, e)| (e - s) / FRAME).sum();
    Some(Memory {
        heap_bytes,
        regions_ignored,
        frames: Frames { free, total },
    })
}
