"""What every transport socket shares: its errors, the IPPROTO_IP level options and
the readiness notification the socket files wait on."""

from __future__ import annotations

import errno
import os
import socket as _s
from collections.abc import Callable
from typing import Any, Protocol

import trio

from stack.counters import Counters


def sock_error(code: int, msg: str = "") -> OSError:
    """An OSError carrying a BSD errno (and the usual message when none is given)."""
    return OSError(code, msg or os.strerror(code))


IP_MTU_DISCOVER = getattr(_s, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT, IP_PMTUDISC_DO, IP_PMTUDISC_PROBE = 0, 2, 3


class HasIPOptions(Protocol):
    ttl: int | None
    tos: int


def set_ip_option(target: HasIPOptions, opt: int, value: Any) -> None:
    """IP_TTL (1..255, -1 = the default), IP_TOS and, where the socket has the
    attribute (raw, UDP), IP_MTU_DISCOVER (IP_PMTUDISC_DO/PROBE: send with DF), as Linux
    takes them."""
    if opt == IP_MTU_DISCOVER and hasattr(target, "df"):
        v = int(value)
        if not 0 <= v <= 5:
            raise sock_error(errno.EINVAL)
        target.df = v in (IP_PMTUDISC_DO, IP_PMTUDISC_PROBE)
        return
    if opt == _s.IP_TTL:
        v = int(value)
        if not (v == -1 or 1 <= v <= 255):
            raise sock_error(errno.EINVAL)
        target.ttl = None if v == -1 else v
    elif opt == _s.IP_TOS:
        target.tos = int(value) & 0xFF
    else:
        raise sock_error(errno.ENOPROTOOPT)


def get_ip_option(target: HasIPOptions, opt: int, default_ttl: int = 64) -> int:
    if opt == IP_MTU_DISCOVER and hasattr(target, "df"):
        return IP_PMTUDISC_DO if target.df else IP_PMTUDISC_DONT
    if opt == _s.IP_TTL:
        return target.ttl if target.ttl is not None else default_ttl
    if opt == _s.IP_TOS:
        return target.tos
    raise sock_error(errno.ENOPROTOOPT)


class HasReadiness(Protocol):
    _event: trio.Event
    on_change: list[Callable[[], None]]


def fire_change(sock: HasReadiness, counters: Counters) -> None:
    """Readiness may have changed: wake in-stack waiters (a fresh Event each time) and
    call the listeners (the FUSE poll notifier); a listener that raises is counted."""
    sock._event.set()
    sock._event = trio.Event()
    for cb in list(sock.on_change):
        try:
            cb()
        except Exception:
            counters["on_change_errors"] += 1
