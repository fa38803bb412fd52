// Socket queries that need the variadic ioctl, or kernel structs newer than glibc's copies.
#include "CFerryShims.h"

#include <errno.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

int ferry_socket_unacked_bytes(int fd, int *bytes_out) {
    int bytes = 0;
    if (ioctl(fd, SIOCOUTQ, &bytes) != 0) return -errno;
    *bytes_out = bytes;
    return 0;
}

int ferry_socket_bytes_acked(int fd, uint64_t *bytes_out) {
    struct tcp_info info;
    memset(&info, 0, sizeof info);
    socklen_t length = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0) return -errno;
    *bytes_out = info.tcpi_bytes_acked;
    return 0;
}
