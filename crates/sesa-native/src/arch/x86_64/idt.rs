//! The interrupt descriptor table: the 32 exception vectors report the fault (vector,
//! error code, instruction, faulting address) on the console and end the kernel with the
//! panic exit status, instead of a silent triple fault and reset; the APIC timer's, the
//! wake-up IPI's and the devices' vectors only acknowledge (they end an idle core's
//! `hlt`; device interrupts are counted).

use super::boot;

/// One IDT entry (an interrupt gate, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const EMPTY: Gate = Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    attributes: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
};

#[repr(C, align(16))]
pub(super) struct Table([Gate; 256]);

/// The table every CPU loads (`boot.rs`, before it enters ring 3).
pub(super) static mut IDT: Table = Table([EMPTY; 256]);

// The 32 exception stubs: those without a CPU-pushed error code push 0, so every frame
// is (vector, error code, RIP, CS, RFLAGS, RSP, SS); all jump to the common handler,
// which passes the frame to `exception` (which does not return).
core::arch::global_asm!(
    r#"
    .text
    .macro stub n, has_error
    .global exception_stub_\n
exception_stub_\n:
    .if \has_error == 0
    pushq $0
    .endif
    pushq $\n
    jmp exception_common
    .endm
    stub 0, 0
    stub 1, 0
    stub 2, 0
    stub 3, 0
    stub 4, 0
    stub 5, 0
    stub 6, 0
    stub 7, 0
    stub 8, 1
    stub 9, 0
    stub 10, 1
    stub 11, 1
    stub 12, 1
    # General protection: ring 3's `hlt` (it may not halt) is the idle gate; anything
    # else is reported.
    .global exception_stub_13
exception_stub_13:
    testb $3, 16(%rsp)
    jz 3f
    pushq %rax
    movq 16(%rsp), %rax
    cmpb $0xf4, (%rax)
    popq %rax
    jne 3f
    jmp idle_gate
3:
    pushq $13
    jmp exception_common
    stub 14, 1
    stub 15, 0
    stub 16, 0
    stub 17, 1
    stub 18, 0
    stub 19, 0
    stub 20, 0
    stub 21, 1
    stub 22, 0
    stub 23, 0
    stub 24, 0
    stub 25, 0
    stub 26, 0
    stub 27, 0
    stub 28, 0
    stub 29, 1
    stub 30, 1
    stub 31, 0
exception_common:
    movq %rsp, %rdi
    andq $-16, %rsp
    call exception
2:
    cli
    hlt
    jmp 2b

    # The APIC timer: it ends a `hlt`; while the profiler samples (`profile.rs`), it also
    # notes where the CPU was, while there is room. Then it acknowledges (EOI), where the
    # other stubs end too.
    .global timer_stub
timer_stub:
    # Not sampling (the index at or past the end, as it starts): no locked operation on
    # a line every CPU shares, just a look.
    cmpq ${profile_cap}, PROFILE_NEXT(%rip)
    jae eoi
    pushq %rax
    pushq %rcx
    pushq %rdx
    movl $1, %ecx
    lock xaddq %rcx, PROFILE_NEXT(%rip)
    cmpq ${profile_cap}, %rcx
    jae 3f
    # The interrupted RIP: the frame's first word, above the three saved registers.
    movq 24(%rsp), %rax
    leaq PROFILE_SAMPLES(%rip), %rdx
    movq %rax, (%rdx,%rcx,8)
3:
    popq %rdx
    popq %rcx
    popq %rax
    jmp eoi
    # The wake-up IPI: it ends a `hlt`, or, taken before the CPU reached its idle gate
    # (interrupts are on in ring 3), makes the gate return at once (the `kicked` flag).
    .global wake_stub
wake_stub:
    movb $1, %gs:{kicked}
eoi:
    pushq %rax
    movabsq $0xfee000b0, %rax
    movl $0, (%rax)
    popq %rax
    iretq
    # A device's interrupt (routed by the I/O APIC): counted; like the wake-up IPI, it
    # ends the CPU's sleep (the loop then polls the device).
    .global device_stub
device_stub:
    lock incq DEVICE_INTERRUPTS(%rip)
    jmp wake_stub
    # The idle gate: a `hlt` in ring 3 faults (#GP, above) and lands here, on this
    # CPU's ring-0 stack with interrupts off (neither `int` nor SYSCALL from ring 3 is
    # virtualised by kvm_pvm; faults are). It halts until an interrupt, unless a wake-up
    # came since the last halt (`sti; hlt` lets no interrupt in between), then returns
    # past the `hlt`.
idle_gate:
    addq $1, 8(%rsp)
    cmpb $0, %gs:{kicked}
    jne 1f
    sti
    hlt
    cli
1:
    movb $0, %gs:{kicked}
    addq $8, %rsp
    iretq
    # Spurious interrupts need no EOI.
    .global spurious_stub
spurious_stub:
    iretq

    .section .rodata
    .balign 8
    .global exception_stubs
exception_stubs:
    .quad exception_stub_0, exception_stub_1, exception_stub_2, exception_stub_3
    .quad exception_stub_4, exception_stub_5, exception_stub_6, exception_stub_7
    .quad exception_stub_8, exception_stub_9, exception_stub_10, exception_stub_11
    .quad exception_stub_12, exception_stub_13, exception_stub_14, exception_stub_15
    .quad exception_stub_16, exception_stub_17, exception_stub_18, exception_stub_19
    .quad exception_stub_20, exception_stub_21, exception_stub_22, exception_stub_23
    .quad exception_stub_24, exception_stub_25, exception_stub_26, exception_stub_27
    .quad exception_stub_28, exception_stub_29, exception_stub_30, exception_stub_31
    .text
    "#,
    kicked = const super::percpu::KICKED_OFFSET,
    profile_cap = const PROFILE_CAP,
    options(att_syntax)
);

unsafe extern "C" {
    static exception_stubs: [u64; 32];
    fn timer_stub();
    fn wake_stub();
    fn device_stub();
    fn spurious_stub();
}

/// Device interrupts taken since boot (the device stub counts them).
#[unsafe(no_mangle)]
static DEVICE_INTERRUPTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Samples the profiler keeps (`profile.rs`): 64 Ki interrupted instruction addresses.
pub const PROFILE_CAP: usize = 1 << 16;

/// The timer stub's next sample slot: at or past [`PROFILE_CAP`] (as it starts), no
/// sample is taken; the profiler sets it to 0 to take the next [`PROFILE_CAP`].
#[unsafe(no_mangle)]
static PROFILE_NEXT: core::sync::atomic::AtomicU64 =
    core::sync::atomic::AtomicU64::new(PROFILE_CAP as u64);

/// The samples: where the CPUs were when their timers fired.
#[unsafe(no_mangle)]
static PROFILE_SAMPLES: [core::sync::atomic::AtomicU64; PROFILE_CAP] =
    [const { core::sync::atomic::AtomicU64::new(0) }; PROFILE_CAP];

/// The samples taken since [`restart_samples`], once [`PROFILE_CAP`] of them are
/// (`None` before).
pub fn samples_if_full() -> Option<impl Iterator<Item = u64>> {
    use core::sync::atomic::Ordering::Acquire;
    // A slot is written after its index was taken: a full count may still have the last
    // few writes in flight on other CPUs; a stale slot is one wrong sample of 64 Ki.
    (PROFILE_NEXT.load(Acquire) >= PROFILE_CAP as u64)
        .then(|| PROFILE_SAMPLES.iter().map(|s| s.load(Acquire)))
}

/// Starts taking [`PROFILE_CAP`] samples again.
pub fn restart_samples() {
    PROFILE_NEXT.store(0, core::sync::atomic::Ordering::Release);
}

/// How many device interrupts were taken since boot.
pub fn device_interrupts() -> u64 {
    DEVICE_INTERRUPTS.load(core::sync::atomic::Ordering::Relaxed)
}

fn gate(handler: u64) -> Gate {
    Gate {
        offset_low: handler as u16,
        selector: boot::KERNEL_CS,
        ist: 0,
        attributes: 0x8e, // present, callable from ring 0 only, 64-bit interrupt gate
        offset_mid: (handler >> 16) as u16,
        offset_high: (handler >> 32) as u32,
        reserved: 0,
    }
}

/// The frame the stubs build.
#[repr(C)]
pub struct Frame {
    /// The exception vector.
    pub vector: u64,
    /// The CPU's error code (0 for vectors without one).
    pub error: u64,
    /// The faulting instruction.
    pub rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// Fills the table (once, on the boot CPU, before any other CPU runs; every CPU loaded
/// it on its way into ring 3, and reads it only when an interrupt comes).
pub fn init() {
    // SAFETY: the stub table is a read-only array the linker fills; IDT is written only
    // here, by the boot CPU, before any CPU loads it.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (entry, &stub) in idt.0.iter_mut().zip(exception_stubs.iter()) {
            *entry = gate(stub);
        }
        idt.0[usize::from(super::apic::TIMER_VECTOR)] = gate(timer_stub as *const () as u64);
        idt.0[usize::from(super::apic::WAKE_VECTOR)] = gate(wake_stub as *const () as u64);
        idt.0[usize::from(super::apic::DEVICE_VECTOR)] = gate(device_stub as *const () as u64);
        idt.0[usize::from(super::apic::SPURIOUS_VECTOR)] = gate(spurious_stub as *const () as u64);
    }
}

/// The faulting address of a page fault (CR2).
pub fn cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no effect.
    unsafe {
        core::arch::asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// The common handler's Rust side: reads the frame and reports.
#[unsafe(no_mangle)]
extern "C" fn exception(frame: *const Frame) -> ! {
    // SAFETY: the stub passes the frame it built on this CPU's stack, whole.
    let frame = unsafe { &*frame };
    let cr2 = (frame.vector == 14).then(cr2);
    crate::exception(frame.vector, frame.error, frame.rip, cr2)
}

/// Reads `addr`, which the boot page tables do not map: the test of the exception path
/// (`-append fault`).
pub fn read_unmapped(addr: u64) -> u64 {
    // SAFETY: deliberately faulting: the page fault handler reports and ends the kernel,
    // so the read never completes and nothing observes its result.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}
