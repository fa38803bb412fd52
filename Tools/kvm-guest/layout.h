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
 *   0x060000  the disk request (32 bytes) vCPU 0 hands to REG_DISK_REQUEST
 *   0x061000  vCPU 0's disk sector buffer (512 bytes)
 *   0x062000  vCPU 0's disk data block buffer (4 KiB)
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
#define LAYOUT_DISK_REQUEST  0x60000UL
#define LAYOUT_DISK_SECTOR   0x61000UL
#define LAYOUT_DISK_BLOCK    0x62000UL
#define LAYOUT_MMIO_BASE     0x1000000000UL
#define GUEST_PAGE_SIZE      4096UL

/* MMIO registers, 32-bit accesses at LAYOUT_MMIO_BASE + offset. */
/* write: index of the parameter that REG_PARAM_DATA returns next. */
#define REG_PARAM_SELECT     0x00
/* read: the selected parameter (32-bit halves of 64-bit values, low half first). */
#define REG_PARAM_DATA       0x04
/* read: how many writes the guest may do now; blocks in the VMM for pacing.
 * 0: none now, ask again. BUDGET_FINISHED: print the final line and halt. BUDGET_SHUTDOWN: a
 * graceful shutdown request: write the clean-shutdown record, flush the disk, print, halt. */
#define REG_BUDGET           0x08
/* write: guest-physical address of a console line {u32 length; char bytes[length]}. */
#define REG_LINE             0x0c

#define BUDGET_FINISHED      0xffffffffU
#define BUDGET_SHUTDOWN      0xfffffffeU
/* write: this vCPU is finished; the VMM stops running it (hlt faults at CPL 3). */
#define REG_HALT             0x10
/* write: guest-physical address of a disk request (struct disk_request in guest.c: u64 sector,
 * u32 count, u32 command, u64 buffer, u32 status, u32 reserved). The VMM carries it out before
 * the write completes (pread/pwrite between the disk and guest memory, or fdatasync) and stores
 * the status; everything the device knows is in guest memory. docs/disk.md. */
#define REG_DISK_REQUEST     0x14
#define DISK_READ            1
#define DISK_WRITE           2
#define DISK_FLUSH           3
#define DISK_OK              0
#define DISK_NO_DISK         1
#define DISK_OUT_OF_RANGE    2
#define DISK_BAD_BUFFER      3
#define DISK_IO_ERROR        4
#define DISK_BAD_COMMAND     5
#define DISK_MAX_SECTORS     2048
/* write: this vCPU's load over its last interval (about a second), in per mille: the share of
 * its time (rdtsc) spent working rather than blocked in the REG_BUDGET read (the VMM's
 * pacing). The VMM keeps each vCPU's last value (the vmm's status: guest_load_permille). */
#define REG_LOAD             0x18

#define PARAM_SEED           0  /* 64-bit: 0 low, 1 high */
#define PARAM_WORK_FIRST     2  /* 64-bit: first page of the working area */
#define PARAM_WORK_PAGES     4  /* 64-bit: pages in the working area */
#define PARAM_PRINT_INTERVAL 6  /* 64-bit: steps between progress lines */
#define PARAM_DISK_SECTORS   8  /* 64-bit: the disk's capacity in 512-byte sectors; 0: no disk */
#define PARAM_JOURNAL_INTERVAL 10 /* 64-bit: steps between journal step records (vCPU 0) */
#define PARAM_TSC_HZ         12 /* 64-bit: the guest's TSC ticks per second (0: unknown) */

#endif
