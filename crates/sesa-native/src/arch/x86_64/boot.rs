//! The way in: a 32-bit entry point for the PVH boot protocol (QEMU's `-kernel` with a
//! Xen `PHYS32_ENTRY` note, as `-M microvm` boots), which builds identity page tables
//! for the first 4 GiB (RAM below, and the devices' MMIO just under 4 GiB: the fourth
//! GiB is mapped uncached), turns on PAE, long mode, paging and SSE (Rust code uses SSE
//! registers), loads a 64-bit GDT, and calls `kernel_main(start_info)` on a 64 KiB stack.
//!
//! The CPU state on entry (PVH): 32-bit protected mode, paging off, flat segments, EBX
//! the physical address of `hvm_start_info`.

/// The 64-bit code segment of the boot GDT (every CPU runs on it).
pub const KERNEL_CS: u16 = 0x08;

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
    orl $0x83, %eax         # present, writable, page size
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
    orl $0x3, %eax
    movl %eax, boot_pdpt(,%ecx,8)
    movl $0, boot_pdpt+4(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jne 7b
    movl $boot_pdpt, %eax
    orl $0x3, %eax
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
    # 16-byte aligned here; the call pushes 8, as the ABI expects at a function's entry.
    movabsq $boot_stack_top, %rsp
    movl %esi, %edi
    call kernel_main
5:
    cli
    hlt
    jmp 5b

    .section .rodata.boot, "a"
    .balign 8
    .global boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    # 0x08: 64-bit code
    .quad 0x00CF92000000FFFF    # 0x10: data
boot_gdt_ptr:
    .word boot_gdt_ptr - boot_gdt - 1
    .long boot_gdt
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
    "#,
    options(att_syntax)
);
