/* ELF64 start-up (entered in long mode, identity map of the first 4 GiB, RDI = Multiboot
 * info), and the 64-bit exception/interrupt stubs. */
.include "start_common.inc"

.section .text
.code64
.global _start
_start:
    mov $stack_top, %rsp
    mov %edi, rt_mbi(%rip)
    cld
    call main
    mov %eax, %edi
    call exit

    ALL_VECTORS STUB

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
    call rt_trap
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
.global isr_stub_table
isr_stub_table:
    ALL_VECTORS STUB_ADDR64
.section .note.GNU-stack, "", @progbits
