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
#define FUSE_USE_VERSION 34
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define SINK_INO 2
#define SMALL 64
#define TTL 1.0

static const char chunk[SMALL] = "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr";

static void stat_of(fuse_ino_t ino, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    if (ino == FUSE_ROOT_ID) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0666;
        st->st_nlink = 1;
        st->st_size = (off_t)1 << 62; /* as the session's handle files: never past EOF */
    }
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    if (parent != FUSE_ROOT_ID || strcmp(name, "sink") != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.ino = SINK_INO;
    e.attr_timeout = e.entry_timeout = TTL;
    stat_of(SINK_INO, &e.attr);
    fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    if (ino != FUSE_ROOT_ID && ino != SINK_INO) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st;
    stat_of(ino, &st);
    fuse_reply_attr(req, &st, TTL);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (ino != SINK_INO) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    fi->direct_io = 1;
    fi->nonseekable = 1;
    fi->noflush = 1;
    fuse_reply_open(req, fi);
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
    .lookup = op_lookup,
    .getattr = op_getattr,
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
    char *args_v[] = {argv[0], "-o", "fsname=fuse_floor", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, args_v);
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, NULL);
    if (se == NULL)
        return 1;
    int rc = 1;
    if (fuse_set_signal_handlers(se) == 0) {
        if (fuse_session_mount(se, argv[1]) == 0) {
            printf("ready\n");
            fflush(stdout);
            rc = fuse_session_loop(se) != 0;
            fuse_session_unmount(se);
        }
        fuse_remove_signal_handlers(se);
    }
    fuse_session_destroy(se);
    return rc;
}
