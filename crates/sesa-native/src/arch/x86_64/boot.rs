//! The way in: a 32-bit entry point for the PVH boot protocol (QEMU's `-kernel` with a
//! Xen `PHYS32_ENTRY` note, as `-M microvm` boots), which builds identity page tables
//! for the first 4 GiB (RAM below, and the devices' MMIO just under 4 GiB: the fourth
//! GiB is mapped uncached), turns on PAE, long mode, paging and SSE (Rust code uses SSE
//! registers), loads a 64-bit GDT, and calls `kernel_main(start_info)` on a 64 KiB stack.
//!
//! **All Rust code runs in ring 3.** This machine's hypervisor (kvm_pvm) emulates every
//! ring-0 instruction and cannot emulate the SSE instructions Rust code uses; in ring 3
//! it runs them natively (`native-notes.md`). So each CPU, still in ring 0 and in
//! assembly only (`cpu_to_ring3`), points its GS base at its per-CPU block, loads its
//! TSS (a ring-0 stack for interrupts, and an all-zero I/O bitmap: ring 3 may use every
//! port), loads the IDT, and `iretq`s into ring 3 with interrupts on. The pages are all
//! user pages (a unikernel: one program). What ring 3 cannot do goes through gates:
//! halting (`idt.rs`'s idle gate: a `hlt` in ring 3 faults into it). Everything else the kernel does (port and MMIO I/O,
//! the APIC, RDTSC, RDRAND) is allowed in ring 3. Under TCG and hardware KVM this costs
//! nothing measurable; it is what lets the kernel run under kvm_pvm at all.
//!
//! The CPU state on entry (PVH): 32-bit protected mode, paging off, flat segments, EBX
//! the physical address of `hvm_start_info`.

/// The 64-bit ring-0 code segment of the boot GDT (the interrupt stubs run on it).
pub const KERNEL_CS: u16 = 0x08;
/// Each CPU's TSS: 104 bytes, an I/O bitmap of 8192 bytes (all zero: every port
/// allowed in ring 3) and its terminating byte, padded.
const TSS_STRIDE: usize = 8320;
/// The TSS limit (its size minus one, the bitmap's terminating byte included).
const TSS_LIMIT: usize = 104 + 8192;
/// Each CPU's ring-0 stack, for the interrupts and exceptions it takes.
const INT_STACK: usize = 16384;

/// Bytes identity-mapped by the boot page tables.
pub const MAPPED_BYTES: u64 = 4 << 30;

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                 # name size ("Xen\0")
    .long 4                 # descriptor size
    .long 18                # XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .balign 4

    .section .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    movl %ebx, %esi

    # 2048 entries of 2 MiB pages: the first 4 GiB, identity-mapped; the fourth GiB
    # (MMIO) with caching off (PCD, PWT).
    xorl %ecx, %ecx
3:
    movl %ecx, %eax
    shll $21, %eax
    orl $0x87, %eax         # present, writable, user, page size
    cmpl $1536, %ecx
    jb 6f
    orl $0x18, %eax         # PCD, PWT
6:
    movl %eax, boot_pd(,%ecx,8)
    movl $0, boot_pd+4(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne 3b
    # Four page directories, one per GiB.
    xorl %ecx, %ecx
7:
    movl %ecx, %eax
    shll $12, %eax
    addl $boot_pd, %eax
    orl $0x7, %eax          # present, writable, user
    movl %eax, boot_pdpt(,%ecx,8)
    movl $0, boot_pdpt+4(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jne 7b
    movl $boot_pdpt, %eax
    orl $0x7, %eax
    movl %eax, boot_pml4
    movl $bsp_long_mode_target, %edi

    # Shared with the application processors (`smp.rs`), in 32-bit protected mode with
    # flat segments: onto the boot page tables, long mode, SSE and the boot GDT, then a
    # far jump through the far pointer at EDI (each CPU's 64-bit continuation). Uses
    # EAX, ECX and EDX only.
    .global enter_long_mode
enter_long_mode:
    # CR4: PAE, OSFXSR, OSXMMEXCPT.
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    # EFER.LME.
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    # CR0: PG, MP, PE on; EM and TS off.
    movl %cr0, %eax
    andl $0xFFFFFFF3, %eax
    orl $0x80000003, %eax
    movl %eax, %cr0

    lgdt boot_gdt_ptr
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    ljmpl *(%edi)

    .code64
bsp_long_mode:
    movabsq $boot_stack_top, %rsp
    xorl %r12d, %r12d
    leaq bsp_ring3(%rip), %r13
    movabsq $boot_stack_top, %r14
    jmp cpu_to_ring3
bsp_ring3:
    # 16-byte aligned here; the call pushes 8, as the ABI expects at a function's entry.
    movl %esi, %edi
    call kernel_main
5:
    jmp 5b

    # A CPU's way from ring 0 into ring 3, in assembly only: R12 its index, R13 where to
    # go in ring 3, R14 the ring-3 stack. Keeps RSI and R12; uses RAX, RBX, RCX, RDX.
    .global cpu_to_ring3
cpu_to_ring3:
    # Ring-3 data segments first (loading GS zeroes its base, set next).
    movw $0x1b, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    # GS base: this CPU's per-CPU block, whose first word points at itself and whose
    # second at its object-model binding.
    movq %r12, %rax
    imulq ${cpu_size}, %rax
    leaq {cpus}(%rip), %rbx
    addq %rax, %rbx
    movq %rbx, (%rbx)
    leaq {ebb}(%rbx), %rax
    movq %rax, {ebb_current}(%rbx)
    movl $0xC0000101, %ecx
    movl %ebx, %eax
    movq %rbx, %rdx
    shrq $32, %rdx
    wrmsr
    # The TSS: its ring-0 stack (RSP0), the I/O bitmap's offset and terminating byte.
    movq %r12, %rax
    imulq ${tss_stride}, %rax
    leaq tss_area(%rip), %rbx
    addq %rax, %rbx
    movq %r12, %rax
    incq %rax
    imulq ${int_stack}, %rax
    leaq int_stacks(%rip), %rcx
    addq %rcx, %rax
    movq %rax, 4(%rbx)
    movw $104, 102(%rbx)
    movb $0xff, {tss_limit}(%rbx)
    # Its descriptor, GDT entry 0x28 + 16 x index (a 64-bit TSS, available).
    movq %r12, %rcx
    shlq $4, %rcx
    leaq boot_gdt+0x28(%rip), %rax
    addq %rax, %rcx
    movq %rbx, %rax
    andq $0xffffff, %rax
    shlq $16, %rax
    orq ${tss_limit}, %rax
    movabsq $0x0000890000000000, %rdx
    orq %rdx, %rax
    movq %rbx, %rdx
    shrq $24, %rdx
    andq $0xff, %rdx
    shlq $56, %rdx
    orq %rdx, %rax
    movq %rax, (%rcx)
    movq %rbx, %rax
    shrq $32, %rax
    movq %rax, 8(%rcx)
    movq %r12, %rax
    shlq $4, %rax
    addq $0x28, %rax
    ltr %ax
    lidt idt_pointer(%rip)
    # Into ring 3 with interrupts on: SS, RSP, RFLAGS, CS, RIP.
    pushq $0x1b
    pushq %r14
    pushq $0x202
    pushq $0x23
    pushq %r13
    iretq

    .section .data.boot, "aw"
    .balign 8
    .global boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    # 0x08: 64-bit code, ring 0
    .quad 0x00CF92000000FFFF    # 0x10: data, ring 0
    .quad 0x00CFF2000000FFFF    # 0x18: data, ring 3
    .quad 0x00AFFA000000FFFF    # 0x20: 64-bit code, ring 3
    .skip 16 * {max_cpus}       # 0x28: each CPU's TSS descriptor (filled by the CPU)
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
idt_pointer:
    .word 256 * 16 - 1
    .quad {idt}

    .section .rodata.boot, "a"
    # The boot CPU's 64-bit continuation, as a far pointer (offset, selector).
bsp_long_mode_target:
    .long bsp_long_mode
    .word 0x08

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
boot_stack:
    .skip 65536
boot_stack_top:
    .balign 4096
tss_area:
    .skip {tss_stride} * {max_cpus}
    .balign 4096
int_stacks:
    .skip {int_stack} * {max_cpus}
    "#,
    cpu_size = const super::percpu::CPU_SIZE,
    ebb = const super::percpu::EBB_OFFSET,
    ebb_current = const super::percpu::EBB_CURRENT_OFFSET,
    cpus = sym super::percpu::CPUS,
    tss_stride = const TSS_STRIDE,
    tss_limit = const TSS_LIMIT,
    int_stack = const INT_STACK,
    max_cpus = const super::percpu::MAX_CPUS,
    idt = sym super::idt::IDT,
    options(att_syntax)
);
