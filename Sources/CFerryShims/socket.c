// Socket queries that need the variadic ioctl, which Swift cannot call.
#include "CFerryShims.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

int ferry_socket_unacked_bytes(int fd, int *bytes_out) {
    int bytes = 0;
    if (ioctl(fd, SIOCOUTQ, &bytes) != 0) return -1;
    *bytes_out = bytes;
    return 0;
}
