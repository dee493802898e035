"""lo0: the built-in loopback interface. Frames sent are delivered back, from a task
(never re-entrantly inside the sender's call), in the order sent."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import trio

from stack.l2.iface import IFF_LOOPBACK, IFF_MULTICAST, IFF_RUNNING, IFF_UP, Interface
from stack.packet import Buffer, Packet, TxMeta

LOOPBACK_QUEUE_MAX = 4096


class Loopback(Interface):
    kind = "loopback"

    def __init__(self, name: str = "lo0") -> None:
        super().__init__(name, mac=b"\x00" * 6, mtu=33184, driver="lo",
                         flags=IFF_LOOPBACK | IFF_MULTICAST | IFF_UP | IFF_RUNNING)
        self.capabilities = {"csum"}
        self.offloads = {"csum"}
        self.queue: deque[bytes] = deque()
        self.wakeup = trio.Event()

    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        if len(self.queue) >= LOOPBACK_QUEUE_MAX:
            self.counters["oqdrops"] += 1
            return False
        self.queue.append(b"".join(bufs))
        self.wakeup.set()
        return True

    async def run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup = trio.Event()
            while self.queue:
                frame = self.queue.popleft()
                pkt = Packet(memoryview(frame), self)
                pkt.csum_valid = True
                self.deliver(pkt)
            await trio.lowlevel.checkpoint()
