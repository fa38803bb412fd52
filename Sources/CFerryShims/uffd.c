// userfaultfd + PAGEMAP_SCAN ioctls for the uffd dirty tracker.
#define _GNU_SOURCE
#include "CFerryShims.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

// The installed linux/fs.h predates PAGEMAP_SCAN (kernel 6.7); this is its uapi definition.
#define FERRY_PAGEMAP_SCAN _IOWR('f', 16, ferry_pm_scan_arg)

_Static_assert(sizeof(ferry_page_region) == 24, "struct page_region is 24 bytes");
_Static_assert(offsetof(ferry_page_region, start) == 0, "page_region.start");
_Static_assert(offsetof(ferry_page_region, end) == 8, "page_region.end");
_Static_assert(offsetof(ferry_page_region, categories) == 16, "page_region.categories");

_Static_assert(sizeof(ferry_pm_scan_arg) == 96, "struct pm_scan_arg is 96 bytes");
_Static_assert(offsetof(ferry_pm_scan_arg, size) == 0, "pm_scan_arg.size");
_Static_assert(offsetof(ferry_pm_scan_arg, flags) == 8, "pm_scan_arg.flags");
_Static_assert(offsetof(ferry_pm_scan_arg, start) == 16, "pm_scan_arg.start");
_Static_assert(offsetof(ferry_pm_scan_arg, end) == 24, "pm_scan_arg.end");
_Static_assert(offsetof(ferry_pm_scan_arg, walk_end) == 32, "pm_scan_arg.walk_end");
_Static_assert(offsetof(ferry_pm_scan_arg, vec) == 40, "pm_scan_arg.vec");
_Static_assert(offsetof(ferry_pm_scan_arg, vec_len) == 48, "pm_scan_arg.vec_len");
_Static_assert(offsetof(ferry_pm_scan_arg, max_pages) == 56, "pm_scan_arg.max_pages");
_Static_assert(offsetof(ferry_pm_scan_arg, category_inverted) == 64, "pm_scan_arg.category_inverted");
_Static_assert(offsetof(ferry_pm_scan_arg, category_mask) == 72, "pm_scan_arg.category_mask");
_Static_assert(offsetof(ferry_pm_scan_arg, category_anyof_mask) == 80, "pm_scan_arg.category_anyof_mask");
_Static_assert(offsetof(ferry_pm_scan_arg, return_mask) == 88, "pm_scan_arg.return_mask");
// _IOWR('f', 16, 96 bytes) in the generic encoding: dir=3 (bits 30-31), size (16-29), type, nr.
_Static_assert(FERRY_PAGEMAP_SCAN == 0xC0606610u, "PAGEMAP_SCAN ioctl number");

// Our feature bits must agree with the header where the header has them.
_Static_assert(FERRY_UFFD_FEATURE_WP_HUGETLBFS_SHMEM == UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM");
_Static_assert(FERRY_UFFD_API == UFFD_API, "UFFD_API");

// ioctl with a pointer argument: 0 or -errno (no EINTR retry here: the Swift caller retries).
static int ioctl_pointer(int fd, unsigned long request, void *arg) {
    return ioctl(fd, request, arg) < 0 ? -errno : 0;
}

int ferry_uffd_open(int *fd_out) {
    // UFFD_USER_MODE_ONLY is deliberately not passed: the guest image may be written by the
    // kernel too (read(2) into it), and those writes must be tracked as well. We run as root.
    long fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -errno;
    *fd_out = (int)fd;
    return 0;
}

int ferry_uffd_api(int fd, uint64_t features, uint64_t *supported_out) {
    struct uffdio_api api = {.api = UFFD_API, .features = features};
    int err = ioctl_pointer(fd, UFFDIO_API, &api);
    if (supported_out) *supported_out = api.features;
    return err;
}

int ferry_uffd_register_wp(int fd, void *start, uint64_t length, uint64_t *ioctls_out) {
    struct uffdio_register reg = {
        .range = {.start = (uint64_t)(uintptr_t)start, .len = length},
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    int err = ioctl_pointer(fd, UFFDIO_REGISTER, &reg);
    if (ioctls_out) *ioctls_out = reg.ioctls;
    return err;
}

int ferry_uffd_unregister(int fd, void *start, uint64_t length) {
    struct uffdio_range range = {.start = (uint64_t)(uintptr_t)start, .len = length};
    return ioctl_pointer(fd, UFFDIO_UNREGISTER, &range);
}

int ferry_uffd_writeprotect(int fd, void *start, uint64_t length, int protect) {
    struct uffdio_writeprotect wp = {
        .range = {.start = (uint64_t)(uintptr_t)start, .len = length},
        .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    return ioctl_pointer(fd, UFFDIO_WRITEPROTECT, &wp);
}

_Static_assert(FERRY_UFFD_FEATURE_MISSING_SHMEM == UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM");
_Static_assert(FERRY_UFFD_PAGEFAULT_FLAG_WRITE == UFFD_PAGEFAULT_FLAG_WRITE, "PAGEFAULT_FLAG_WRITE");
_Static_assert(sizeof(struct uffd_msg) == 32, "struct uffd_msg is 32 bytes");

_Static_assert(FERRY_UFFD_FEATURE_MINOR_SHMEM == UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM");

int ferry_uffd_register_missing(int fd, void *start, uint64_t length, int minor, uint64_t *ioctls_out) {
    struct uffdio_register reg = {
        .range = {.start = (uint64_t)(uintptr_t)start, .len = length},
        .mode = UFFDIO_REGISTER_MODE_MISSING | (minor ? UFFDIO_REGISTER_MODE_MINOR : 0),
    };
    int err = ioctl_pointer(fd, UFFDIO_REGISTER, &reg);
    if (ioctls_out) *ioctls_out = reg.ioctls;
    return err;
}

int ferry_uffd_copy(int fd, void *destination, const void *source, uint64_t length, int64_t *copied_out) {
    struct uffdio_copy copy = {
        .dst = (uint64_t)(uintptr_t)destination,
        .src = (uint64_t)(uintptr_t)source,
        .len = length,
        .mode = 0,
        .copy = 0,
    };
    int err = ioctl_pointer(fd, UFFDIO_COPY, &copy);
    if (copied_out) *copied_out = copy.copy;
    return err;
}

int ferry_uffd_continue(int fd, void *start, uint64_t length, int64_t *mapped_out) {
    struct uffdio_continue cont = {
        .range = {.start = (uint64_t)(uintptr_t)start, .len = length},
        .mode = 0,
        .mapped = 0,
    };
    int err = ioctl_pointer(fd, UFFDIO_CONTINUE, &cont);
    if (mapped_out) *mapped_out = cont.mapped;
    return err;
}

int ferry_uffd_zeropage(int fd, void *start, uint64_t length) {
    struct uffdio_zeropage zero = {
        .range = {.start = (uint64_t)(uintptr_t)start, .len = length},
        .mode = 0,
    };
    return ioctl_pointer(fd, UFFDIO_ZEROPAGE, &zero);
}

int ferry_uffd_wake(int fd, void *start, uint64_t length) {
    struct uffdio_range range = {.start = (uint64_t)(uintptr_t)start, .len = length};
    return ioctl_pointer(fd, UFFDIO_WAKE, &range);
}

int ferry_uffd_read_faults(int fd, uint64_t *addresses, uint64_t *flags, int capacity) {
    struct uffd_msg messages[64];
    if (capacity > 64) capacity = 64;
    ssize_t n = read(fd, messages, sizeof(struct uffd_msg) * (size_t)capacity);
    if (n < 0) return errno == EAGAIN ? 0 : -errno;
    int kept = 0;
    for (ssize_t i = 0; i < n / (ssize_t)sizeof(struct uffd_msg); i++) {
        if (messages[i].event != UFFD_EVENT_PAGEFAULT) continue;
        addresses[kept] = messages[i].arg.pagefault.address;
        flags[kept] = messages[i].arg.pagefault.flags;
        kept++;
    }
    return kept;
}

int ferry_pagemap_scan_written(int pagemap_fd, uint64_t start, uint64_t end,
                               ferry_page_region *vec, uint64_t vec_len,
                               uint64_t *regions_out, uint64_t *walk_end_out) {
    ferry_pm_scan_arg arg = {
        .size = sizeof(ferry_pm_scan_arg),
        .flags = FERRY_PM_SCAN_WP_MATCHING | FERRY_PM_SCAN_CHECK_WPASYNC,
        .start = start,
        .end = end,
        .vec = (uint64_t)(uintptr_t)vec,
        .vec_len = vec_len,
        .max_pages = 0,
        .category_inverted = 0,
        .category_mask = FERRY_PAGE_IS_WRITTEN,
        .category_anyof_mask = 0,
        .return_mask = FERRY_PAGE_IS_WRITTEN,
    };
    // The kernel returns EINTR only when a fatal signal is pending (the process is dying), so
    // the Swift caller's retry (a fresh call with the same range) cannot lose regions that a
    // live process would still need.
    int n = ioctl(pagemap_fd, FERRY_PAGEMAP_SCAN, &arg);
    if (n < 0) return -errno;
    *regions_out = (uint64_t)n;
    *walk_end_out = arg.walk_end;
    return 0;
}
