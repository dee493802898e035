/*
 * eintr_write: a write blocked on a full send buffer, interrupted by a signal.
 *
 *   SOCK=/alt eintr_write HOST PORT TOTAL
 *
 * Connects, then writes TOTAL bytes of big-endian 32-bit counters (0, 1, 2, ...) in
 * writes of up to 1 MiB. The peer does not read at first, so a write blocks; SIGALRM
 * (installed without SA_RESTART, 0.3 s after connecting) interrupts it: write(2) gives
 * EINTR, or a short count if part went. Prints "interrupted eintr|short OFFSET" with the
 * offset the writer was told had been written, then goes on from there to TOTAL, prints
 * "done OFFSET" and closes. The peer must then receive exactly the counter stream.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "io_pkt_socket.h"

static volatile sig_atomic_t alarmed;

static void on_alarm(int sig)
{
	(void)sig;
	alarmed = 1;
}

static void die(const char *what)
{
	fprintf(stderr, "eintr_write: %s: %s\n", what, strerror(errno));
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: eintr_write HOST PORT TOTAL\n");
		return 2;
	}
	size_t total = (size_t)atol(argv[3]);
	unsigned char *buf = malloc(total + 4);
	if (!buf)
		die("malloc");
	for (size_t i = 0; i * 4 < total; i++) {
		uint32_t v = htonl((uint32_t)i);
		memcpy(buf + 4 * i, &v, 4);
	}

	const char *sock = getenv("SOCK");
	char path[4096];
	snprintf(path, sizeof path, "%s/dev/socket/2/1/6", sock ? sock : "");
	int fd = open(path, O_RDWR);
	if (fd < 0)
		die(path);
	struct iop_sockaddr to = iop_sockaddr_in(inet_addr(argv[1]), htons(atoi(argv[2])), 0);
	if (ioctl(fd, IOP_CONNECT, &to) < 0)
		die("connect");

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;   /* no SA_RESTART: the write must come back */
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGALRM, &sa, NULL) < 0)
		die("sigaction");
	struct itimerval it = { .it_value = { .tv_sec = 0, .tv_usec = 300000 } };
	if (setitimer(ITIMER_REAL, &it, NULL) < 0)
		die("setitimer");

	size_t off = 0;
	int reported = 0;
	while (off < total) {
		size_t want = total - off > IOP_IO_MAX ? IOP_IO_MAX : total - off;
		ssize_t n = write(fd, buf + off, want);
		if (n < 0 && errno != EINTR)
			die("write");
		if (n > 0)
			off += (size_t)n;
		if (!reported && (n < 0 || (size_t)n < want)) {
			if (!alarmed) {
				fprintf(stderr, "eintr_write: write returned %zd of %zu without a "
					"signal\n", n, want);
				return 1;
			}
			printf("interrupted %s %zu\n", n < 0 ? "eintr" : "short", off);
			fflush(stdout);
			reported = 1;
		}
	}
	if (!reported) {
		fprintf(stderr, "eintr_write: the signal never interrupted a write\n");
		return 1;
	}
	printf("done %zu\n", off);
	fflush(stdout);
	close(fd);
	return 0;
}
