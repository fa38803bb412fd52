/*
 * The program runs in 64-bit mode at CPL 3, interrupts off, and talks to the VMM through an
 * MMIO page (no memory behind it: every access exits to the VMM). User mode, not ring 0: under
 * a software-virtualising KVM (PVM, as on nested hosts without hardware nesting) guest
 * supervisor code is emulated instruction by instruction, user code runs natively; and port
 * I/O from user mode faults there, MMIO does not.
 *
 * Guest-physical layout and MMIO registers shared by the guest program and Ferry's VMM
 * (Sources/FerryKVM/KVMGuestLayout.swift mirrors these values; a test checks that the VMM
 * and the program agree by running it).
 *
 *   0x000000  zero page (unused)
 *   0x001000  GDT: null, kernel code (0x08), kernel data (0x10), user code (0x1b), user data (0x23)
 *   0x002000  PML4
 *   0x003000  PDPT
 *   0x004000  page directories, 2 MiB pages, one per GiB of guest memory (at most 64)
 *   0x050000  status records, 64 bytes per vCPU: step, checksum (the guest writes them before
 *             each budget request; the VMM reads them)
 *   0x100000  this program (at most 512 KiB), entry point at its first byte
 *   0x180000  stacks, 8 KiB per vCPU; vCPU v starts with rsp = 0x200000 - v * 0x2000
 *   0x200000  working area: every page from here to the end of guest memory
 *   64 GiB    the VMM's MMIO page (above the largest guest memory; mapped by page directory 64)
 */
#ifndef KVM_GUEST_LAYOUT_H
#define KVM_GUEST_LAYOUT_H

#define LAYOUT_STATUS_BASE   0x50000UL
#define LAYOUT_PROGRAM_BASE  0x100000UL
#define LAYOUT_STACK_TOP     0x200000UL
#define LAYOUT_STACK_SIZE    0x2000UL
#define LAYOUT_WORK_BASE     0x200000UL
#define LAYOUT_MMIO_BASE     0x1000000000UL
#define GUEST_PAGE_SIZE      4096UL

/* MMIO registers, 32-bit accesses at LAYOUT_MMIO_BASE + offset. */
/* write: index of the parameter that REG_PARAM_DATA returns next. */
#define REG_PARAM_SELECT     0x00
/* read: the selected parameter (32-bit halves of 64-bit values, low half first). */
#define REG_PARAM_DATA       0x04
/* read: how many writes the guest may do now; blocks in the VMM for pacing.
 * 0: none now, ask again. BUDGET_FINISHED: print the final line and halt. */
#define REG_BUDGET           0x08
/* write: guest-physical address of a console line {u32 length; char bytes[length]}. */
#define REG_LINE             0x0c

#define BUDGET_FINISHED      0xffffffffU
/* write: this vCPU is finished; the VMM stops running it (hlt faults at CPL 3). */
#define REG_HALT             0x10

#define PARAM_SEED           0  /* 64-bit: 0 low, 1 high */
#define PARAM_WORK_FIRST     2  /* 64-bit: first page of the working area */
#define PARAM_WORK_PAGES     4  /* 64-bit: pages in the working area */
#define PARAM_PRINT_INTERVAL 6  /* 64-bit: steps between progress lines */

#endif
