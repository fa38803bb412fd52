// statfs: `struct statfs` and the function share a name, which Swift cannot import.
#define _GNU_SOURCE  // F_OFD_SETLK, F_OFD_GETLK
#include "CFerryShims.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <linux/fs.h>

int ferry_statfs_magic(const char *path, uint64_t *magic_out) {
    struct statfs info;
    if (statfs(path, &info) != 0) return -errno;
    *magic_out = (uint64_t)info.f_type;
    return 0;
}

// Open file description locks (F_OFD_SETLK / F_OFD_GETLK) on the whole file: a C shim so that
// `struct flock` and the fcntl variadic stay out of Swift. l_pid must be 0 for OFD locks.

int ferry_ofd_lock(int fd, int exclusive) {
    struct flock lock;
    memset(&lock, 0, sizeof lock);
    lock.l_type = exclusive ? F_WRLCK : F_RDLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = 0;
    lock.l_len = 0;
    lock.l_pid = 0;
    if (fcntl(fd, F_OFD_SETLK, &lock) != 0) return -errno;
    return 0;
}

int ferry_ofd_conflict(int fd) {
    struct flock lock;
    memset(&lock, 0, sizeof lock);
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = 0;
    lock.l_len = 0;
    lock.l_pid = 0;
    if (fcntl(fd, F_OFD_GETLK, &lock) != 0) return -errno;
    return lock.l_type == F_UNLCK ? 0 : 1;
}

int ferry_setxattr(const char *path, const char *name, const void *value, size_t size) {
    return setxattr(path, name, value, size, 0) == 0 ? 0 : -errno;
}

long ferry_getxattr(const char *path, const char *name, void *value, size_t size) {
    ssize_t length = getxattr(path, name, value, size);
    return length >= 0 ? (long)length : -errno;
}

int ferry_removexattr(const char *path, const char *name) {
    return removexattr(path, name) == 0 ? 0 : -errno;
}
// Disk moves onto an older copy: punching zero pages, copying extents in the kernel, reflinks.

int ferry_punch_hole(int fd, int64_t offset, int64_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) == 0 ? 0 : -errno;
}

int64_t ferry_copy_file_range(int in_fd, int out_fd, int64_t offset, int64_t length) {
    off64_t in_offset = offset, out_offset = offset;
    ssize_t copied = copy_file_range(in_fd, &in_offset, out_fd, &out_offset, (size_t)length, 0);
    return copied >= 0 ? (int64_t)copied : -errno;
}

int ferry_clone_file(int dest_fd, int src_fd) { return ioctl(dest_fd, FICLONE, src_fd) == 0 ? 0 : -errno; }
