//! x86-64: the boot path, port I/O, per-CPU state, and the memory functions the linker
//! needs. Every `unsafe` of the kernel is in this module, but for the heap's
//! `GlobalAlloc` implementation in `memory.rs`.

pub mod apic;
pub mod boot;
pub mod clock;
pub mod entropy;
pub mod idt;
pub mod ioapic;
pub mod mem;
pub mod percpu;
pub mod rtc;
pub mod smp;
pub mod virtio;

/// Writes `value` to I/O port `port`.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects; the ports used (COM1 at 0x3f8,
    // isa-debug-exit at 0xf4, the PIT and the CMOS RTC at 0x70) belong to devices this
    // kernel alone drives.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads I/O port `port`.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`: reading a UART register has no memory effects.
    unsafe {
        core::arch::asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Writes the 32-bit `value` to I/O port `port`.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Stops this CPU for good (halting through the idle gate, again after each interrupt).
pub fn halt() -> ! {
    loop {
        apic::idle();
    }
}

/// The hypervisor's boot information (`hvm_start_info` of the PVH boot protocol,
/// version 1), at a physical address, identity-mapped.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StartInfo {
    /// [`StartInfo::MAGIC`].
    pub magic: u32,
    /// Layout version (1 has the memory map).
    pub version: u32,
    /// Flags.
    pub flags: u32,
    /// Modules loaded with the kernel.
    pub nr_modules: u32,
    /// Physical address of the module list.
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line (0: none).
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP.
    pub rsdp_paddr: u64,
    /// Physical address of the memory map (version 1).
    pub memmap_paddr: u64,
    /// Entries in the memory map.
    pub memmap_entries: u32,
    /// Reserved.
    pub reserved: u32,
}

/// One region of the physical memory map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MemoryRegion {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// 1: usable RAM; other values are reserved, ACPI and so on.
    pub kind: u32,
    /// Reserved.
    pub reserved: u32,
}

impl StartInfo {
    /// The PVH loader's magic value.
    pub const MAGIC: u32 = 0x336e_c578;

    /// The boot information the loader left at `paddr`, if it is one.
    pub fn at(paddr: u32) -> Option<StartInfo> {
        if paddr == 0 || !(paddr as usize).is_multiple_of(core::mem::align_of::<StartInfo>()) {
            return None;
        }
        // SAFETY: the PVH loader passes the address of a `hvm_start_info` in EBX; the
        // first GiB is identity-mapped, and the address is non-zero and aligned
        // (checked above). The magic is checked before anything else is trusted.
        let info = unsafe { core::ptr::read_volatile(paddr as usize as *const StartInfo) };
        (info.magic == Self::MAGIC).then_some(info)
    }

    /// The memory map (empty before version 1 or outside the mapped first GiB).
    pub fn memory_map(&self) -> &'static [MemoryRegion] {
        let end = self.memmap_paddr
            + u64::from(self.memmap_entries) * core::mem::size_of::<MemoryRegion>() as u64;
        if self.version < 1 || self.memmap_paddr == 0 || end > boot::MAPPED_BYTES {
            return &[];
        }
        // SAFETY: version 1 of the protocol places `memmap_entries` entries at
        // `memmap_paddr`, inside the identity-mapped first GiB (checked above); the
        // loader's tables are never written while the kernel runs.
        unsafe {
            core::slice::from_raw_parts(
                self.memmap_paddr as usize as *const MemoryRegion,
                self.memmap_entries as usize,
            )
        }
    }

    /// The command line (`-append` in QEMU), up to 255 bytes, or "" if none.
    pub fn command_line(&self) -> &'static str {
        if self.cmdline_paddr == 0 || self.cmdline_paddr + 256 > boot::MAPPED_BYTES {
            return "";
        }
        let base = self.cmdline_paddr as usize as *const u8;
        // SAFETY: the loader placed a NUL-terminated string at `cmdline_paddr`, inside
        // the identity-mapped first GiB; at most 256 bytes are read.
        let bytes = unsafe { core::slice::from_raw_parts(base, 256) };
        let len = bytes.iter().position(|b| *b == 0).unwrap_or(0);
        core::str::from_utf8(&bytes[..len]).unwrap_or("")
    }
}
