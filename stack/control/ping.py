"""``config/ping``: ICMP echo through a file (the ping tool's door).

Each open is a session. A write of one line ::

    DST [size N] [ttl N] [timeout SECS] [seq N] [tos N] [df 0|1]

(an IPv6 DST, ``2001:db8::1`` or ``fe80::1%tap0``, sends an ICMPv6 echo; ``hlim`` and
``tclass`` are its names for ttl and tos, ``if IF`` the outgoing interface, ``src ADDR``
the source) sends one echo request (the write returns at once) and queues its result; a read blocks
until the next result (O_NONBLOCK: EAGAIN) and returns whole lines::

    reply seq N from ADDR bytes N ttl N time_us N
    timeout seq N
    error seq N ENAME message                  (no route, ARP failed, ...)
    icmp seq N from ADDR type N code N message (unreachable, time exceeded ...)

At most ``MAX_OUTSTANDING`` requests may be in flight per open (more: ENOBUFS).
"""

from __future__ import annotations

import errno
import os
from collections import deque
from typing import TYPE_CHECKING

import trio

from rmgr.nodes import POLLIN, POLLOUT, POLLRDNORM, Handle, IoRequest, OpenRequest
from stack.addr import Addr, is_v4
from stack.control import backend
from stack.control.util import einval, parse_addr, parse_addr6, parse_int

if TYPE_CHECKING:  # cycle: the Control object owns these file groups, each holds it; types only
    from stack.control import Control

MAX_OUTSTANDING = 64
MAX_SIZE = 65507 - 8
MAX_SIZE6 = 65527 - 8
DEFAULT_TIMEOUT = 1.0


class PingHandle(Handle):
    def __init__(self, control: Control, req: OpenRequest) -> None:
        super().__init__()
        self.control = control
        self.results: deque[str] = deque()
        self.outstanding = 0
        self.next_seq = 0
        self.ident = (os.getpid() ^ id(self)) & 0xFFFF
        self.event = trio.Event()
        self.closed = False

    async def write(self, data: memoryview, req: IoRequest) -> int:
        try:
            words = bytes(data).decode().split()
        except UnicodeDecodeError:
            raise einval("request is not UTF-8 text") from None
        if not words:
            raise einval("usage: DST [size N] [ttl N] [timeout SECS] [seq N] [tos N] [df 0|1]")
        opts: dict[str, str] = {}
        rest = words[1:]
        while rest:
            key = rest.pop(0)
            key = {"hlim": "ttl", "tclass": "tos"}.get(key, key)
            if key not in ("size", "ttl", "timeout", "seq", "tos", "df", "if", "src") \
                    or not rest:
                raise einval(f"bad ping option: {key}")
            opts[key] = rest.pop(0)
        ifname = opts.get("if")
        src: Addr | None = None
        if ":" in words[0]:  # ICMPv6 echo (ping6): DST may carry its zone, fe80::1%tap0
            dst, zone = parse_addr6(words[0])
            if zone is not None and ifname is not None and zone != ifname:
                raise einval(f"scope %{zone} and if {ifname} disagree")
            ifname = zone or ifname
            if "src" in opts:
                src = parse_addr6(opts["src"])[0]
            if dst >> 118 == 0xFE80 >> 6 and ifname is None:
                raise einval(f"{words[0]} is link-local: give its interface "
                             f"({words[0]}%IF or if IF)")
            size = parse_int(opts.get("size", "56"), "size", 0, MAX_SIZE6)
        else:
            dst = parse_addr(words[0])
            if "src" in opts or ifname is not None:
                raise einval("src and if are for ICMPv6 echo (an IPv6 destination)")
            size = parse_int(opts.get("size", "56"), "size", 0, MAX_SIZE)
        if ifname is not None and ifname not in self.control.stack.interfaces:
            raise OSError(errno.ENXIO, f"no such interface: {ifname}")
        ttl = parse_int(opts.get("ttl", "0"), "ttl", 0, 255) or None
        tos = parse_int(opts.get("tos", "0"), "tos", 0, 255)
        df = bool(parse_int(opts.get("df", "0"), "df", 0, 1))
        try:
            timeout = float(opts.get("timeout", DEFAULT_TIMEOUT))
            if not 0 < timeout <= 3600:
                raise ValueError
        except ValueError:
            raise einval(f"bad timeout: {opts.get('timeout')}") from None
        if "seq" in opts:
            seq = parse_int(opts["seq"], "seq", 0, 0xFFFF)
        else:
            seq = self.next_seq
        self.next_seq = (seq + 1) & 0xFFFF
        if self.outstanding >= MAX_OUTSTANDING:
            raise OSError(errno.ENOBUFS, f"{MAX_OUTSTANDING} echo requests already in flight")
        self.outstanding += 1
        self.control.stack.nursery.start_soon(self._one, dst, size, ttl, tos, df, timeout, seq,
                                              ifname, src)
        return len(data)

    async def _one(self, dst: Addr, size: int, ttl: int | None, tos: int, df: bool,
                   timeout: float, seq: int, ifname: str | None = None,
                   src: Addr | None = None) -> None:
        try:
            if is_v4(dst):
                line = await backend.ping(self.control.stack, dst, size=size, ttl=ttl, tos=tos,
                                          df=df, timeout=timeout, seq=seq, ident=self.ident)
            else:
                line = await backend.ping6(self.control.stack, dst, size=size, hlim=ttl,
                                           tclass=tos, df=df, timeout=timeout, seq=seq,
                                           ident=self.ident, ifname=ifname, src=src)
        except OSError as exc:
            code = exc.errno or errno.EIO
            line = f"error seq {seq} {errno.errorcode.get(code, code)} {exc.strerror or ''}"
        except Exception as exc:  # the request fails, never the stack
            line = f"error seq {seq} EIO {type(exc).__name__}: {exc}"
        finally:
            self.outstanding -= 1
        if not self.closed:
            self.results.append(line.rstrip("\n") + "\n")
            self.event.set()
            self.notify()

    async def read(self, size: int, req: IoRequest) -> bytes:
        while not self.results:
            if self.closed:
                return b""
            if req.nonblock:
                raise OSError(errno.EAGAIN, "no result yet")
            self.event = trio.Event()
            await self.event.wait()
        out = bytearray()
        while self.results and (not out or len(out) + len(self.results[0]) <= size):
            out += self.results.popleft().encode()
        return bytes(out[:size])

    def poll(self) -> int:
        mask = POLLOUT if self.outstanding < MAX_OUTSTANDING else 0
        return mask | (POLLIN | POLLRDNORM if self.results else 0)

    def release(self) -> None:
        self.closed = True
        self.event.set()
