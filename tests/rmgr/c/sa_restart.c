/* sa_restart PATH: what a C program whose signal handler has SA_RESTART sees when a
 * signal comes while it is blocked in read(2) on a file of the FUSE mount.
 *
 * On a kernel socket the read would be restarted after the handler; through FUSE the
 * kernel returns EINTR whatever SA_RESTART says (docs/sockets.md). Prints "EINTR" (or
 * "restarted" if the read was restarted after all), then does what the docs advise -
 * retry on EINTR - and prints "got DATA" with what the retried read returned.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t handled;

static void on_usr1(int sig) { (void)sig; handled = 1; }

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: sa_restart PATH\n"); return 2; }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { printf("FAIL open: %s\n", strerror(errno)); return 1; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n == -1 && errno == EINTR) {
        printf("EINTR\n");
        fflush(stdout);
        do {  /* the workaround: retry */
            n = read(fd, buf, sizeof buf - 1);
        } while (n == -1 && errno == EINTR);
    } else {
        printf("restarted\n");
    }
    if (n < 0) { printf("FAIL read: %s\n", strerror(errno)); return 1; }
    buf[n] = 0;
    printf("got %s handled %d\n", buf, (int)handled);
    return 0;
}
