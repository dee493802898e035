"""An in-memory network layer implementing stack/network.py's ``NetworkLayer`` (IPv4
addresses, as ``stack.addr.Addr``), and a lossy wire between hosts, for deterministic
transport tests under trio's MockClock. The transports are wired in as in the stack:
registered in a ``Registries`` whose transport table the fake layer watches."""

from __future__ import annotations

import errno
import heapq
import itertools
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from stack.addr import AF_INET, BROADCAST4, Addr, Endpoint, addr_bytes, parse_addr
from stack.network import ErrorHandler, IPInfo, NetworkLayer, RawTap, TransportHandler
from stack.packet import Buffer, TxMeta
from stack.registry import Registries, TransportProtocol
from stack.sysctl import Sysctl
from stack.transport import Transports
from stack.transport.wire import tcp as wtcp
from stack.transport.wire.checksum import checksum

_IPHDR = struct.Struct("!BBHHHBBH4s4s")


def ip(a: str) -> Addr:
    """An IPv4 address as the stack holds it (``stack.addr``: IPv4-mapped)."""
    return parse_addr(a)


def ep(host: str, port: int) -> Endpoint:
    """What the transports' sockets return for ``(host, port)``."""
    return Endpoint(parse_addr(host), port)


@dataclass
class Faults:
    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    #: return True to drop this packet (src, dst, proto, data)
    drop: Callable[[Addr, Addr, int, bytes], bool] | None = None


@dataclass
class Sent:
    time: float
    src: Addr
    dst: Addr
    proto: int
    data: bytes
    meta: TxMeta | None = None

    def tcp(self) -> wtcp.TCPSegment:
        return wtcp.parse(memoryview(self.data))


class FakeInet:
    """One host's network layer on the wire (``NetworkLayer``)."""

    def __init__(self, addr: Addr, wire: Wire) -> None:
        self.addr = addr
        self.wire = wire
        self.handlers: dict[int, TransportHandler] = {}
        self.err_handlers: dict[int, ErrorHandler] = {}
        self.raw_taps: list[RawTap] = []
        self.mtu = 1500
        self.offloads: set[str] = set()
        wire.hosts[addr] = self

    def attach(self, registries: Registries) -> None:
        """Demultiplex to the AF_INET transports of ``registries`` (as stack/inet does)."""
        def changed(key: tuple[int, int], proto: TransportProtocol | None) -> None:
            if key[0] != AF_INET:
                return
            if proto is None:
                self.handlers.pop(key[1], None)
                self.err_handlers.pop(key[1], None)
            else:
                self.handlers[key[1]] = proto.input
                self.err_handlers[key[1]] = proto.icmp_error
        registries.transports.watchers.append(changed)
        for key, proto in registries.transports.items():
            changed(key, proto)

    def output(self, src: Addr | None, dst: Addr, proto: int, payload: Sequence[Buffer], *,
               ttl: int | None = None, tos: int = 0, df: bool = False,
               meta: TxMeta | None = None, ifname: str | None = None,
               on_error: Callable[[int], None] | None = None) -> int:
        data = bytearray(b"".join(bytes(b) for b in payload))
        if df and 20 + len(data) > self.mtu and not (meta is not None and meta.gso_type):
            return errno.EMSGSIZE  # as the IP layer: DF and too big is not fragmented
        if meta is not None and meta.needs_csum:
            # what the device does for CHECKSUM_PARTIAL: the field holds the pseudo sum
            off = meta.csum_start + meta.csum_offset
            c = checksum((bytes(data),))
            data[off:off + 2] = c.to_bytes(2, "big")
        self.wire.send(Sent(trio.current_time(), src or self.addr, dst, proto, bytes(data), meta))
        return 0

    def source_for(self, dst: Addr) -> Addr | None:
        return self.addr

    def is_local(self, addr: Addr) -> bool:
        return addr == self.addr

    def is_broadcast(self, addr: Addr) -> bool:
        return addr in (BROADCAST4, self.wire.broadcast)

    def route_mtu(self, dst: Addr) -> int:
        return self.mtu

    def route_offloads(self, dst: Addr) -> set[str]:
        return self.offloads

    def original_packet(self, info: IPInfo) -> memoryview:
        """An IPv4 header rebuilt from ``info`` (checksum left 0), then the payload."""
        payload = bytes(info.payload)
        return memoryview(_IPHDR.pack(0x45, info.tos, 20 + len(payload), 0, 0, info.ttl,
                                      info.proto, 0, addr_bytes(info.src),
                                      addr_bytes(info.dst)) + payload)

    def port_unreachable(self, info: IPInfo) -> bool:
        self.wire.icmp_error(info.dst, info.src, 3, 3, info.proto, bytes(info.payload[:8]))
        return True


@dataclass
class Wire:
    delay: float = 0.005
    faults: Faults = field(default_factory=Faults)
    seed: int = 1
    broadcast: Addr = field(default_factory=lambda: ip("10.0.0.255"))

    def __post_init__(self) -> None:
        self.hosts: dict[Addr, FakeInet] = {}
        self.rng = random.Random(self.seed)
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        self._wake = trio.Event()
        self.log: list[Sent] = []
        self.taps: list[Callable[[Sent], None]] = []
        self.stats = {"sent": 0, "lost": 0, "dup": 0, "reordered": 0, "corrupted": 0}

    def send(self, p: Sent) -> None:
        self.stats["sent"] += 1
        self.log.append(p)
        for t in self.taps:
            t(p)
        f = self.faults
        if f.drop is not None and f.drop(p.src, p.dst, p.proto, p.data):
            self.stats["lost"] += 1
            return
        if f.loss and self.rng.random() < f.loss:
            self.stats["lost"] += 1
            return
        data = p.data
        if f.corrupt and self.rng.random() < f.corrupt:
            self.stats["corrupted"] += 1
            b = bytearray(data)
            i = self.rng.randrange(len(b))
            b[i] ^= 1 << self.rng.randrange(8)
            data = bytes(b)
        when = trio.current_time() + self.delay
        if f.reorder and self.rng.random() < f.reorder:
            self.stats["reordered"] += 1
            when += self.delay * 2
        self._push(when, (p.src, p.dst, p.proto, data))
        if f.dup and self.rng.random() < f.dup:
            self.stats["dup"] += 1
            self._push(when + self.delay / 3, (p.src, p.dst, p.proto, data))

    def icmp_error(self, src: Addr, dst: Addr, icmp_type: int, code: int, proto: int,
                   hdr: bytes) -> None:
        """``src`` reports to ``dst`` about a packet dst sent to src."""
        self._push(trio.current_time() + self.delay, ("icmp", dst, src, icmp_type, code, proto, hdr))

    def _push(self, when: float, item: Any) -> None:
        heapq.heappush(self._heap, (when, next(self._order), item))
        self._wake.set()

    def _deliver(self, item: Any) -> None:
        if item[0] == "icmp":
            _, to, about, icmp_type, code, proto, hdr = item
            host = self.hosts.get(to)
            if host is not None and proto in host.err_handlers:
                host.err_handlers[proto](icmp_type, code, to, about, memoryview(hdr), 0)
            return
        src, dst, proto, data = item
        bcast = dst in (BROADCAST4, self.broadcast)
        targets = list(self.hosts.values()) if bcast \
            else [self.hosts[dst]] if dst in self.hosts else []
        for host in targets:
            if host.addr == src:
                continue
            info = IPInfo(src, dst if bcast else host.addr, proto, 64, 0, memoryview(data),
                          None, False, broadcast=bcast)
            for tap in host.raw_taps:
                tap(info)
            h = host.handlers.get(proto)
            if h is not None:
                h(info)

    async def run(self) -> None:
        while True:
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                _, _, item = heapq.heappop(self._heap)
                self._deliver(item)
            self._wake = trio.Event()
            deadline = self._heap[0][0] if self._heap else float("inf")
            with trio.move_on_at(deadline):
                await self._wake.wait()


class Host:
    def __init__(self, addr: str, wire: Wire) -> None:
        self.addr = addr
        self.inet = FakeInet(ip(addr), wire)
        self.sysctl = Sysctl()
        net: NetworkLayer = self.inet  # the fake is the protocol the transports take
        self.t = Transports(net, self.sysctl)
        self.registries = Registries()
        self.inet.attach(self.registries)
        self.t.register(self.registries)
        self.tcp = self.t.tcp
        self.udp = self.t.udp
        self.raw = self.t.raw


class Net:
    def __init__(self, nursery: trio.Nursery, **wire_kw: Any) -> None:
        self.wire = Wire(**wire_kw)
        self.a = Host("10.0.0.1", self.wire)
        self.b = Host("10.0.0.2", self.wire)
        nursery.start_soon(self.wire.run)
        nursery.start_soon(self.a.tcp.run)
        nursery.start_soon(self.b.tcp.run)

    def host(self, addr: str) -> Host:
        h = Host(addr, self.wire)
        return h
