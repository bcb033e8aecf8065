//! The application processors: started by INIT-SIPI-SIPI through the local APIC, they
//! run a real-mode trampoline copied to 0x8000 that takes them through protected mode
//! into long mode on the boot CPU's page tables, onto a stack of their own, and into
//! `ap_main` with their index (1, 2, ...; the boot CPU is 0).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::AtomicUsize;

use super::clock;
use super::percpu::MAX_CPUS;

/// Where the trampoline runs: a page below 1 MiB (the SIPI vector is its page number),
/// free RAM in the loader's map and never given to the heap (which starts above the
/// kernel at 1 MiB).
const TRAMPOLINE: usize = 0x8000;
/// Each AP's stack.
const AP_STACK: usize = 64 * 1024;
/// The local APIC's registers (xAPIC, at its reset address).
const LAPIC: usize = 0xfee0_0000;
const ICR_LOW: usize = 0x300;
const ICR_HIGH: usize = 0x310;

core::arch::global_asm!(
    r#"
    .section .rodata.trampoline, "a"
    .code16
    .global ap_trampoline_start
ap_trampoline_start:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl (ap_gdt_ptr - ap_trampoline_start + 0x8000)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(ap_pm32 - ap_trampoline_start + 0x8000)

    .code32
ap_pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    # PAE, OSFXSR, OSXMMEXCPT; the boot CPU's page tables; EFER.LME; paging.
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    movl (ap_cr3 - ap_trampoline_start + 0x8000), %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    andl $0xFFFFFFF3, %eax
    orl $0x80000003, %eax
    movl %eax, %cr0
    ljmpl $0x18, $(ap_lm64 - ap_trampoline_start + 0x8000)

    .code64
ap_lm64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    # This AP's index: 1, 2, ... in the order they get here.
    movl $1, %eax
    lock xaddl %eax, (ap_next - ap_trampoline_start + 0x8000)
    cmpl (ap_max - ap_trampoline_start + 0x8000), %eax
    jae 2f
    movq (ap_stacks - ap_trampoline_start + 0x8000), %rbx
    movq (%rbx,%rax,8), %rsp
    movl %eax, %edi
    # Now on a stack: onto the boot CPU's GDT, whose 64-bit code segment (0x08) is the
    # one the IDT's gates name, by a far return.
    lgdt (ap_gdt64_ptr - ap_trampoline_start + 0x8000)
    pushq $0x08
    leaq (ap_cs64 - ap_trampoline_start + 0x8000), %rax
    pushq %rax
    lretq
ap_cs64:
    movabsq $ap_main, %rax
    call *%rax
2:
    cli
    hlt
    jmp 2b

    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF    # 0x08: 32-bit code
    .quad 0x00CF92000000FFFF    # 0x10: data
    .quad 0x00AF9A000000FFFF    # 0x18: 64-bit code
ap_gdt_ptr:
    .word ap_gdt_ptr - ap_gdt - 1
    .long ap_gdt - ap_trampoline_start + 0x8000
    .balign 8
ap_gdt64_ptr:
    .word 23
    .quad boot_gdt
    .balign 8
    .global ap_cr3
ap_cr3:
    .quad 0
    .global ap_stacks
ap_stacks:
    .quad 0
    .global ap_next
ap_next:
    .long 1
    .global ap_max
ap_max:
    .long 1
    .global ap_trampoline_end
ap_trampoline_end:
    .text
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_cr3: u8;
    static ap_stacks: u8;
    static ap_next: u8;
    static ap_max: u8;
}

/// The offset of a trampoline symbol from its start.
fn offset(symbol: *const u8) -> usize {
    // Only addresses are taken (no reads): the linker defines the symbols.
    symbol as usize - core::ptr::addr_of!(ap_trampoline_start) as usize
}

fn lapic_write(register: usize, value: u32) {
    // SAFETY: the local APIC's registers are identity-mapped (uncached) by the boot page
    // tables; ICR writes send IPIs, which is the intent.
    unsafe { core::ptr::write_volatile((LAPIC + register) as *mut u32, value) }
}

fn lapic_read(register: usize) -> u32 {
    // SAFETY: as for `lapic_write`; reading the ICR has no effect.
    unsafe { core::ptr::read_volatile((LAPIC + register) as *const u32) }
}

/// Sends an IPI to every CPU but this one and waits until the APIC has delivered it.
fn broadcast(icr_low: u32) {
    lapic_write(ICR_HIGH, 0);
    lapic_write(ICR_LOW, icr_low);
    while lapic_read(ICR_LOW) & (1 << 12) != 0 {
        core::hint::spin_loop();
    }
}

fn wait_us(us: u64) {
    let until = clock::now_ns() + us * 1000;
    while clock::now_ns() < until {
        core::hint::spin_loop();
    }
}

/// How many APs have entered `ap_main` (they count themselves in).
pub static ARRIVED: AtomicUsize = AtomicUsize::new(0);

/// Starts every application processor, at most `MAX_CPUS - 1` of them; each runs
/// `ap_main(index)` on a stack of its own. Returns once they were sent their start-up
/// IPIs: they count themselves in `ARRIVED`. Needs the calibrated clock (for the
/// delays INIT-SIPI-SIPI requires).
pub fn start_aps() {
    // Stacks for every index an AP may get (the trampoline parks those beyond them).
    let stacks: Vec<u64> = (0..MAX_CPUS)
        .map(|_| {
            let stack: &'static mut [u8] = Box::leak(alloc::vec![0u8; AP_STACK].into_boxed_slice());
            // 16-byte aligned top; `call` then leaves RSP at 8 mod 16 on entry.
            (stack.as_ptr() as u64 + AP_STACK as u64) & !0xf
        })
        .collect();
    let stacks: &'static [u64] = Box::leak(stacks.into_boxed_slice());
    let cr3: u64;
    // SAFETY: reading CR3 has no effect.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags))
    };
    // SAFETY: the trampoline's bytes (a read-only section of the kernel) are copied to
    // its page below 1 MiB, which nothing else uses (see `TRAMPOLINE`), then its data
    // words are filled in before any AP is started.
    unsafe {
        let start = core::ptr::addr_of!(ap_trampoline_start);
        let len = core::ptr::addr_of!(ap_trampoline_end) as usize - start as usize;
        core::ptr::copy_nonoverlapping(start, TRAMPOLINE as *mut u8, len);
        let at = |symbol: *const u8| (TRAMPOLINE + offset(symbol)) as *mut u8;
        core::ptr::write_volatile(at(core::ptr::addr_of!(ap_cr3)) as *mut u64, cr3);
        core::ptr::write_volatile(
            at(core::ptr::addr_of!(ap_stacks)) as *mut u64,
            stacks.as_ptr() as u64,
        );
        core::ptr::write_volatile(at(core::ptr::addr_of!(ap_next)) as *mut u32, 1);
        core::ptr::write_volatile(at(core::ptr::addr_of!(ap_max)) as *mut u32, MAX_CPUS as u32);
    }
    // INIT (all but self, assert), 10 ms, then STARTUP twice with the trampoline's page.
    broadcast(0x000C_4500);
    wait_us(10_000);
    let vector = (TRAMPOLINE >> 12) as u32;
    for _ in 0..2 {
        broadcast(0x000C_4600 | vector);
        wait_us(200);
    }
}
