//! The I/O APIC: routes a device's interrupt line (a GSI) to a CPU's vector.
//!
//! `-M microvm` has one I/O APIC at 0xfec00000 (GSIs 0-23) and, by default, a second at
//! 0xfec10000 (GSIs 24-47) for its virtio-mmio slots. Lines are set edge-triggered: a
//! driver acknowledges its device before it waits, so the device's next interrupt is a
//! new edge. A routed line stays unmasked: whether a device interrupts is switched at
//! the device (virtio's per-queue flag, `virtio.rs`), a write to guest memory, where
//! masking the line cost eight emulated register accesses and, under KVM, a change of
//! QEMU's interrupt routes.

const FIRST: usize = 0xfec0_0000;
const SECOND: usize = 0xfec1_0000;
/// GSIs per I/O APIC here.
const PINS: u32 = 24;

fn write(base: usize, register: u32, value: u32) {
    // SAFETY: the I/O APICs' windows are identity-mapped (uncached) by the boot page
    // tables; only the boot CPU programs them, before the other CPUs start.
    unsafe {
        core::ptr::write_volatile(base as *mut u32, register);
        core::ptr::write_volatile((base + 0x10) as *mut u32, value);
    }
}

fn read(base: usize, register: u32) -> u32 {
    // SAFETY: as for `write`; selecting and reading a register has no other effect.
    unsafe {
        core::ptr::write_volatile(base as *mut u32, register);
        core::ptr::read_volatile((base + 0x10) as *const u32)
    }
}

/// Whether an I/O APIC answers at `base` (nothing there reads as all ones).
fn present(base: usize) -> bool {
    read(base, 1) != u32::MAX
}

/// Whether the machine has the second I/O APIC (microvm's `ioapic2`).
pub fn has_second() -> bool {
    present(SECOND)
}

/// The I/O APIC and pin serving `gsi`.
fn pin_of(gsi: u32) -> Result<(usize, u32), &'static str> {
    let (base, pin) = match gsi {
        g if g < PINS && present(FIRST) => (FIRST, g),
        g if (PINS..2 * PINS).contains(&g) && present(SECOND) => (SECOND, g - PINS),
        _ => return Err("no I/O APIC serves that line"),
    };
    let entries = ((read(base, 1) >> 16) & 0xff) + 1;
    if pin >= entries {
        return Err("the I/O APIC has fewer pins");
    }
    Ok((base, pin))
}

/// Routes `gsi` to `vector` on the CPU with APIC id `apic`: fixed delivery, physical
/// destination, active high, edge-triggered, unmasked.
///
/// # Errors
/// No I/O APIC serves `gsi`.
pub fn route(gsi: u32, vector: u8, apic: u32) -> Result<(), &'static str> {
    let (base, pin) = pin_of(gsi)?;
    // The high half (destination) first, so the entry is never live half-written.
    write(base, 0x10 + 2 * pin + 1, apic << 24);
    write(base, 0x10 + 2 * pin, u32::from(vector));
    Ok(())
}
