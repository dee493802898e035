"""The request scheduler and reply path of a FUSE session: read requests from the
channel (/dev/fuse), dispatch each to its operation, and make sure every request gets
exactly one answer - at once, or later from a task of its own if the operation waits
(leader/follower: see "request tasks" below). An INTERRUPT cancels exactly the request
it names, which answers EINTR. After a request the reader stays awake for up to
``BUSY_POLL_NS`` before sleeping in epoll (docs/fuse.md).

Nothing here knows what an operation does: the session fills ``ops`` (opcode → handler,
ops.py), and the handlers answer through ``reply``/``reply_error``/``send``, or hand
what may wait to ``spawn``.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import struct
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Protocol

import trio

from rmgr.fuse import abi
from stack.counters import Counters

log = logging.getLogger("io-pkt.rmgr")

#: After a request, how long the reader stays awake for the next one before sleeping.
BUSY_POLL_NS = 50_000
#: Parked tasks kept for the next request that blocks (more exit when done).
MAX_IDLE_AGENTS = 32

# Errnos a handler must not give for these ops: the kernel would stop sending the op for
# the whole mount (no_poll, no_flush, no_open ...). They become EIO (ENOTTY for ioctl).
_STICKY_ENOSYS = {abi.POLL, abi.FLUSH, abi.OPEN, abi.OPENDIR, abi.RELEASE, abi.INTERRUPT,
                  abi.ACCESS, abi.IOCTL}

_HDR = abi.IN_HEADER
_OUT = abi.OUT_HEADER

#: an operation: (unique, nodeid, uid, gid, pid, body after the request header). It
#: answers (``reply``...), or ``spawn``s what may wait, or raises: OSError → its errno,
#: ``Malformed`` → EINVAL (counted), anything else → EIO (counted, logged).
OpHandler = Callable[[int, int, int, int, int, memoryview], None]



class Batch(Protocol):
    """Work the server defers while a handler runs (stack/batch.py ``RxBatch``)."""

    def begin(self) -> None: ...

    def end(self) -> None: ...

class Malformed(Exception):
    """A request whose lengths do not add up: answered EINVAL and counted."""



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


class Scheduler:
    """Reads and answers the requests of one channel. ``fd`` is /dev/fuse (or, in tests,
    one end of a SOCK_SEQPACKET pair standing in for the kernel); replies are written to
    it. ``bufsize`` is the read buffer (the kernel refuses reads of /dev/fuse shorter
    than max_write + the headers)."""

    def __init__(self, fd: int, *, name: str, counters: Counters, bufsize: int,
                 batch: Batch | None = None) -> None:
        self.fd = fd
        self.name = name
        self.counters = counters
        #: the server's batch bracket (the stack's ``RxBatch``): opened while a request's
        #: handler runs its first, synchronous step, so that what it defers (TCP's output
        #: after a WRITE) goes out after the reply, while the client already goes on
        self.batch = batch
        self.bufsize = bufsize
        #: set by the INIT operation; anything before it is answered EIO
        self.initialized = False
        self.stopped = False
        #: opcode → operation (the session adds the operations of ops.py)
        self.ops: dict[int, OpHandler] = {abi.INTERRUPT: self._op_interrupt}
        self._inflight: dict[int, _Agent] = {}
        self._idle: list[_Agent] = []
        self._reader: _Agent | None = None
        self._pending: _Job | None = None
        self._done = trio.Event()
        self._buf = bytearray(self.bufsize)
        self._view = memoryview(self._buf)
        self._spare: list[bytearray] = []
        self._nursery: trio.Nursery | None = None

    # -- replies ---------------------------------------------------------------------------
    def send(self, bufs: list[Any]) -> bool:
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
        return self.send([_OUT.pack(16 + len(payload), 0, unique), payload])

    def reply_error(self, unique: int, code: int) -> bool:
        try:
            os.write(self.fd, _OUT.pack(16, -code, unique))
            return True
        except OSError as exc:
            return self._write_failed(exc)

    def notify_poll(self, kh: int) -> None:
        self.counters["poll_notify"] += 1
        self.send([_OUT.pack(24, abi.NOTIFY_POLL, 0), abi.NOTIFY_POLL_WAKEUP_OUT.pack(kh)])

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

    async def run_requests(self) -> None:
        """Serve requests until unmounted (ENODEV) or cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            first = _Agent()
            self._reader = first
            nursery.start_soon(self._agent, first)
            await self._done.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None

    def dispatch(self, mv: memoryview) -> None:
        """Answer (or start answering) one request held in ``mv``."""
        self.counters["requests"] += 1  # the request rate (io-pkt top, config/metrics)
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
        op = self.ops.get(opcode)
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
            self.reply_error(unique, self.errno_of(exc, opcode))
        except (Malformed, struct.error, UnicodeDecodeError) as exc:
            self.counters["malformed"] += 1
            log.warning("%s: malformed %s request: %s", self.name,
                        abi.OPCODE_NAMES.get(opcode, opcode), exc)
            self.reply_error(unique, errno.EINVAL)
        except Exception as exc:
            self.handler_failed(opcode, exc)
            self.reply_error(unique, errno.EIO)

    def errno_of(self, exc: OSError, opcode: int) -> int:
        code = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else errno.EIO
        if code == errno.ENOSYS and opcode in _STICKY_ENOSYS:
            code = errno.ENOTTY if opcode == abi.IOCTL else errno.EIO
        return code

    def refused(self, kind: str, fmt: str, *args: Any) -> None:
        """Count one refusal of input no correct client sends (an unknown ioctl, an ioctl
        whose sizes contradict its number, an oversized control write) under ``kind``
        (one of rmgr/fuse/counters.py's ``REFUSALS``).
        Only the first of each kind is logged (per counters group, which several mounts
        may share): a hostile client cannot flood the log, the counter shows the rest."""
        c = self.counters
        c[kind] += 1
        if c[kind] == 1:
            log.warning("%s: " + fmt + " [%s; further ones are only counted]",
                        self.name, *args, kind)

    def handler_failed(self, opcode: int, exc: BaseException) -> None:
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
    def spawn(self, unique: int, opcode: int, fn: Callable[..., Awaitable[None]], *args: Any,
              holds_buffer: bool = False) -> None:
        """Answer request ``unique`` with ``fn(unique, *args)`` (which replies itself; an
        exception it raises is answered as ``dispatch`` answers one). Called by an
        operation; the reader runs it as soon as the operation returns, and keeps the
        request if it waits. ``holds_buffer``: ``args`` include a view of the read buffer,
        which then stays with the request."""
        self._pending = (unique, opcode, self._guarded(unique, opcode, fn(unique, *args)),
                         holds_buffer)

    async def _guarded(self, unique: int, opcode: int, coro: Awaitable[None]) -> None:
        try:
            await coro  # replies itself on success
        except OSError as exc:
            self.reply_error(unique, self.errno_of(exc, opcode))
        except Exception as exc:
            self.handler_failed(opcode, exc)
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
        batch = self.batch
        if batch is not None:
            batch.begin()
        try:
            msg = coro.send(None)
        except StopIteration:
            self._job_done(a)
            return
        finally:
            if batch is not None:
                batch.end()  # the reply (if any) is written: now what the handler deferred
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

    def _op_interrupt(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                      body: memoryview) -> None:
        target = abi.INTERRUPT_IN.unpack_from(body)[0]
        a = self._inflight.get(target)
        self.counters["interrupt"] += 1
        if a is not None and a.unique == target:
            a.scope.cancel()
        # no reply: an unknown target was already answered (the kernel read the request
        # before it could interrupt it, and we register every task as we dispatch it)

    @property
    def inflight(self) -> int:
        return len(self._inflight)
