// rawcopy: the raw baseline of Tools/bench. A plain sender and receiver that copy an image's bytes
// over one TCP connection with nothing else: no tracking, no encoding, no hashing.
//
//   rawcopy recv --listen HOST:PORT --out PATH [--size BYTES --prefault on] [--json PATH]
//   rawcopy send --image PATH --to HOST:PORT [--chunk BYTES] [--json PATH]
//
// Wire: the sender writes an 8-byte little-endian length, then the bytes; the receiver answers one
// byte (1 = got exactly that many) followed by its own elapsed nanoseconds (8 bytes, LE).
// Sender: mmaps the image with MAP_POPULATE (before connecting; not timed), then write()s it in
// chunks (4 MiB by default). Receiver: creates PATH with the announced size, mmaps it MAP_SHARED
// and read()s straight into the mapping (its page faults are part of the copy, as they are for a
// migration destination). Receiver time: accept() returned -> last byte in and length checked.
// Sender time: before connect() -> acknowledgement read (one extra one-way trip).
// With --size and --prefault the receiver creates and pre-faults (MAP_POPULATE) the file before it
// listens, as QEMU's prealloc=on destination does; that work is not timed.
// "listening on HOST:PORT" is printed on stderr once the receiver listens (port 0 picks one).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "rawcopy: %s: %s\n", what, strerror(errno));
    exit(8);
}

static void fail(const char *msg) {
    fprintf(stderr, "rawcopy: %s\n", msg);
    exit(2);
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void parse_endpoint(const char *text, struct sockaddr_in *sa) {
    char host[64];
    const char *colon = strrchr(text, ':');
    if (!colon || (size_t)(colon - text) >= sizeof host) fail("endpoint must be IPv4:PORT");
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) fail("endpoint must be IPv4:PORT");
}

static void write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

// Reads until n bytes or end of stream; returns the count read.
static size_t read_full(int fd, void *buf, size_t n) {
    char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("read");
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return got;
}

static void write_json(const char *path, const char *role, uint64_t bytes, double ms, double peer_ms,
                       size_t chunk) {
    if (!path) return;
    FILE *f = fopen(path, "w");
    if (!f) die("fopen json");
    double mbps = ms > 0 ? (double)bytes / 1e6 / (ms / 1e3) : 0;
    fprintf(f,
            "{\"role\": \"%s\", \"bytes\": %llu, \"total_ms\": %.3f, \"peer_ms\": %.3f, "
            "\"mb_per_s\": %.1f, \"chunk_bytes\": %zu, \"verified_length\": true}\n",
            role, (unsigned long long)bytes, ms, peer_ms, mbps, chunk);
    fclose(f);
}

static char *map_out(const char *out, uint64_t size, int populate, int *fd_out) {
    int fd = open(out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) die("open out");
    if (ftruncate(fd, (off_t)size) < 0) die("ftruncate");
    char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
    if (map == MAP_FAILED) die("mmap out");
    *fd_out = fd;
    return map;
}

static int do_recv(const char *listen_at, const char *out, uint64_t presize, int prefault, const char *json) {
    int fd = -1;
    char *map = NULL;
    if (prefault) {
        if (presize == 0) fail("--prefault needs --size");
        map = map_out(out, presize, 1, &fd);
    }
    struct sockaddr_in sa;
    parse_endpoint(listen_at, &sa);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (ls < 0) die("socket");
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(ls, 1) < 0) die("listen");
    socklen_t len = sizeof sa;
    if (getsockname(ls, (struct sockaddr *)&sa, &len) < 0) die("getsockname");
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
    fprintf(stderr, "rawcopy: listening on %s:%u\n", host, ntohs(sa.sin_port));
    fflush(stderr);

    int s;
    while ((s = accept4(ls, NULL, NULL, SOCK_CLOEXEC)) < 0)
        if (errno != EINTR) die("accept");
    double t0 = now_ns();
    uint8_t hdr[8];
    if (read_full(s, hdr, 8) != 8) fail("stream ended before the length");
    uint64_t size = 0;
    for (int i = 7; i >= 0; i--) size = (size << 8) | hdr[i];
    if (size == 0 || size > (1ULL << 40)) fail("announced length out of range");
    if (map && size != presize) fail("announced length differs from --size");
    if (!map) map = map_out(out, size, 0, &fd);

    uint64_t got = 0;
    while (got < size) {
        size_t want = size - got > (64u << 20) ? (64u << 20) : (size_t)(size - got);
        ssize_t r = read(s, map + got, want);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("read");
        }
        if (r == 0) break;
        got += (uint64_t)r;
    }
    double ms = (now_ns() - t0) / 1e6;
    if (got != size) {
        fprintf(stderr, "rawcopy: received %llu of %llu bytes\n", (unsigned long long)got,
                (unsigned long long)size);
        return 6;
    }
    uint8_t ack[9];
    ack[0] = 1;
    uint64_t ns = (uint64_t)(ms * 1e6);
    for (int i = 0; i < 8; i++) ack[1 + i] = (uint8_t)(ns >> (8 * i));
    write_all(s, ack, sizeof ack);
    fprintf(stderr, "rawcopy: received %llu bytes in %.1f ms (%.0f MB/s)\n", (unsigned long long)size,
            ms, (double)size / 1e3 / ms);
    write_json(json, prefault ? "receiver (pre-faulted)" : "receiver", size, ms, 0, 0);
    munmap(map, size);
    close(fd);
    close(s);
    close(ls);
    return 0;
}

static int do_send(const char *image, const char *to, size_t chunk, const char *json) {
    struct sockaddr_in sa;
    parse_endpoint(to, &sa);
    int fd = open(image, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open image");
    struct stat st;
    if (fstat(fd, &st) < 0) die("fstat image");
    uint64_t size = (uint64_t)st.st_size;
    if (size == 0) fail("image is empty");
    char *map = mmap(NULL, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED) die("mmap image");

    double t0 = now_ns();
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) die("socket");
    while (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0)
        if (errno != EINTR) die("connect");
    uint8_t hdr[8];
    for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)(size >> (8 * i));
    write_all(s, hdr, 8);
    for (uint64_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
        write_all(s, map + off, n);
    }
    uint8_t ack[9];
    if (read_full(s, ack, sizeof ack) != sizeof ack || ack[0] != 1) fail("no acknowledgement from the receiver");
    double ms = (now_ns() - t0) / 1e6;
    uint64_t peer_ns = 0;
    for (int i = 7; i >= 0; i--) peer_ns = (peer_ns << 8) | ack[1 + i];
    fprintf(stderr, "rawcopy: sent %llu bytes in %.1f ms (%.0f MB/s), receiver %.1f ms\n",
            (unsigned long long)size, ms, (double)size / 1e3 / ms, (double)peer_ns / 1e6);
    write_json(json, "sender", size, ms, (double)peer_ns / 1e6, chunk);
    close(s);
    munmap(map, size);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) fail("usage: rawcopy recv --listen HOST:PORT --out PATH [--size N --prefault on] [--json P] | send --image PATH --to HOST:PORT [--chunk N] [--json P]");
    const char *listen_at = NULL, *out = NULL, *image = NULL, *to = NULL, *json = NULL;
    size_t chunk = 4u << 20;
    uint64_t presize = 0;
    int prefault = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--listen")) listen_at = argv[i + 1];
        else if (!strcmp(argv[i], "--out")) out = argv[i + 1];
        else if (!strcmp(argv[i], "--image")) image = argv[i + 1];
        else if (!strcmp(argv[i], "--to")) to = argv[i + 1];
        else if (!strcmp(argv[i], "--json")) json = argv[i + 1];
        else if (!strcmp(argv[i], "--size")) presize = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--prefault")) prefault = !strcmp(argv[i + 1], "on");
        else if (!strcmp(argv[i], "--chunk")) chunk = (size_t)strtoull(argv[i + 1], NULL, 10);
        else fail("unknown option");
    }
    if (chunk < 4096 || chunk > (64u << 20)) fail("--chunk must be 4096..64 MiB");
    if (!strcmp(argv[1], "recv") && listen_at && out) return do_recv(listen_at, out, presize, prefault, json);
    if (!strcmp(argv[1], "send") && image && to) return do_send(image, to, chunk, json);
    fail("bad arguments; see the comment at the top of rawcopy.c");
    return 2;
}
