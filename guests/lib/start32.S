/* Multiboot v1 start-up for i386 guests, and the exception/interrupt stubs. */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* page-align modules, provide memory info */

.section .multiboot, "a"
.align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

.include "start_common.inc"

.section .text
.global _start
_start:
    mov $stack_top, %esp
    mov %ebx, rt_mbi
    cld
    call main
    push %eax
    call exit

    ALL_VECTORS STUB

isr_common:
    pusha
    push %esp
    call rt_trap
    add $4, %esp
    popa
    add $8, %esp
    iret

.section .data
.global isr_stub_table
isr_stub_table:
    ALL_VECTORS STUB_ADDR32
.section .note.GNU-stack, "", @progbits
