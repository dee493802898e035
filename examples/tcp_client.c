/*
 * tcp_client: a TCP client over io-pkt's socket door (open/ioctl/read/write only).
 *
 *   SOCK=/alt tcp_client [-n] HOST PORT MESSAGE
 *
 * Connects to HOST:PORT (-n: a non-blocking connect, then poll for POLLOUT and read
 * SO_ERROR), writes MESSAGE, half-closes, and copies what comes back to stdout until EOF.
 * Build: gcc -I rmgr/include -o tcp_client examples/tcp_client.c
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io_pkt_socket.h"

static void die(const char *what)
{
	fprintf(stderr, "tcp_client: %s: %s\n", what, strerror(errno));
	exit(1);
}

int main(int argc, char **argv)
{
	int nonblock = 0, arg = 1;
	if (argc > 1 && strcmp(argv[1], "-n") == 0) {
		nonblock = 1;
		arg++;
	}
	if (argc - arg != 3) {
		fprintf(stderr, "usage: tcp_client [-n] HOST PORT MESSAGE\n");
		return 2;
	}
	const char *sock = getenv("SOCK");
	char path[4096];
	snprintf(path, sizeof path, "%s/dev/socket/2/1/6", sock ? sock : "");

	int fd = open(path, O_RDWR);                         /* socket() */
	if (fd < 0)
		die(path);

	struct iop_sockaddr to = iop_sockaddr_in(inet_addr(argv[arg]),
						 htons(atoi(argv[arg + 1])),
						 nonblock ? IOP_F_NONBLOCK : 0);
	if (ioctl(fd, IOP_CONNECT, &to) < 0) {               /* connect() */
		if (!(nonblock && errno == EINPROGRESS))
			die("connect");
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		if (poll(&p, 1, 5000) != 1)
			die("poll for the connection");
		int err = 0;
		if (iop_getsockopt_int(fd, SOL_SOCKET, SO_ERROR, &err) < 0)
			die("getsockopt SO_ERROR");
		if (err) {
			errno = err;
			die("connect (SO_ERROR)");
		}
		fprintf(stderr, "tcp_client: non-blocking connect done\n");
	}
	struct iop_sockaddr me;
	if (ioctl(fd, IOP_GETSOCKNAME, &me) < 0)
		die("getsockname");
	fprintf(stderr, "tcp_client: connected from %s:%d\n", inet_ntoa(me.addr.sin.sin_addr),
		ntohs(me.addr.sin.sin_port));

	size_t len = strlen(argv[arg + 2]);
	if (write(fd, argv[arg + 2], len) != (ssize_t)len)   /* send() */
		die("write");
	int how = SHUT_WR;
	if (ioctl(fd, IOP_SHUTDOWN, &how) < 0)               /* shutdown() */
		die("shutdown");

	char buf[4096];
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0)          /* recv() until EOF */
		fwrite(buf, 1, n, stdout);
	if (n < 0)
		die("read");
	close(fd);                                           /* the last close */
	return 0;
}
