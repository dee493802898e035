/* Empty UDP datagrams from C through the socket door, written from the header alone.
 *
 *     send_empty HOST PORT      (SOCK names the stack)
 *
 * Sends, in order: an empty datagram by IOP_SEND0 with a destination, "x" by
 * IOP_SENDTO + write, then (after IOP_CONNECT) an empty datagram by IOP_SEND0 without
 * one, the same with IOP_F_NONBLOCK, and "y" by write. Also shows what a 0-byte write
 * does (returns 0, sends nothing). Prints one line per step; exits 1 on a failure. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "io_pkt_socket.h"

static void die(const char *what)
{
	printf("fail %s %s\n", what, strerror(errno));
	exit(1);
}

int main(int argc, char **argv)
{
	char path[512];
	const char *sock = getenv("SOCK");
	if (argc != 3)
		return 2;
	snprintf(path, sizeof path, "%s/dev/socket/2/2/17", sock ? sock : "");
	int fd = open(path, O_RDWR);
	if (fd < 0)
		die("open");
	struct iop_sockaddr to = IOP_SOCKADDR_IN(inet_addr(argv[1]), htons(atoi(argv[2])), 0);

	/* sendto(fd, "", 0, 0, &to): IOP_SEND0 with the destination */
	if (ioctl(fd, IOP_SEND0, &to) < 0)
		die("send0-to");
	printf("send0 to ok\n");

	/* sendto(fd, "x", 1, 0, &to) */
	if (ioctl(fd, IOP_SENDTO, &to) < 0 || write(fd, "x", 1) != 1)
		die("sendto");
	/* a 0-byte write never reaches the stack */
	printf("write0 %zd\n", write(fd, "", 0));

	/* connected: send(fd, "", 0, 0) = IOP_SEND0 with len 0 */
	if (ioctl(fd, IOP_CONNECT, &to) < 0)
		die("connect");
	struct iop_sockaddr none;
	memset(&none, 0, sizeof none);
	if (ioctl(fd, IOP_SEND0, &none) < 0)
		die("send0");
	none.flags = IOP_F_NONBLOCK;
	if (ioctl(fd, IOP_SEND0, &none) < 0)
		die("send0-nonblock");
	printf("send0 connected ok\n");
	if (write(fd, "y", 1) != 1)
		die("write");

	/* unknown flags are refused */
	none.flags = 0x80;
	printf("badflags %s\n", ioctl(fd, IOP_SEND0, &none) < 0 && errno == EINVAL ? "EINVAL" : "?");
	close(fd);
	return 0;
}
