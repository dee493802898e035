"""lo0: the built-in loopback interface. Frames sent are delivered back, from a task
(never re-entrantly inside the sender's call), in the order sent.

Correctness notes: the frame is copied once into a fresh ``bytearray`` at transmit (the
sender may reuse its buffers once ``output`` returns); checksum offload is native (a
partial checksum requested through TxMeta.needs_csum is delivered as ``csum_partial`` and
``csum_valid``: nothing on a loopback can corrupt it); layer 2 accepts every destination
MAC on a loopback interface (there is no ARP on lo0: IPv4 sends with any MAC); the queue
is bounded (oqdrops) and the delivery task yields every ``LOOPBACK_BUDGET`` frames.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import trio

from stack.l2.iface import IFF_LOOPBACK, IFF_MULTICAST, IFF_RUNNING, IFF_UP, Interface
from stack.l2.medium import LoopbackMedium
from stack.packet import Buffer, Packet, TxMeta

LOOPBACK_QUEUE_MAX = 4096
LOOPBACK_BUDGET = 64


class Loopback(Interface):
    kind = "loopback"
    medium_type = LoopbackMedium

    def __init__(self, name: str = "lo0") -> None:
        super().__init__(name, mac=b"\x00" * 6, mtu=33184, driver="lo",
                         flags=IFF_LOOPBACK | IFF_MULTICAST | IFF_UP | IFF_RUNNING)
        self.capabilities = {"csum"}
        self.offloads = {"csum"}
        self.queue: deque[tuple[bytearray, bool]] = deque()
        self.wakeup = trio.Event()

    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        if len(self.queue) >= LOOPBACK_QUEUE_MAX:
            self.counters["oqdrops"] += 1
            return False
        frame = bytearray()
        for b in bufs:
            frame += b
        self.queue.append((frame, meta is not None and meta.needs_csum))
        self.wakeup.set()
        return True

    async def run(self) -> None:
        q = self.queue
        while True:
            await self.wakeup.wait()
            self.wakeup = trio.Event()
            n = 0
            while q:
                frame, partial = q.popleft()
                pkt = Packet(memoryview(frame), self)
                pkt.csum_valid = True
                pkt.csum_partial = partial
                self.deliver(pkt)
                n += 1
                if n >= LOOPBACK_BUDGET:
                    n = 0
                    await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
