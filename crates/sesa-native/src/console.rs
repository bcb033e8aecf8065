//! The serial console: COM1, a 16550 UART at I/O port 0x3f8, written by polling.
//! A line is written whole under a lock, so the lines of several CPUs do not mix (the
//! frontend forwards a native node's console line by line).

use crate::arch::x86_64::{inb, outb};

const COM1: u16 = 0x3f8;
/// Line status register: transmit holding register empty.
const THR_EMPTY: u8 = 0x20;

/// Sets the UART to 115200 baud, 8 data bits, no parity, one stop bit.
pub fn init() {
    outb(COM1 + 1, 0x00); // no interrupts
    outb(COM1 + 3, 0x80); // divisor latch
    outb(COM1, 0x01); // 115200 baud
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); // 8N1
    // FIFOs stay off: turning them on empties them, and the frontend may already
    // have sent a native node its cluster secret (read by `read_line`).
    outb(COM1 + 2, 0x00);
    outb(COM1 + 4, 0x03); // DTR, RTS
}

fn put(byte: u8) {
    // A missing UART reads as 0xff, which also says "empty": output is then lost, not
    // waited for.
    while inb(COM1 + 5) & THR_EMPTY == 0 {}
    outb(COM1, byte);
}

/// Line status register: a received byte is waiting.
const DATA_READY: u8 = 0x01;

/// Reads one line from the console's input (what is written to QEMU's `-serial stdio`),
/// without its end of line: at most `max` bytes, within `within_ns` of the calibrated
/// clock. `None` on a timeout, an overlong line, or no UART (which reads as 0xff).
pub fn read_line(max: usize, within_ns: u64) -> Option<alloc::vec::Vec<u8>> {
    let deadline = crate::arch::x86_64::clock::now_ns().saturating_add(within_ns);
    let mut line = alloc::vec::Vec::new();
    loop {
        let status = inb(COM1 + 5);
        if status == 0xff {
            return None;
        }
        if status & DATA_READY == 0 {
            if crate::arch::x86_64::clock::now_ns() > deadline {
                return None;
            }
            core::hint::spin_loop();
            continue;
        }
        match inb(COM1) {
            b'\n' => return Some(line),
            b'\r' => {}
            byte if line.len() < max => line.push(byte),
            _ => return None,
        }
    }
}

/// `core::fmt` output to the console (`\n` sent as `\r\n`).
pub struct Console;

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                put(b'\r');
            }
            put(byte);
        }
        Ok(())
    }
}

/// Who writes a line now.
static LINE: spinning_top::Spinlock<()> = spinning_top::Spinlock::new(());

/// Writes one line (`args` and a newline) whole. The lock is waited for a bounded time
/// only: a CPU that faults while printing must still be able to report it (its line
/// may then mix with the one it interrupted, which is better than a hang).
pub fn line(args: core::fmt::Arguments<'_>) {
    use core::fmt::Write as _;
    let mut guard = None;
    for _ in 0..10_000_000 {
        if let Some(g) = LINE.try_lock() {
            guard = Some(g);
            break;
        }
        core::hint::spin_loop();
    }
    let _ = Console.write_fmt(args);
    let _ = Console.write_str("\n");
    drop(guard);
}

/// Prints a line on the console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        $crate::console::line(format_args!($($arg)*));
    }};
}
