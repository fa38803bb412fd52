/*
 * The bench's QEMU guest: a multiboot kernel that dirties guest memory the way Ferry's built-in
 * guest does for the workload uniform:RATE (Sources/FerryGuest/VCPUProgram.swift, VCPURunner.swift),
 * so that QEMU can be measured migrating a guest that writes at the same rate.
 *
 * Pattern (one vCPU, the whole rate; Ferry's built-in guest splits the rate over its vCPUs):
 * a splitmix64 generator seeded with hash(seed, 0x56435055 + 0), Ferry's VCPUState.initial for
 * vCPU 0. Step s draws r, takes page first + (r * pages >> 64) (Lemire's multiply-high, as
 * Mixing.bounded), and writes 16 bytes at byte (s % 4) * 16 of that page: s and
 * hash(hash(seed, 0), s), little-endian (VCPUProgram.write). Pages are drawn with replacement,
 * uniformly over [first, end): from 2 MiB (below is this program, its stack and the firmware's
 * low memory) to the end of RAM below 4 GiB.
 *
 * Pacing: Ferry's credit scheme with the TSC as clock. Running time accrues as credit, at most
 * 10 ms (or one step) of it; a step costs tsc_hz * 4096 / rate ticks; the guest takes steps while
 * its credit pays for them, at most 4096 before it reads the clock again, and otherwise halts
 * until the next 1 kHz PIT tick (so that it uses no host CPU while it waits, as Ferry's vCPU
 * threads sleep). The TSC's rate is measured at boot against PIT channel 2 (median of 5 × 50 ms).
 * Under TCG the guest's TSC follows the host's clock while the VM runs and stands still while it
 * is stopped, and it carries over in a migration: a stopped guest (downtime) earns no credit.
 * QEMU's auto-converge throttle takes running time away (the vCPU sleeps P/(100-P) × 10 ms after
 * every 10 ms); this guest needs little CPU, so it loses steps only when a sleep is longer than
 * its 10 ms of credit, i.e. above 50%. (Ferry's built-in guest instead runs at (100-P)% of its
 * rate when throttled by P%.)
 *
 * Progress goes to COM1 (0x3f8): first
 *   "ferry-qemu-guest: ready tsc_hz=H rate=B first=P end=Q seed=S"
 * then every interval (default 50 ms of TSC)
 *   "steps=N tsc=T ticks=K"
 * N = steps taken (pages written) since boot, T = the TSC when N was read, K = PIT ticks seen. The bench stamps each
 * line with its arrival time and so maps the guest's TSC onto its own clock.
 *
 * Command line (-append): rate=BYTES_PER_S ram_mib=M [seed=S] [interval_ms=I]
 * rate=0 means idle: no writes, progress lines only.
 *
 * Every page it writes, and its own stack, leave the TLB at once (invlpg): see "TCG's dirty
 * tracking" below.
 *
 * Built by Tools/bench/benchlib/qemuguest.py: gcc -m32 -ffreestanding -nostdlib, ld -m elf_i386.
 * 64-bit divisions would need libgcc: the only division is udiv64_32 (divl).
 */
#include <stdint.h>

#define COM1 0x3f8
#define PAGE 4096u
#define FIRST_PAGE 512u /* 2 MiB */
#define BATCH 4096u
#define PIT_HZ 1193182u

extern volatile uint32_t timer_ticks;
extern const char stack[], stack_top[];
extern void irq_timer(void);
extern void irq_other(void);
extern const uint32_t exception_stubs[32];

static inline void outb(uint16_t port, uint8_t value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }

static inline uint8_t inb(uint16_t port) {
    uint8_t value;
    __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

static inline uint64_t rdtsc(void) {
    uint32_t low, high;
    __asm__ volatile("rdtsc" : "=a"(low), "=d"(high));
    return ((uint64_t)high << 32) | low;
}

/* n / d for a 64-bit n and a 32-bit d > 0, in two divl steps (no libgcc). */
static uint64_t udiv64_32(uint64_t n, uint32_t d) {
    uint32_t high = (uint32_t)(n >> 32), low = (uint32_t)n, q_high = high / d, r = high % d, q_low;
    __asm__("divl %4" : "=a"(q_low), "=d"(r) : "a"(low), "d"(r), "rm"(d));
    return ((uint64_t)q_high << 32) | q_low;
}

/* ---- Ferry's Mixing (splitmix64) */

static const uint64_t golden = 0x9e3779b97f4a7c15ULL;

static inline uint64_t finalize(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t hash2(uint64_t a, uint64_t b) { return finalize(finalize(a + golden) ^ (b * 0xd6e8feb86659fd93ULL)); }

static inline uint64_t next_random(uint64_t *state) {
    *state += golden;
    return finalize(*state);
}

/* (r * bound) >> 64 for bound < 2^32. */
static inline uint32_t bounded(uint64_t r, uint32_t bound) {
    uint64_t low = (uint64_t)(uint32_t)r * bound, high = (r >> 32) * bound;
    return (uint32_t)((high + (low >> 32)) >> 32);
}

/* ---- TCG's dirty tracking
 *
 * Under TCG, QEMU notices a guest's write to a page that migration counts as clean only when the
 * write misses the vCPU's software TLB (the refill marks the entry "not dirty" and the next write
 * takes the slow path, which sets the page's dirty bit). QEMU 7.2 clears the migration bitmap at a
 * pass's sync without invalidating TLB entries that are already writable, so a page the guest keeps
 * writing while its entry stays in the TLB is not sent again: without the invlpg below, the
 * guest's own stack (its step counter) arrived ~150,000 steps old on the destination. So the guest
 * drops the TLB entry of every page it wrote, and of its own stack and tick counter on every
 * round of its loop: each write is then seen, as a hardware vCPU's is by KVM's dirty log. */

static inline void invlpg(const void *address) { __asm__ volatile("invlpg (%0)" : : "r"(address) : "memory"); }

static void flush_own_pages(void) {
    for (uint32_t page = (uint32_t)stack & ~(PAGE - 1); page < (uint32_t)stack_top; page += PAGE) {
        invlpg((const void *)page);
    }
    invlpg((const void *)&timer_ticks);
}

/* ---- serial */

static void serial_init(void) {
    outb(COM1 + 1, 0x00); /* no UART interrupts */
    outb(COM1 + 3, 0x80); /* divisor latch */
    outb(COM1 + 0, 0x01); /* 115200 */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); /* 8N1 */
    outb(COM1 + 2, 0x07); /* FIFO on, cleared */
}

static void put_char(char c) {
    for (uint32_t spin = 0; spin < 1000000 && (inb(COM1 + 5) & 0x20) == 0; spin++) {
    }
    outb(COM1, (uint8_t)c);
}

static void put_text(const char *text) {
    while (*text) put_char(*text++);
}

static void put_decimal(uint64_t value) {
    char digits[21];
    int count = 0;
    do {
        uint64_t q = udiv64_32(value, 10);
        digits[count++] = (char)('0' + (uint32_t)(value - q * 10));
        value = q;
    } while (value != 0);
    while (count > 0) put_char(digits[--count]);
}

__attribute__((noreturn)) void guest_exception(uint32_t vector) {
    __asm__ volatile("cli");
    put_text("ferry-qemu-guest: CPU exception ");
    put_decimal(vector);
    put_text(", stopped\n");
    for (;;) __asm__ volatile("hlt");
}

/* ---- the command line */

/* The length of `prefix` if `s` starts with it, else 0. */
static uint32_t starts_with(const char *s, const char *prefix) {
    uint32_t n = 0;
    while (prefix[n]) {
        if (s[n] != prefix[n]) return 0;
        n++;
    }
    return n;
}

/* The value of "key=" in the command line, or `fallback`. */
static uint64_t option(const char *cmdline, const char *key, uint64_t fallback) {
    if (cmdline == 0) return fallback;
    const char *p = cmdline;
    while (*p) {
        while (*p == ' ') p++;
        uint32_t length = starts_with(p, key);
        if (length && p[length] == '=') {
            const char *q = p + length;
            {
                uint64_t value = 0;
                for (q++; *q >= '0' && *q <= '9'; q++) value = value * 10 + (uint64_t)(*q - '0');
                return value;
            }
        }
        while (*p && *p != ' ') p++;
    }
    return fallback;
}

/* ---- interrupts: PIC remapped to 0x20, PIT channel 0 at ~1 kHz; the IDT lives in .bss */

struct idt_entry {
    uint16_t offset_low, selector;
    uint8_t zero, flags;
    uint16_t offset_high;
} __attribute__((packed));

static struct idt_entry idt[48];

static void set_gate(int vector, uint32_t handler) {
    idt[vector].offset_low = (uint16_t)handler;
    idt[vector].selector = 0x08;
    idt[vector].zero = 0;
    idt[vector].flags = 0x8e; /* present, ring 0, 32-bit interrupt gate */
    idt[vector].offset_high = (uint16_t)(handler >> 16);
}

static void interrupts_init(void) {
    for (int v = 0; v < 32; v++) set_gate(v, exception_stubs[v]);
    set_gate(0x20, (uint32_t)irq_timer);
    for (int v = 0x21; v < 0x30; v++) set_gate(v, (uint32_t)irq_other);
    struct {
        uint16_t limit;
        uint32_t base;
    } __attribute__((packed)) descriptor = {sizeof idt - 1, (uint32_t)idt};
    __asm__ volatile("lidt %0" : : "m"(descriptor));
    /* 8259s: vectors 0x20 (master) and 0x28 (slave), only IRQ 0 unmasked */
    outb(0x20, 0x11);
    outb(0xa0, 0x11);
    outb(0x21, 0x20);
    outb(0xa1, 0x28);
    outb(0x21, 0x04);
    outb(0xa1, 0x02);
    outb(0x21, 0x01);
    outb(0xa1, 0x01);
    outb(0x21, 0xfe);
    outb(0xa1, 0xff);
    /* PIT channel 0: rate generator, 1193 counts = 0.99984 ms */
    outb(0x43, 0x34);
    outb(0x40, 1193 & 0xff);
    outb(0x40, 1193 >> 8);
    __asm__ volatile("sti");
}

/* TSC ticks during 50 ms of PIT channel 2 counting down (mode 0, polled on port 0x61). */
static uint64_t tsc_per_50ms(void) {
    const uint32_t count = PIT_HZ / 20;
    outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01)); /* gate 2 on, speaker off */
    outb(0x43, 0xb0);                                  /* channel 2, low then high byte, mode 0 */
    outb(0x42, (uint8_t)count);
    outb(0x42, (uint8_t)(count >> 8));
    uint64_t start = rdtsc();
    while ((inb(0x61) & 0x20) == 0) {
    }
    return rdtsc() - start;
}

/* TSC ticks per second: the median of 5 measurements (the host may hold the vCPU thread off the
 * CPU during one, which stretches it). */
static uint64_t measure_tsc_hz(void) {
    uint64_t m[5];
    for (int i = 0; i < 5; i++) {
        uint64_t v = tsc_per_50ms();
        int j = i;
        for (; j > 0 && m[j - 1] > v; j--) m[j] = m[j - 1];
        m[j] = v;
    }
    return udiv64_32(m[2] * PIT_HZ, PIT_HZ / 20);
}

struct multiboot_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
};

__attribute__((noreturn)) void guest_main(uint32_t magic, const struct multiboot_info *info) {
    serial_init();
    interrupts_init();
    const char *cmdline = magic == 0x2badb002 && (info->flags & 4) ? (const char *)info->cmdline : 0;
    uint64_t rate = option(cmdline, "rate", 0);
    uint64_t ram_mib = option(cmdline, "ram_mib", 0);
    uint64_t seed = option(cmdline, "seed", 1);
    uint64_t interval_ms = option(cmdline, "interval_ms", 50);
    /* The end of RAM below 4 GiB: the smaller of ram_mib and what the firmware reports. */
    uint32_t end = ram_mib ? (uint32_t)(ram_mib * 256 < 0x100000 ? ram_mib * 256 : 0x100000) : 0x100000;
    if (magic == 0x2badb002 && (info->flags & 1)) {
        uint32_t reported = (info->mem_upper / 4) + 256; /* mem_upper: KiB above 1 MiB */
        if (reported < end) end = reported;
    }
    if (end <= FIRST_PAGE + 1) {
        put_text("ferry-qemu-guest: no RAM above 2 MiB\n");
        guest_exception(255);
    }
    const uint32_t pages = end - FIRST_PAGE;
    const uint64_t tsc_hz = measure_tsc_hz();
    /* credit and step cost in 1/256 TSC ticks */
    const uint64_t cost = rate ? udiv64_32(tsc_hz * PAGE * 256, (uint32_t)rate) : 0;
    const uint64_t ten_ms = udiv64_32(tsc_hz * 256, 100);
    const uint64_t cap = cost > ten_ms ? cost : ten_ms;
    const uint64_t interval = udiv64_32(tsc_hz * interval_ms, 1000);
    const uint64_t value_seed = hash2(seed, 0);
    uint64_t random = hash2(seed, 0x56435055ULL);
    uint64_t step = 0;

    put_text("ferry-qemu-guest: ready tsc_hz=");
    put_decimal(tsc_hz);
    put_text(" rate=");
    put_decimal(rate);
    put_text(" first=");
    put_decimal(FIRST_PAGE);
    put_text(" end=");
    put_decimal(end);
    put_text(" seed=");
    put_decimal(seed);
    put_text("\n");

    uint64_t last = rdtsc(), next_print = last, credit = 0;
    for (;;) {
        flush_own_pages();
        uint64_t now = rdtsc();
        if (now >= next_print) {
            put_text("steps=");
            put_decimal(step);
            put_text(" tsc=");
            put_decimal(now);
            put_text(" ticks=");
            put_decimal(timer_ticks);
            put_text("\n");
            next_print = now + interval;
        }
        if (cost == 0) {
            __asm__ volatile("hlt");
            continue;
        }
        credit += (now - last) << 8;
        if (credit > cap) credit = cap;
        last = now;
        if (credit < cost) {
            __asm__ volatile("hlt"); /* until the next PIT tick, at most 1 ms */
            continue;
        }
        for (uint32_t done = 0; done < BATCH && credit >= cost; done++) {
            uint32_t page = FIRST_PAGE + bounded(next_random(&random), pages);
            volatile uint64_t *slot = (volatile uint64_t *)(page * PAGE + ((uint32_t)step & 3) * 16);
            slot[0] = step;
            slot[1] = hash2(value_seed, step);
            invlpg((const void *)slot);
            step++;
            credit -= cost;
        }
    }
}
