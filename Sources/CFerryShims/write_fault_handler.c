// The mprotect dirty tracker: PROT_READ on the tracked range, a SIGSEGV handler that makes the
// faulting page writable again and records it in a bitmap, and the harvest that takes the
// bitmap and re-protects what it took. Everything the handler touches is preallocated and
// accessed with lock-free atomics, and it calls only mprotect/sigaction/raise/write/abort
// (async-signal-safe).
//
// Ordering argument (why the handler unprotects FIRST and sets the bit SECOND):
// the harvester does, per bitmap word, "take the bits (exchange with 0), then mprotect(PROT_READ)
// the pages it took". Write W to page p faults; the handler runs:
//   (a) mprotect(p, RW)      (b) bits |= p
// If it were (b) then (a): the harvester could take the bit and re-protect p between (b) and
// (a); then (a) leaves p writable with its bit clear, so W and every later write to p would
// never fault again and never be reported: a lost write.
// With (a) then (b): either the harvester takes the bit after (b), reports p and re-protects it
// (if that happens before W retries, W faults again and is recorded again, a harmless repeat;
// if after, W landed before the harvest returned, so the engine's read after the harvest sees
// it), or it takes the word before (b): then p is not re-protected by this harvest and (b)
// makes the next harvest report it. In no order does a writable page end up with a clear bit
// without a harvest still to come that reports it.
// The same argument covers the overflow path (whole range made writable, THEN the flag set).
#define _GNU_SOURCE
#include "CFerryShims.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum {
    STATE_IDLE = 0,      // slot unused
    STATE_CLAIMING = 1,  // ferry_wp_begin is publishing a new range in this slot
    STATE_TRACKING = 2,  // range published, faults in it are ours
    STATE_RETIRED = 3,   // tracking stopped; the old range is remembered for stray faults
};

typedef struct tracked_range {
    atomic_int state;
    _Atomic(uintptr_t) base;
    _Atomic(uintptr_t) end;
    _Atomic(uintptr_t) page_size;
    _Atomic(uint64_t *) bits;
    atomic_int overflow;  // the handler unprotected the whole range
} tracked_range;

static tracked_range slots[FERRY_WP_MAX_RANGES];
// Handlers currently reading slot fields. A slot's fields change only while it is CLAIMING, and
// its bitmap is released only after ferry_wp_end; both wait for this to drop to zero after
// changing the state (seq_cst on both sides, so a handler either sees the new state or is
// waited for).
static atomic_int handlers_in_flight;

static struct sigaction previous_action;  // written once before our handler is installed
static atomic_int install_state;          // 0 = not installed, 1 = installing, 2 = installed

static _Atomic uint64_t faults_resolved;
static _Atomic uint64_t overflows;

// A fault in a range that was just retired (or while a range is being published) may be a
// write that raced ferry_wp_end: the page is writable by now and retrying the instruction
// succeeds. A genuine fault at such an address would retry forever, so the retries per thread
// and address are bounded; after that the fault goes to the previous handler.
static __thread __attribute__((tls_model("initial-exec"))) uintptr_t stray_address;
static __thread __attribute__((tls_model("initial-exec"))) unsigned stray_retries;
#define MAX_STRAY_RETRIES 1000

static void write_stderr(const char *message) {
    size_t length = strlen(message);
    while (length > 0) {
        ssize_t n = write(STDERR_FILENO, message, length);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            return;
        }
        message += n;
        length -= (size_t)n;
    }
}

static bool is_user_sent(const siginfo_t *info) { return info->si_code <= 0; }

static void chain_to_previous(int sig, siginfo_t *info, void *context) {
    if (previous_action.sa_flags & SA_SIGINFO) {
        if (previous_action.sa_sigaction) previous_action.sa_sigaction(sig, info, context);
        return;
    }
    if (previous_action.sa_handler == SIG_IGN) {
        if (is_user_sent(info)) return;  // ignoring a kill(SIGSEGV) is what SIG_IGN means
        // A real fault cannot be ignored: restore and let the instruction fault again; the
        // kernel then forces the default action.
        sigaction(SIGSEGV, &previous_action, NULL);
        return;
    }
    if (previous_action.sa_handler == SIG_DFL) {
        sigaction(SIGSEGV, &previous_action, NULL);
        // A fault re-executes and hits the default action; a sent signal must be re-raised
        // (it stays pending while this handler runs and is delivered on return).
        if (is_user_sent(info)) raise(sig);
        return;
    }
    previous_action.sa_handler(sig);
}

static bool in_range(tracked_range *range, uintptr_t address) {
    return address >= atomic_load(&range->base) && address < atomic_load(&range->end);
}

static void handle_tracked_fault(tracked_range *range, uintptr_t address) {
    uintptr_t base = atomic_load(&range->base);
    uintptr_t page_size = atomic_load(&range->page_size);
    uintptr_t page = address & ~(page_size - 1);
    if (mprotect((void *)page, page_size, PROT_READ | PROT_WRITE) == 0) {
        size_t index = (page - base) / page_size;
        uint64_t *bits = atomic_load(&range->bits);
        __atomic_fetch_or(&bits[index / 64], (uint64_t)1 << (index % 64), __ATOMIC_SEQ_CST);
        atomic_fetch_add_explicit(&faults_resolved, 1, memory_order_relaxed);
        return;
    }
    // Usually ENOMEM: one more writable island would exceed vm.max_map_count. Make the whole
    // range writable (merging its mappings back into one), THEN raise the flag (same order
    // argument as for a single page); the next harvest reports every page.
    uintptr_t end = atomic_load(&range->end);
    if (mprotect((void *)base, end - base, PROT_READ | PROT_WRITE) != 0) {
        write_stderr("ferry: mprotect dirty tracker cannot make the tracked range writable; "
                     "the write cannot proceed without losing track of it. Aborting.\n");
        abort();
    }
    atomic_store(&range->overflow, 1);
    atomic_fetch_add_explicit(&overflows, 1, memory_order_relaxed);
}

static void write_fault_handler(int sig, siginfo_t *info, void *context) {
    int saved_errno = errno;
    uintptr_t address = (uintptr_t)info->si_addr;
    bool handled = false;

    if (info->si_code == SEGV_ACCERR) {
        atomic_fetch_add(&handlers_in_flight, 1);
        bool maybe_stray = false;
        for (int i = 0; i < FERRY_WP_MAX_RANGES && !handled; i++) {
            tracked_range *range = &slots[i];
            int state = atomic_load(&range->state);
            if (state == STATE_TRACKING && in_range(range, address)) {
                handle_tracked_fault(range, address);
                handled = true;
            } else if (state == STATE_CLAIMING || (state == STATE_RETIRED && in_range(range, address))) {
                maybe_stray = true;
            }
        }
        atomic_fetch_sub(&handlers_in_flight, 1);
        if (!handled && maybe_stray) {
            if (stray_address != address) {
                stray_address = address;
                stray_retries = 0;
            }
            handled = ++stray_retries <= MAX_STRAY_RETRIES;
        }
    }

    if (!handled) chain_to_previous(sig, info, context);
    errno = saved_errno;
}

static int install_now(void) {
    // Read the previous action first and install ours separately: sigaction() copies the old
    // action out after installing the new one, so a fault on another thread in between would
    // otherwise see an unfilled previous_action.
    if (sigaction(SIGSEGV, NULL, &previous_action) != 0) return -errno;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = write_fault_handler;
    // SA_ONSTACK: the Swift runtime's crash handler relies on an alternate stack for stack
    // overflows, so we must run there too when the thread has one.
    action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, NULL) != 0) return -errno;
    return 0;
}

int ferry_wp_install(void) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&install_state, &expected, 1)) {
        int err = install_now();
        atomic_store(&install_state, err == 0 ? 2 : 0);
        return err;
    }
    while (atomic_load(&install_state) == 1) sched_yield();
    return atomic_load(&install_state) == 2 ? 0 : -EAGAIN;
}

static void wait_for_handlers(void) {
    while (atomic_load(&handlers_in_flight) != 0) sched_yield();
}

static tracked_range *slot_at(int slot) {
    if (slot < 0 || slot >= FERRY_WP_MAX_RANGES) return NULL;
    tracked_range *range = &slots[slot];
    return atomic_load(&range->state) == STATE_TRACKING ? range : NULL;
}

static int begin(void *base, size_t length, size_t page_size, uint64_t *bitmap_words, int *slot_out,
                 bool protect_now) {
    int err = ferry_wp_install();
    if (err) return err;
    tracked_range *range = NULL;
    for (int i = 0; i < FERRY_WP_MAX_RANGES && !range; i++) {
        int state = atomic_load(&slots[i].state);
        if ((state == STATE_IDLE || state == STATE_RETIRED) &&
            atomic_compare_exchange_strong(&slots[i].state, &state, STATE_CLAIMING)) {
            range = &slots[i];
            *slot_out = i;
        }
    }
    if (!range) return -EBUSY;
    // Handlers that read this slot's retired fields must be done before we overwrite them.
    wait_for_handlers();
    atomic_store(&range->base, (uintptr_t)base);
    atomic_store(&range->end, (uintptr_t)base + length);
    atomic_store(&range->page_size, (uintptr_t)page_size);
    atomic_store(&range->bits, bitmap_words);
    atomic_store(&range->overflow, 0);
    // Private anonymous memory gets its anon_vma on the first fault. If no page was touched
    // yet, every writable island made by the handler would fault in its own anon_vma, and
    // mappings with different anon_vmas never merge again: after an overflow the range would
    // stay split into tens of thousands of mappings. Faulting in one page now (content is
    // unchanged) gives the whole mapping one anon_vma that all its splits share. Errors are
    // irrelevant here (e.g. a read-only mapping fails the mprotect below anyway).
    madvise(base, page_size, MADV_POPULATE_WRITE);
    atomic_store(&range->state, STATE_TRACKING);
    // Deferred: the range stays writable; ferry_wp_protect protects it piece by piece. Until a
    // page is protected its writes do not fault and are not recorded (the caller reads such a
    // page only after protecting it).
    if (!protect_now) return 0;
    if (mprotect(base, length, PROT_READ) != 0) {
        err = -errno;
        mprotect(base, length, PROT_READ | PROT_WRITE);  // undo a partial protection
        atomic_store(&range->state, STATE_RETIRED);
        wait_for_handlers();
        return err;
    }
    return 0;
}

int ferry_wp_begin(void *base, size_t length, size_t page_size, uint64_t *bitmap_words, int *slot_out) {
    return begin(base, length, page_size, bitmap_words, slot_out, true);
}

int ferry_wp_begin_deferred(void *base, size_t length, size_t page_size, uint64_t *bitmap_words, int *slot_out) {
    return begin(base, length, page_size, bitmap_words, slot_out, false);
}

// Several threads may protect disjoint pieces at once, concurrently with the handler: mprotect
// calls serialise in the kernel (mmap write lock), and the handler only ever unprotects a page
// that is already read-only, i.e. one whose piece was protected before (each piece is protected
// once, by one thread), so the handler's "unprotect, then set the bit" order argument holds
// unchanged. If the kernel refuses (ENOMEM: splitting the mapping would exceed
// vm.max_map_count), the piece may stay writable without faulting; raising the overflow flag
// makes the next harvest report every page and re-protect the whole range, so no write is lost.
int ferry_wp_protect(int slot, size_t first_page, size_t page_count, int *overflowed_out) {
    *overflowed_out = 0;
    tracked_range *range = slot_at(slot);
    if (!range) return -EINVAL;
    uintptr_t base = atomic_load(&range->base);
    uintptr_t end = atomic_load(&range->end);
    uintptr_t page_size = atomic_load(&range->page_size);
    size_t pages = (end - base) / page_size;
    if (first_page > pages || page_count > pages - first_page) return -EINVAL;
    if (page_count == 0) return 0;
    if (mprotect((void *)(base + first_page * page_size), page_count * page_size, PROT_READ) == 0) return 0;
    int err = errno;
    if (err != ENOMEM) return -err;
    atomic_store(&range->overflow, 1);
    atomic_fetch_add_explicit(&overflows, 1, memory_order_relaxed);
    *overflowed_out = 1;
    return 0;
}

// Re-protects pages [first, first+count) of the range unless a whole-range re-protect is due.
static void protect_run(uintptr_t base, uintptr_t page_size, size_t first, size_t count,
                        bool *need_whole_range) {
    if (count == 0 || *need_whole_range) return;
    if (mprotect((void *)(base + first * page_size), count * page_size, PROT_READ) != 0) {
        // Splitting a writable mapping can hit vm.max_map_count; re-protecting the whole range
        // at the end merges everything instead.
        *need_whole_range = true;
    }
}

int ferry_wp_harvest(int slot, uint64_t *out, size_t out_words, size_t *found_out) {
    *found_out = 0;
    tracked_range *range = slot_at(slot);
    if (!range) return -EINVAL;
    uintptr_t base = atomic_load(&range->base);
    uintptr_t end = atomic_load(&range->end);
    uintptr_t page_size = atomic_load(&range->page_size);
    uint64_t *bits = atomic_load(&range->bits);
    size_t pages = (end - base) / page_size;
    size_t words = (pages + 63) / 64;
    if (out_words < words) return -EINVAL;

    bool everything = atomic_exchange(&range->overflow, 0) != 0;
    bool need_whole_range = everything;
    size_t found = 0;
    size_t run_start = 0, run_length = 0;
    for (size_t i = 0; i < words; i++) {
        if (__atomic_load_n(&bits[i], __ATOMIC_RELAXED) == 0) continue;
        uint64_t taken = __atomic_exchange_n(&bits[i], 0, __ATOMIC_SEQ_CST);
        if (taken == 0) continue;
        out[i] |= taken;
        found += (size_t)__builtin_popcountll(taken);
        // Walk the runs of set bits in this word, extending the pending run across words.
        uint64_t rest = taken;
        while (rest) {
            unsigned start_bit = (unsigned)__builtin_ctzll(rest);
            uint64_t from_start = rest >> start_bit;
            unsigned length = (from_start == ~(uint64_t)0) ? 64 - start_bit
                                                            : (unsigned)__builtin_ctzll(~from_start);
            size_t page = i * 64 + start_bit;
            if (run_length > 0 && run_start + run_length == page) {
                run_length += length;
            } else {
                protect_run(base, page_size, run_start, run_length, &need_whole_range);
                run_start = page;
                run_length = length;
            }
            rest = (start_bit + length >= 64) ? 0 : rest & ~((((uint64_t)1 << length) - 1) << start_bit);
        }
    }
    protect_run(base, page_size, run_start, run_length, &need_whole_range);

    if (everything) {
        for (size_t i = 0; i < words; i++) out[i] = ~(uint64_t)0;
        if (pages % 64) out[words - 1] = ((uint64_t)1 << (pages % 64)) - 1;
        found = pages;
    }
    *found_out = found;
    if (need_whole_range && mprotect((void *)base, end - base, PROT_READ) != 0) {
        // Some pages just reported may still be writable without faulting: make the next
        // harvest report everything and try again.
        int err = errno;
        atomic_store(&range->overflow, 1);
        return -err;
    }
    return 0;
}

void ferry_wp_end(int slot) {
    tracked_range *range = slot_at(slot);
    if (!range) return;
    uintptr_t base = atomic_load(&range->base);
    uintptr_t end = atomic_load(&range->end);
    // Unprotect first, so no new tracked fault can start; faults already raised find the range
    // RETIRED and simply retry. Errors are ignored: the range may already be unmapped.
    mprotect((void *)base, end - base, PROT_READ | PROT_WRITE);
    atomic_store(&range->state, STATE_RETIRED);
    wait_for_handlers();
}

uint64_t ferry_wp_fault_count(void) { return atomic_load(&faults_resolved); }
uint64_t ferry_wp_overflow_count(void) { return atomic_load(&overflows); }

// MARK: - test support

void ferry_wp_forget_handlers_after_fork(void) {
    // Only the forking thread exists in the child: handlers that were in flight on other
    // threads at fork time will never finish here, and ferry_wp_begin would wait for them.
    atomic_store(&handlers_in_flight, 0);
}

int ferry_wp_reinstall_after_fork(void) {
    atomic_store(&install_state, 2);
    return install_now();
}
