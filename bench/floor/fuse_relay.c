/* The floor of a socket served as a FUSE file (python -m bench, the echo and the TCP
 * bulk rows through the files): a single-threaded libfuse3 low-level server with one
 * file, "sock", that is a kernel TCP socket and nothing more. Opening it connects to
 * HOST:PORT inside the network namespace NETNS; a read is one recv() answered as it
 * comes, a write one send() of the whole buffer, a close shuts the socket down for
 * writing and reads to the peer's end (as the bench clients do after a transfer). Opened
 * as the stack's session opens its socket files (direct I/O, non-seekable, no FLUSH), so
 * each os.read/os.write of the client is one FUSE request, as through rmgr.libsocket.
 *
 * The same data path as the stack's files minus the stack: the kernel's TCP instead of
 * the stack's, a recv() instead of a TAP read; the bytes are copied into this process and
 * out of it into the reader's buffer, as they are through the stack.
 *
 *     fuse_relay MOUNTPOINT NETNS HOST PORT
 *
 * NETNS is a path (/var/run/netns/NAME). Mounts, prints "ready" on stdout, serves with
 * fuse_session_loop until SIGTERM/SIGINT/SIGHUP, then unmounts.
 */
#define _GNU_SOURCE
#define ONE_FILE_NAME "sock"
#include "one_file.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_IO (1 << 20) /* as the stack's session: 1 MB writes, reads up to the pages */

static struct sockaddr_in peer;
static char *buf; /* one request at a time: one buffer */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    conn->max_write = MAX_IO; /* libfuse clamps it to its buffer */
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (ino != ONE_FILE_INO) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as the echo client asks */
    if (connect(s, (struct sockaddr *)&peer, sizeof peer) < 0) {
        int e = errno;
        close(s);
        fuse_reply_err(req, e);
        return;
    }
    fi->fh = (uint64_t)s;
    one_file_opened(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)ino, (void)off;
    ssize_t n = recv((int)fi->fh, buf, size < MAX_IO ? size : MAX_IO, 0);
    if (n < 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_buf(req, buf, (size_t)n);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size,
                     off_t off, struct fuse_file_info *fi)
{
    (void)ino, (void)off;
    size_t done = 0;
    while (done < size) {
        ssize_t n = send((int)fi->fh, data + done, size - done, MSG_NOSIGNAL);
        if (n < 0) {
            fuse_reply_err(req, errno);
            return;
        }
        done += (size_t)n;
    }
    fuse_reply_write(req, size);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    int s = (int)fi->fh;
    shutdown(s, SHUT_WR);
    while (recv(s, buf, MAX_IO, 0) > 0) /* the peer closes once it has everything */
        ;
    close(s);
    fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .lookup = one_file_lookup,
    .getattr = one_file_getattr,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .release = op_release,
};

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s MOUNTPOINT NETNS HOST PORT\n", argv[0]);
        return 2;
    }
    memset(&peer, 0, sizeof peer);
    peer.sin_family = AF_INET;
    peer.sin_port = htons((uint16_t)atoi(argv[4]));
    if (inet_pton(AF_INET, argv[3], &peer.sin_addr) != 1) {
        fprintf(stderr, "fuse_relay: bad IPv4 address %s\n", argv[3]);
        return 2;
    }
    /* only this process's sockets move into the namespace: the mount stays in ours */
    int nsfd = open(argv[2], O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) {
        perror("fuse_relay: setns");
        return 1;
    }
    close(nsfd);
    buf = malloc(MAX_IO);
    if (buf == NULL)
        return 1;
    return one_file_serve(argv[0], argv[1], "fuse_relay", &ops, sizeof ops);
}
