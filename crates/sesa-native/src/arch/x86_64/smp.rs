//! The application processors: started by INIT-SIPI-SIPI through the local APIC, they
//! run a real-mode trampoline copied to 0x8000 that takes them into protected mode and
//! on through the boot CPU's own way into long mode (its page tables and GDT), onto a
//! stack of their own, and into `ap_main` with their index (1, 2, ...; the boot CPU
//! is 0).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use super::percpu::MAX_CPUS;
use super::{apic, clock};

/// Where the trampoline runs: a page below 1 MiB (the SIPI vector is its page number),
/// free RAM in the loader's map and never given to the heap (which starts above the
/// kernel at 1 MiB).
const TRAMPOLINE: usize = 0x8000;
/// Each AP's stack.
const AP_STACK: usize = 64 * 1024;

// The trampoline (copied to `TRAMPOLINE`; the SIPI starts an AP there in real mode)
// only reaches 32-bit protected mode and jumps to the boot path's `enter_long_mode`
// (`boot.rs`), which the boot CPU went through too. The AP's 64-bit continuation is
// kernel code at its link address: it takes an index, then its stack, and calls
// `ap_main`.
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
    movl $ap_long_mode_target, %edi
    movl $enter_long_mode, %eax
    jmp *%eax

    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF    # 0x08: 32-bit code
    .quad 0x00CF92000000FFFF    # 0x10: data
ap_gdt_ptr:
    .word ap_gdt_ptr - ap_gdt - 1
    .long ap_gdt - ap_trampoline_start + 0x8000
    .global ap_trampoline_end
ap_trampoline_end:

    .section .rodata
    .balign 8
ap_long_mode_target:
    .long ap_long_mode
    .word 0x08

    .text
    .code64
ap_long_mode:
    # This AP's index: 1, 2, ... in the order they get here; those past the last
    # stack are parked.
    movl $1, %eax
    lock xaddl %eax, AP_NEXT(%rip)
    cmpl ${max}, %eax
    jae 2f
    movl %eax, %r12d
    movq AP_STACKS(%rip), %rbx
    movq (%rbx,%rax,8), %r14
    movq %r14, %rsp
    leaq ap_ring3(%rip), %r13
    jmp cpu_to_ring3
ap_ring3:
    movl %r12d, %edi
    call ap_main
2:
    cli
    hlt
    jmp 2b
    "#,
    max = const MAX_CPUS,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// The next AP's index (the trampoline's continuation takes them in turn).
#[unsafe(no_mangle)]
static AP_NEXT: AtomicU32 = AtomicU32::new(1);
/// The top of each index's stack (`MAX_CPUS` of them).
#[unsafe(no_mangle)]
static AP_STACKS: AtomicPtr<u64> = AtomicPtr::new(core::ptr::null_mut());

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
    let stacks: &'static mut [u64] = Box::leak(stacks.into_boxed_slice());
    AP_STACKS.store(stacks.as_mut_ptr(), Ordering::Release);
    // SAFETY: the trampoline's bytes (a read-only section of the kernel) are copied to
    // its page below 1 MiB, which nothing else uses (see `TRAMPOLINE`).
    unsafe {
        let start = core::ptr::addr_of!(ap_trampoline_start);
        let len = core::ptr::addr_of!(ap_trampoline_end) as usize - start as usize;
        core::ptr::copy_nonoverlapping(start, TRAMPOLINE as *mut u8, len);
    }
    // INIT (all but self, assert), 10 ms, then STARTUP twice with the trampoline's page.
    apic::broadcast(0x000C_4500);
    wait_us(10_000);
    let vector = (TRAMPOLINE >> 12) as u32;
    for _ in 0..2 {
        apic::broadcast(0x000C_4600 | vector);
        wait_us(200);
    }
}
