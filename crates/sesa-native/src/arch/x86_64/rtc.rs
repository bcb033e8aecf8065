//! The wall clock: the CMOS real-time clock (MC146818, ports 0x70/0x71), read once at
//! boot. Time after that is the calibrated TSC's (`clock.rs`) added to the boot's wall
//! time, so it never steps; the RTC's one-second resolution bounds its error.
//!
//! QEMU's RTC keeps UTC by default (`-rtc base=utc`), which is what is assumed here.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{inb, outb};

/// Unix seconds at TSC time zero (0: not read, or no RTC).
static UNIX_AT_ZERO: AtomicU64 = AtomicU64::new(0);

const INDEX: u16 = 0x70;
const DATA: u16 = 0x71;
/// Keeps NMIs enabled (bit 7 of the index port clear).
fn read(register: u8) -> u8 {
    outb(INDEX, register & 0x7f);
    inb(DATA)
}

/// The RTC's fields, as stored (BCD or binary, 12- or 24-hour).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fields([u8; 7]);

fn fields() -> Fields {
    // Seconds, minutes, hours, day of month, month, year, century (ACPI's usual 0x32).
    Fields([0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32].map(read))
}

fn update_in_progress() -> bool {
    read(0x0a) & 0x80 != 0
}

fn bcd(value: u8) -> u8 {
    (value & 0x0f) + (value >> 4) * 10
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian; H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads the RTC and remembers the wall time of TSC zero; the Unix time read, or `None`
/// without a plausible RTC (none present reads as 0xff everywhere).
pub fn init(now_ns: u64) -> Option<u64> {
    // No RTC (QEMU's microvm has none under KVM by default): the port reads all ones.
    if read(0x0a) == 0xff {
        return None;
    }
    // Two equal reads outside an update: the fields were not torn by a tick. An update
    // takes under 2 ms; more than 20 ms of it is a broken clock.
    let deadline = now_ns.saturating_add(20_000_000);
    let f = loop {
        while update_in_progress() {
            if super::clock::now_ns() > deadline {
                return None;
            }
            core::hint::spin_loop();
        }
        if super::clock::now_ns() > deadline {
            return None;
        }
        let a = fields();
        let b = fields();
        if a == b {
            break a;
        }
    };
    let status_b = read(0x0b);
    let binary = status_b & 0x04 != 0;
    let hour24 = status_b & 0x02 != 0;
    let [sec, min, hour, day, month, year, century] = f.0;
    let decode = |v: u8| if binary { v } else { bcd(v) };
    let pm = hour & 0x80 != 0;
    let mut hour = decode(hour & 0x7f);
    if !hour24 {
        hour %= 12;
        if pm {
            hour += 12;
        }
    }
    let century = match decode(century) {
        c @ 19..=21 => i64::from(c),
        _ => 20,
    };
    let (sec, min, day, month) = (decode(sec), decode(min), decode(day), decode(month));
    if sec > 59 || min > 59 || hour > 23 || !(1..=31).contains(&day) || !(1..=12).contains(&month) {
        return None;
    }
    let year = century * 100 + i64::from(decode(year));
    let days = days_from_civil(year, u32::from(month), u32::from(day));
    let unix = days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec);
    let unix = u64::try_from(unix).ok()?;
    UNIX_AT_ZERO.store(unix.saturating_sub(now_ns / 1_000_000_000), Relaxed);
    Some(unix)
}

/// Unix seconds now, if the RTC was read.
pub fn unix_time(now_ns: u64) -> Option<u64> {
    match UNIX_AT_ZERO.load(Relaxed) {
        0 => None,
        at_zero => Some(at_zero + now_ns / 1_000_000_000),
    }
}
