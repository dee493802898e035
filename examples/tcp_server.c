/*
 * tcp_server: a TCP echo server over io-pkt's socket door (open/ioctl/read/write only).
 *
 *   SOCK=/alt tcp_server PORT [COUNT]
 *
 * Listens on PORT and serves COUNT connections (default 1) one after another: each is
 * echoed back upper-cased until the peer half-closes. An accepted connection arrives as
 * a NAME (struct iop_accept.name) that the server opens, because a FUSE file server
 * cannot hand a descriptor over.
 * Build: gcc -I rmgr/include -o tcp_server examples/tcp_server.c
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io_pkt_socket.h"

static void die(const char *what)
{
	fprintf(stderr, "tcp_server: %s: %s\n", what, strerror(errno));
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: tcp_server PORT [COUNT]\n");
		return 2;
	}
	int count = argc > 2 ? atoi(argv[2]) : 1;
	const char *sock = getenv("SOCK");
	char dir[4000], path[4096];
	snprintf(dir, sizeof dir, "%s/dev/socket", sock ? sock : "");
	snprintf(path, sizeof path, "%s/2/1/6", dir);

	int lfd = open(path, O_RDWR);                              /* socket() */
	if (lfd < 0)
		die(path);
	if (iop_setsockopt_int(lfd, SOL_SOCKET, SO_REUSEADDR, 1) < 0)
		die("setsockopt SO_REUSEADDR");
	struct iop_sockaddr me = iop_sockaddr_in(htonl(INADDR_ANY), htons(atoi(argv[1])), 0);
	if (ioctl(lfd, IOP_BIND, &me) < 0)                         /* bind() */
		die("bind");
	int backlog = 16;
	if (ioctl(lfd, IOP_LISTEN, &backlog) < 0)                  /* listen() */
		die("listen");
	printf("listening on %s\n", argv[1]);
	fflush(stdout);

	for (int i = 0; i < count; i++) {
		struct iop_accept acc;
		memset(&acc, 0, sizeof acc);
		if (ioctl(lfd, IOP_ACCEPT, &acc) < 0)              /* accept() ... */
			die("accept");
		snprintf(path, sizeof path, "%s/%s", dir, acc.name);
		int fd = open(path, O_RDWR);                       /* ... gives a name */
		if (fd < 0)
			die(path);
		fprintf(stderr, "tcp_server: %s from %s:%d\n", acc.name,
			inet_ntoa(acc.addr.sin.sin_addr), ntohs(acc.addr.sin.sin_port));
		char buf[4096];
		ssize_t n;
		while ((n = read(fd, buf, sizeof buf)) > 0) {
			for (ssize_t j = 0; j < n; j++)
				buf[j] = toupper((unsigned char)buf[j]);
			if (write(fd, buf, n) != n)
				die("write");
		}
		if (n < 0)
			die("read");
		close(fd);                                         /* FIN */
	}
	close(lfd);
	return 0;
}
