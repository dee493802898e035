/*
 * tcp6_client: an IPv6 TCP client over io-pkt's socket door (open/ioctl/read/write
 * only), with struct sockaddr_in6 in and out.
 *
 *   SOCK=/alt tcp6_client ADDRESS[%IFINDEX] PORT MESSAGE
 *
 * Opens $SOCK/dev/socket/24/1/6 (AF_INET6 is 24 in the door's directory, as on QNX;
 * sin6_family is Linux's AF_INET6), connects to [ADDRESS]:PORT - a link-local address
 * takes its interface as a scope id (%N: the stack's interface index, sin6_scope_id) and
 * an IPv4-mapped one (::ffff:10.0.0.1) reaches an IPv4 peer - writes MESSAGE,
 * half-closes, copies the reply to stdout until EOF, and prints its own and the peer's
 * sockaddr_in6 on stderr.
 * Build: gcc -I rmgr/include -o tcp6_client examples/tcp6_client.c
 */
#include <arpa/inet.h>
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
	fprintf(stderr, "tcp6_client: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void show(const char *who, const struct iop_sockaddr *a)
{
	char text[INET6_ADDRSTRLEN];
	if (a->addr.sa.sa_family != AF_INET6 || a->len != sizeof(struct sockaddr_in6)) {
		fprintf(stderr, "tcp6_client: %s: not a sockaddr_in6 (family %d, len %u)\n", who,
			a->addr.sa.sa_family, a->len);
		exit(1);
	}
	inet_ntop(AF_INET6, &a->addr.sin6.sin6_addr, text, sizeof text);
	fprintf(stderr, "tcp6_client: %s [%s]:%d scope %u\n", who, text,
		ntohs(a->addr.sin6.sin6_port), a->addr.sin6.sin6_scope_id);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: tcp6_client ADDRESS[%%IFINDEX] PORT MESSAGE\n");
		return 2;
	}
	const char *sock = getenv("SOCK");
	char path[4096];
	snprintf(path, sizeof path, "%s/dev/socket/24/1/6", sock ? sock : "");

	int fd = open(path, O_RDWR);                         /* socket(AF_INET6, ...) */
	if (fd < 0)
		die(path);

	char host[INET6_ADDRSTRLEN + 16];
	snprintf(host, sizeof host, "%s", argv[1]);
	uint32_t scope = 0;
	char *pct = strchr(host, '%');
	if (pct) {
		*pct = '\0';
		scope = (uint32_t)atoi(pct + 1);
	}
	struct in6_addr dst;
	if (inet_pton(AF_INET6, host, &dst) != 1) {
		fprintf(stderr, "tcp6_client: not an IPv6 address: %s\n", host);
		return 2;
	}
	struct iop_sockaddr to = IOP_SOCKADDR_IN6(&dst, htons(atoi(argv[2])), scope, 0);
	if (ioctl(fd, IOP_CONNECT, &to) < 0)                 /* connect() */
		die("connect");

	struct iop_sockaddr me, peer;
	if (ioctl(fd, IOP_GETSOCKNAME, &me) < 0)
		die("getsockname");
	if (ioctl(fd, IOP_GETPEERNAME, &peer) < 0)
		die("getpeername");
	show("local", &me);
	show("remote", &peer);

	size_t len = strlen(argv[3]);
	if (write(fd, argv[3], len) != (ssize_t)len)         /* send() */
		die("write");
	int how = SHUT_WR;
	if (ioctl(fd, IOP_SHUTDOWN, &how) < 0)               /* shutdown() */
		die("shutdown");

	char buf[4096];
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0)          /* recv() until EOF */
		fwrite(buf, 1, (size_t)n, stdout);
	if (n < 0)
		die("read");
	close(fd);                                           /* close() */
	return 0;
}
