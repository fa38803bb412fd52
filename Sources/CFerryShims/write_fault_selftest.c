// Test support for the mprotect tracker. Each scenario runs in a forked child: the parent is a
// multithreaded test process, so the child sticks to system calls and our own lock-free code
// (no malloc, no stdio).
#define _GNU_SOURCE
#include "CFerryShims.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static void exit_42(int sig, siginfo_t *info, void *context) {
    (void)sig; (void)info; (void)context;
    _exit(42);
}

static void exit_43(int sig) {
    (void)sig;
    _exit(43);
}

static int wait_for(pid_t child) {
    int status = 0;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) return -errno;
    }
    return status;
}

int ferry_wp_test_chain_in_child(int mode) {
    pid_t child = fork();
    if (child < 0) return -errno;
    if (child == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);  // the expected crash needs no core file
        struct sigaction action;
        memset(&action, 0, sizeof action);
        sigemptyset(&action.sa_mask);
        switch (mode) {
        case 1: action.sa_sigaction = exit_42; action.sa_flags = SA_SIGINFO; break;
        case 2: action.sa_handler = exit_43; break;
        case 3: action.sa_handler = SIG_IGN; break;
        default: action.sa_handler = SIG_DFL; break;
        }
        if (sigaction(SIGSEGV, &action, NULL) != 0) _exit(90);
        if (ferry_wp_reinstall_after_fork() != 0) _exit(91);
        void *page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED) _exit(92);
        *(volatile char *)page = 1;  // SEGV_ACCERR outside any tracked range
        _exit(0);                    // reached only if the fault was (wrongly) swallowed
    }
    return wait_for(child);
}

static uint64_t count_mappings(void) {
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buffer[65536];
    uint64_t lines = 0;
    for (;;) {
        ssize_t n = read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; i++) lines += buffer[i] == '\n';
    }
    close(fd);
    return lines;
}

static void run_overflow_child(size_t pages, int shared, ferry_wp_overflow_report *report) {
    size_t page_size = (size_t)sysconf(_SC_PAGESIZE);
    size_t words = (pages + 63) / 64;
    int sharing = shared ? MAP_SHARED : MAP_PRIVATE;
    char *region = mmap(NULL, pages * page_size, PROT_READ | PROT_WRITE, sharing | MAP_ANONYMOUS, -1, 0);
    uint64_t *bits = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t *out = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED || bits == MAP_FAILED || out == MAP_FAILED) _exit(10);
    report->pages = pages;

    int slot = -1;
    if (ferry_wp_begin(region, pages * page_size, page_size, bits, &slot) != 0) _exit(11);
    uint64_t overflows_before = ferry_wp_overflow_count();
    for (size_t i = 0; i < pages; i += 2) *(volatile uint64_t *)(region + i * page_size) = i + 1;
    report->overflows = ferry_wp_overflow_count() - overflows_before;
    report->maps_before_harvest = count_mappings();

    size_t found = 0;
    if (ferry_wp_harvest(slot, out, words, &found) != 0) _exit(12);
    report->maps_after_harvest = count_mappings();
    report->first_found = found;
    size_t set = 0;
    for (size_t i = 0; i < words; i++) set += (size_t)__builtin_popcountll(out[i]);
    report->first_all_set = set == pages;

    const size_t extra = 5;  // odd, so not written above
    *(volatile uint64_t *)(region + extra * page_size) = 12345;
    memset(out, 0, words * 8);
    if (ferry_wp_harvest(slot, out, words, &found) != 0) _exit(13);
    report->second_found = found;
    set = 0;
    for (size_t i = 0; i < words; i++) set += (size_t)__builtin_popcountll(out[i]);
    report->second_only_that_page = set == 1 && (out[extra / 64] >> (extra % 64)) & 1;

    int intact = *(volatile uint64_t *)(region + extra * page_size) == 12345;
    for (size_t i = 0; i < pages; i += 2) intact &= *(volatile uint64_t *)(region + i * page_size) == i + 1;
    report->data_intact = (uint64_t)intact;
    ferry_wp_end(slot);
    _exit(0);
}

int ferry_wp_test_overflow_in_child(size_t pages, int shared, ferry_wp_overflow_report *report) {
    ferry_wp_overflow_report *shared_report = mmap(NULL, sizeof *shared_report, PROT_READ | PROT_WRITE,
                                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared_report == MAP_FAILED) return -errno;
    memset(shared_report, 0, sizeof *shared_report);
    pid_t child = fork();
    if (child < 0) {
        int err = errno;
        munmap(shared_report, sizeof *shared_report);
        return -err;
    }
    if (child == 0) {
        ferry_wp_forget_handlers_after_fork();
        run_overflow_child(pages, shared, shared_report);
    }
    int status = wait_for(child);
    *report = *shared_report;
    munmap(shared_report, sizeof *shared_report);
    return status;
}

// Deferred start, then protections of every other page one at a time until the kernel runs
// out of mappings: ferry_wp_protect must then raise the overflow flag instead of failing, since
// the page it could not protect stays writable and its writes are not recorded. A write to that
// page follows; the first harvest must report every page and protect the whole range.
static void run_deferred_overflow_child(size_t pages, ferry_wp_overflow_report *report) {
    size_t page_size = (size_t)sysconf(_SC_PAGESIZE);
    size_t words = (pages + 63) / 64;
    char *region = mmap(NULL, pages * page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t *bits = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t *out = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED || bits == MAP_FAILED || out == MAP_FAILED) _exit(10);
    report->pages = pages;

    int slot = -1;
    if (ferry_wp_begin_deferred(region, pages * page_size, page_size, bits, &slot) != 0) _exit(11);
    size_t refused = pages;
    for (size_t i = 0; i < pages; i += 2) {
        int overflowed = 0;
        if (ferry_wp_protect(slot, i, 1, &overflowed) != 0) _exit(12);
        if (overflowed) {
            report->overflows++;
            refused = i;
            break;
        }
    }
    if (refused == pages) _exit(13);
    report->maps_before_harvest = count_mappings();
    *(volatile uint64_t *)(region + refused * page_size) = 777;  // after its (refused) protection

    size_t found = 0;
    if (ferry_wp_harvest(slot, out, words, &found) != 0) _exit(14);
    report->maps_after_harvest = count_mappings();
    report->first_found = found;
    size_t set = 0;
    for (size_t i = 0; i < words; i++) set += (size_t)__builtin_popcountll(out[i]);
    report->first_all_set = set == pages;

    const size_t extra = 5;
    *(volatile uint64_t *)(region + extra * page_size) = 12345;
    memset(out, 0, words * 8);
    if (ferry_wp_harvest(slot, out, words, &found) != 0) _exit(15);
    report->second_found = found;
    set = 0;
    for (size_t i = 0; i < words; i++) set += (size_t)__builtin_popcountll(out[i]);
    report->second_only_that_page = set == 1 && (out[extra / 64] >> (extra % 64)) & 1;

    report->data_intact = *(volatile uint64_t *)(region + extra * page_size) == 12345 &&
                          *(volatile uint64_t *)(region + refused * page_size) == 777;
    ferry_wp_end(slot);
    _exit(0);
}

int ferry_wp_test_deferred_overflow_in_child(size_t pages, ferry_wp_overflow_report *report) {
    ferry_wp_overflow_report *shared_report = mmap(NULL, sizeof *shared_report, PROT_READ | PROT_WRITE,
                                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared_report == MAP_FAILED) return -errno;
    memset(shared_report, 0, sizeof *shared_report);
    pid_t child = fork();
    if (child < 0) {
        int err = errno;
        munmap(shared_report, sizeof *shared_report);
        return -err;
    }
    if (child == 0) {
        ferry_wp_forget_handlers_after_fork();
        run_deferred_overflow_child(pages, shared_report);
    }
    int status = wait_for(child);
    *report = *shared_report;
    munmap(shared_report, sizeof *shared_report);
    return status;
}
