//! The I/O APIC: routes a device's interrupt line (a GSI) to a CPU's vector.
//!
//! `-M microvm` has one I/O APIC at 0xfec00000 (GSIs 0-23) and, by default, a second at
//! 0xfec10000 (GSIs 24-47) for its virtio-mmio slots. Lines are set edge-triggered: a
//! driver acknowledges its device before it waits, so the device's next interrupt is a
//! new edge. A line stays masked while its core polls: under TCG, an interrupt left
//! pending while interrupts are off slows every instruction block down (about 10% of a
//! request's CPU in the store's benchmark).

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

/// The mask bit of a redirection entry's low half.
const MASKED: u32 = 1 << 16;

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
/// destination, active high, edge-triggered; masked until [`set_masked`] says otherwise.
///
/// # Errors
/// No I/O APIC serves `gsi`.
pub fn route(gsi: u32, vector: u8, apic: u32) -> Result<(), &'static str> {
    let (base, pin) = pin_of(gsi)?;
    // The high half (destination) first, so the entry is never live half-written.
    write(base, 0x10 + 2 * pin + 1, apic << 24);
    write(base, 0x10 + 2 * pin, MASKED | u32::from(vector));
    Ok(())
}

/// Masks or unmasks `gsi` (routed by [`route`]). A masked line's interrupts are not
/// delivered (a busy loop polls instead, and takes no interrupt it would not use).
pub fn set_masked(gsi: u32, masked: bool) {
    let Ok((base, pin)) = pin_of(gsi) else { return };
    let low = read(base, 0x10 + 2 * pin);
    let low = if masked { low | MASKED } else { low & !MASKED };
    write(base, 0x10 + 2 * pin, low);
}
