/* Entry point. The VMM starts every vCPU here in 64-bit mode at CPL 3 with rsp = its stack
 * top and rdi = its vCPU index. guest_main never returns; if it did, the vCPU halts. */
    .section .text.entry, "ax"
    .globl _start
_start:
    call guest_main
    movabs $0x1000000010, %rdx     /* LAYOUT_MMIO_BASE + REG_HALT */
1:  movl %eax, (%rdx)
    jmp 1b
