/* The FUSE floor (python -m bench, the FUSE rows): a single-threaded libfuse3 low-level
 * server answering what bench.fuse_bench's client sends to the stack's FUSE session, and
 * nothing more: one file, "sink", whose reads return 64 bytes and whose writes are taken
 * whole and dropped. Opened as the session opens its handle files (direct I/O,
 * non-seekable, no FLUSH on close), so each os.read/os.write is one FUSE request.
 *
 *     fuse_floor MOUNTPOINT
 *
 * Mounts, prints "ready" on stdout, and serves with fuse_session_loop (one thread) until
 * SIGTERM/SIGINT/SIGHUP, then unmounts.
 */
#define ONE_FILE_NAME "sink"
#include "one_file.h"

#define SMALL 64

static const char chunk[SMALL] = "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr";

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (ino != ONE_FILE_INO) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    one_file_opened(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)ino, (void)off, (void)fi;
    fuse_reply_buf(req, chunk, size < SMALL ? size : SMALL);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    (void)ino, (void)buf, (void)off, (void)fi;
    fuse_reply_write(req, size);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino, (void)fi;
    fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
    .lookup = one_file_lookup,
    .getattr = one_file_getattr,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .release = op_release,
};

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
        return 2;
    }
    return one_file_serve(argv[0], argv[1], "fuse_floor", &ops, sizeof ops);
}
