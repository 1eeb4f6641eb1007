/* Start-up of the ktest_* kernels, in the style of kvm-unit-tests: a Multiboot v1 image
 * (linked as x86_64, converted to ELF32 so that GRUB and QEMU's -kernel accept it) whose
 * 32-bit entry builds an identity map of the first 4 GiB, enters long mode itself and calls
 * ktest_main(magic, mbi) on COM1's runtime; its return value is the exit code (ktest_exit).
 *
 * Entry state (Multiboot specification 0.6.96, section 3.2): EAX = 0x2BADB002, EBX = the
 * physical address of the Multiboot information, flat 32-bit protected mode, paging off,
 * interrupts off; the GDT the loader left may be gone, so we load our own before any segment
 * load. Long mode as in the SDM volume 3, section 10.8.5 (initializing IA-32e mode): CR4.PAE,
 * CR3, EFER.LME, CR0.PG, then a far jump to a 64-bit code segment. */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* page-align modules, provide memory info */

.section .multiboot, "a"
.align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

/* The boot stack and the exception stubs for vectors 0..63 (they jump to isr_common). */
.include "start_common.inc"

.section .text
.code32
.global _start
_start:
    cli
    cld
    mov $stack_top, %esp
    mov %eax, kt_mb_magic
    mov %ebx, kt_mb_info
    lgdt boot_gdt_desc
    ljmp $0x18, $1f
1:  mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs

    /* kt_pml4[0] -> kt_pdpt; kt_pdpt[0..3] -> kt_pd (4 pages of 512 entries); every entry of
     * kt_pd maps 2 MiB (PS). The upper levels allow user access (U/S = 1), so the leaf entry
     * alone decides; leaves start supervisor-only, and the top GiB (local APIC, IOAPIC, HPET)
     * is uncached (PCD | PWT). */
    mov $kt_pdpt + 0x7, %eax
    mov %eax, kt_pml4
    mov $kt_pd + 0x7, %eax
    xor %ecx, %ecx
2:  mov %eax, kt_pdpt(, %ecx, 8)
    add $0x1000, %eax
    inc %ecx
    cmp $4, %ecx
    jne 2b
    xor %ecx, %ecx
3:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax /* P | RW | PS */
    cmp $1536, %ecx
    jb 4f
    or $0x18, %eax /* PCD | PWT from 3 GiB up */
4:  mov %eax, kt_pd(, %ecx, 8)
    inc %ecx
    cmp $2048, %ecx
    jne 3b

    mov %cr4, %eax
    or $0x20, %eax /* PAE */
    mov %eax, %cr4
    mov $kt_pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx /* IA32_EFER */
    rdmsr
    or $0x100, %eax /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax /* PG | PE */
    mov %eax, %cr0
    ljmp $0x08, $start64

.code64
start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $stack_top, %rsp
    mov kt_mb_info(%rip), %esi
    mov %rsi, rt_mbi(%rip)
    mov kt_mb_magic(%rip), %edi
    call ktest_main
    mov %eax, %edi
    call kt_exit

    ALL_VECTORS STUB

/* int 0x80 (a software interrupt: no error code) */
.global isr_int80
isr_int80:
    push $0
    push $0x80
    jmp isr_common

/* The frame that rt.h's struct frame describes (x86_64 layout), then ktest_trap(frame). */
isr_common:
    push %rax
    push %rcx
    push %rdx
    push %rbx
    push %rbp
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call ktest_trap
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rbp
    pop %rbx
    pop %rdx
    pop %rcx
    pop %rax
    add $16, %rsp
    iretq

.section .data
.align 8
/* 0x08: 64-bit code, 0x10: data, 0x18: 32-bit code (used until paging is on) */
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0x00CF9A000000FFFF
boot_gdt_end:
boot_gdt_desc:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

.global isr_stub_table
isr_stub_table:
    ALL_VECTORS STUB_ADDR64

.global kt_mb_magic, kt_mb_info
kt_mb_magic: .long 0
kt_mb_info: .long 0

.section .bss
.align 4096
.global kt_pml4, kt_pdpt, kt_pd
kt_pml4: .skip 4096
kt_pdpt: .skip 4096
kt_pd: .skip 4 * 4096
.section .note.GNU-stack, "", @progbits
