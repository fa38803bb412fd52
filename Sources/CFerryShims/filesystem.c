// statfs: `struct statfs` and the function share a name, which Swift cannot import.
#include "CFerryShims.h"

#include <errno.h>
#include <sys/vfs.h>

int ferry_statfs_magic(const char *path, uint64_t *magic_out) {
    struct statfs info;
    if (statfs(path, &info) != 0) return -errno;
    *magic_out = (uint64_t)info.f_type;
    return 0;
}
