/*
 * io_pkt_socket.h - the binary interface of io-pkt's socket door.
 *
 * A socket is an open file under $SOCK/dev/socket (see docs/sockets.md):
 *
 *     int fd = open("/dev/socket/2/1/6", O_RDWR);      // socket(AF_INET, SOCK_STREAM, 0)
 *     struct iop_sockaddr a = IOP_SOCKADDR_IN(inet_addr("10.0.0.1"), htons(80), 0);
 *     ioctl(fd, IOP_CONNECT, &a);                        // connect()
 *     write(fd, "hi", 2); read(fd, buf, sizeof buf);     // send() / recv()
 *     close(fd);                                         // last close: FIN
 *
 * IPv6 (AF_INET6 is 24 in the door's directory, as on QNX; 10 in the structs, Linux's):
 *
 *     int fd = open("/dev/socket/24/1/6", O_RDWR);      // or .../inet6/tcp
 *     struct iop_sockaddr a = IOP_SOCKADDR_IN6(&in6addr_loopback, htons(80), 0, 0);
 *     ioctl(fd, IOP_CONNECT, &a);   // sin6_scope_id = if_nametoindex() for fe80::/10
 *
 * An AF_INET6 socket is dual-stack (IPv4 peers as ::ffff:a.b.c.d) unless IPV6_V6ONLY.
 * read/write are recv/send (one read is one datagram on UDP; a read of 0 is EOF on TCP;
 * an empty datagram is sent with IOP_SEND0, not with a 0-byte write);
 * poll/select/epoll report POLLIN/POLLOUT/POLLHUP/POLLERR. Everything else is an ioctl
 * below; errors are BSD socket errnos. Every command is _IOR/_IOW/_IOWR with a fixed-size
 * struct, because FUSE only passes such "restricted" ioctls.
 *
 * UDP and raw sockets have a message mode (IOP_MSGMODE below): records carrying the
 * address with the data, so recvfrom/sendto are one read/write and many datagrams can
 * share one (as recvmmsg/sendmmsg).
 *
 * The Python twin is rmgr/libsocket/abi.py; the tests check the two agree.
 */
#ifndef IO_PKT_SOCKET_H
#define IO_PKT_SOCKET_H

#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <netinet/in.h>

#define IOP_MAGIC 'Q'

#define IOP_ADDR_MAX 32     /* room for struct sockaddr_in and struct sockaddr_in6 */
#define IOP_NAME_MAX 88
#define IOP_OPTVAL_MAX 32
/* largest read/write the stack serves in one request: a longer read(2) may wait for more */
#define IOP_IO_MAX (1 << 20)

/* flags in iop_sockaddr.flags / iop_accept.flags. An ioctl does not carry the file's
 * O_NONBLOCK flag, so a non-blocking connect or accept says so here (opening the socket
 * file with O_NONBLOCK makes every connect/accept on that open non-blocking too). */
#define IOP_F_NONBLOCK 0x1
/* iop_accept.flags: name the accepted connection by a handover slot, "accepted/K" (the
 * smallest free K; free again once opened), instead of "tcp/N/data": the same few names
 * serve accept after accept, so the kernel has them cached and the open costs no lookup.
 * Open the name from the thread that called IOP_ACCEPT (another thread gets ENOENT).
 * Without it the name is "tcp/N/data", as before. */
#define IOP_F_HANDOVER 0x2

/* An address in and out: addr holds a Linux struct sockaddr_in (an AF_INET socket) or
 * struct sockaddr_in6 (an AF_INET6 one), len is its size. A socket takes only its own
 * family's (else EAFNOSUPPORT, as Linux). */
struct iop_sockaddr {
	uint32_t flags;
	uint32_t len;
	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_in6 sin6;
		unsigned char raw[IOP_ADDR_MAX];
	} addr;
};

/* accept: in flags; out the peer and the NAME of the new connection, relative to
 * $SOCK/dev/socket (e.g. "tcp/7/data"): open it O_RDWR to get the accepted socket.
 * A connection nobody opens is reset after 30 s, or when the listener is closed. */
struct iop_accept {
	uint32_t flags;
	uint32_t addrlen;
	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_in6 sin6;
		unsigned char raw[IOP_ADDR_MAX];
	} addr;
	char name[IOP_NAME_MAX];
};

/* setsockopt/getsockopt: level and name as for setsockopt(2) (Linux numbers); val holds
 * the option value as setsockopt(2) takes it (int, struct linger, struct timeval). */
struct iop_sockopt {
	int32_t level;
	int32_t name;
	uint32_t len;
	uint32_t flags;
	unsigned char val[IOP_OPTVAL_MAX];
};

/* getsockopt for a value longer than IOP_OPTVAL_MAX (TCP_INFO): len in is the size of
 * the caller's buffer, len out what was filled (min of the two, as Linux). */
#define IOP_OPTVAL_LARGE 256
struct iop_sockopt_large {
	int32_t level;
	int32_t name;
	uint32_t len;
	uint32_t flags;
	unsigned char val[IOP_OPTVAL_LARGE];
};

/* getsockopt(IPPROTO_TCP, TCP_INFO): Linux's struct tcp_info, field for field (the
 * layout of <linux/tcp.h> up to tcpi_snd_wnd, 232 bytes), so code written for Linux reads
 * it unchanged; named iop_tcp_info so that it can live beside <netinet/tcp.h>. Units as
 * Linux: usec for rto/ato/rtt/rttvar/min_rtt, msec for last_*, segments for the windows,
 * bytes/s for the rates. Fields the stack does not keep are 0 (see docs/observability.md). */
struct iop_tcp_info {
	uint8_t tcpi_state;
	uint8_t tcpi_ca_state;
	uint8_t tcpi_retransmits;
	uint8_t tcpi_probes;
	uint8_t tcpi_backoff;
	uint8_t tcpi_options;
	uint8_t tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4;
	uint8_t tcpi_delivery_rate_app_limited : 1, tcpi_fastopen_client_fail : 2;

	uint32_t tcpi_rto;
	uint32_t tcpi_ato;
	uint32_t tcpi_snd_mss;
	uint32_t tcpi_rcv_mss;

	uint32_t tcpi_unacked;
	uint32_t tcpi_sacked;
	uint32_t tcpi_lost;
	uint32_t tcpi_retrans;
	uint32_t tcpi_fackets;

	uint32_t tcpi_last_data_sent;
	uint32_t tcpi_last_ack_sent;
	uint32_t tcpi_last_data_recv;
	uint32_t tcpi_last_ack_recv;

	uint32_t tcpi_pmtu;
	uint32_t tcpi_rcv_ssthresh;
	uint32_t tcpi_rtt;
	uint32_t tcpi_rttvar;
	uint32_t tcpi_snd_ssthresh;
	uint32_t tcpi_snd_cwnd;
	uint32_t tcpi_advmss;
	uint32_t tcpi_reordering;

	uint32_t tcpi_rcv_rtt;
	uint32_t tcpi_rcv_space;

	uint32_t tcpi_total_retrans;

	uint64_t tcpi_pacing_rate;
	uint64_t tcpi_max_pacing_rate;
	uint64_t tcpi_bytes_acked;
	uint64_t tcpi_bytes_received;
	uint32_t tcpi_segs_out;
	uint32_t tcpi_segs_in;

	uint32_t tcpi_notsent_bytes;
	uint32_t tcpi_min_rtt;
	uint32_t tcpi_data_segs_in;
	uint32_t tcpi_data_segs_out;

	uint64_t tcpi_delivery_rate;

	uint64_t tcpi_busy_time;
	uint64_t tcpi_rwnd_limited;
	uint64_t tcpi_sndbuf_limited;

	uint32_t tcpi_delivered;
	uint32_t tcpi_delivered_ce;

	uint64_t tcpi_bytes_sent;
	uint64_t tcpi_bytes_retrans;
	uint32_t tcpi_dsack_dups;
	uint32_t tcpi_reord_seen;

	uint32_t tcpi_rcv_ooopack;

	uint32_t tcpi_snd_wnd;
};

/* what a socket fd is */
struct iop_sockinfo {
	int32_t domain;     /* AF_INET, AF_INET6 (Linux's numbers, as in the sockaddrs) */
	int32_t type;       /* SOCK_STREAM, SOCK_DGRAM, SOCK_RAW */
	int32_t protocol;
	uint32_t id;        /* N of tcp/N, udp/N, raw/N in the text door */
	uint32_t state;     /* IOP_ST_* */
	uint32_t flags;
	uint32_t nread;
	uint32_t reserved;
	char name[32];      /* "tcp/N": the text door's name */
};

/* IOP_RECVINFO: what IPV6_RECVPKTINFO / IPV6_RECVHOPLIMIT / IPV6_RECVTCLASS kept of
 * the datagram this fd read last (recvmsg's ancillary data) */
#define IOP_RI_PKTINFO 1
#define IOP_RI_HOPLIMIT 2
#define IOP_RI_TCLASS 4
struct iop_recvinfo {
	uint32_t flags;     /* IOP_RI_*: which fields are valid */
	int32_t ifindex;    /* in6_pktinfo.ipi6_ifindex: where it arrived */
	int32_t hoplimit;
	int32_t tclass;
	unsigned char dst[16]; /* in6_pktinfo.ipi6_addr: the address it was sent to */
};

/* Message mode (IOP_MSGMODE, datagram sockets): a read returns, and a write takes,
 * records - a struct iop_msg, then len bytes of data, then zero padding to
 * IOP_MSG_ALIGN before the next record (IOP_MSG_PAD). One datagram per record, its
 * address in the header: recvfrom/sendto in one read/write each, recvmmsg/sendmmsg-like
 * batches in one. */
#define IOP_MSG_ALIGN 8
#define IOP_MSG_PAD(off) (((off) + IOP_MSG_ALIGN - 1) & ~(size_t)(IOP_MSG_ALIGN - 1))
#define IOP_MSG_TRUNC 0x20       /* iop_msg.flags out: cut to fit (Linux's MSG_TRUNC) */
#define IOP_MSG_MAXCOUNT 1024    /* records per read (a larger count is cut) and write */
struct iop_msg {
	uint32_t len;       /* data bytes after this header */
	uint32_t flags;     /* read: IOP_MSG_TRUNC; write: 0 (else EINVAL) */
	uint32_t addrlen;   /* size of addr; 0: none (write: to the connected peer) */
	int32_t ifindex;    /* read: arrival interface with IPV6_RECVPKTINFO, else 0; write: 0 */
	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_in6 sin6;
		unsigned char raw[IOP_ADDR_MAX];
	} addr;             /* read: the source; write: the destination (as sendto) */
};

#define IOP_ST_CLOSED 0
#define IOP_ST_BOUND 1
#define IOP_ST_LISTEN 2
#define IOP_ST_CONNECTING 3
#define IOP_ST_CONNECTED 4
#define IOP_ST_CLOSING 5

/* bind(): EACCES for ports < 1024 unless root; EADDRINUSE */
#define IOP_BIND        _IOW(IOP_MAGIC, 1, struct iop_sockaddr)
/* connect(): blocks until established, or EINPROGRESS with IOP_F_NONBLOCK - then wait
 * for POLLOUT and read SO_ERROR. EALREADY while in progress, EISCONN after. UDP: sets
 * the peer. A signal gives EINTR; the connection goes on (as BSD). */
#define IOP_CONNECT     _IOW(IOP_MAGIC, 2, struct iop_sockaddr)
/* listen(backlog) */
#define IOP_LISTEN      _IOW(IOP_MAGIC, 3, int32_t)
/* accept(): EAGAIN with IOP_F_NONBLOCK and nothing pending; a listener with a pending
 * connection polls POLLIN */
#define IOP_ACCEPT      _IOWR(IOP_MAGIC, 4, struct iop_accept)
/* shutdown(how): SHUT_RD, SHUT_WR, SHUT_RDWR */
#define IOP_SHUTDOWN    _IOW(IOP_MAGIC, 5, int32_t)
#define IOP_GETSOCKNAME _IOR(IOP_MAGIC, 6, struct iop_sockaddr)
/* ENOTCONN when not connected */
#define IOP_GETPEERNAME _IOR(IOP_MAGIC, 7, struct iop_sockaddr)
#define IOP_SETSOCKOPT  _IOW(IOP_MAGIC, 8, struct iop_sockopt)
#define IOP_GETSOCKOPT  _IOWR(IOP_MAGIC, 9, struct iop_sockopt)
/* FIONREAD: bytes readable now (TCP), the size of the next datagram (UDP) */
#define IOP_NREAD       _IOR(IOP_MAGIC, 10, int32_t)
/* sendto() = IOP_SENDTO (the destination of the next write on this fd) + write() */
#define IOP_SENDTO      _IOW(IOP_MAGIC, 11, struct iop_sockaddr)
/* recvfrom() = read() + IOP_RECVADDR (the source of the datagram this fd read last) */
#define IOP_RECVADDR    _IOR(IOP_MAGIC, 12, struct iop_sockaddr)
#define IOP_SOCKINFO    _IOR(IOP_MAGIC, 13, struct iop_sockinfo)
/* recv(flags) = IOP_RECVFLAGS (flags for the next read on this fd) + read(). Takes
 * MSG_PEEK, MSG_WAITALL (streams: the read returns the full size unless EOF, an error
 * or a signal comes first) and MSG_DONTWAIT; others fail with EOPNOTSUPP. */
#define IOP_RECVFLAGS   _IOW(IOP_MAGIC, 14, int32_t)
/* send an empty (0-byte) datagram. write(fd, "", 0) cannot: the kernel never passes a
 * 0-byte write to a FUSE server, so it returns 0 and nothing is sent. flags:
 * IOP_F_NONBLOCK (EAGAIN instead of waiting); len 0 = to the connected peer (or to the
 * address a preceding IOP_SENDTO gave), else addr is the destination (as sendto()):
 *
 *     struct iop_sockaddr to = IOP_SOCKADDR_IN(inet_addr("10.0.0.1"), htons(53), 0);
 *     ioctl(fd, IOP_SEND0, &to);                 // sendto(fd, "", 0, 0, &to, ...)
 *     struct iop_sockaddr none = {0};
 *     ioctl(fd, IOP_SEND0, &none);               // send(fd, "", 0, 0), connected
 *
 * UDP and raw sockets send one empty datagram (raw: an IP header alone); a stream
 * socket sends nothing and succeeds (errors as a write: EPIPE, ENOTCONN, ...). */
#define IOP_SEND0       _IOW(IOP_MAGIC, 15, struct iop_sockaddr)
/* getsockopt() of a value longer than IOP_OPTVAL_MAX: TCP_INFO (iop_get_tcp_info below) */
#define IOP_GETSOCKOPT_LARGE _IOWR(IOP_MAGIC, 16, struct iop_sockopt_large)
/* the ancillary facts of the datagram read last (after IPV6_RECVPKTINFO etc.) */
#define IOP_RECVINFO    _IOR(IOP_MAGIC, 17, struct iop_recvinfo)
/* message mode: in, the most records a read returns (0: off, plain read/write; above
 * IOP_MSG_MAXCOUNT: IOP_MSG_MAXCOUNT); out, the count before. Per open file (an fd
 * and its dup()s share it). EOPNOTSUPP on a stream, EINVAL for a negative count.
 *
 *     int32_t n = 16;
 *     ioctl(fd, IOP_MSGMODE, &n);                 // n is now the old count (0)
 *     ssize_t got = read(fd, buf, sizeof buf);    // waits for one datagram as read()
 *     for (size_t off = 0; off + sizeof(struct iop_msg) <= (size_t)got;) {
 *         struct iop_msg m;
 *         memcpy(&m, buf + off, sizeof m);        // m.addr.sin: the source
 *         use(buf + off + sizeof m, m.len);       // m.flags & IOP_MSG_TRUNC: cut
 *         off = IOP_MSG_PAD(off + sizeof m + m.len);
 *     }
 *
 * A read returns the first datagram as a plain read does (blocking, O_NONBLOCK,
 * SO_RCVTIMEO, EINTR; cut to fit and flagged IOP_MSG_TRUNC, its rest dropped), then
 * as many more as are already queued and fit whole, up to the count; never waits for
 * them. A read too small for a header is EINVAL; 0 is end of file (read side shut).
 * MSG_PEEK (IOP_RECVFLAGS) returns one record and keeps it. IOP_RECVADDR/IOP_RECVINFO
 * tell of the last datagram returned.
 *
 * A write sends each record as one datagram (addrlen 0: to the connected peer; len 0:
 * an empty datagram, no IOP_SEND0 needed) and returns the bytes of the records it sent
 * (with their padding): the first waits for room as a write does and fails with its
 * error; a later one that would block, fails or is malformed ends the write short
 * there (write the rest again to send it or see its error), as sendmmsg(2) does. A
 * malformed first record (header or data past the end, flags/ifindex not 0, addrlen
 * above IOP_ADDR_MAX or too short) is EINVAL; a wrong family EAFNOSUPPORT. One write
 * carries at most IOP_MSG_MAXCOUNT records and IOP_IO_MAX bytes. */
#define IOP_MSGMODE     _IOWR(IOP_MAGIC, 18, int32_t)

/* helpers */
static inline struct iop_sockaddr iop_sockaddr_in(in_addr_t addr, in_port_t port,
						  uint32_t flags)
{
	struct iop_sockaddr a;
	memset(&a, 0, sizeof a);
	a.flags = flags;
	a.len = sizeof(struct sockaddr_in);
	a.addr.sin.sin_family = AF_INET;
	a.addr.sin.sin_port = port;          /* network order, as from htons() */
	a.addr.sin.sin_addr.s_addr = addr;   /* network order, as from inet_addr() */
	return a;
}
#define IOP_SOCKADDR_IN(addr, port, flags) iop_sockaddr_in((addr), (port), (flags))

static inline struct iop_sockaddr iop_sockaddr_in6(const struct in6_addr *addr,
						   in_port_t port, uint32_t scope_id,
						   uint32_t flags)
{
	struct iop_sockaddr a;
	memset(&a, 0, sizeof a);
	a.flags = flags;
	a.len = sizeof(struct sockaddr_in6);
	a.addr.sin6.sin6_family = AF_INET6;
	a.addr.sin6.sin6_port = port;        /* network order, as from htons() */
	a.addr.sin6.sin6_addr = *addr;
	a.addr.sin6.sin6_scope_id = scope_id; /* an interface index, for fe80::/10 */
	return a;
}
#define IOP_SOCKADDR_IN6(addr, port, scope_id, flags) \
	iop_sockaddr_in6((addr), (port), (scope_id), (flags))

static inline int iop_setsockopt_int(int fd, int level, int name, int value)
{
	struct iop_sockopt o;
	memset(&o, 0, sizeof o);
	o.level = level;
	o.name = name;
	o.len = sizeof value;
	memcpy(o.val, &value, sizeof value);
	return ioctl(fd, IOP_SETSOCKOPT, &o);
}

static inline int iop_getsockopt_int(int fd, int level, int name, int *value)
{
	struct iop_sockopt o;
	memset(&o, 0, sizeof o);
	o.level = level;
	o.name = name;
	o.len = sizeof *value;
	if (ioctl(fd, IOP_GETSOCKOPT, &o) < 0)
		return -1;
	memcpy(value, o.val, sizeof *value);
	return 0;
}

/* getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, &len): fills *info (as many bytes as
 * Linux would: min(sizeof *info, what the stack has)); returns the length or -1 */
static inline int iop_get_tcp_info(int fd, struct iop_tcp_info *info)
{
	struct iop_sockopt_large o;
	memset(&o, 0, sizeof o);
	o.level = IPPROTO_TCP;
	o.name = 11; /* TCP_INFO */
	o.len = sizeof *info;
	if (ioctl(fd, IOP_GETSOCKOPT_LARGE, &o) < 0)
		return -1;
	memset(info, 0, sizeof *info);
	memcpy(info, o.val, o.len < sizeof *info ? o.len : sizeof *info);
	return (int)o.len;
}

#endif /* IO_PKT_SOCKET_H */
