"""What ICMP (stack/inet/icmp.py) and ICMPv6 (stack/inet6/icmp6.py) share: the waiter an
echo request's sender sleeps on, and the token bucket that limits the errors sent (BSD's
icmp_ratecheck, RFC 4443 §2.4(f)), each family with its own sysctls."""

from __future__ import annotations

import os
import time

import trio

from stack.network import IPInfo
from stack.sysctl import Knob


class PingWaiter:
    """One echo request in flight: the reply (info, time, size) or an error ends it."""

    __slots__ = ("event", "reply", "error", "sent")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: tuple[IPInfo, float, int] | None = None
        self.error: BaseException | None = None
        self.sent = 0.0

    def fail(self, err: int) -> None:
        if not self.event.is_set():
            self.error = OSError(err, os.strerror(err))
            self.event.set()


class ErrorRateLimit:
    """A token bucket: ``rate`` errors per second (0: unlimited), at most ``burst`` at
    once; both knobs are read at each error, so a sysctl change applies at once."""

    __slots__ = ("rate", "burst", "tokens", "clock", "_last")

    def __init__(self, rate: Knob, burst: Knob) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst.value)
        self.clock = time.monotonic  # tests freeze it
        self._last = self.clock()

    def allow(self) -> bool:
        rate = int(self.rate.value)
        if rate <= 0:
            return True
        now = self.clock()
        burst = float(self.burst.value)
        self.tokens = min(burst, self.tokens + (now - self._last) * rate)
        self._last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
