"""The FUSE operations of a session: one handler per opcode (LOOKUP, GETATTR, OPEN,
READ, WRITE, IOCTL, POLL, READDIRPLUS, FORGET...), turning the kernel's requests into
calls on the published nodes (rmgr/nodes.py) and their open handles.

A handler gets (unique, nodeid, uid, gid, pid, body) from the scheduler (scheduler.py)
and answers through it: inline (``reply``), or with ``spawn`` when the node's call may
wait (opening, reading, writing, ioctls, an async release), or by raising (an OSError's
errno is the answer). Inode numbers and lookup counts are the inode table's (inodes.py).

Handlers get a memoryview of a WRITE payload that is valid only until they return: keep
a copy (bytes(data)), never the view.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import stat
import struct
import time
from collections.abc import Awaitable, Callable

from rmgr.fuse import abi
from rmgr.fuse.inodes import InodeTable
from rmgr.fuse.scheduler import Malformed, OpHandler, Scheduler
from rmgr.nodes import (
    Caller,
    Directory,
    Gather,
    Handle,
    HandleFile,
    IoRequest,
    Node,
    OpenRequest,
    open_node,
)

log = logging.getLogger("io-pkt.rmgr")

#: Largest WRITE payload the kernel may send us in one request (and so one Handle.write).
MAX_WRITE = 1 << 20
#: 1 MiB is 256 pages; one more lets an unaligned 1 MiB buffer fit one request where the
#: kernel allows it (fs.fuse.max_pages_limit; the kernel clamps what we ask for).
MAX_PAGES = (MAX_WRITE >> 12) + 1
#: Writes up to this size are copied out of the read buffer; a larger one is handed over
#: as a view, and if its handler waits the buffer stays with it (the reader continues in
#: a spare), so a 1 MiB payload is never copied.
COPY_LIMIT = 4096
#: Cache lifetimes (seconds) given to the kernel. Entries found through a directory's
#: ``dynamic`` callable are not cached at all so they appear and vanish at once.
ENTRY_TTL = 1
ATTR_TTL = 1
#: st_size reported for HandleFile nodes. The kernel takes the inode lock exclusively for
#: a direct write past EOF, which would serialise every write (a blocked socket send would
#: stall the other sockets opened from the same node); inside "EOF" with
#: FOPEN_PARALLEL_DIRECT_WRITES it takes it shared.
HANDLE_FILE_SIZE = 1 << 62
#: Unknown inode number for readdir entries the kernel has not looked up (as libfuse).
UNKNOWN_INO = 0xFFFFFFFF

#: FOPEN_NOFLUSH: nothing is cached, so close(2) needs no FLUSH round trip - and a forked
#: child closing an inherited fd cannot wait on a stack that is itself waiting on the fork.
FILE_OPEN_FLAGS = (abi.FOPEN_DIRECT_IO | abi.FOPEN_NONSEEKABLE | abi.FOPEN_STREAM
                   | abi.FOPEN_PARALLEL_DIRECT_WRITES | abi.FOPEN_NOFLUSH)
INIT_WANT = (abi.ASYNC_READ | abi.BIG_WRITES | abi.MAX_PAGES | abi.ATOMIC_O_TRUNC
             | abi.DO_READDIRPLUS | abi.READDIRPLUS_AUTO | abi.PARALLEL_DIROPS)

#: ioctls a well-behaved client sends to any file and that are answered ENOTTY as a plain
#: file would: isatty(3) (every stdio fopen / Python open() of a file) and terminal-size
#: probes. Counted as ``ioctl_tty_probe``, never logged; other unknown commands are
#: ``ioctl_unknown`` (see Scheduler.refused).
TTY_PROBES = frozenset({0x5401, 0x5413})  # TCGETS, TIOCGWINSZ

_OUT = abi.OUT_HEADER


class _OpenFile:
    """One open file description the kernel knows by ``fh``."""

    __slots__ = ("handle", "node", "kh", "armed", "listener")

    def __init__(self, handle: Handle, node: Node) -> None:
        self.handle = handle
        self.node = node
        self.kh = 0
        self.armed = False
        self.listener: Callable[[], None] | None = None



class _DirHandle:
    __slots__ = ("node", "entries")

    def __init__(self, node: Directory) -> None:
        self.node = node
        # (name, node or None for "." / "..", entry ttl)
        self.entries: list[tuple[bytes, Node, int]] = []


class Operations:
    """The handlers of one session's operations. They answer through ``sched`` and keep
    the open files and directories the kernel knows by file handle."""

    def __init__(self, root: Node, sched: Scheduler, inodes: InodeTable, *,
                 max_write: int = MAX_WRITE) -> None:
        self.root = root
        self.sched = sched
        self.inodes = inodes
        self.counters = sched.counters
        self.max_write = max_write
        self.proto_minor = 0
        self.init_flags = 0
        self.destroyed = False
        self._t0 = time.time_ns()
        self._files: dict[int, _OpenFile] = {}
        self._dirs: dict[int, _DirHandle] = {}
        self._next_fh = 1

    def table(self) -> dict[int, OpHandler]:
        """opcode → handler, for the scheduler."""
        return {
            abi.LOOKUP: self._op_lookup,
            abi.FORGET: self._op_forget,
            abi.BATCH_FORGET: self._op_batch_forget,
            abi.GETATTR: self._op_getattr,
            abi.SETATTR: self._op_setattr,
            abi.OPEN: self._op_open,
            abi.READ: self._op_read,
            abi.WRITE: self._op_write,
            abi.FLUSH: self._op_flush,
            abi.RELEASE: self._op_release,
            abi.OPENDIR: self._op_opendir,
            abi.READDIR: self._op_readdir,
            abi.READDIRPLUS: self._op_readdirplus,
            abi.RELEASEDIR: self._op_releasedir,
            abi.STATFS: self._op_statfs,
            abi.ACCESS: self._op_access,
            abi.IOCTL: self._op_ioctl,
            abi.POLL: self._op_poll,
            abi.DESTROY: self._op_destroy,
            abi.INIT: self._op_reinit,
            abi.NOTIFY_REPLY: self._op_ignore,
        }

    @property
    def open_files(self) -> int:
        return len(self._files)

    # -- attributes and entries ------------------------------------------------------------
    def _attr(self, node: Node, ino: int) -> tuple[int, ...]:
        mtime = node.mtime_ns or self._t0
        sec, nsec = divmod(mtime, 1_000_000_000)
        ftype = node.file_type
        if isinstance(node, HandleFile):
            size = HANDLE_FILE_SIZE
        else:
            size = node.size()
        return (ino, size, 0, sec, sec, sec, nsec, nsec, nsec, ftype | (node.mode & 0o7777),
                2 if ftype == stat.S_IFDIR else 1, node.uid, node.gid, 0, 4096, 0)

    def _entry(self, node: Node, ttl: int, parent: int = 0,
               name: str = "") -> tuple[int, bytes]:
        """Hand ``node`` to the kernel (``name`` in ``parent``): its inode number, counted
        as one lookup (inodes.py), and the entry_out the reply carries."""
        ino = self.inodes.enter(node, ttl, parent, name)
        return ino, abi.ENTRY_OUT.pack(ino, 0, ttl, ATTR_TTL if ttl else 0, 0, 0,
                                       *self._attr(node, ino))

    # -- operations answered inline ----------------------------------------------------------
    def _op_init(self, unique: int, body: memoryview) -> None:
        major, minor, max_readahead, flags = abi.INIT_IN.unpack_from(body)
        if major < abi.KERNEL_VERSION:
            self.sched.reply_error(unique, errno.EPROTO)
            raise OSError(errno.EPROTO, f"kernel FUSE {major}.{minor} is too old")
        if major > abi.KERNEL_VERSION:
            # the kernel sends INIT again with our major
            self.sched.reply(unique, struct.pack("<II", abi.KERNEL_VERSION,
                                                 abi.KERNEL_MINOR_VERSION))
            return
        self.proto_minor = min(minor, abi.KERNEL_MINOR_VERSION)
        out_flags = flags & INIT_WANT
        out = abi.INIT_OUT.pack(abi.KERNEL_VERSION, self.proto_minor, max_readahead,
                                out_flags, 64, 48, self.max_write, 1, MAX_PAGES, 0, 0)
        if self.proto_minor < 23:
            out = out[:24]
        self.init_flags = out_flags
        self.sched.initialized = True
        self.sched.reply(unique, out)

    def _op_reinit(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        if self.sched.initialized:
            raise Malformed("INIT after INIT")
        self._op_init(unique, body)

    def _op_destroy(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                    body: memoryview) -> None:
        self.destroyed = True
        self.sched.reply(unique)

    def _op_ignore(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        return None

    def _op_lookup(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        parent = self.inodes.node(nodeid)
        if not isinstance(parent, Directory):
            raise OSError(errno.ENOTDIR, "not a directory")
        if self.inodes.is_dead(nodeid):  # vanished (a closed socket's tcp/N): nothing in it
            raise OSError(errno.ENOENT, "no such entry")
        if len(body) < 2 or body[-1] != 0:
            raise Malformed("name not NUL-terminated")
        try:
            name = bytes(body[:-1]).decode()
        except UnicodeDecodeError:
            raise OSError(errno.ENOENT, "no such entry") from None
        child = parent.entries.get(name)
        ttl = ENTRY_TTL
        if child is None:
            child = parent.lookup(name)
            ttl = 0
            if child is None:
                raise OSError(errno.ENOENT, "no such entry")
        self.sched.reply(unique, self._entry(child, ttl, nodeid, name)[1])

    def _op_forget(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        self.inodes.forget(nodeid, abi.FORGET_IN.unpack_from(body)[0])

    def _op_batch_forget(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                         body: memoryview) -> None:
        count, _ = abi.BATCH_FORGET_IN.unpack_from(body)
        if 8 + count * 16 > len(body):
            self.counters["malformed"] += 1
            count = (len(body) - 8) // 16
        for i in range(count):
            ino, nlookup = abi.FORGET_ONE.unpack_from(body, 8 + 16 * i)
            self.inodes.forget(ino, nlookup)

    def _op_getattr(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                    body: memoryview) -> None:
        node = self.inodes.node(nodeid)
        self.sched.reply(unique, abi.ATTR_OUT.pack(ATTR_TTL, 0, 0, *self._attr(node, nodeid)))

    def _op_setattr(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                    body: memoryview) -> None:
        node = self.inodes.node(nodeid)
        valid = abi.SETATTR_IN.unpack_from(body)[0]
        if valid & (abi.FATTR_MODE | abi.FATTR_UID | abi.FATTR_GID):
            raise OSError(errno.EPERM, "attributes are fixed")
        # truncate and time updates are accepted and change nothing (O_TRUNC, touch)
        self.sched.reply(unique, abi.ATTR_OUT.pack(ATTR_TTL, 0, 0, *self._attr(node, nodeid)))

    def _op_statfs(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        # f_files: the size of the inode table (watched by tests for leaks)
        out = abi.STATFS_OUT.pack(0, 0, 0, len(self.inodes), 0, 4096, 255, 4096, 0)
        self.sched.reply(unique, out)

    def _op_access(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        # only sent without default_permissions; the same mode-bit check as the kernel
        node = self.inodes.node(nodeid)
        mask = abi.ACCESS_IN.unpack_from(body)[0] & 7
        if uid == 0:
            ok = not (mask & os.X_OK) or node.file_type == stat.S_IFDIR or bool(node.mode & 0o111)
        else:
            shift = 6 if uid == node.uid else 3 if gid == node.gid else 0
            ok = (node.mode >> shift) & mask == mask
        if not ok:
            raise OSError(errno.EACCES, "permission denied")
        self.sched.reply(unique)

    # -- files -----------------------------------------------------------------------------
    def _op_open(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                 body: memoryview) -> None:
        node = self.inodes.node(nodeid)
        if isinstance(node, Directory):
            raise OSError(errno.EISDIR, "is a directory")
        flags = abi.OPEN_IN.unpack_from(body)[0]
        self.sched.spawn(unique, abi.OPEN, self._do_open, node,
                         OpenRequest(Caller(uid, gid, pid), flags))

    async def _do_open(self, unique: int, node: Node, req: OpenRequest) -> None:
        handle = await open_node(node, req)
        fh = self._next_fh
        self._next_fh += 1
        self._files[fh] = _OpenFile(handle, node)
        if not self.sched.reply(unique, abi.OPEN_OUT.pack(fh, FILE_OPEN_FLAGS, 0)):
            # the caller is gone and the kernel will never RELEASE this fh
            await self._release(self._files.pop(fh))

    def _file(self, fh: int) -> _OpenFile:
        of = self._files.get(fh)
        if of is None:
            raise OSError(errno.EBADF, f"unknown file handle {fh}")
        return of

    def _op_read(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                 body: memoryview) -> None:
        fh, _off, size, _rflags, _owner, flags, _pad = abi.READ_IN.unpack_from(body)
        handle = self._file(fh).handle
        self.sched.spawn(unique, abi.READ, self._do_read, handle, size,
                         IoRequest(Caller(uid, gid, pid), bool(flags & os.O_NONBLOCK)))

    async def _do_read(self, unique: int, handle: Handle, size: int, req: IoRequest) -> None:
        data = await handle.read(size, req)
        if isinstance(data, Gather):
            if data.size <= size:
                self.sched.send([_OUT.pack(16 + data.size, 0, unique), *data])
                return
            data = bytes(data)  # a handler's bug: cut it as any other answer
        if len(data) > size:
            data = memoryview(data)[:size]
        self.sched.send([_OUT.pack(16 + len(data), 0, unique), data])

    def _op_write(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                  body: memoryview) -> None:
        fh, _off, size, _wflags, _owner, flags, _pad = abi.WRITE_IN.unpack_from(body)
        if size != len(body) - abi.WRITE_IN.size:
            raise Malformed(f"write of {size} bytes carries {len(body) - abi.WRITE_IN.size}")
        handle = self._file(fh).handle
        req = IoRequest(Caller(uid, gid, pid), bool(flags & os.O_NONBLOCK))
        data = body[abi.WRITE_IN.size:]
        if size <= COPY_LIMIT:
            # cheap to copy, so a small write that blocks does not pin the read buffer
            self.sched.spawn(unique, abi.WRITE, self._do_write, handle, memoryview(bytes(data)),
                             req)
        else:
            self.sched.spawn(unique, abi.WRITE, self._do_write, handle, data, req,
                             holds_buffer=True)

    async def _do_write(self, unique: int, handle: Handle, data: memoryview,
                        req: IoRequest) -> None:
        try:
            n = await handle.write(data, req)
        except OSError as exc:
            if exc.errno == errno.EFBIG:  # over a control file's (or text door's) limit
                self.sched.refused("write_too_big", "write of %d bytes from pid %d refused "
                                   "(EFBIG): %s", len(data), req.caller.pid, exc.strerror or "")
            raise
        self.sched.reply(unique, abi.WRITE_OUT.pack(n, 0))

    def _op_flush(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                  body: memoryview) -> None:
        fh = abi.FLUSH_IN.unpack_from(body)[0]
        self._file(fh).handle.flush()
        self.sched.reply(unique)

    def _op_release(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                    body: memoryview) -> None:
        fh = abi.RELEASE_IN.unpack_from(body)[0]
        of = self._files.pop(fh, None)
        if of is None:
            raise OSError(errno.EBADF, f"unknown file handle {fh}")
        if of.listener is not None:
            of.handle.remove_poll_listener(of.listener)
            of.listener = None
        result = of.handle.release()
        if inspect.isawaitable(result):
            self.sched.spawn(unique, abi.RELEASE, self._do_release, result)
        else:
            self.sched.reply(unique)

    async def _do_release(self, unique: int, pending: Awaitable[None]) -> None:
        await pending
        self.sched.reply(unique)

    async def _release(self, of: _OpenFile) -> None:
        if of.listener is not None:
            of.handle.remove_poll_listener(of.listener)
            of.listener = None
        try:
            result = of.handle.release()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.sched.handler_failed(abi.RELEASE, exc)

    async def release_all(self) -> None:
        """Release what the kernel will never RELEASE (the session is ending)."""
        files, self._files = self._files, {}
        for of in files.values():
            await self._release(of)

    def _op_ioctl(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                  body: memoryview) -> None:
        fh, flags, cmd, _arg, in_size, out_size = abi.IOCTL_IN.unpack_from(body)
        if flags & abi.IOCTL_DIR:
            self._unknown_ioctl(cmd, pid, "on a directory")
            raise OSError(errno.ENOTTY, "no ioctls on directories")
        if flags & abi.IOCTL_UNRESTRICTED:
            raise OSError(errno.EINVAL, "unrestricted ioctls are not served")
        direction, size = abi.ioc_dir(cmd), abi.ioc_size(cmd)
        want_in = size if direction & abi.IOC_WRITE else 0
        want_out = size if direction & abi.IOC_READ else 0
        data = body[abi.IOCTL_IN.size:]
        if in_size != want_in or out_size != want_out or len(data) != in_size:
            self.sched.refused("ioctl_bad_size", "ioctl %#x from pid %d refused (EINVAL): "
                               "sizes in=%d/%d out=%d, its encoding says %d/%d", cmd, pid,
                               in_size, len(data), out_size, want_in, want_out)
            raise OSError(errno.EINVAL, f"ioctl {cmd:#x}: sizes in={in_size}/{len(data)} "
                                        f"out={out_size}, encoding says {want_in}/{want_out}")
        handle = self._file(fh).handle
        self.sched.spawn(unique, abi.IOCTL, self._do_ioctl, handle, cmd, bytes(data), want_out,
                         IoRequest(Caller(uid, gid, pid), False))

    async def _do_ioctl(self, unique: int, handle: Handle, cmd: int, arg: bytes, out_size: int,
                        req: IoRequest) -> None:
        try:
            result, out = await handle.ioctl(cmd, arg, req)
        except OSError as exc:
            if self.sched.errno_of(exc, abi.IOCTL) == errno.ENOTTY:
                self._unknown_ioctl(cmd, req.caller.pid, exc.strerror or "")
            raise
        if len(out) > out_size:
            self.counters["ioctl_out_too_long"] += 1
            log.error("%s: ioctl %#x answered %d bytes, its encoding allows %d",
                      self.sched.name, cmd, len(out), out_size)
            raise OSError(errno.EIO, "ioctl reply too long")
        if len(out) < out_size:
            out = bytes(out) + bytes(out_size - len(out))
        self.sched.send([_OUT.pack(32 + out_size, 0, unique),
                         abi.IOCTL_OUT.pack(int(result), 0, 0, 0), out])

    def _unknown_ioctl(self, cmd: int, pid: int, why: str) -> None:
        if cmd in TTY_PROBES:
            self.counters["ioctl_tty_probe"] += 1
        else:
            self.sched.refused("ioctl_unknown", "ioctl %#x from pid %d refused (ENOTTY): %s",
                               cmd, pid, why)

    def _op_poll(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                 body: memoryview) -> None:
        fh, kh, flags, _events = abi.POLL_IN.unpack_from(body)
        of = self._file(fh)
        if flags & abi.POLL_SCHEDULE_NOTIFY:
            # arm before asking the mask, so a change right after is not lost; one
            # notification per arming (the woken poller polls, and so re-arms, again)
            of.kh = kh
            of.armed = True
            if of.listener is None:
                of.listener = self._make_listener(of)
                of.handle.add_poll_listener(of.listener)
        revents = of.handle.poll()
        self.sched.reply(unique, abi.POLL_OUT.pack(revents & 0xFFFFFFFF, 0))

    def _make_listener(self, of: _OpenFile) -> Callable[[], None]:
        def wake() -> None:
            if of.armed and not self.sched.stopped:
                of.armed = False
                self.sched.notify_poll(of.kh)
        return wake

    # -- directories -----------------------------------------------------------------------
    def _op_opendir(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                    body: memoryview) -> None:
        node = self.inodes.node(nodeid)
        if not isinstance(node, Directory):
            raise OSError(errno.ENOTDIR, "not a directory")
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = _DirHandle(node)
        self.sched.reply(unique, abi.OPEN_OUT.pack(fh, 0, 0))

    def _dir_entries(self, fh: int, offset: int) -> list[tuple[bytes, Node, int]]:
        dh = self._dirs.get(fh)
        if dh is None:
            raise OSError(errno.EBADF, f"unknown directory handle {fh}")
        if offset == 0:
            # (re)start: a fresh snapshot, so dynamic entries show up; later offsets index
            # into it so a listing in pieces is consistent
            node = dh.node
            static = node.entries
            entries: list[tuple[bytes, Node, int]] = [(b".", node, 0), (b"..", node, 0)]
            for name, child in node.children().items():
                ttl = ENTRY_TTL if static.get(name) is child else 0
                entries.append((name.encode(), child, ttl))
            dh.entries = entries
        return dh.entries

    def _op_readdir(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                    body: memoryview) -> None:
        fh, offset, size = abi.READ_IN.unpack_from(body)[:3]
        entries = self._dir_entries(fh, offset)
        out = bytearray()
        for i in range(offset, len(entries)):
            name, child, _ttl = entries[i]
            reclen = abi.dirent_size(len(name))
            if len(out) + reclen > size:
                break
            ino = self.inodes.ino_of(child, UNKNOWN_INO)
            out += abi.DIRENT.pack(ino, i + 1, len(name), child.file_type >> 12)
            out += name
            out += bytes(reclen - abi.DIRENT.size - len(name))
        self.sched.reply(unique, bytes(out))

    def _op_readdirplus(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                        body: memoryview) -> None:
        fh, offset, size = abi.READ_IN.unpack_from(body)[:3]
        entries = self._dir_entries(fh, offset)
        dead = self.inodes.is_dead(nodeid)  # listed, but nothing new is hung below it
        out = bytearray()
        for i in range(offset, len(entries)):
            name, child, ttl = entries[i]
            reclen = abi.direntplus_size(len(name))
            if len(out) + reclen > size:
                break
            if i < 2 or dead:  # "." and "..": nodeid 0 means "no entry, no lookup counted"
                ino = self.inodes.ino_of(child, UNKNOWN_INO)
                out += abi.ENTRY_OUT.pack(0, 0, 0, 0, 0, 0, *self._attr(child, ino))
            else:
                # counts one lookup, as the kernel does
                ino, entry = self._entry(child, ttl, nodeid, name.decode())
                out += entry
            out += abi.DIRENT.pack(ino, i + 1, len(name), child.file_type >> 12)
            out += name
            out += bytes(reclen - abi.ENTRY_OUT.size - abi.DIRENT.size - len(name))
        self.sched.reply(unique, bytes(out))

    def _op_releasedir(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                       body: memoryview) -> None:
        fh = abi.RELEASE_IN.unpack_from(body)[0]
        self._dirs.pop(fh, None)
        self.sched.reply(unique)
