/* What the FUSE floors (fuse_floor.c, fuse_relay.c) share: a libfuse3 low-level
 * filesystem with one file, ONE_FILE_NAME, opened as the stack's session opens its handle
 * and socket files (direct I/O, non-seekable, no FLUSH on close; size 2^62, never past
 * EOF), so each os.read/os.write of a client is one FUSE request; and the single-threaded
 * session around it. Each program defines ONE_FILE_NAME, then includes this header and
 * fills in its own open/read/write/release. */
#ifndef ONE_FILE_H
#define ONE_FILE_H

#define FUSE_USE_VERSION 34
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define ONE_FILE_INO 2
#define ONE_FILE_TTL 1.0

static void one_file_stat(fuse_ino_t ino, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    if (ino == FUSE_ROOT_ID) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0666;
        st->st_nlink = 1;
        st->st_size = (off_t)1 << 62;
    }
}

static void one_file_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    if (parent != FUSE_ROOT_ID || strcmp(name, ONE_FILE_NAME) != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.ino = ONE_FILE_INO;
    e.attr_timeout = e.entry_timeout = ONE_FILE_TTL;
    one_file_stat(ONE_FILE_INO, &e.attr);
    fuse_reply_entry(req, &e);
}

static void one_file_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    if (ino != FUSE_ROOT_ID && ino != ONE_FILE_INO) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st;
    one_file_stat(ino, &st);
    fuse_reply_attr(req, &st, ONE_FILE_TTL);
}

/* Answer an OPEN of the file (fi->fh already set by the caller, if it uses one). */
static void one_file_opened(fuse_req_t req, struct fuse_file_info *fi)
{
    fi->direct_io = 1;
    fi->nonseekable = 1;
    fi->noflush = 1;
    fuse_reply_open(req, fi);
}

/* Mount OPS on MOUNTPOINT as FSNAME, print "ready" on stdout, serve with
 * fuse_session_loop (one thread) until SIGTERM/SIGINT/SIGHUP, unmount; the exit code. */
static int one_file_serve(const char *prog, const char *mountpoint, const char *fsname,
                          const struct fuse_lowlevel_ops *ops, size_t ops_size)
{
    char opt[64];
    snprintf(opt, sizeof opt, "fsname=%s", fsname);
    char *args_v[] = {(char *)prog, "-o", opt, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, args_v);
    struct fuse_session *se = fuse_session_new(&args, ops, ops_size, NULL);
    if (se == NULL)
        return 1;
    int rc = 1;
    if (fuse_set_signal_handlers(se) == 0) {
        if (fuse_session_mount(se, mountpoint) == 0) {
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

#endif
