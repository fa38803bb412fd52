// The SIGBUS guard: keeps a process alive when the file under one of its shared mappings is
// truncated. A load or store beyond the file's new end raises SIGBUS (BUS_ADRERR); the handler
// maps a private zero page over the faulting page (MAP_FIXED), counts it and returns, so the
// instruction retries and succeeds. The owner of the range polls the count and aborts what it was
// doing with a clear message: the guest's memory beyond the cut is gone, the process is not.
// The handler calls only mmap, sigaction and raise (async-signal-safe) and reads preallocated
// slots through atomics.
#define _GNU_SOURCE
#include "CFerryShims.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

typedef struct guarded_range {
    atomic_int active;
    _Atomic(uintptr_t) base;
    _Atomic(uintptr_t) end;
    _Atomic(uintptr_t) page_size;
    _Atomic(uint64_t) pages_replaced;
    _Atomic(uintptr_t) first_offset;  // lowest replaced offset; UINTPTR_MAX: none
} guarded_range;

static guarded_range ranges[FERRY_BUS_MAX_RANGES];
static struct sigaction previous_bus_action;  // written once before our handler is installed
static atomic_int bus_install_state;          // 0 = not installed, 1 = installing, 2 = installed
static atomic_int claiming;                   // serialises begin/end (not the handler)

static void chain_bus(int sig, siginfo_t *info, void *context) {
    if (previous_bus_action.sa_flags & SA_SIGINFO) {
        if (previous_bus_action.sa_sigaction) previous_bus_action.sa_sigaction(sig, info, context);
        return;
    }
    if (previous_bus_action.sa_handler == SIG_DFL || previous_bus_action.sa_handler == SIG_IGN) {
        // A real fault re-executes and meets the restored disposition (the kernel forces the
        // default action for an ignored fault); a sent signal is re-raised.
        sigaction(SIGBUS, &previous_bus_action, NULL);
        if (info->si_code <= 0 && previous_bus_action.sa_handler == SIG_DFL) raise(sig);
        return;
    }
    previous_bus_action.sa_handler(sig);
}

static void bus_error_handler(int sig, siginfo_t *info, void *context) {
    int saved_errno = errno;
    uintptr_t address = (uintptr_t)info->si_addr;
    if (info->si_code == BUS_ADRERR) {
        for (int i = 0; i < FERRY_BUS_MAX_RANGES; i++) {
            guarded_range *range = &ranges[i];
            if (!atomic_load(&range->active)) continue;
            uintptr_t base = atomic_load(&range->base), end = atomic_load(&range->end);
            if (address < base || address >= end) continue;
            uintptr_t page_size = atomic_load(&range->page_size);
            uintptr_t page = address & ~(page_size - 1);
            void *mapped = mmap((void *)page, page_size, PROT_READ | PROT_WRITE,
                                MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (mapped == MAP_FAILED) break;
            atomic_fetch_add(&range->pages_replaced, 1);
            uintptr_t offset = page - base, seen = atomic_load(&range->first_offset);
            while (offset < seen && !atomic_compare_exchange_weak(&range->first_offset, &seen, offset)) {}
            errno = saved_errno;
            return;
        }
    }
    errno = saved_errno;
    chain_bus(sig, info, context);
}

static int install_bus_handler(void) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&bus_install_state, &expected, 1)) {
        int err = 0;
        if (sigaction(SIGBUS, NULL, &previous_bus_action) != 0) {
            err = -errno;
        } else {
            struct sigaction action;
            memset(&action, 0, sizeof action);
            action.sa_sigaction = bus_error_handler;
            action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
            sigemptyset(&action.sa_mask);
            if (sigaction(SIGBUS, &action, NULL) != 0) err = -errno;
        }
        atomic_store(&bus_install_state, err == 0 ? 2 : 0);
        return err;
    }
    while (atomic_load(&bus_install_state) == 1) sched_yield();
    return atomic_load(&bus_install_state) == 2 ? 0 : -EAGAIN;
}

int ferry_bus_guard_begin(void *base, size_t length, size_t page_size, int *slot_out) {
    if (!base || length == 0 || page_size == 0 || (page_size & (page_size - 1)) != 0) return -EINVAL;
    int err = install_bus_handler();
    if (err != 0) return err;
    int expected = 0;
    while (!atomic_compare_exchange_weak(&claiming, &expected, 1)) { expected = 0; sched_yield(); }
    int slot = -1;
    for (int i = 0; i < FERRY_BUS_MAX_RANGES && slot < 0; i++) {
        if (!atomic_load(&ranges[i].active)) slot = i;
    }
    if (slot >= 0) {
        guarded_range *range = &ranges[slot];
        atomic_store(&range->base, (uintptr_t)base);
        atomic_store(&range->end, (uintptr_t)base + length);
        atomic_store(&range->page_size, (uintptr_t)page_size);
        atomic_store(&range->pages_replaced, 0);
        atomic_store(&range->first_offset, UINTPTR_MAX);
        atomic_store(&range->active, 1);
        *slot_out = slot;
    }
    atomic_store(&claiming, 0);
    return slot >= 0 ? 0 : -EBUSY;
}

uint64_t ferry_bus_guard_replaced(int slot, uint64_t *first_offset_out) {
    if (slot < 0 || slot >= FERRY_BUS_MAX_RANGES) return 0;
    uintptr_t first = atomic_load(&ranges[slot].first_offset);
    if (first_offset_out) *first_offset_out = first == UINTPTR_MAX ? UINT64_MAX : (uint64_t)first;
    return atomic_load(&ranges[slot].pages_replaced);
}

void ferry_bus_guard_end(int slot) {
    if (slot < 0 || slot >= FERRY_BUS_MAX_RANGES) return;
    // The handler stays installed; faults in this range now go to the previous disposition.
    atomic_store(&ranges[slot].active, 0);
}
