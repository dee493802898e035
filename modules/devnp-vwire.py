"""devnp-vwire: a virtual Ethernet wire between two io-pkt instances, no kernel netdev.

The wire is a UNIX datagram socket: one end listens (``path=/run/x.sock``, bound to that
name), the other connects (``peer=/run/x.sock``; it binds an autobound abstract name so
that the listener can answer). The listener sends to whichever end spoke to it last —
two ends per wire. One datagram = a 10-byte ``virtio_net_hdr`` + one Ethernet frame (up
to 64 KB); an empty datagram is the connecting end's hello.

Offloads: checksum only (``csum``). The frames never cross a real wire, so a partial L4
checksum (pseudo-header sum in the field, ``TxMeta.needs_csum``) is sent as it is, with
``VIRTIO_NET_HDR_F_NEEDS_CSUM`` and its offsets in the header; the receiving stack marks
the frame ``csum_partial``, so whatever it forwards the frame to completes the checksum
(a TAP's kernel, or software); taken as checksummed, it would reach a kernel behind a
TAP with a wrong checksum and be dropped there. No TSO: super-segments are cut in
software before they are sent (``Interface.output``, ``gso_frames``/``gso_segments``);
received gso metadata is honoured all the same.

Options: ``path=`` or ``peer=`` (one of them), ``name=`` (default vwN), ``mac=``
(default random), ``mtu=`` (default 1500). Fault injection, applied on transmit (each end
injects on what it sends; give both ends the options for a symmetric wire):

* ``loss=P``     drop a frame with probability P (0..1, or ``10%``)
* ``dup=P``      send a frame twice
* ``corrupt=P``  flip one random bit of one random byte past the Ethernet header
* ``delay=MS``   hold every frame MS milliseconds (``jitter=MS`` adds uniform 0..MS)
* ``reorder=P``  hold a frame ``reorder_gap=MS`` (default 5) longer than the others, so the
  following frames overtake it
* ``seed=N``     seed of the fault RNG (deterministic runs)

Delays are driven by trio deadlines: one task sleeps until the earliest due frame (a
heap), woken early only when an earlier frame arrives — no tick loop. Under trio's
MockClock the delays are virtual time.
"""

from __future__ import annotations

import heapq
import random
import socket
import struct
from collections.abc import Sequence

import trio

from stack.counters import names
from stack.l2.counters import FDIO_COUNTERS
from stack.l2.fdio import SMALL_RX, FdInterface
from stack.l2.iface import parse_mac, random_mac
from stack.loader import ModuleContext
from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.options import OptionError, Options
from stack.packet import GSO_NONE, Buffer, Packet, TxMeta

#: the per-datagram header: struct virtio_net_hdr (little-endian, as on x86 and virtio 1.0)
VNET_HDR_LEN = 10
F_NEEDS_CSUM = 1
_vnet = struct.Struct("<BBHHHH")
_VNET_PLAIN = bytes(VNET_HDR_LEN)


def _prob(opts: Options, key: str) -> float:
    text = opts.get_str(key)
    if text is None or text == "":
        return 0.0
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise OptionError(f"option {key}={text!r}: not a probability") from None
    if not 0.0 <= value <= 1.0:
        raise OptionError(f"option {key}={text}: out of range 0..1 (or 0%..100%)")
    return value


#: the interface's counters (stack/counters.py): an fd driver's and these
COUNTERS: frozenset[str] = FDIO_COUNTERS | names("""
    peer_hello peer_hello_failed rx_gso fault_lost fault_corrupted fault_duplicated
    fault_reordered
""")


class VwireInterface(FdInterface):
    sock: socket.socket  # always set in __init__ (the fd's owner)

    kind = "ether"
    counter_names = COUNTERS

    def __init__(self, name: str, *, mac: bytes, mtu: int, path: str | None,
                 peer: str | None, loss: float = 0.0, dup: float = 0.0, corrupt: float = 0.0,
                 delay: float = 0.0, jitter: float = 0.0, reorder: float = 0.0,
                 reorder_gap: float = 0.005, seed: int | None = None) -> None:
        super().__init__(name, mac=mac, mtu=mtu, driver="vwire")
        if bool(path) == bool(peer):
            raise OptionError("give exactly one of path= (listen) or peer= (connect)")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            if path:
                sock.bind(path)
                self.peer_addr: str | bytes | None = None
            else:
                sock.bind("")  # autobind: an abstract address the listener can answer
                self.peer_addr = peer
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.fd = sock.fileno()
        self.path, self.peer = path, peer
        self.capabilities = {"csum"}  # frames never hit a wire: partial checksums pass
        self.offloads = {"csum"}
        self.loss, self.dup, self.corrupt = loss, dup, corrupt
        self.delay, self.jitter = delay, jitter
        self.reorder, self.reorder_gap = reorder, reorder_gap
        self.faults = bool(loss or dup or corrupt or delay or jitter or reorder)
        self.rng = random.Random(seed)
        self._heap: list[tuple[float, int, bytes, TxMeta | None]] = []
        self._seq = 0
        self._heap_wakeup = trio.Event()
        self._small = max(SMALL_RX, mtu + 32)
        self._hdr = bytearray(VNET_HDR_LEN)

    def start(self, nursery: trio.Nursery) -> None:
        super().start(nursery)
        if self.peer:
            try:  # tell the listener where we are (an empty datagram)
                self.sock.sendto(b"", self.peer)
            except OSError:
                self.counters["peer_hello_failed"] += 1
        if self.delay or self.jitter or self.reorder:
            nursery.start_soon(self._delay_task, name=f"{self.name}-delay")

    # -- receive ---------------------------------------------------------------------
    def _read_one(self) -> bool:
        buf = bytearray(self._small)
        n, _anc, _fl, addr = self.sock.recvmsg_into((self._hdr, buf, self._spill))
        if self.path and addr and addr != self.peer_addr:
            self.peer_addr = addr  # the listener answers the end that spoke last
        if n == 0:
            self.counters["peer_hello"] += 1  # the connecting end announcing itself
            return True
        n -= VNET_HDR_LEN
        if n < 14:
            self.counters["ierrors"] += 1
            return True
        if n > len(buf):
            buf += self._spill[:n - len(buf)]
        pkt = Packet(memoryview(buf)[:n], self)
        pkt.csum_valid = True  # never on a wire; corrupt= tests flip bits on purpose
        flags, gso_type, hdr_len, gso_size, cs, co = _vnet.unpack_from(self._hdr)
        if flags & F_NEEDS_CSUM:
            pkt.csum_partial = True
            pkt.csum_start, pkt.csum_offset = cs, co
        if gso_type:
            pkt.gso_type, pkt.gso_size, pkt.hdr_len = gso_type, gso_size, hdr_len
            self.counters["rx_gso"] += 1
        self.deliver(pkt)
        return True

    # -- transmit --------------------------------------------------------------------
    def _write(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> None:
        if self.peer_addr is None:
            raise OSError(107, "vwire: no peer has spoken yet")  # ENOTCONN → oerrors
        if meta is None or not (meta.needs_csum or meta.gso_type):
            hdr = _VNET_PLAIN
        else:
            hdr = _vnet.pack(F_NEEDS_CSUM if meta.needs_csum else 0,
                             meta.gso_type or GSO_NONE, meta.hdr_len, meta.gso_size,
                             meta.csum_start, meta.csum_offset)
        self.sock.sendmsg((hdr, *bufs), (), 0, self.peer_addr)

    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        if not self.faults:
            return super().transmit(bufs, meta)
        c = self.counters
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            c["fault_lost"] += 1
            return True  # lost on the wire: the sender cannot tell
        frame = bytearray()
        for b in bufs:
            frame += b
        if self.corrupt and rng.random() < self.corrupt and len(frame) > 14:
            i = rng.randrange(14, len(frame))
            frame[i] ^= 1 << rng.randrange(8)
            c["fault_corrupted"] += 1
        copies = 2 if self.dup and rng.random() < self.dup else 1
        if copies == 2:
            c["fault_duplicated"] += 1
        wait = self.delay + (rng.uniform(0, self.jitter) if self.jitter else 0.0)
        if self.reorder and rng.random() < self.reorder:
            wait += self.reorder_gap
            c["fault_reordered"] += 1
        data = bytes(frame)
        ok = True
        for _ in range(copies):
            if wait > 0:
                if len(self._heap) >= self.txq_max:
                    c["oqdrops"] += 1
                    return False
                self._seq += 1
                heapq.heappush(self._heap, (trio.current_time() + wait, self._seq, data, meta))
                self._heap_wakeup.set()
            else:
                ok = super().transmit([data], meta) and ok
        return ok

    async def _delay_task(self) -> None:
        heap = self._heap
        while True:
            if not heap:
                await self._heap_wakeup.wait()
                self._heap_wakeup = trio.Event()
                continue
            due = heap[0][0]
            if trio.current_time() < due:
                with trio.move_on_at(due):  # woken early only by an earlier frame
                    await self._heap_wakeup.wait()
                self._heap_wakeup = trio.Event()
                continue
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _due, _seq, data, meta = heapq.heappop(heap)
                super().transmit([data], meta)

    def destroy(self) -> None:
        if not self.closed:
            self.close_fd()
            if self.path:
                import os

                try:
                    os.unlink(self.path)
                except OSError:
                    pass

    def describe(self) -> dict[str, str]:
        return {"path": self.path or "-", "peer": self.peer or "-",
                "offloads": ",".join(sorted(self.offloads)) or "none",
                "faults": f"loss={self.loss} dup={self.dup} corrupt={self.corrupt} "
                          f"delay={self.delay * 1000:g}ms reorder={self.reorder}"}


async def main(ctx: ModuleContext) -> None:
    opts = ctx.opts
    macs = opts.get_str("mac")
    try:
        mac = parse_mac(macs) if macs else random_mac()
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    delay = opts.get_float("delay", 0.0) or 0.0
    jitter = opts.get_float("jitter", 0.0) or 0.0
    gap = opts.get_float("reorder_gap", 5.0) or 0.0
    if delay < 0 or jitter < 0 or gap < 0:
        raise OptionError("delay/jitter/reorder_gap are milliseconds >= 0")
    iface = VwireInterface(
        opts.get_str("name") or ctx.stack.unique_name("vw"), mac=mac,
        mtu=opts.get_int("mtu", 1500, lo=68, hi=65000) or 1500,
        path=opts.get_str("path"), peer=opts.get_str("peer"),
        loss=_prob(opts, "loss"), dup=_prob(opts, "dup"), corrupt=_prob(opts, "corrupt"),
        delay=delay / 1000, jitter=jitter / 1000, reorder=_prob(opts, "reorder"),
        reorder_gap=gap / 1000, seed=opts.get_int("seed", None))
    ctx.add_cleanup(iface.destroy)
    ctx.attach_interface(iface)
    iface.start(ctx.nursery)
    ctx.started()


IO_PKT_MODULE = ModuleEntry(kind="driver", api=MODULE_API_VERSION, entry=main,
                            description="virtual wire between io-pkt instances (UNIX datagram)")
