"""One FUSE session: mount through fusermount3, speak the kernel protocol on /dev/fuse.

Spoken here, not through pyfuse3 or libfuse: pyfuse3 has no ioctl handler (an ioctl on
its files returns ENOTTY, and the socket door is ioctls) and serves fewer requests per
second than this loop; see rmgr/fuse/__init__.py and docs/fuse.md before changing that.

A session is put together from parts with one job each:

==============  ================================================================================
scheduler.py    the request scheduler and reply path: reads requests, dispatches them, runs a
                request that waits in a task of its own (leader/follower), INTERRUPT → EINTR,
                busy polling; every request gets exactly one answer
ops.py          the operations: one handler per opcode, over the published nodes
                (rmgr/nodes.py) and the open file/directory handles
inodes.py       the inode table: numbers, lookup counts, FORGET, and the invalidation of
                dynamic entries that vanish (a closed socket's ``tcp/N``)
mount.py        mounting: fusermount3 and ``_FUSE_COMMFD``, lazy unmount on every path,
                stale mounts, the mountpoint directory
==============  ================================================================================

``FuseSession`` is the scheduler with the other parts attached; ``serve_mount`` (what
the stack and modules call) mounts a tree and serves it until cancelled.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import trio

from rmgr.fuse import abi
from rmgr.fuse.counters import FUSE_COUNTERS
from rmgr.fuse.inodes import InodeTable
from rmgr.fuse.mount import fuse_unmount, fusermount, mounted
from rmgr.fuse.ops import MAX_WRITE, Operations
from rmgr.fuse.scheduler import Batch, Scheduler
from rmgr.nodes import Directory, Node
from stack.counters import Counters

__all__ = ["FuseSession", "fuse_unmount", "fusermount", "serve_mount"]

log = logging.getLogger("io-pkt.rmgr")


class FuseSession(Scheduler):
    """The protocol engine for one mount. ``fd`` is /dev/fuse (or, in tests, one end of a
    SOCK_SEQPACKET pair standing in for the kernel); replies are written to it."""

    def __init__(self, root: Node, fd: int, *, counters: Counters | None = None,
                 name: str = "fuse", max_write: int = MAX_WRITE,
                 batch: Batch | None = None) -> None:
        if counters is None:
            counters = Counters("fuse", FUSE_COUNTERS)
        # the kernel refuses reads of /dev/fuse shorter than max_write + the headers
        super().__init__(fd, name=name, counters=counters,
                         bufsize=max(max_write + 4096, abi.MIN_READ_BUFFER), batch=batch)
        self.root = root
        self.max_write = max_write
        self.inodes = InodeTable(root, self.counters)
        # a root may name the operations class serving it (Qnet's /net answers lookups
        # remotely: stack/qnet/fs.py)
        ops_class = getattr(root, "fuse_operations", None) or Operations
        self.operations = ops_class(root, self, self.inodes, max_write=max_write)
        self.ops.update(self.operations.table())

    async def serve(self) -> None:
        """Serve requests until unmounted (ENODEV) or cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.inodes.sweep, self.fd, self._is_stopped)
            await self.run_requests()
            nursery.cancel_scope.cancel()

    def _is_stopped(self) -> bool:
        return self.stopped

    async def release_all(self) -> None:
        """Release what the kernel will never RELEASE (the session is ending)."""
        await self.operations.release_all()

    # -- what INIT negotiated --------------------------------------------------------------
    @property
    def proto_minor(self) -> int:
        return self.operations.proto_minor

    @property
    def init_flags(self) -> int:
        return self.operations.init_flags

    @property
    def destroyed(self) -> bool:
        return self.operations.destroyed

    # -- introspection (tests, status files) -------------------------------------------------
    @property
    def open_files(self) -> int:
        return self.operations.open_files

    def known_inodes(self) -> dict[int, int]:
        """ino -> kernel lookup count (root excluded)."""
        return self.inodes.known()


async def serve_mount(root: Node, mountpoint: str, *, fsname: str = "io-pkt",
                      allow_other: bool = False, counters: Counters | None = None,
                      batch: Batch | None = None,
                      task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """Mount ``root`` at ``mountpoint`` and serve it until cancelled.

    ``task_status.started(session)`` fires only once INIT is answered, so the mount is
    usable. On every exit path the mount is lazily unmounted (mount.py ``mounted``),
    handles still open are released, and a mountpoint directory this call created is
    removed again."""
    session: FuseSession | None = None
    try:
        async with mounted(mountpoint, fsname=fsname, allow_other=allow_other,
                           file=not isinstance(root, Directory)) as fd:
            path = os.path.abspath(mountpoint)
            session = FuseSession(root, fd, counters=counters, name=path, batch=batch)
            with trio.fail_after(10):
                await session.handshake()
            log.debug("%s: FUSE %d.%d session up", path, abi.KERNEL_VERSION,
                      session.proto_minor)
            task_status.started(session)
            await session.serve()
    finally:
        if session is not None:
            # after the unmount: the kernel sends nothing more, so whatever is still open
            # will never be RELEASEd
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await session.release_all()
