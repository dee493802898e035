"""FUSE kernel protocol, spoken directly on /dev/fuse (no libfuse, no pyfuse3): see
session.py for the engine (its parts: scheduler.py, ops.py, inodes.py, mount.py) and
docs/fuse.md for the whole story.

Why not pyfuse3, which the project's brief names? It was measured, and it cannot serve
this stack - please do not "simplify" back to it:

* **No ioctl.** pyfuse3 (3.5, the newest) has no ioctl handler: an ioctl on its files
  returns ENOTTY. The socket door's API *is* ioctls (IOP_BIND, IOP_CONNECT, IOP_ACCEPT,
  ..., rmgr/include/io_pkt_socket.h), and so are bpf's BIOC* calls.
* **Slower.** Small writes served per second, one client: a minimal pure-Python loop
  over /dev/fuse 19.6k/s, pyfuse3 + trio 17.6k/s; this session, with its busy-poll
  (scheduler.BUSY_POLL_NS), ~31k/s - more than a single-threaded libfuse3 C server's
  ~20k/s.

Speaking the protocol ourselves also gives what the stack relies on: a blocked request
never holds up another and an INTERRUPT cancels exactly its request (EINTR, nothing
lost), FUSE_NOTIFY_POLL for poll/select/epoll, entry invalidation for sockets that
close, 1 MiB writes handed over without a copy. The protocol's structs are in abi.py.
"""

from rmgr.fuse.session import FuseSession, serve_mount

__all__ = ["FuseSession", "serve_mount"]
