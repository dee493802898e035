"""Write an interface's traffic to a pcap file (``tcpdump -r`` reads it).

``w = capture(iface, "/tmp/tap0.pcap")`` attaches a capture tap (both directions by
default; ``direction="in"``/``"out"`` for one) and writes classic libpcap records
(LINKTYPE_ETHERNET, microsecond timestamps, snaplen 262144 so 64 KB super-segments fit);
``w.close()`` detaches and closes. Writes go through a buffered file: call ``flush()`` to
read the file while capturing. A ``PcapWriter`` can also be fed by hand (``write``).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from typing import BinaryIO

from stack.l2.iface import Interface
from stack.packet import Buffer

LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
_rec = struct.Struct("<IIII")


class PcapWriter:
    def __init__(self, path: str, *, linktype: int = LINKTYPE_ETHERNET,
                 snaplen: int = SNAPLEN) -> None:
        self.path = path
        self.snaplen = snaplen
        self.f: BinaryIO = open(path, "wb")  # noqa: SIM115 - lives as long as the writer
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))
        self.count = 0
        self._ifaces: list[tuple[Interface, object]] = []

    def write(self, bufs: Sequence[Buffer], ts: float | None = None) -> None:
        t = time.time() if ts is None else ts
        sec = int(t)
        usec = int((t - sec) * 1_000_000)
        length = sum(len(b) for b in bufs)
        cap = min(length, self.snaplen)
        f = self.f
        f.write(_rec.pack(sec, usec, cap, length))
        left = cap
        for b in bufs:
            if left <= 0:
                break
            if len(b) <= left:
                f.write(b)
                left -= len(b)
            else:
                f.write(memoryview(b)[:left])
                left = 0
        self.count += 1

    def attach(self, iface: Interface, direction: str = "both") -> None:
        def tap(_iface: Interface, d: str, bufs: Sequence[Buffer]) -> None:
            if direction == "both" or d == direction:
                self.write(bufs)

        iface.taps.append(tap)
        self._ifaces.append((iface, tap))

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        for iface, tap in self._ifaces:
            if tap in iface.taps:
                iface.taps.remove(tap)  # type: ignore[arg-type]
        self._ifaces.clear()
        if not self.f.closed:
            self.f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def capture(iface: Interface, path: str, direction: str = "both") -> PcapWriter:
    """Start writing ``iface``'s frames (``direction`` in/out/both) to ``path``."""
    if direction not in ("in", "out", "both"):
        raise ValueError("direction is in, out or both")
    w = PcapWriter(path)
    w.attach(iface, direction)
    return w
