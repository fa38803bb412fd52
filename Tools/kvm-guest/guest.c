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
 *
 * With a disk (PARAM_DISK_SECTORS > 0), vCPU 0 keeps a journal on it (docs/disk.md): on boot it
 * finds the journal's head, prints "disk: resumed at record N (boot B, clean shutdown: yes)"
 * and writes a boot record; every PARAM_JOURNAL_INTERVAL steps a step record with its 4 KiB
 * data block; on BUDGET_SHUTDOWN (or BUDGET_FINISHED) a clean-shutdown record and a flush
 * before it prints "kvm-guest: vcpu 0 shutdown step S checksum 0x..." and halts. The journal's
 * state lives on vCPU 0's stack and its buffers in guest memory: it migrates with the memory.
 *
 * Every vCPU measures its own load with rdtsc: the ticks it spends blocked in the REG_BUDGET
 * read (the VMM's pacing) against all ticks; about once a second (PARAM_TSC_HZ ticks) it writes
 * the working share in per mille to REG_LOAD. Reading the clock never changes which steps run.
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

static inline uint64_t read_tsc(void) {
    uint32_t low, high;
    __asm__ volatile("rdtsc" : "=a"(low), "=d"(high));
    return ((uint64_t)high << 32) | low;
}

/* A vCPU's load interval: when it began and the ticks spent blocked in REG_BUDGET since. */
struct load_meter {
    uint64_t start;
    uint64_t blocked;
    uint64_t interval;
};

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

static void print_line(struct line *line) { write_register(REG_LINE, (uint32_t)(uintptr_t)line); }

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

/* Counts a budget read that began at `before` and ended at `after`; at the end of an interval
 * publishes the working share in per mille. A clock that went backwards or jumped (a restore on
 * another host) starts a new interval without publishing. */
static void load_account(struct load_meter *m, uint64_t before, uint64_t after) {
    if (after < before || before < m->start || after - m->start > 10 * m->interval) {
        m->start = after;
        m->blocked = 0;
        return;
    }
    m->blocked += after - before;
    uint64_t elapsed = after - m->start;
    if (elapsed < m->interval) return;
    uint64_t working = elapsed > m->blocked ? elapsed - m->blocked : 0;
    write_register(REG_LOAD, (uint32_t)(working * 1000 / elapsed));
    m->start = after;
    m->blocked = 0;
}

/* ---- the disk journal (docs/disk.md; Sources/FerryGuest/DiskJournalFormat.swift is the same format) */

struct disk_request {
    uint64_t sector;
    uint32_t count;
    uint32_t command;
    uint64_t buffer;
    uint32_t status;
    uint32_t reserved;
};

struct journal {
    uint64_t sectors;         /* the disk's capacity; 0: no journal */
    uint64_t ring;            /* J: ring sectors */
    uint64_t seed;
    uint64_t data_blocks;
    uint64_t next_seq;
    uint64_t boot;
    uint64_t interval;        /* steps between step records */
};

#define SUPERBLOCK_MAGIC 0x4c4e4a5952524546ULL /* "FERRYJNL" */
#define RECORD_MAGIC     0x31524a46ULL         /* "FJR1" */
#define KIND_BOOT        1
#define KIND_STEP        2
#define KIND_SHUTDOWN    3

static volatile uint64_t *const sector_buffer = (volatile uint64_t *)LAYOUT_DISK_SECTOR;
static volatile uint64_t *const block_buffer = (volatile uint64_t *)LAYOUT_DISK_BLOCK;

static uint32_t disk_io(uint32_t command, uint64_t sector, uint32_t count, uint64_t buffer) {
    volatile struct disk_request *request = (volatile struct disk_request *)LAYOUT_DISK_REQUEST;
    request->sector = sector;
    request->count = count;
    request->command = command;
    request->buffer = buffer;
    request->status = 0xffffffffU;
    write_register(REG_DISK_REQUEST, (uint32_t)LAYOUT_DISK_REQUEST);
    return request->status;
}

/* h = 0x6a09e667f3bcc908; for each 8-byte word w at offset o: h = mix(h ^ w) + o. */
static uint64_t journal_hash(volatile uint64_t *words, uint64_t bytes) {
    uint64_t h = 0x6a09e667f3bcc908ULL;
    for (uint64_t offset = 0; offset < bytes; offset += 8) h = mix(h ^ words[offset / 8]) + offset;
    return h;
}

static uint64_t ring_sector(const struct journal *j, uint64_t seq) { return 1 + (seq - 1) % j->ring; }

/* The record in `s` (read from ring sector `sector`): its seq, or 0 if none. */
static uint64_t record_seq(const struct journal *j, uint64_t sector, volatile uint64_t *s) {
    if (journal_hash(s, 504) != s[63]) return 0;
    if ((s[0] & 0xffffffffULL) != RECORD_MAGIC) return 0;
    uint64_t kind = s[0] >> 32;
    if (kind < KIND_BOOT || kind > KIND_SHUTDOWN) return 0;
    uint64_t seq = s[1];
    if (seq == 0 || ring_sector(j, seq) != sector) return 0;
    for (uint64_t offset = 56; offset < 504; offset += 8) {
        if (s[offset / 8] != mix(seq + offset)) return 0;
    }
    return seq;
}

static void print_disk(const char *what, uint64_t value) {
    struct line line;
    line.length = 0;
    append_text(&line, "disk: ");
    append_text(&line, what);
    append_decimal(&line, value);
    print_line(&line);
}

static int journal_write_sector(struct journal *j, uint64_t sector, uint32_t count, uint64_t buffer) {
    uint32_t status = disk_io(DISK_WRITE, sector, count, buffer);
    if (status == DISK_OK) return 1;
    print_disk("write failed, journal stopped; status ", status);
    j->sectors = 0;
    return 0;
}

/* Writes record next_seq of `kind` (a step record's data block first). */
static void journal_append(struct journal *j, uint64_t kind, uint64_t progress, uint64_t checksum) {
    if (j->sectors == 0) return;
    uint64_t seq = j->next_seq;
    uint64_t data_offset = 0, data_hash = 0;
    if (kind == KIND_STEP) {
        for (uint64_t i = 0; i < 512; i++) block_buffer[i] = mix(j->seed + seq * 0x9e3779b97f4a7c15ULL + i);
        data_hash = journal_hash(block_buffer, 4096);
        uint64_t sector = 1 + j->ring + (mix(j->seed ^ seq) % j->data_blocks) * 8;
        data_offset = sector * 512;
        if (!journal_write_sector(j, sector, 8, LAYOUT_DISK_BLOCK)) return;
    }
    volatile uint64_t *s = sector_buffer;
    s[0] = RECORD_MAGIC | (kind << 32);
    s[1] = seq;
    s[2] = j->boot;
    s[3] = progress;
    s[4] = checksum;
    s[5] = data_offset;
    s[6] = data_hash;
    for (uint64_t offset = 56; offset < 504; offset += 8) s[offset / 8] = mix(seq + offset);
    s[63] = journal_hash(s, 504);
    if (!journal_write_sector(j, ring_sector(j, seq), 1, LAYOUT_DISK_SECTOR)) return;
    j->next_seq = seq + 1;
}

static void journal_flush(struct journal *j) {
    if (j->sectors != 0 && disk_io(DISK_FLUSH, 0, 0, 0) != DISK_OK) print_disk("flush failed", 0);
}

/* Reads the superblock (writing one on a fresh disk), finds the head, prints where it resumed
 * and writes the boot record. */
static void journal_open(struct journal *j, uint64_t seed) {
    volatile uint64_t *s = sector_buffer;
    if (disk_io(DISK_READ, 0, 1, LAYOUT_DISK_SECTOR) != DISK_OK) {
        print_disk("cannot read sector ", 0);
        j->sectors = 0;
        return;
    }
    uint64_t any = 0;
    for (int i = 0; i < 64; i++) any |= s[i];
    if (any == 0) {
        j->ring = (j->sectors - 1) / 2 < 4096 ? (j->sectors - 1) / 2 : 4096;
        j->seed = seed;
        s[0] = SUPERBLOCK_MAGIC;
        s[1] = 1 | (j->ring << 32);
        s[2] = seed;
        for (int i = 3; i < 63; i++) s[i] = 0;
        s[63] = journal_hash(s, 504);
        if (!journal_write_sector(j, 0, 1, LAYOUT_DISK_SECTOR)) return;
    } else if (s[0] != SUPERBLOCK_MAGIC || journal_hash(s, 504) != s[63] || (s[1] & 0xffffffffULL) != 1) {
        print_disk("sector 0 is not a Ferry journal; the disk is left alone, sectors ", j->sectors);
        j->sectors = 0;
        return;
    } else {
        j->ring = s[1] >> 32;
        j->seed = s[2];
    }
    j->data_blocks = (j->sectors - 1 - j->ring) / 8;
    /* The oldest intact record (the ring read 8 sectors per request into the block buffer),
     * then its successors while each is intact in its own sector. */
    uint64_t oldest = 0;
    for (uint64_t first = 1; first <= j->ring; first += 8) {
        uint64_t count = j->ring - first + 1 < 8 ? j->ring - first + 1 : 8;
        if (disk_io(DISK_READ, first, (uint32_t)count, LAYOUT_DISK_BLOCK) != DISK_OK) break;
        for (uint64_t i = 0; i < count; i++) {
            uint64_t seq = record_seq(j, first + i, block_buffer + i * 64);
            if (seq != 0 && (oldest == 0 || seq < oldest)) oldest = seq;
        }
    }
    uint64_t head = oldest, boot = 0, kind = 0;
    if (oldest != 0) {
        while (head - oldest + 1 < j->ring) {
            uint64_t sector = ring_sector(j, head + 1);
            if (disk_io(DISK_READ, sector, 1, LAYOUT_DISK_SECTOR) != DISK_OK) break;
            if (record_seq(j, sector, sector_buffer) != head + 1) break;
            head++;
        }
        disk_io(DISK_READ, ring_sector(j, head), 1, LAYOUT_DISK_SECTOR);
        boot = s[2];
        kind = s[0] >> 32;
        struct line line;
        line.length = 0;
        append_text(&line, "disk: resumed at record ");
        append_decimal(&line, head);
        append_text(&line, " (boot ");
        append_decimal(&line, boot);
        append_text(&line, kind == KIND_SHUTDOWN ? ", clean shutdown: yes)" : ", clean shutdown: no)");
        print_line(&line);
    } else {
        print_disk("new journal (no records yet), sectors ", j->sectors);
    }
    j->next_seq = head + 1;
    j->boot = boot + 1;
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
    struct journal journal;
    journal.sectors = vcpu == 0 ? param64(PARAM_DISK_SECTORS) : 0;
    journal.interval = param64(PARAM_JOURNAL_INTERVAL);
    if (journal.interval == 0) journal.interval = 1;
    if (journal.sectors != 0) {
        journal_open(&journal, seed);
        journal_append(&journal, KIND_BOOT, step, checksum);
        journal_flush(&journal);
    }

    print_progress(vcpu, " step ", step, checksum);
    struct load_meter load;
    load.interval = param64(PARAM_TSC_HZ);
    if (load.interval == 0) load.interval = 2000000000ULL;
    load.start = read_tsc();
    load.blocked = 0;
    uint32_t budget;
    for (;;) {
        status->step = step;
        status->checksum = checksum;
        uint64_t before = read_tsc();
        budget = read_register(REG_BUDGET);
        load_account(&load, before, read_tsc());
        if (budget == BUDGET_FINISHED || budget == BUDGET_SHUTDOWN) break;
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
            if (journal.sectors != 0 && step % journal.interval == 0) {
                journal_append(&journal, KIND_STEP, step, checksum);
            }
        }
    }
    journal_append(&journal, KIND_SHUTDOWN, step, checksum);
    journal_flush(&journal);
    print_progress(vcpu, budget == BUDGET_SHUTDOWN ? " shutdown step " : " done step ", step, checksum);
    for (;;) write_register(REG_HALT, 0);
}
