"""Ephemeral port choice, shared by TCP and UDP."""

from __future__ import annotations

import errno
import random
from collections.abc import Mapping, Sized

from stack.counters import Counters
from stack.transport.sockopt import sock_error


class EphemeralPorts:
    """Start at a random point of [first, last], then go round it in order, taking the
    first port with no binding (RFC 6056's simple hash-less variant)."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, first: int, last: int, bound: Mapping[int, Sized],
             counters: Counters) -> int:
        span = max(last - first + 1, 1)
        if not self._next:
            self._next = random.randrange(span)
        for _ in range(span):
            self._next = (self._next + 1) % span
            port = first + self._next
            if not bound.get(port):
                return port
        counters["ephemeral_exhausted"] += 1
        raise sock_error(errno.EADDRNOTAVAIL, "no free ephemeral port")
