/*
 * Ferry's KVM guest program: a deterministic memory writer.
 *
 * vCPU v keeps a splitmix64 generator seeded from (seed, v). Step s draws r, picks the working
 * page first + (r * pages >> 64), reads the 8 bytes at page * 4096 + v * 64 + (s % 8) * 8,
 * writes back mix(old ^ r) and folds that value into its checksum:
 * checksum = mix(checksum ^ value) + s. Because every value depends on what the page held, a
 * page lost or stale after a migration changes every later checksum. Time decides only how many
 * steps run (the VMM hands out write budgets through REG_BUDGET), never which: the checksum
 * after s steps depends on the seed, the memory size and the initial memory only.
 *
 * Every PARAM_PRINT_INTERVAL steps it prints "kvm-guest: vcpu V step S checksum 0x...", and when
 * the VMM answers BUDGET_FINISHED it prints "kvm-guest: vcpu V done step S checksum 0x..." and
 * halts through REG_HALT (it runs at CPL 3, where hlt faults).
 */
#include <stdint.h>
#include "layout.h"

struct status {
    volatile uint64_t step;
    volatile uint64_t checksum;
    uint64_t reserved[6];
};

struct line {
    uint32_t length;
    char text[124];
};

/* The barriers keep the compiler from moving memory accesses across a register access (the
 * VMM reads the console line and status record when the register access exits). */
static inline void write_register(uint32_t offset, uint32_t value) {
    __asm__ volatile("" : : : "memory");
    *(volatile uint32_t *)(LAYOUT_MMIO_BASE + offset) = value;
    __asm__ volatile("" : : : "memory");
}

static inline uint32_t read_register(uint32_t offset) {
    __asm__ volatile("" : : : "memory");
    uint32_t value = *(volatile uint32_t *)(LAYOUT_MMIO_BASE + offset);
    __asm__ volatile("" : : : "memory");
    return value;
}

static uint64_t param64(uint32_t index) {
    write_register(REG_PARAM_SELECT, index);
    uint64_t low = read_register(REG_PARAM_DATA);
    write_register(REG_PARAM_SELECT, index + 1);
    uint64_t high = read_register(REG_PARAM_DATA);
    return low | (high << 32);
}

static inline uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t next_random(uint64_t *state) {
    *state += 0x9e3779b97f4a7c15ULL;
    return mix(*state);
}

static void append_text(struct line *line, const char *text) {
    while (*text && line->length < sizeof line->text) line->text[line->length++] = *text++;
}

static void append_decimal(struct line *line, uint64_t value) {
    char digits[20];
    int count = 0;
    do {
        digits[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    while (count > 0 && line->length < sizeof line->text) line->text[line->length++] = digits[--count];
}

static void append_hex(struct line *line, uint64_t value) {
    append_text(line, "0x");
    for (int shift = 60; shift >= 0; shift -= 4) {
        if (line->length < sizeof line->text) line->text[line->length++] = "0123456789abcdef"[(value >> shift) & 15];
    }
}

static void print_progress(uint64_t vcpu, const char *what, uint64_t step, uint64_t checksum) {
    struct line line;
    line.length = 0;
    append_text(&line, "kvm-guest: vcpu ");
    append_decimal(&line, vcpu);
    append_text(&line, what);
    append_decimal(&line, step);
    append_text(&line, " checksum ");
    append_hex(&line, checksum);
    write_register(REG_LINE, (uint32_t)(uintptr_t)&line);
}

__attribute__((noreturn)) void guest_main(uint64_t vcpu) {
    const uint64_t seed = param64(PARAM_SEED);
    const uint64_t first = param64(PARAM_WORK_FIRST);
    const uint64_t pages = param64(PARAM_WORK_PAGES);
    const uint64_t interval = param64(PARAM_PRINT_INTERVAL);
    struct status *status = (struct status *)(LAYOUT_STATUS_BASE + vcpu * sizeof(struct status));
    uint64_t random = seed ^ mix(vcpu + 1);
    uint64_t step = 0;
    uint64_t checksum = 0;

    print_progress(vcpu, " step ", step, checksum);
    for (;;) {
        status->step = step;
        status->checksum = checksum;
        uint32_t budget = read_register(REG_BUDGET);
        if (budget == BUDGET_FINISHED) break;
        while (budget-- > 0) {
            uint64_t r = next_random(&random);
            uint64_t page = first + (uint64_t)(((unsigned __int128)r * pages) >> 64);
            volatile uint64_t *slot =
                (volatile uint64_t *)(page * GUEST_PAGE_SIZE + vcpu * 64 + (step & 7) * 8);
            uint64_t value = mix(*slot ^ r);
            *slot = value;
            checksum = mix(checksum ^ value) + step;
            step++;
            if (step % interval == 0) print_progress(vcpu, " step ", step, checksum);
        }
    }
    print_progress(vcpu, " done step ", step, checksum);
    for (;;) write_register(REG_HALT, 0);
}
