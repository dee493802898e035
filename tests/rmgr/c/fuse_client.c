/* A C client for the FUSE tests: what an application linked against libc sees.
 *
 *   fuse_client ioctl PATH      _IOR/_IOW/_IOWR/_IO with data checked both ways
 *   fuse_client eintr PATH      blocks in read(); SIGUSR1 (no SA_RESTART) must give EINTR
 *   fuse_client bigwrite PATH   one page-aligned 1 MiB write(2)
 *   fuse_client poll PATH       poll() for POLLIN, 10 s at most; prints revents
 *   fuse_client rw PATH         O_NONBLOCK at open (EAGAIN), write/read back, select and
 *                               epoll readiness, then blocking again after fcntl
 *
 * Prints one result line; exit status 0 means every check passed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <unistd.h>

/* must match tests/rmgr/fuse_tree.py */
#define IOC_GET _IOR('T', 1, uint64_t)
#define IOC_SET _IOW('T', 2, char[16])
#define IOC_XOR _IOWR('T', 3, char[32])
#define IOC_PING _IO('T', 4)
#define IOC_UNKNOWN _IOR('T', 99, uint32_t)

static int fail(const char *what) {
    printf("FAIL %s: %s\n", what, strerror(errno));
    return 1;
}

static int do_ioctl(int fd) {
    uint64_t v = 0;
    if (ioctl(fd, IOC_GET, &v) != 0) return fail("IOC_GET");
    if (v != 0x1122334455667788ULL) { printf("FAIL IOC_GET value %llx\n", (unsigned long long)v); return 1; }
    char set[16];
    for (int i = 0; i < 16; i++) set[i] = (char)('a' + i);
    if (ioctl(fd, IOC_SET, set) != 0) return fail("IOC_SET");
    unsigned char x[32];
    for (int i = 0; i < 32; i++) x[i] = (unsigned char)i;
    int r = ioctl(fd, IOC_XOR, x);
    if (r != 32) return fail("IOC_XOR result");
    for (int i = 0; i < 32; i++)
        if (x[i] != ((unsigned char)i ^ 0xA5)) { printf("FAIL IOC_XOR byte %d = %02x\n", i, x[i]); return 1; }
    if (ioctl(fd, IOC_PING) != 42) return fail("IOC_PING");
    uint32_t u;
    if (ioctl(fd, IOC_UNKNOWN, &u) != -1 || errno != ENOTTY) return fail("IOC_UNKNOWN not ENOTTY");
    printf("ok ioctl\n");
    return 0;
}

static void on_usr1(int sig) { (void)sig; }

static int do_eintr(int fd) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1; /* no SA_RESTART */
    sigaction(SIGUSR1, &sa, NULL);
    printf("ready\n");
    fflush(stdout);
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == -1 && errno == EINTR) {
        printf("EINTR\n");
        return 0;
    }
    printf("FAIL read returned %zd (%s)\n", n, n < 0 ? strerror(errno) : "data");
    return 1;
}

static int do_bigwrite(int fd) {
    size_t size = 1 << 20;
    void *buf;
    if (posix_memalign(&buf, 4096, size) != 0) return fail("posix_memalign");
    memset(buf, 'z', size);
    ssize_t n = write(fd, buf, size);
    if (n != (ssize_t)size) return fail("write");
    printf("wrote %zd\n", n);
    return 0;
}

static int do_poll(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, 10000);
    if (r < 0) return fail("poll");
    printf("poll %d revents %#x\n", r, p.revents);
    return (r == 1 && (p.revents & POLLIN)) ? 0 : 1;
}

static int readable_by_select(int fd) {
    fd_set r, w;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_SET(fd, &r);
    FD_SET(fd, &w);
    struct timeval tv = {0, 0};
    if (select(fd + 1, &r, &w, NULL, &tv) < 0) return -1;
    if (!FD_ISSET(fd, &w)) return -1; /* the channel is always writable */
    return FD_ISSET(fd, &r) ? 1 : 0;
}

/* the channel queues what is written to it (per open) and reads it back */
static int do_rw(const char *path) {
    int fd = open(path, O_RDWR | O_NONBLOCK);
    if (fd < 0) return fail("open O_NONBLOCK");
    char buf[64];
    if (read(fd, buf, sizeof buf) != -1 || errno != EAGAIN) return fail("empty read not EAGAIN");
    if (readable_by_select(fd) != 0) return fail("select: readable while empty");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN}, out;
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) return fail("epoll_ctl");
    if (epoll_wait(ep, &out, 1, 0) != 0) return fail("epoll: readable while empty");
    if (write(fd, "hello", 5) != 5) return fail("write");
    if (readable_by_select(fd) != 1) return fail("select: not readable after write");
    if (epoll_wait(ep, &out, 1, 5000) != 1 || !(out.events & EPOLLIN)) return fail("epoll_wait");
    ssize_t n = read(fd, buf, sizeof buf);
    if (n != 5 || memcmp(buf, "hello", 5)) return fail("read back");
    if (read(fd, buf, sizeof buf) != -1 || errno != EAGAIN) return fail("drained read not EAGAIN");
    /* blocking from here on: fcntl clears O_NONBLOCK, a read waits for the write */
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) return fail("fcntl");
    if (write(fd, "again", 5) != 5) return fail("write 2");
    n = read(fd, buf, sizeof buf);
    if (n != 5 || memcmp(buf, "again", 5)) return fail("blocking read");
    close(ep);
    close(fd);
    printf("ok rw\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s ioctl|eintr|bigwrite|poll|rw PATH\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(argv[1], "rw")) return do_rw(argv[2]);
    int fd = open(argv[2], O_RDWR);
    if (fd < 0) return fail("open");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "ioctl")) return do_ioctl(fd);
    if (!strcmp(cmd, "eintr")) return do_eintr(fd);
    if (!strcmp(cmd, "bigwrite")) return do_bigwrite(fd);
    if (!strcmp(cmd, "poll")) return do_poll(fd);
    fprintf(stderr, "unknown command %s\n", cmd);
    return 2;
}
