#ifndef CFERRY_SHIMS_H
#define CFERRY_SHIMS_H

// C shims for FerrySystem: what Swift cannot express directly.
//  - userfaultfd ioctls and the PAGEMAP_SCAN ioctl, with the ABI defined here under our own
//    names because the installed kernel headers predate it (pinned with _Static_assert in uffd.c);
//  - the SIGSEGV handler of the mprotect dirty tracker (must be async-signal-safe, so C).
//
// Return convention (the one of every Ferry C shim, CKVM's too): 0, or a non-negative result,
// on success; -errno on failure. None report errors through errno, and none retry EINTR: the
// Swift side calls them through FerrySystem's valueOrErrno(_:.negatedErrno), which does.
// Functions that cannot fail return their value directly (noted where so).

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - processes

/// posix_spawn of `path` with `argv`/`envp` as a process of its own: a new session (setsid), an
/// empty signal mask and every signal at its default, stdin from /dev/null, stdout and stderr
/// appended to `log_path` (created 0600), no other descriptor inherited. 0 and the child's PID
/// in `pid_out`, or -errno.
int ferry_spawn_detached(const char *path, char *const argv[], char *const envp[], const char *log_path,
                         int32_t *pid_out);

/// The calling thread's kernel thread ID (gettid(2), which Glibc's Swift module does not
/// import). Cannot fail.
int32_t ferry_gettid(void);

// MARK: - file systems

/// statfs(path).f_type (Swift cannot import `struct statfs`, shadowed by the function).
int ferry_statfs_magic(const char *path, uint64_t *magic_out);

/// Extended attributes (sys/xattr.h, which Glibc's Swift module does not import): 0 or the
/// length read on success, -errno on failure.
int ferry_setxattr(const char *path, const char *name, const void *value, size_t size);
long ferry_getxattr(const char *path, const char *name, void *value, size_t size);
int ferry_removexattr(const char *path, const char *name);

/// Takes an open file description lock (F_OFD_SETLK, whole file, l_pid 0) on `fd`: a write lock
/// when `exclusive`, else a read lock. 0, or -errno (-EAGAIN when another description holds a
/// conflicting lock; the call never waits).
int ferry_ofd_lock(int fd, int exclusive);

/// Whether another open file description holds a lock on `fd`'s file that conflicts with a
/// write lock (F_OFD_GETLK): 1 yes, 0 no, or -errno. (The kernel reports l_pid = -1 for OFD
/// locks, so the holder is not named here.)
int ferry_ofd_conflict(int fd);

/// fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length): 0, or -errno.
int ferry_punch_hole(int fd, int64_t offset, int64_t length);

/// copy_file_range(in_fd, &offset, out_fd, &offset, length, 0): the same offset in both files;
/// the bytes copied (0 at the input's end), or -errno.
int64_t ferry_copy_file_range(int in_fd, int out_fd, int64_t offset, int64_t length);

/// ioctl(dest_fd, FICLONE, src_fd): a reflink of the whole file; 0, or -errno (-EOPNOTSUPP on
/// ext4, -EXDEV across file systems).
int ferry_clone_file(int dest_fd, int src_fd);

// MARK: - sockets

/// Bytes in a TCP socket's send queue that the peer has not acknowledged yet (ioctl SIOCOUTQ;
/// Swift cannot call the variadic ioctl).
int ferry_socket_unacked_bytes(int fd, int *bytes_out);
/// Bytes of this TCP connection the peer has acknowledged so far (TCP_INFO's tcpi_bytes_acked,
/// Linux 4.1+; glibc's struct tcp_info predates the field).
int ferry_socket_bytes_acked(int fd, uint64_t *bytes_out);

// MARK: - userfaultfd (linux/userfaultfd.h, kernel 6.7+ values)

static const uint64_t FERRY_UFFD_API = (uint64_t)0xAA;
static const uint64_t FERRY_UFFD_FEATURE_WP_HUGETLBFS_SHMEM = (uint64_t)1 << 12;
static const uint64_t FERRY_UFFD_FEATURE_WP_UNPOPULATED = (uint64_t)1 << 13;
static const uint64_t FERRY_UFFD_FEATURE_WP_ASYNC = (uint64_t)1 << 15;

/// Opens a userfaultfd (O_CLOEXEC|O_NONBLOCK, user and kernel faults). *fd_out receives the fd.
int ferry_uffd_open(int *fd_out);
/// UFFDIO_API handshake. `features` requested; *supported_out receives the kernel's answer
/// (with features == 0 the kernel reports everything it supports; the fd is then initialised).
int ferry_uffd_api(int fd, uint64_t features, uint64_t *supported_out);
/// UFFDIO_REGISTER with UFFDIO_REGISTER_MODE_WP. *ioctls_out receives the allowed ioctls mask.
int ferry_uffd_register_wp(int fd, void *start, uint64_t length, uint64_t *ioctls_out);
int ferry_uffd_unregister(int fd, void *start, uint64_t length);
/// UFFDIO_WRITEPROTECT: protect (1) or unprotect (0) the range.
int ferry_uffd_writeprotect(int fd, void *start, uint64_t length, int protect);

// MARK: - userfaultfd missing-page mode (post-copy: FerrySystem's MissingPages)

static const uint64_t FERRY_UFFD_FEATURE_MISSING_SHMEM = (uint64_t)1 << 5;
/// uffd_msg.pagefault.flags: the faulting access was a write.
static const uint64_t FERRY_UFFD_PAGEFAULT_FLAG_WRITE = (uint64_t)1 << 0;

static const uint64_t FERRY_UFFD_FEATURE_MINOR_SHMEM = (uint64_t)1 << 10;

/// UFFDIO_REGISTER with UFFDIO_REGISTER_MODE_MISSING, and MODE_MINOR too when `minor` (shmem:
/// a page in the file's page cache but not mapped here faults as well, until UFFDIO_CONTINUE
/// maps it). *ioctls_out receives the allowed ioctls.
int ferry_uffd_register_missing(int fd, void *start, uint64_t length, int minor, uint64_t *ioctls_out);
/// UFFDIO_CONTINUE over [start, start+length): maps the page-cache pages there and wakes their
/// waiters. 0 with *mapped_out = length; -EEXIST when a page there is mapped already
/// (*mapped_out says how far it got); -EFAULT when a page is not in the page cache.
int ferry_uffd_continue(int fd, void *start, uint64_t length, int64_t *mapped_out);
/// UFFDIO_COPY of `length` bytes from `source` into the registered range at `destination`,
/// waking the threads that wait on it. 0 with *copied_out = length; -EEXIST when a page there is
/// already present (nothing copied; its waiters were woken by whoever installed it); -EAGAIN
/// when the range changed under it (copied_out says how much went in: ask again for the rest).
int ferry_uffd_copy(int fd, void *destination, const void *source, uint64_t length, int64_t *copied_out);
/// UFFDIO_ZEROPAGE over [start, start+length): 0, -EEXIST when present, or -errno.
int ferry_uffd_zeropage(int fd, void *start, uint64_t length);
/// UFFDIO_WAKE over [start, start+length).
int ferry_uffd_wake(int fd, void *start, uint64_t length);
/// Reads up to `capacity` messages (read(2) of struct uffd_msg, non-blocking fd) and keeps the
/// page faults: their addresses and flags. The number kept (0 when none was waiting), or -errno.
int ferry_uffd_read_faults(int fd, uint64_t *addresses, uint64_t *flags, int capacity);

// MARK: - PAGEMAP_SCAN (linux/fs.h, kernel 6.7+)

static const uint64_t FERRY_PM_SCAN_WP_MATCHING = (uint64_t)1 << 0;
static const uint64_t FERRY_PM_SCAN_CHECK_WPASYNC = (uint64_t)1 << 1;

static const uint64_t FERRY_PAGE_IS_WPALLOWED = (uint64_t)1 << 0;
static const uint64_t FERRY_PAGE_IS_WRITTEN = (uint64_t)1 << 1;
static const uint64_t FERRY_PAGE_IS_FILE = (uint64_t)1 << 2;
static const uint64_t FERRY_PAGE_IS_PRESENT = (uint64_t)1 << 3;
static const uint64_t FERRY_PAGE_IS_SWAPPED = (uint64_t)1 << 4;
static const uint64_t FERRY_PAGE_IS_PFNZERO = (uint64_t)1 << 5;
static const uint64_t FERRY_PAGE_IS_HUGE = (uint64_t)1 << 6;
static const uint64_t FERRY_PAGE_IS_SOFT_DIRTY = (uint64_t)1 << 7;

/// struct page_region: one run [start, end) of pages sharing `categories`.
typedef struct ferry_page_region {
    uint64_t start;
    uint64_t end;
    uint64_t categories;
} ferry_page_region;

/// struct pm_scan_arg.
typedef struct ferry_pm_scan_arg {
    uint64_t size;
    uint64_t flags;
    uint64_t start;
    uint64_t end;
    uint64_t walk_end;
    uint64_t vec;
    uint64_t vec_len;
    uint64_t max_pages;
    uint64_t category_inverted;
    uint64_t category_mask;
    uint64_t category_anyof_mask;
    uint64_t return_mask;
} ferry_pm_scan_arg;

/// One PAGEMAP_SCAN ioctl on an fd of /proc/self/pagemap over [start, end): reports pages
/// written since they were last protected into vec (at most vec_len regions) and write-protects
/// them again in the same call. *regions_out receives the number of regions filled, *walk_end_out
/// where the kernel says the walk stopped.
int ferry_pagemap_scan_written(int pagemap_fd, uint64_t start, uint64_t end,
                               ferry_page_region *vec, uint64_t vec_len,
                               uint64_t *regions_out, uint64_t *walk_end_out);

// MARK: - mprotect tracker (SIGSEGV handler)
//
// Up to FERRY_WP_MAX_RANGES tracked ranges per process, each in a slot. The handler is
// installed once, on first use, and stays installed; faults it does not own go to the handler
// that was installed before it.

#define FERRY_WP_MAX_RANGES 8

/// Installs the SIGSEGV handler if not yet installed (remembering the previous handler).
int ferry_wp_install(void);
/// Starts tracking [base, base+length): takes a free slot (*slot_out), publishes the range and
/// the bitmap (one bit per page, ceil(pages/64) words, zeroed by the caller, valid until
/// ferry_wp_end returns), then mprotect(PROT_READ)s the range. -EBUSY when all slots are in use;
/// any other error is mprotect's (negated).
int ferry_wp_begin(void *base, size_t length, size_t page_size, uint64_t *bitmap_words, int *slot_out);
/// Like ferry_wp_begin but protects nothing: the range is published (faults in it are ours)
/// and stays writable until ferry_wp_protect protects it piece by piece.
int ferry_wp_begin_deferred(void *base, size_t length, size_t page_size, uint64_t *bitmap_words, int *slot_out);
/// mprotect(PROT_READ)s pages [first_page, first_page+page_count) of the tracked range; from
/// then on writes to them are recorded. Thread-safe for disjoint pieces. If the kernel refuses
/// for lack of mappings (ENOMEM), sets *overflowed_out and the overflow flag (the next harvest
/// reports every page and re-protects the whole range) and returns 0. Otherwise returns 0 or
/// -mprotect's errno; -EINVAL if the slot is not tracking or the pages are out of range.
int ferry_wp_protect(int slot, size_t first_page, size_t page_count, int *overflowed_out);
/// Moves the bits set since the last harvest into out (OR), clears them, and re-protects those
/// pages. *found_out receives the number of pages found. If the handler had to give up on
/// per-page protection (too many mappings), every page is reported and the whole range is
/// re-protected. Returns -errno if re-protection failed; then the next harvest reports every
/// page again, so no write is lost. -EINVAL if the slot is not tracking.
int ferry_wp_harvest(int slot, uint64_t *out, size_t out_words, size_t *found_out);
/// Stops tracking: makes the range read-write again and waits for handlers in flight. After it
/// returns the bitmap passed to ferry_wp_begin is no longer used.
void ferry_wp_end(int slot);
/// Number of write faults the handler resolved since the process started (diagnostics; cannot fail).
uint64_t ferry_wp_fault_count(void);
/// Number of times the handler hit the mapping limit and unprotected a whole range.
uint64_t ferry_wp_overflow_count(void);

// MARK: - SIGBUS guard (bus_error_guard.c)
//
// A shared file mapping whose file is truncated raises SIGBUS on any access beyond the new end.
// In a guarded range the handler maps a private zero page over the faulting page instead and
// counts it, so the process survives and its owner can abort with a clear message. Faults
// outside every range go to the handler that was installed before.

#define FERRY_BUS_MAX_RANGES 8

/// Installs the SIGBUS handler if not yet installed and starts guarding [base, base+length).
/// *slot_out receives the slot. -EBUSY when all slots are in use.
int ferry_bus_guard_begin(void *base, size_t length, size_t page_size, int *slot_out);
/// Pages of the slot's range replaced by zero pages so far; *first_offset_out (if not NULL)
/// receives the lowest replaced byte offset in the range, UINT64_MAX when none (cannot fail).
uint64_t ferry_bus_guard_replaced(int slot, uint64_t *first_offset_out);
/// Stops guarding the slot's range (the handler stays installed for the other slots).
void ferry_bus_guard_end(int slot);

// MARK: - test support (write_fault_selftest.c); each runs in a forked child so that it cannot
// disturb the test process (signal dispositions, the per-process mapping limit).

/// In a forked child only: installs the ferry handler again over the current disposition.
int ferry_wp_reinstall_after_fork(void);
/// In a forked child only: forgets the handlers that other threads of the parent were running
/// at fork time (they do not exist in the child; ferry_wp_begin would wait for them forever).
void ferry_wp_forget_handlers_after_fork(void);

/// Forks; the child installs `mode` as the SIGSEGV disposition (0 = SIG_DFL, 1 = SA_SIGINFO
/// handler that _exit(42)s, 2 = plain handler that _exit(43)s, 3 = SIG_IGN), then the ferry
/// handler over it, and writes to a read-only page outside any tracked range. Returns the
/// child's wait status (non-negative) or -errno.
int ferry_wp_test_chain_in_child(int mode);

typedef struct ferry_wp_overflow_report {
    uint64_t pages;                 // pages in the tracked region
    uint64_t overflows;             // handler overflow events during the scattered writes
    uint64_t maps_before_harvest;   // lines of /proc/self/maps after the scattered writes
    uint64_t maps_after_harvest;    // ... after the harvest re-protected the whole range
    uint64_t first_found;           // pages reported by the first harvest
    uint64_t first_all_set;         // 1 if that harvest set every bit
    uint64_t second_found;          // pages reported after writing one more page
    uint64_t second_only_that_page; // 1 if exactly that page's bit was set
    uint64_t data_intact;           // 1 if every written value reads back
} ferry_wp_overflow_report;

/// Forks; the child tracks an anonymous region of `pages` pages (MAP_SHARED, i.e. shmem, when
/// `shared`, else MAP_PRIVATE), writes every other page
/// (exceeding vm.max_map_count when pages/2 > the limit), harvests, writes one more page and
/// harvests again, filling *report. Returns the child's wait status (exit 0 = ran through; other
/// exit codes name the step that failed) or -errno.
int ferry_wp_test_overflow_in_child(size_t pages, int shared, ferry_wp_overflow_report *report);
/// Forks; the child starts a deferred range of `pages` private anonymous pages, protects every
/// other page one call at a time until ferry_wp_protect reports an overflow (report->overflows
/// = 1), writes the page it could not protect, harvests, writes one more page and harvests
/// again, filling *report like ferry_wp_test_overflow_in_child.
int ferry_wp_test_deferred_overflow_in_child(size_t pages, ferry_wp_overflow_report *report);

// Host facts for the agent (host.c), behind _GNU_SOURCE, which Swift's Glibc does not set.
/// CPUs in this process's affinity mask (sched_getaffinity, CPU_COUNT), or -errno.
int ferry_affinity_cpu_count(void);
/// An unnamed regular file in `directory` (open with O_TMPFILE | O_WRONLY | O_CLOEXEC, mode
/// 0600): a descriptor, or -errno. The file vanishes when closed.
int ferry_open_tmpfile(const char *directory);

#ifdef __cplusplus
}
#endif

#endif
