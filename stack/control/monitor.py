"""The route monitor: a stream of change messages, like reading a BSD routing socket.

Each open of ``config/route_monitor`` gets its own bounded queue of messages; a read
blocks until the next message (O_NONBLOCK: EAGAIN) and returns whole lines. Messages come
from the control files themselves (with full details) and from diffs of the stack's
state taken whenever a listener fires (interfaces attached/detached/changed, route table
changes), so changes made by any component show up.
"""

from __future__ import annotations

import errno
from collections import deque
from typing import TYPE_CHECKING

import trio

from rmgr.nodes import POLLIN, POLLRDNORM, Handle, IoRequest, OpenRequest

if TYPE_CHECKING:  # cycle: the Control object owns these file groups, each holds it; types only
    from stack.control import Control

#: messages kept per reader before the oldest are dropped (counted; BSD's ENOBUFS)
QUEUE_MAX = 1024


class MonitorHandle(Handle):
    def __init__(self, hub: MonitorHub) -> None:
        super().__init__()
        self.hub = hub
        self.queue: deque[str] = deque()
        self.lost = 0
        self.event = trio.Event()
        self.closed = False

    def push(self, line: str) -> None:
        if len(self.queue) >= QUEUE_MAX:
            self.queue.popleft()
            self.lost += 1
        self.queue.append(line)
        self.event.set()
        self.notify()

    async def read(self, size: int, req: IoRequest) -> bytes:
        while not self.queue:
            if self.closed:
                return b""
            if req.nonblock:
                raise OSError(errno.EAGAIN, "no message yet")
            self.event = trio.Event()
            await self.event.wait()
        out = bytearray()
        if self.lost:
            out += f"RTM_LOSING: {self.lost} messages lost (reader too slow)\n".encode()
            self.lost = 0
        while self.queue:
            line = self.queue[0].encode()
            if out and len(out) + len(line) > size:
                break
            out += line
            self.queue.popleft()
        return bytes(out[:size])

    def poll(self) -> int:
        return POLLIN | POLLRDNORM if self.queue else 0

    def release(self) -> None:
        self.closed = True
        self.hub.readers.discard(self)
        self.event.set()


class MonitorHub:
    """Fans change messages out to every open reader."""

    def __init__(self, control: Control) -> None:
        self.control = control
        self.readers: set[MonitorHandle] = set()
        self.sent = 0

    def open(self, req: OpenRequest) -> MonitorHandle:
        h = MonitorHandle(self)
        self.readers.add(h)
        return h

    def post(self, kind: str, text: str) -> None:
        """``kind`` is the BSD message name (RTM_ADD, RTM_NEWADDR, ...)."""
        self.sent += 1
        line = f"{kind}: {text}\n"
        for h in list(self.readers):
            h.push(line)
