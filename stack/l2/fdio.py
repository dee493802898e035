"""The shared machinery of drivers that sit on a non-blocking file descriptor (TAP,
AF_PACKET, UNIX datagram): a receive task that drains the fd until EAGAIN on each
wake-up, and a transmit path that writes at once and, when the device pushes back
(EAGAIN), keeps a bounded FIFO drained by a task waiting for POLLOUT.

Receive buffers: each frame is read (one ``readv``/``recvmsg_into``) into a *fresh*
small ``bytearray`` (owned by the stack from then on) followed by one preallocated large
spill buffer; only frames longer than the small buffer (64 KB super-segments) are
completed by extending the fresh buffer from the spill area — so a 60-byte ARP does not
pin 64 KB and a 64 KB segment costs one extra memcpy, no per-layer copies either way.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections import deque
from collections.abc import Sequence

import trio

from stack.l2.counters import FDIO_COUNTERS
from stack.l2.iface import IFF_RUNNING, Interface
from stack.packet import Buffer, TxMeta

#: frames up to this size need no spill (1500 MTU + Ethernet + VLAN tags, rounded)
SMALL_RX = 2048
#: the spill area: a 64 KB GSO super-segment plus headers
BIG_RX = 65536 + 256
#: frames handled per wake-up before yielding to other tasks (then we keep draining)
RX_BUDGET = 64
#: ... or this many bytes, whichever comes first. NAPI's budget of 64 counts MTU-sized
#: packets; ours may be 64 KB super-segments, and 64 of those are ~2 ms of work while a
#: FUSE request or a small flow's segment waits (1-byte echo p50 under a bulk transfer:
#: 5 ms with the frame budget alone, 1 ms with this). Bytes, not time: a time slice
#: would shrink, and cost more yields, exactly when the machine is busy.
RX_BUDGET_BYTES = 256 << 10
#: ... but while a small message's reader was woken in the last SHORT_FOR seconds (see
#: RxBatch.end_early), this many: a request/response flow beside a bulk one then waits
#: for at most 64 KB of the bulk flow's frames (echo p99 under a bulk transfer: 1.6 ms
#: with the full budget, 1.0 ms with this), and the bulk flow alone keeps its batches
RX_BUDGET_BYTES_SHORT = 64 << 10
SHORT_FOR = 0.002
#: transmit queue bound (BSD ifq_maxlen)
TXQ_MAX = 512

_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)

#: glibc malloc tuning for the bulk data path (see tune_malloc)
MMAP_THRESHOLD = 16 << 20
TRIM_THRESHOLD = 32 << 20
_malloc_tuned = False


def tune_malloc() -> bool:
    """Keep buffers of up to a few MB on the heap (once per process; glibc only).

    The receive path allocates and frees 64 KB-1 MB buffers all the time (super-segments,
    socket reads). With glibc's defaults these are mmap()ed and munmap()ed, or the heap
    top is trimmed and regrown, so every buffer's pages fault in again: measured with
    bench.micro, 64 µs instead of 23 µs per 64 KB received, depending on the allocator's
    state. Fixed thresholds (M_MMAP_THRESHOLD 16 MB, M_TRIM_THRESHOLD 32 MB, within
    the range glibc's own dynamic threshold reaches) keep that memory mapped; at most
    TRIM_THRESHOLD of free heap stays resident. Lower values measured worse (4 MB/16 MB
    cost 10 % through the files, 1 MB and below up to 2.5x on the in-stack path)."""
    global _malloc_tuned
    if _malloc_tuned:
        return True
    _malloc_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)
                    and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc
        return False


class FdInterface(Interface):
    """Base for fd drivers. Subclasses implement ``_read_one`` (one frame delivered or
    ``False`` on EAGAIN) and ``_write`` (one frame, raising BlockingIOError on EAGAIN),
    and call ``start(nursery)`` once the fd is open."""

    counter_names = FDIO_COUNTERS

    def __init__(self, name: str, *, mac: bytes, mtu: int = 1500, driver: str = "",
                 txq_max: int = TXQ_MAX, **kw: int) -> None:
        super().__init__(name, mac=mac, mtu=mtu, driver=driver, **kw)
        self.fd = -1
        self.sock: socket.socket | None = None  # set by drivers whose fd is a socket's
        self.txq: deque[tuple[Sequence[Buffer], TxMeta | None]] = deque()
        self.txq_max = txq_max
        self._tx_wakeup = trio.Event()
        self._spill = bytearray(BIG_RX)
        self._short_until = 0.0
        #: a multi-queue device's other queues (the first is ``fd``), each read by its
        #: own receive task; ``rx_fd`` is the one ``_read_one`` reads now
        self.extra_fds: list[int] = []
        self.rx_fd = -1
        self.closed = False

    # -- to implement ----------------------------------------------------------------
    def _read_one(self) -> bool:
        """Read and deliver one frame; return False when the fd has nothing (EAGAIN)."""
        raise NotImplementedError

    def _write(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> None:
        """Write one frame; raise BlockingIOError when the device is full."""
        raise NotImplementedError

    # -- tasks -----------------------------------------------------------------------
    def start(self, nursery: trio.Nursery) -> None:
        tune_malloc()
        nursery.start_soon(self._rx_task, self.fd, name=f"{self.name}-rx")
        for k, fd in enumerate(self.extra_fds, 1):
            nursery.start_soon(self._rx_task, fd, name=f"{self.name}-rx{k}")
        nursery.start_soon(self._tx_task, name=f"{self.name}-tx")

    async def _rx_task(self, fd: int) -> None:
        c = self.counters
        while not self.closed:
            try:
                await trio.lowlevel.wait_readable(fd)
            except (trio.ClosedResourceError, OSError):
                return  # destroyed under us
            c["rx_wakeups"] += 1
            stack = self.stack
            batch = stack.rx_batch if stack is not None else None
            while True:  # drain until EAGAIN, yielding every RX_BUDGET frames or bytes
                n = 0  # frames read in this batch
                full = early = False  # the budget is spent / a reader was woken: yield
                until = c["ibytes"] + (RX_BUDGET_BYTES if time.perf_counter() >= self._short_until
                                       else RX_BUDGET_BYTES_SHORT)
                if batch is not None:
                    batch.begin()
                self.rx_fd = fd  # no await until the batch ends: no other queue's task runs
                try:
                    while self._read_one():
                        n += 1
                        if n >= RX_BUDGET or c["ibytes"] >= until:
                            full = True
                            break
                        if batch is not None and batch.end_early:
                            full = early = True  # yield now, then go on draining
                            break
                except OSError as exc:
                    if exc.errno in _AGAIN:
                        break
                    c["ierrors"] += 1
                    if self.closed or exc.errno in (errno.EBADF, errno.ENODEV, errno.ENXIO,
                                                    errno.EBADFD):
                        # EBADFD: the TAP netdev was deleted under us; stop reading (a
                        # poll would report it readable forever) and show the link down
                        if not self.closed and self.flags & IFF_RUNNING:  # once, not per queue
                            c["device_gone"] += 1
                            self.flags &= ~IFF_RUNNING
                            if self.stack is not None:
                                self.stack.interface_changed(self)
                        return
                    break
                finally:
                    if fd != self.fd:
                        c["rx_other_queues"] += n  # frames of a multi-queue device's others
                    if batch is not None:
                        batch.end()  # what the batch's segments deferred runs now
                if not full:
                    break
                c["rx_budget_yields"] += 1
                await trio.lowlevel.checkpoint()
                if early and batch is not None:
                    # trio runs a batch of ready tasks in random order: yield once more
                    # so the woken reader's step comes before our next RX_BUDGET
                    early = False
                    batch.ended_early()
                    self._short_until = time.perf_counter() + SHORT_FOR
                    await trio.lowlevel.checkpoint()

    async def _tx_task(self) -> None:
        c = self.counters
        q = self.txq
        while not self.closed:
            await self._tx_wakeup.wait()
            self._tx_wakeup = trio.Event()
            while q and not self.closed:
                bufs, meta = q[0]
                try:
                    self._write(bufs, meta)
                except BlockingIOError:
                    c["tx_blocked"] += 1
                    try:
                        await trio.lowlevel.wait_writable(self.fd)
                    except (trio.ClosedResourceError, OSError):
                        return
                    continue
                except OSError:
                    c["oerrors"] += 1
                q.popleft()

    # -- transmit --------------------------------------------------------------------
    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        """Write now; on EAGAIN queue (bounded; keeps references to ``bufs``, which the
        caller must not modify afterwards); beyond the bound drop (oqdrops)."""
        c = self.counters
        if self.closed:
            c["oerrors"] += 1
            return False
        q = self.txq
        if not q:
            try:
                self._write(bufs, meta)
                return True
            except BlockingIOError:
                c["tx_queued"] += 1
            except OSError as exc:
                c["oerrors"] += 1
                c["tx_errno_" + errno.errorcode.get(exc.errno or 0, "unknown")] += 1
                return False
        if len(q) >= self.txq_max:
            c["oqdrops"] += 1
            return False
        q.append((bufs, meta))
        self._tx_wakeup.set()
        return True

    def close_fd(self) -> None:
        """Close the device once, waking a task that waits on it first (trio requires
        it). A driver whose fd belongs to a socket object sets ``self.sock``: it is
        closed through that object."""
        if self.closed or (self.fd < 0 and self.sock is None):
            return
        self.closed = True
        for extra in self.extra_fds:
            try:
                trio.lowlevel.notify_closing(extra)
            except Exception:  # not inside trio (unit use)
                pass
            os.close(extra)
        self.extra_fds = []
        fd, self.fd = self.fd, -1
        owner = self.sock
        try:
            trio.lowlevel.notify_closing(owner if owner is not None else fd)
        except Exception:  # not inside trio (unit use)
            pass
        if owner is not None:
            owner.close()
        else:
            os.close(fd)


def fold_csum(data: Buffer, initial: int = 0) -> int:
    """The Internet checksum's one's-complement sum of ``data`` (not inverted)."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF if data else 0
    s += initial
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def complete_csum(bufs: Sequence[Buffer], meta: TxMeta) -> list[Buffer]:
    """Software fallback for a device without checksum offload: fill in the partial L4
    checksum (virtio NEEDS_CSUM semantics: the field holds the pseudo-header sum; sum
    from csum_start to the end, store the complement at csum_start+csum_offset).
    Copies the frame once; only used when a TxMeta asks a device that cannot."""
    frame = bytearray()
    for b in bufs:
        frame += b
    start, at = meta.csum_start, meta.csum_start + meta.csum_offset
    s = fold_csum(frame[start:])
    value = (~s) & 0xFFFF or 0xFFFF  # 0 is sent as 0xFFFF (both verify; UDP needs it)
    frame[at:at + 2] = value.to_bytes(2, "big")
    return [frame]
