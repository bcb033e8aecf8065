//! Physical memory: the loader's map becomes the kernel's heap (the global allocator,
//! `talc`, with a cache per CPU in front of it) and a frame allocator of 4 KiB pages (for
//! device queues and DMA buffers).
//!
//! The per-CPU caches: blocks of up to 2 KiB (alignment up to 16) are rounded up to a
//! power of two from 16 bytes, and a CPU keeps up to [`CACHE_DEPTH`] freed blocks of each
//! size for its next allocations, so the common small allocation and free take no lock
//! and touch no shared line. A block freed on another CPU simply joins that CPU's cache
//! (all blocks come from the one talc heap); a full cache gives half of its blocks back
//! to talc. Larger blocks go to talc directly.
//!
//! Only the identity-mapped first GiB is used so far, above the kernel image.

use alloc::vec::Vec;
use core::alloc::Layout;
use core::cell::UnsafeCell;

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

/// Size classes of the per-CPU caches: 16, 32, ..., 2048 bytes.
const CLASSES: usize = 8;
const SMALLEST: usize = 16;
const LARGEST: usize = SMALLEST << (CLASSES - 1);
/// Freed blocks a CPU keeps per size class.
pub const CACHE_DEPTH: usize = 64;

/// The size class of a layout the caches serve, if they serve it.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > LARGEST || layout.align() > SMALLEST {
        return None;
    }
    let size = layout.size().max(SMALLEST).next_power_of_two();
    Some(size.trailing_zeros() as usize - SMALLEST.trailing_zeros() as usize)
}

/// The layout blocks of `class` are taken from talc with.
fn class_layout(class: usize) -> Layout {
    // A power of two up to 2 KiB, aligned to 16: always a valid layout.
    Layout::from_size_align(SMALLEST << class, SMALLEST).unwrap_or(Layout::new::<u8>())
}

/// One size class's freed blocks on one CPU.
struct Magazine {
    len: usize,
    blocks: [*mut u8; CACHE_DEPTH],
}

/// One CPU's cache of freed small blocks (it lives in the CPU's per-CPU block).
pub struct HeapCache(UnsafeCell<[Magazine; CLASSES]>);

impl HeapCache {
    /// An empty cache.
    pub const fn new() -> Self {
        HeapCache(UnsafeCell::new(
            [const {
                Magazine {
                    len: 0,
                    blocks: [core::ptr::null_mut(); CACHE_DEPTH],
                }
            }; CLASSES],
        ))
    }
}

// SAFETY: every method forwards to talc's `GlobalAlloc` with the same contract, or
// keeps blocks talc allocated (rounded to their class, which `dealloc` recomputes from
// the same layout) in the calling CPU's own cache. A cache is touched only by its CPU
// (it is found through the CPU's GS base), never from an interrupt handler (the
// kernel's handlers do not allocate), and the event loops do not preempt: no access to
// a cache overlaps another.
unsafe impl core::alloc::GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { self.0.alloc(layout) };
        };
        // SAFETY: this CPU's cache, used by nothing else now (see above).
        let magazine = unsafe { &mut (*percpu::heap_cache().0.get())[class] };
        if magazine.len > 0 {
            magazine.len -= 1;
            return magazine.blocks[magazine.len];
        }
        // SAFETY: a non-zero, valid layout.
        unsafe { self.0.alloc(class_layout(class)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { self.0.dealloc(ptr, layout) };
        };
        // SAFETY: this CPU's cache, used by nothing else now (see above).
        let magazine = unsafe { &mut (*percpu::heap_cache().0.get())[class] };
        if magazine.len == CACHE_DEPTH {
            // Full: half goes back, so a CPU that only frees does not hold memory.
            for _ in 0..CACHE_DEPTH / 2 {
                magazine.len -= 1;
                // SAFETY: a block of this class that talc allocated.
                unsafe {
                    self.0
                        .dealloc(magazine.blocks[magazine.len], class_layout(class))
                };
            }
        }
        magazine.blocks[magazine.len] = ptr;
        magazine.len += 1;
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let grown = Layout::from_size_align(new, layout.align());
        match (
            class_of(layout),
            grown.as_ref().ok().and_then(|g| class_of(*g)),
        ) {
            // Both large: talc resizes in place when it can.
            // SAFETY: forwarded with the caller's guarantees.
            (None, None) => unsafe { self.0.realloc(ptr, layout, new) },
            // Still in its class: the block already has room.
            (Some(a), Some(b)) if a == b => ptr,
            _ => {
                let Ok(grown) = grown else {
                    return core::ptr::null_mut();
                };
                // SAFETY: a valid layout; the copy is of the smaller size, within both.
                unsafe {
                    let fresh = self.alloc(grown);
                    if !fresh.is_null() {
                        core::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new));
                        self.dealloc(ptr, layout);
                    }
                    fresh
                }
            }
        }
    }
}

/// One allocation and free of `layout` through talc alone, bypassing the per-CPU caches:
/// the heap benchmark's baseline (`main.rs`), so that the allocator itself carries no
/// switch for it.
pub fn talc_alloc_free(layout: Layout) {
    use core::alloc::GlobalAlloc as _;
    // SAFETY: a block talc just gave, freed with the same layout.
    unsafe {
        let block = HEAP.0.alloc(layout);
        if !block.is_null() {
            core::hint::black_box(block).write(0);
            HEAP.0.dealloc(block, layout);
        }
    }
}

/// One allocation and free of `layout` through the global allocator (the per-CPU
/// caches in front of talc), for the heap benchmark.
pub fn global_alloc_free(layout: Layout) {
    // SAFETY: `layout` is non-zero (the benchmark's 64 bytes); the block is freed with
    // the same layout at once.
    unsafe {
        let block = alloc::alloc::alloc(layout);
        if !block.is_null() {
            core::hint::black_box(block).write(0);
            alloc::alloc::dealloc(block, layout);
        }
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
