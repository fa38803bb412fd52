/* Multiboot (v1) entry of the bench's QEMU guest (guest.c): QEMU's -kernel loader enters here in
 * 32-bit protected mode, paging off, interrupts off, eax = the multiboot magic, ebx = the
 * multiboot information. We load our own flat GDT, clear .bss, set up a stack and call
 * guest_main(magic, info). The interrupt stubs are here too: the 1 kHz PIT tick (it only wakes
 * the guest from hlt and counts) and, for every CPU exception, a stub that reports and stops. */
    .section .multiboot, "a"
    .align 4
    .long 0x1badb002                /* magic */
    .long 0x00000002                /* flags: we want the memory fields */
    .long -(0x1badb002 + 0x00000002)

    .text
    .globl _start
_start:
    cli
    movl %eax, %esi                 /* the magic */
    lgdt gdt_descriptor
    ljmp $0x08, $1f
1:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movl $stack_top, %esp
    cld
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    pushl %ebx
    pushl %esi
    call guest_main
2:  cli
    hlt
    jmp 2b

/* IRQ 0 (vector 0x20): count the tick, end of interrupt to the master PIC. */
    .globl irq_timer
irq_timer:
    pushl %eax
    incl timer_ticks
    movb $0x20, %al
    outb %al, $0x20
    popl %eax
    iret

/* Any other PIC vector (0x21-0x2f; all masked, but a spurious IRQ 7/15 can still come). */
    .globl irq_other
irq_other:
    pushl %eax
    movb $0x20, %al
    outb %al, $0xa0
    outb %al, $0x20
    popl %eax
    iret

/* CPU exceptions: exception_stub_N pushes N and calls guest_exception(N), which never returns. */
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
exception_stub_\n:
    pushl $\n
    call guest_exception
    .endr

    .section .rodata
    .align 4
    .globl exception_stubs
exception_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .long exception_stub_\n
    .endr

    .align 8
gdt:
    .quad 0                         /* null */
    .quad 0x00cf9a000000ffff        /* 0x08: code, base 0, limit 4 GiB, 32-bit */
    .quad 0x00cf92000000ffff        /* 0x10: data, base 0, limit 4 GiB */
gdt_descriptor:
    .word gdt_descriptor - gdt - 1
    .long gdt

    .section .bss
    .align 16
    .globl timer_ticks
timer_ticks:
    .long 0
    .globl stack
stack:
    .skip 16384
    .globl stack_top
stack_top:
