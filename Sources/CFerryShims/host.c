// Host facts for the agent: sched_getaffinity, O_TMPFILE and gettid need _GNU_SOURCE.
#define _GNU_SOURCE
#include "CFerryShims.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

int ferry_affinity_cpu_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -errno;
    return CPU_COUNT(&set);
}

int ferry_open_tmpfile(const char *directory) {
    int fd = open(directory, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    return fd < 0 ? -errno : fd;
}

int32_t ferry_gettid(void) { return (int32_t)gettid(); }
