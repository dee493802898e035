"""One FUSE session: mount through fusermount3, speak the kernel protocol on /dev/fuse.

Spoken here, not through pyfuse3 or libfuse: pyfuse3 has no ioctl handler (an ioctl on
its files returns ENOTTY, and the socket door is ioctls) and serves fewer requests per
second than this loop; see rmgr/fuse/__init__.py and docs/fuse.md before changing that.

Requests that may block (OPEN, READ, WRITE, IOCTL, an async RELEASE) are run by the task
that read them; if the handler actually waits, that task stays with the request (in its
own cancel scope) and hands the reading to another task, so a blocked read never holds up
another request, and an INTERRUPT from the kernel (the caller was signalled) cancels
exactly that request, which answers EINTR. See FuseSession._spawn. The other operations
are answered inline. Every request gets exactly one answer.

Handlers get a memoryview of a WRITE payload that is valid only until they return: keep a
copy (bytes(data)), never the view.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import select
import socket
import stat
import struct
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import trio

from rmgr.fuse import abi
from rmgr.nodes import (
    Caller,
    Directory,
    Handle,
    HandleFile,
    IoRequest,
    Node,
    OpenRequest,
    open_node,
)
from stack.counters import Counters

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
#: how often (seconds) entries found through ``dynamic`` are checked for having vanished
DYN_SWEEP_INTERVAL = 1.0
#: st_size reported for HandleFile nodes. The kernel takes the inode lock exclusively for
#: a direct write past EOF, which would serialise every write (a blocked socket send would
#: stall the other sockets opened from the same node); inside "EOF" with
#: FOPEN_PARALLEL_DIRECT_WRITES it takes it shared.
HANDLE_FILE_SIZE = 1 << 62
#: After a request, how long the reader stays awake for the next one before sleeping.
BUSY_POLL_NS = 50_000
#: Parked tasks kept for the next request that blocks (more exit when done).
MAX_IDLE_AGENTS = 32
#: Unknown inode number for readdir entries the kernel has not looked up (as libfuse).
UNKNOWN_INO = 0xFFFFFFFF

#: FOPEN_NOFLUSH: nothing is cached, so close(2) needs no FLUSH round trip - and a forked
#: child closing an inherited fd cannot wait on a stack that is itself waiting on the fork.
FILE_OPEN_FLAGS = (abi.FOPEN_DIRECT_IO | abi.FOPEN_NONSEEKABLE | abi.FOPEN_STREAM
                   | abi.FOPEN_PARALLEL_DIRECT_WRITES | abi.FOPEN_NOFLUSH)
INIT_WANT = (abi.ASYNC_READ | abi.BIG_WRITES | abi.MAX_PAGES | abi.ATOMIC_O_TRUNC
             | abi.DO_READDIRPLUS | abi.READDIRPLUS_AUTO | abi.PARALLEL_DIROPS)

# Errnos a handler must not give for these ops: the kernel would stop sending the op for
# the whole mount (no_poll, no_flush, no_open ...). They become EIO (ENOTTY for ioctl).
_STICKY_ENOSYS = {abi.POLL, abi.FLUSH, abi.OPEN, abi.OPENDIR, abi.RELEASE, abi.INTERRUPT,
                  abi.ACCESS, abi.IOCTL}

#: ioctls a well-behaved client sends to any file and that are answered ENOTTY as a plain
#: file would: isatty(3) (every stdio fopen / Python open() of a file) and terminal-size
#: probes. Counted as ``ioctl_tty_probe``, never logged; other unknown commands are
#: ``ioctl_unknown`` (see FuseSession.refused).
TTY_PROBES = frozenset({0x5401, 0x5413})  # TCGETS, TIOCGWINSZ

_HDR = abi.IN_HEADER
_OUT = abi.OUT_HEADER


class Malformed(Exception):
    """A request whose lengths do not add up: answered EINVAL and counted."""


class _OpenFile:
    """One open file description the kernel knows by ``fh``."""

    __slots__ = ("handle", "node", "kh", "armed", "listener")

    def __init__(self, handle: Handle, node: Node) -> None:
        self.handle = handle
        self.node = node
        self.kh = 0
        self.armed = False
        self.listener: Callable[[], None] | None = None


class _Agent:
    """A task of the session: the reader, or driving one blocked request, or parked."""

    __slots__ = ("task", "scope", "unique", "buf", "abort")

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.scope = trio.CancelScope()
        self.unique = 0  # the request being driven (0: none)
        self.buf: bytearray | None = None  # a read buffer the blocked request still uses
        self.abort: Callable[[Any], trio.lowlevel.Abort] = lambda _: trio.lowlevel.Abort.SUCCEEDED


# (unique, opcode, coroutine answering it, whether it still reads the request buffer)
_Job = tuple[int, int, Coroutine[Any, Any, None], bool]


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], msg: Any) -> Generator[Any, Any, None]:
    """Continue driving ``coro`` (already started by hand, now suspended on the trio trap
    ``msg``) from the current task: what ``await`` would have done had the task started it."""
    while True:
        exc: BaseException | None = None
        try:
            value = yield msg
        except BaseException as e:  # delivered by trio (Cancelled ...): pass it on
            exc = e
        try:
            msg = coro.send(value) if exc is None else coro.throw(exc)
        except StopIteration:
            return
        finally:
            del exc


class _DirHandle:
    __slots__ = ("node", "entries")

    def __init__(self, node: Directory) -> None:
        self.node = node
        # (name, node or None for "." / "..", entry ttl)
        self.entries: list[tuple[bytes, Node, int]] = []


class FuseSession:
    """The protocol engine for one mount. ``fd`` is /dev/fuse (or, in tests, one end of a
    SOCK_SEQPACKET pair standing in for the kernel); replies are written to it."""

    def __init__(self, root: Directory, fd: int, *, counters: Counters | None = None,
                 name: str = "fuse", max_write: int = MAX_WRITE) -> None:
        self.root = root
        self.fd = fd
        self.name = name
        self.counters = counters if counters is not None else Counters("fuse")
        self.max_write = max_write
        # the kernel refuses reads of /dev/fuse shorter than max_write + the headers
        self.bufsize = max(max_write + 4096, abi.MIN_READ_BUFFER)
        self.proto_minor = 0
        self.init_flags = 0
        self.initialized = False
        self.destroyed = False
        self.stopped = False
        self._t0 = time.time_ns()
        # inode table: never reuse a number while the kernel may know it
        self._nodes: dict[int, Node] = {abi.ROOT_ID: root}
        self._ino_of: dict[int, int] = {id(root): abi.ROOT_ID}  # id(node) -> ino
        self._nlookup: dict[int, int] = {}
        #: inodes found through a directory's ``dynamic`` part: ino -> (parent ino, name).
        #: The kernel keeps such a dentry while a cached child (``tcp/N/data``) pins it,
        #: so it never FORGETs it when the entry vanishes and the node (a whole socket)
        #: would stay in this table: ``_sweep`` tells the kernel (NOTIFY_INVAL_ENTRY).
        self._dyn: dict[int, tuple[int, str]] = {}
        #: inodes found below a dynamic one (``tcp/N/status``): ino -> (parent ino, name),
        #: and per parent its children. When ``tcp/N`` vanishes they are invalidated too:
        #: a child open at that moment keeps its dentry hashed, and once closed it would
        #: sit in the kernel's dentry cache (cached ENTRY_TTL, and no lookup can reach it
        #: to find it expired once ``tcp/N`` is unhashed) pinning ``tcp/N`` - and the
        #: socket its node holds - for good (issue 14, item 6). Unhashed, it is dropped
        #: on its last close and the kernel FORGETs both.
        self._below: dict[int, tuple[int, str]] = {}
        self._kids: dict[int, set[int]] = {}
        #: dynamic inodes (and the ones below them) whose entry has vanished: nothing
        #: more is looked up in them, so no new child can be hung under an unhashed one
        self._dead: set[int] = set()
        self._dyn_added = trio.Event()
        self._next_ino = abi.ROOT_ID + 1
        self._files: dict[int, _OpenFile] = {}
        self._dirs: dict[int, _DirHandle] = {}
        self._next_fh = 1
        self._inflight: dict[int, _Agent] = {}
        self._idle: list[_Agent] = []
        self._reader: _Agent | None = None
        self._pending: _Job | None = None
        self._done = trio.Event()
        self._buf = bytearray(self.bufsize)
        self._view = memoryview(self._buf)
        self._spare: list[bytearray] = []
        self._nursery: trio.Nursery | None = None
        self._ops: dict[int, Callable[[int, int, int, int, int, memoryview], None]] = {
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
            abi.INTERRUPT: self._op_interrupt,
            abi.DESTROY: self._op_destroy,
            abi.INIT: self._op_reinit,
            abi.NOTIFY_REPLY: self._op_ignore,
        }

    # -- replies ---------------------------------------------------------------------------
    def _send(self, bufs: list[Any]) -> bool:
        """Write one reply or notification; False if the kernel no longer wants it."""
        try:
            os.writev(self.fd, bufs)
            return True
        except OSError as exc:
            return self._write_failed(exc)

    def _write_failed(self, exc: OSError) -> bool:
        code = exc.errno
        if code == errno.ENOENT:
            # the request was interrupted and answered, or its caller died: normal
            self.counters["reply_dropped"] += 1
        elif code in (errno.ENODEV, errno.EPIPE, errno.ECONNRESET, errno.EBADF):
            self.stopped = True
        elif code in (errno.EAGAIN, errno.EINTR):
            self.counters["reply_dropped"] += 1
        else:
            self.counters["reply_rejected"] += 1
            log.error("%s: kernel rejected a reply: %s", self.name, exc)
        return False

    def reply(self, unique: int, payload: Any = None) -> bool:
        if payload is None:
            try:
                os.write(self.fd, _OUT.pack(16, 0, unique))
                return True
            except OSError as exc:
                return self._write_failed(exc)
        return self._send([_OUT.pack(16 + len(payload), 0, unique), payload])

    def reply_error(self, unique: int, code: int) -> bool:
        try:
            os.write(self.fd, _OUT.pack(16, -code, unique))
            return True
        except OSError as exc:
            return self._write_failed(exc)

    def notify_poll(self, kh: int) -> None:
        self.counters["poll_notify"] += 1
        self._send([_OUT.pack(24, abi.NOTIFY_POLL, 0), abi.NOTIFY_POLL_WAKEUP_OUT.pack(kh)])

    # -- the read loop ---------------------------------------------------------------------
    def _read_one(self) -> int:
        """Read one request into the buffer: its length, 0 at EOF/unmount, -1 if none."""
        try:
            return os.readv(self.fd, [self._buf])
        except BlockingIOError:
            return -1
        except InterruptedError:
            return -1
        except OSError as exc:
            if exc.errno == errno.ENOENT:  # interrupted before we read it
                return -1
            if exc.errno in (errno.ENODEV, errno.ECONNRESET, errno.EBADF):
                return 0
            raise

    async def handshake(self) -> None:
        """Answer INIT (anything before it gets EIO). Returns once INIT is answered."""
        while not self.initialized:
            n = self._read_one()
            if n < 0:
                await trio.lowlevel.wait_readable(self.fd)
                continue
            if n == 0:
                raise OSError(errno.ENODEV, f"{self.name}: unmounted before INIT")
            mv = self._view[:n]
            if n >= _HDR.size and _HDR.unpack_from(mv)[1] == abi.INIT:
                self.dispatch(mv)
            elif n >= 16:
                self.counters["before_init"] += 1
                self.reply_error(struct.unpack_from("<Q", mv, 8)[0], errno.EIO)

    async def serve(self) -> None:
        """Serve requests until unmounted (ENODEV) or cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            first = _Agent()
            self._reader = first
            nursery.start_soon(self._agent, first)
            nursery.start_soon(self._sweep)
            await self._done.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None

    async def _sweep(self) -> None:
        """Invalidate the kernel's entries for dynamic nodes that have gone (a closed
        socket's ``tcp/N``) so it FORGETs them and their children, and the nodes are freed.

        The notification is written from a worker thread with its own fd: the kernel
        takes the parent directory's lock for it, which a LOOKUP waiting for this loop's
        reply may hold."""
        while True:
            if not self._dyn:
                self._dyn_added = trio.Event()
                await self._dyn_added.wait()
            await trio.sleep(DYN_SWEEP_INTERVAL)
            notes = self._vanished()
            if notes and not self.stopped:
                self.counters["inval_entry"] += len(notes)
                await trio.to_thread.run_sync(self._write_notes, os.dup(self.fd), notes,
                                              abandon_on_cancel=True)

    def _vanished(self) -> list[bytes]:
        """NOTIFY_INVAL_ENTRY messages for the dynamic entries no longer there."""
        notes = []
        for ino, (pino, name) in list(self._dyn.items()):
            parent, node = self._nodes.get(pino), self._nodes.get(ino)
            try:
                live = isinstance(parent, Directory) and parent.lookup(name) is node
            except Exception:
                live = False
            if not live:
                del self._dyn[ino]
                # what the kernel knows below it first (deepest first), then itself
                for kid in reversed(self._descendants(ino)):
                    self._dead.add(kid)
                    notes.append(self._inval_entry(*self._below[kid]))
                self._dead.add(ino)
                notes.append(self._inval_entry(pino, name))
        return notes

    def _descendants(self, ino: int) -> list[int]:
        """The inodes handed out below ``ino``, parents before their children."""
        out: list[int] = []
        todo = [ino]
        while todo:
            kids = self._kids.get(todo.pop())
            if kids:
                out.extend(kids)
                todo.extend(kids)
        return out

    @staticmethod
    def _inval_entry(pino: int, name: str) -> bytes:
        raw = name.encode()
        return b"".join((
            _OUT.pack(16 + abi.NOTIFY_INVAL_ENTRY_OUT.size + len(raw) + 1,
                      abi.NOTIFY_INVAL_ENTRY, 0),
            abi.NOTIFY_INVAL_ENTRY_OUT.pack(pino, len(raw), 0), raw, b"\0"))

    def _write_notes(self, fd: int, notes: list[bytes]) -> None:
        """(worker thread) write notifications; ENOENT = the kernel had no such entry."""
        try:
            for msg in notes:
                try:
                    os.write(fd, msg)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        break
        finally:
            os.close(fd)

    def dispatch(self, mv: memoryview) -> None:
        """Answer (or start answering) one request held in ``mv``."""
        n = len(mv)
        if n < _HDR.size:
            self.counters["malformed"] += 1
            log.warning("%s: short request (%d bytes)", self.name, n)
            if n >= 16:
                self.reply_error(struct.unpack_from("<Q", mv, 8)[0], errno.EINVAL)
            return
        length, opcode, unique, nodeid, uid, gid, pid, _ext, _pad = _HDR.unpack_from(mv)
        if length != n:
            self.counters["malformed"] += 1
            log.warning("%s: request length %d but %d bytes read", self.name, length, n)
            self.reply_error(unique, errno.EINVAL)
            return
        op = self._ops.get(opcode)
        if op is None:
            self.counters["enosys"] += 1
            self.reply_error(unique, errno.ENOSYS)
            return
        if not self.initialized and opcode != abi.INIT:
            self.reply_error(unique, errno.EIO)
            return
        try:
            op(unique, nodeid, uid, gid, pid, mv[_HDR.size:])
        except OSError as exc:
            self.reply_error(unique, self._errno_of(exc, opcode))
        except (Malformed, struct.error, UnicodeDecodeError) as exc:
            self.counters["malformed"] += 1
            log.warning("%s: malformed %s request: %s", self.name,
                        abi.OPCODE_NAMES.get(opcode, opcode), exc)
            self.reply_error(unique, errno.EINVAL)
        except Exception as exc:
            self._handler_failed(opcode, exc)
            self.reply_error(unique, errno.EIO)

    def _errno_of(self, exc: OSError, opcode: int) -> int:
        code = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else errno.EIO
        if code == errno.ENOSYS and opcode in _STICKY_ENOSYS:
            code = errno.ENOTTY if opcode == abi.IOCTL else errno.EIO
        return code

    def refused(self, kind: str, fmt: str, *args: Any) -> None:
        """Count one refusal of input no correct client sends (an unknown ioctl, an ioctl
        whose sizes contradict its number, an oversized control write) under ``kind``.
        Only the first of each kind is logged (per counters group, which several mounts
        may share): a hostile client cannot flood the log, the counter shows the rest."""
        c = self.counters
        c[kind] += 1
        if c[kind] == 1:
            log.warning("%s: " + fmt + " [%s; further ones are only counted]",
                        self.name, *args, kind)

    def _handler_failed(self, opcode: int, exc: BaseException) -> None:
        self.counters["handler_error"] += 1
        log.error("%s: %s handler raised %s: %s", self.name,
                  abi.OPCODE_NAMES.get(opcode, opcode), type(exc).__name__, exc)

    # -- request tasks ---------------------------------------------------------------------
    # Leader/follower: one task at a time (the reader) reads requests. A request that may
    # block runs inline in the reader; only if it really waits does the reader hand its
    # role to a parked task (or a new one) and stay with that request until it is answered.
    # So a blocked read never stops another request, and the common case (the handler
    # answers at once) costs no task switch at all. Each task runs inside a cancel scope
    # that an INTERRUPT for the request it is driving cancels; the request then answers
    # EINTR and the task carries on with a fresh scope.
    def _spawn(self, unique: int, opcode: int, fn: Callable[..., Awaitable[None]], *args: Any,
               holds_buffer: bool = False) -> None:
        self._pending = (unique, opcode, self._guarded(unique, opcode, fn(unique, *args)),
                         holds_buffer)

    async def _guarded(self, unique: int, opcode: int, coro: Awaitable[None]) -> None:
        try:
            await coro  # replies itself on success
        except OSError as exc:
            self.reply_error(unique, self._errno_of(exc, opcode))
        except Exception as exc:
            self._handler_failed(opcode, exc)
            self.reply_error(unique, errno.EIO)

    async def _agent(self, a: _Agent) -> None:
        a.task = trio.lowlevel.current_task()
        idle = self._idle

        def abort(_: Any) -> trio.lowlevel.Abort:
            if a in idle:
                idle.remove(a)
            return trio.lowlevel.Abort.SUCCEEDED

        a.abort = abort
        while True:
            with a.scope:
                await self._agent_loop(a)
                return
            # our scope caught a cancel: an INTERRUPT for the request we were driving
            unique = a.unique
            a.scope = trio.CancelScope()
            if unique:
                self._job_done(a)
                self.counters["interrupted"] += 1
                self.reply_error(unique, errno.EINTR)

    async def _agent_loop(self, a: _Agent) -> None:
        fd = self.fd
        readv = os.readv
        wait_readable = trio.lowlevel.wait_readable
        idle = self._idle
        since_yield = 0
        while True:
            if self._reader is not a:
                if len(idle) >= MAX_IDLE_AGENTS:
                    return
                idle.append(a)
                await trio.lowlevel.wait_task_rescheduled(a.abort)
                continue
            if self.stopped:
                self._done.set()
                return
            try:
                n = readv(fd, [self._buf])
            except BlockingIOError:
                if since_yield and await self._poll_briefly(fd):
                    continue  # the next request came while we stayed awake
                since_yield = 0
                await wait_readable(fd)
                continue
            except OSError:
                n = self._read_one()  # the rare paths: ENOENT, EINTR, ENODEV
                if n < 0:
                    continue
            if n == 0:
                self.stopped = True
                self._done.set()
                return
            self.dispatch(self._view[:n])
            if self._pending is not None:
                job, self._pending = self._pending, None
                await self._drive(a, job)
            # a steady stream never hits EAGAIN: let the other tasks run now and then
            since_yield += 1
            if since_yield >= 16:
                since_yield = 0
                await trio.lowlevel.checkpoint()

    async def _poll_briefly(self, fd: int) -> bool:
        """Right after serving a request, stay awake for up to BUSY_POLL_NS (yielding to
        every other task each time round, so nothing waits on us) before sleeping in
        epoll: a synchronous client's next request usually comes within that window, and
        on an idle machine the wake-up from sleep costs more than the request itself
        (docs/performance.md). Like NAPI busy-polling, bounded and only after work."""
        deadline = time.perf_counter_ns() + BUSY_POLL_NS
        while time.perf_counter_ns() < deadline:
            await trio.lowlevel.checkpoint()
            if self.stopped or self._reader is None:
                return True
            r, _, _ = select.select([fd], [], [], 0)
            if r:
                self.counters["busy_poll_hits"] += 1
                return True
        return False

    async def _drive(self, a: _Agent, job: _Job) -> None:
        unique, _opcode, coro, holds_buffer = job
        a.unique = unique
        self._inflight[unique] = a
        try:
            msg = coro.send(None)
        except StopIteration:
            self._job_done(a)
            return
        # it waits: from now on another task reads; this one stays with the request
        if holds_buffer:
            a.buf = self._buf
            self._buf = self._spare.pop() if self._spare else bytearray(self.bufsize)
            self._view = memoryview(self._buf)
        if self._idle:
            b = self._idle.pop()
            self._reader = b
            assert b.task is not None  # it parked, so it ran
            trio.lowlevel.reschedule(b.task)
        else:
            b = _Agent()
            self._reader = b
            assert self._nursery is not None
            self._nursery.start_soon(self._agent, b)
        await _resume(coro, msg)
        self._job_done(a)

    def _job_done(self, a: _Agent) -> None:
        if self._inflight.get(a.unique) is a:
            del self._inflight[a.unique]
        a.unique = 0
        if a.buf is not None:
            if len(self._spare) < 4:
                self._spare.append(a.buf)
            a.buf = None

    # -- inodes ----------------------------------------------------------------------------
    def _ref(self, node: Node) -> int:
        """The inode number for ``node``, counting one kernel lookup."""
        key = id(node)
        ino = self._ino_of.get(key)
        if ino is None:
            ino = self._next_ino
            self._next_ino += 1
            self._ino_of[key] = ino
            self._nodes[ino] = node
            self._nlookup[ino] = 1
        elif ino != abi.ROOT_ID:
            self._nlookup[ino] += 1
        return ino

    def _forget(self, ino: int, count: int) -> None:
        if ino == abi.ROOT_ID:
            return
        left = self._nlookup.get(ino)
        if left is None:
            self.counters["forget_unknown"] += 1
            return
        left -= count
        if left > 0:
            self._nlookup[ino] = left
            return
        del self._nlookup[ino]
        self._dyn.pop(ino, None)
        self._dead.discard(ino)
        self._kids.pop(ino, None)
        up = self._below.pop(ino, None)
        if up is not None:
            siblings = self._kids.get(up[0])
            if siblings is not None:
                siblings.discard(ino)
                if not siblings:
                    del self._kids[up[0]]
        node = self._nodes.pop(ino)
        del self._ino_of[id(node)]

    def _node(self, nodeid: int) -> Node:
        node = self._nodes.get(nodeid)
        if node is None:
            raise OSError(errno.ESTALE, f"unknown inode {nodeid}")
        return node

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

    def _entry(self, node: Node, ttl: int, parent: int = 0, name: str = "") -> bytes:
        ino = self._ref(node)
        self._dead.discard(ino)  # found in a live parent (else the sweep finds it again)
        if not ttl and parent:
            self._dyn[ino] = (parent, name)
            self._dyn_added.set()
        if (parent in self._dyn or parent in self._below) and ino not in self._below:
            # below a dynamic entry: invalidated with it when it vanishes (_vanished)
            self._below[ino] = (parent, name)
            self._kids.setdefault(parent, set()).add(ino)
        return abi.ENTRY_OUT.pack(ino, 0, ttl, ATTR_TTL if ttl else 0, 0, 0,
                                  *self._attr(node, ino))

    # -- operations answered inline ----------------------------------------------------------
    def _op_init(self, unique: int, body: memoryview) -> None:
        major, minor, max_readahead, flags = abi.INIT_IN.unpack_from(body)
        if major < abi.KERNEL_VERSION:
            self.reply_error(unique, errno.EPROTO)
            raise OSError(errno.EPROTO, f"kernel FUSE {major}.{minor} is too old")
        if major > abi.KERNEL_VERSION:
            # the kernel sends INIT again with our major
            self.reply(unique, struct.pack("<II", abi.KERNEL_VERSION, abi.KERNEL_MINOR_VERSION))
            return
        self.proto_minor = min(minor, abi.KERNEL_MINOR_VERSION)
        out_flags = flags & INIT_WANT
        out = abi.INIT_OUT.pack(abi.KERNEL_VERSION, self.proto_minor, max_readahead,
                                out_flags, 64, 48, self.max_write, 1, MAX_PAGES, 0, 0)
        if self.proto_minor < 23:
            out = out[:24]
        self.init_flags = out_flags
        self.initialized = True
        self.reply(unique, out)

    def _op_reinit(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        if self.initialized:
            raise Malformed("INIT after INIT")
        self._op_init(unique, body)

    def _op_destroy(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                    body: memoryview) -> None:
        self.destroyed = True
        self.reply(unique)

    def _op_ignore(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        return None

    def _op_lookup(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        parent = self._node(nodeid)
        if not isinstance(parent, Directory):
            raise OSError(errno.ENOTDIR, "not a directory")
        if nodeid in self._dead:  # vanished (a closed socket's tcp/N): nothing in it
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
        self.reply(unique, self._entry(child, ttl, nodeid, name))

    def _op_forget(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        self._forget(nodeid, abi.FORGET_IN.unpack_from(body)[0])

    def _op_batch_forget(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                         body: memoryview) -> None:
        count, _ = abi.BATCH_FORGET_IN.unpack_from(body)
        if 8 + count * 16 > len(body):
            self.counters["malformed"] += 1
            count = (len(body) - 8) // 16
        for i in range(count):
            ino, nlookup = abi.FORGET_ONE.unpack_from(body, 8 + 16 * i)
            self._forget(ino, nlookup)

    def _op_getattr(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                    body: memoryview) -> None:
        node = self._node(nodeid)
        self.reply(unique, abi.ATTR_OUT.pack(ATTR_TTL, 0, 0, *self._attr(node, nodeid)))

    def _op_setattr(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                    body: memoryview) -> None:
        node = self._node(nodeid)
        valid = abi.SETATTR_IN.unpack_from(body)[0]
        if valid & (abi.FATTR_MODE | abi.FATTR_UID | abi.FATTR_GID):
            raise OSError(errno.EPERM, "attributes are fixed")
        # truncate and time updates are accepted and change nothing (O_TRUNC, touch)
        self.reply(unique, abi.ATTR_OUT.pack(ATTR_TTL, 0, 0, *self._attr(node, nodeid)))

    def _op_statfs(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        self.reply(unique, abi.STATFS_OUT.pack(0, 0, 0, len(self._nodes), 0, 4096, 255,
                                               4096, 0))

    def _op_access(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        # only sent without default_permissions; the same mode-bit check as the kernel
        node = self._node(nodeid)
        mask = abi.ACCESS_IN.unpack_from(body)[0] & 7
        if uid == 0:
            ok = not (mask & os.X_OK) or node.file_type == stat.S_IFDIR or bool(node.mode & 0o111)
        else:
            shift = 6 if uid == node.uid else 3 if gid == node.gid else 0
            ok = (node.mode >> shift) & mask == mask
        if not ok:
            raise OSError(errno.EACCES, "permission denied")
        self.reply(unique)

    def _op_interrupt(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                      body: memoryview) -> None:
        target = abi.INTERRUPT_IN.unpack_from(body)[0]
        a = self._inflight.get(target)
        self.counters["interrupt"] += 1
        if a is not None and a.unique == target:
            a.scope.cancel()
        # no reply: an unknown target was already answered (the kernel read the request
        # before it could interrupt it, and we register every task as we dispatch it)

    # -- files -----------------------------------------------------------------------------
    def _op_open(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                 body: memoryview) -> None:
        node = self._node(nodeid)
        if isinstance(node, Directory):
            raise OSError(errno.EISDIR, "is a directory")
        flags = abi.OPEN_IN.unpack_from(body)[0]
        self._spawn(unique, abi.OPEN, self._do_open, node,
                    OpenRequest(Caller(uid, gid, pid), flags))

    async def _do_open(self, unique: int, node: Node, req: OpenRequest) -> None:
        handle = await open_node(node, req)
        fh = self._next_fh
        self._next_fh += 1
        self._files[fh] = _OpenFile(handle, node)
        if not self.reply(unique, abi.OPEN_OUT.pack(fh, FILE_OPEN_FLAGS, 0)):
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
        self._spawn(unique, abi.READ, self._do_read, handle, size,
                    IoRequest(Caller(uid, gid, pid), bool(flags & os.O_NONBLOCK)))

    async def _do_read(self, unique: int, handle: Handle, size: int, req: IoRequest) -> None:
        data = await handle.read(size, req)
        if len(data) > size:
            data = memoryview(data)[:size]
        self._send([_OUT.pack(16 + len(data), 0, unique), data])

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
            self._spawn(unique, abi.WRITE, self._do_write, handle, memoryview(bytes(data)), req)
        else:
            self._spawn(unique, abi.WRITE, self._do_write, handle, data, req, holds_buffer=True)

    async def _do_write(self, unique: int, handle: Handle, data: memoryview,
                        req: IoRequest) -> None:
        try:
            n = await handle.write(data, req)
        except OSError as exc:
            if exc.errno == errno.EFBIG:  # over a control file's (or text door's) limit
                self.refused("write_too_big", "write of %d bytes from pid %d refused "
                             "(EFBIG): %s", len(data), req.caller.pid, exc.strerror or "")
            raise
        self.reply(unique, abi.WRITE_OUT.pack(n, 0))

    def _op_flush(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                  body: memoryview) -> None:
        fh = abi.FLUSH_IN.unpack_from(body)[0]
        self._file(fh).handle.flush()
        self.reply(unique)

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
            self._spawn(unique, abi.RELEASE, self._do_release, result)
        else:
            self.reply(unique)

    async def _do_release(self, unique: int, pending: Awaitable[None]) -> None:
        await pending
        self.reply(unique)

    async def _release(self, of: _OpenFile) -> None:
        if of.listener is not None:
            of.handle.remove_poll_listener(of.listener)
            of.listener = None
        try:
            result = of.handle.release()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self._handler_failed(abi.RELEASE, exc)

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
            self.refused("ioctl_bad_size", "ioctl %#x from pid %d refused (EINVAL): sizes "
                         "in=%d/%d out=%d, its encoding says %d/%d", cmd, pid, in_size,
                         len(data), out_size, want_in, want_out)
            raise OSError(errno.EINVAL, f"ioctl {cmd:#x}: sizes in={in_size}/{len(data)} "
                                        f"out={out_size}, encoding says {want_in}/{want_out}")
        handle = self._file(fh).handle
        self._spawn(unique, abi.IOCTL, self._do_ioctl, handle, cmd, bytes(data), want_out,
                    IoRequest(Caller(uid, gid, pid), False))

    async def _do_ioctl(self, unique: int, handle: Handle, cmd: int, arg: bytes, out_size: int,
                        req: IoRequest) -> None:
        try:
            result, out = await handle.ioctl(cmd, arg, req)
        except OSError as exc:
            if self._errno_of(exc, abi.IOCTL) == errno.ENOTTY:
                self._unknown_ioctl(cmd, req.caller.pid, exc.strerror or "")
            raise
        if len(out) > out_size:
            self.counters["ioctl_out_too_long"] += 1
            log.error("%s: ioctl %#x answered %d bytes, its encoding allows %d", self.name, cmd,
                      len(out), out_size)
            raise OSError(errno.EIO, "ioctl reply too long")
        if len(out) < out_size:
            out = bytes(out) + bytes(out_size - len(out))
        self._send([_OUT.pack(32 + out_size, 0, unique),
                    abi.IOCTL_OUT.pack(int(result), 0, 0, 0), out])

    def _unknown_ioctl(self, cmd: int, pid: int, why: str) -> None:
        if cmd in TTY_PROBES:
            self.counters["ioctl_tty_probe"] += 1
        else:
            self.refused("ioctl_unknown", "ioctl %#x from pid %d refused (ENOTTY): %s", cmd,
                         pid, why)

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
        self.reply(unique, abi.POLL_OUT.pack(revents & 0xFFFFFFFF, 0))

    def _make_listener(self, of: _OpenFile) -> Callable[[], None]:
        def wake() -> None:
            if of.armed and not self.stopped:
                of.armed = False
                self.notify_poll(of.kh)
        return wake

    # -- directories -----------------------------------------------------------------------
    def _op_opendir(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                    body: memoryview) -> None:
        node = self._node(nodeid)
        if not isinstance(node, Directory):
            raise OSError(errno.ENOTDIR, "not a directory")
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = _DirHandle(node)
        self.reply(unique, abi.OPEN_OUT.pack(fh, 0, 0))

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
            ino = self._ino_of.get(id(child), UNKNOWN_INO)
            out += abi.DIRENT.pack(ino, i + 1, len(name), child.file_type >> 12)
            out += name
            out += bytes(reclen - abi.DIRENT.size - len(name))
        self.reply(unique, bytes(out))

    def _op_readdirplus(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                        body: memoryview) -> None:
        fh, offset, size = abi.READ_IN.unpack_from(body)[:3]
        entries = self._dir_entries(fh, offset)
        dead = nodeid in self._dead  # listed, but nothing new is hung below it
        out = bytearray()
        for i in range(offset, len(entries)):
            name, child, ttl = entries[i]
            reclen = abi.direntplus_size(len(name))
            if len(out) + reclen > size:
                break
            if i < 2 or dead:  # "." and "..": nodeid 0 means "no entry, no lookup counted"
                ino = self._ino_of.get(id(child), UNKNOWN_INO)
                out += abi.ENTRY_OUT.pack(0, 0, 0, 0, 0, 0, *self._attr(child, ino))
            else:
                # counts one lookup, as the kernel does
                out += self._entry(child, ttl, nodeid, name.decode())
                ino = self._ino_of[id(child)]
            out += abi.DIRENT.pack(ino, i + 1, len(name), child.file_type >> 12)
            out += name
            out += bytes(reclen - abi.ENTRY_OUT.size - abi.DIRENT.size - len(name))
        self.reply(unique, bytes(out))

    def _op_releasedir(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                       body: memoryview) -> None:
        fh = abi.RELEASE_IN.unpack_from(body)[0]
        self._dirs.pop(fh, None)
        self.reply(unique)

    # -- introspection (tests, status files) ---------------------------------------------------
    @property
    def open_files(self) -> int:
        return len(self._files)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def known_inodes(self) -> dict[int, int]:
        """ino -> kernel lookup count (root excluded)."""
        return dict(self._nlookup)


# -- mounting ---------------------------------------------------------------------------------

def _clean_fsname(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.:/@" else "_" for c in name) or "io-pkt"


async def fusermount(mountpoint: str, options: str) -> int:
    """Mount with fusermount3 and return the /dev/fuse fd it passes back (SCM_RIGHTS)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        proc = await trio.run_process(
            ["fusermount3", "-o", options, "--", mountpoint], env=env,
            pass_fds=(theirs.fileno(),), capture_stdout=True, capture_stderr=True, check=False)
        theirs.close()
        ours.setblocking(False)
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
        except BlockingIOError:
            fds = []
        if not fds:
            err = proc.stderr.decode(errors="replace").strip() if proc.stderr else ""
            raise OSError(errno.EIO, f"fusermount3 could not mount {mountpoint}: "
                                     f"{err or f'exit status {proc.returncode}'}")
        for extra in fds[1:]:
            os.close(extra)
        fd = fds[0]
        os.set_inheritable(fd, False)  # a child keeping it would keep a dead mount "alive"
        os.set_blocking(fd, False)
        return fd
    finally:
        ours.close()
        theirs.close()


async def fuse_unmount(mountpoint: str) -> None:
    """Lazy unmount (fusermount3 -u -z); shielded, bounded, never raises."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(10):
            try:
                proc = await trio.run_process(["fusermount3", "-u", "-z", "--", mountpoint],
                                              capture_stdout=True, capture_stderr=True,
                                              check=False)
                if proc.returncode != 0 and _fuse_mounted_at(mountpoint):
                    log.error("fusermount3 -u -z %s: %s", mountpoint,
                              proc.stderr.decode(errors="replace").strip())
            except OSError as exc:
                log.error("fusermount3 -u -z %s: %s", mountpoint, exc)


def _fuse_mounted_at(path: str) -> bool:
    from stack.preflight import mounted_fuse_at

    return mounted_fuse_at(path)


def _make_dirs(path: str) -> list[str]:
    """mkdir -p; the directories made, outermost first."""
    made: list[str] = []
    todo: list[str] = []
    p = path
    while not os.path.isdir(p):
        todo.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(todo):
        try:
            os.mkdir(d, 0o755)
            made.append(d)
        except FileExistsError:
            pass
    return made


async def _clean_stale(path: str) -> None:
    """A FUSE mount whose server died answers ENOTCONN: lazily unmount it first."""
    if not _fuse_mounted_at(path):
        return
    try:
        await trio.to_thread.run_sync(os.stat, path, abandon_on_cancel=True)
    except OSError as exc:
        if exc.errno in (errno.ENOTCONN, errno.ECONNABORTED):
            log.warning("%s: stale FUSE mount of a dead server; cleaning it", path)
            await fuse_unmount(path)


async def serve_mount(root: Directory, mountpoint: str, *, fsname: str = "io-pkt",
                      allow_other: bool = False, counters: Counters | None = None,
                      task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """Mount ``root`` at ``mountpoint`` and serve it until cancelled.

    ``task_status.started(session)`` fires only once INIT is answered, so the mount is
    usable. On every exit path the mount is lazily unmounted, handles still open are
    released, and a mountpoint directory this call created is removed again."""
    path = os.path.abspath(mountpoint)
    made = _make_dirs(path)
    fd = -1
    try:
        await _clean_stale(path)
        opts = ["rw", "nosuid", "nodev", "default_permissions",
                f"fsname={_clean_fsname(fsname)}", "subtype=io-pkt"]
        if allow_other:
            opts.append("allow_other")
        fd = await fusermount(path, ",".join(opts))
        session = FuseSession(root, fd, counters=counters, name=path)
        try:
            with trio.fail_after(10):
                await session.handshake()
            log.debug("%s: FUSE %d.%d session up", path, abi.KERNEL_VERSION, session.proto_minor)
            task_status.started(session)
            await session.serve()
        finally:
            with trio.CancelScope(shield=True):
                await fuse_unmount(path)
                os.close(fd)
                fd = -1
                with trio.move_on_after(5):
                    await session.release_all()
    finally:
        if fd >= 0:  # INIT never came, or the session could not be built
            with trio.CancelScope(shield=True):
                await fuse_unmount(path)
            os.close(fd)
        for d in reversed(made):
            try:
                os.rmdir(d)
            except OSError:
                pass
