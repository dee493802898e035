"""The trio-level TCP socket: what the socket layer (FUSE files) and in-stack users call.

Blocking calls are ``async``; every one has a ``*_nowait`` twin raising
``BlockingIOError`` (EAGAIN / EINPROGRESS). Errors are ``OSError`` with BSD errno names.
Option levels and names are Python's ``socket`` constants. ``poll_mask()`` gives Linux
``tcp_poll`` semantics; ``on_change`` callbacks run whenever readiness may have changed.
"""

from __future__ import annotations

import errno
import os
import select
import socket as _s
import struct
from collections.abc import Callable
from typing import Any

import trio

from stack.addr import AF_INET, AF_INET6, Endpoint, ScopedEndpoint, is_link_local6
from stack.network import scope_ifname
from stack.packet import Buffer
from stack.transport import ip6opt
from stack.transport.sockaddr import SockAddr, any_for, endpoint, endpoint_scope
from stack.transport.sockopt import fire_change, get_ip_option, set_ip_option
from stack.transport.sockopt import sock_error as _err
from stack.transport.tcp import info as tcpinfo
from stack.transport.tcp import seq as sq
from stack.transport.tcp.proto import TCPProto
from stack.transport.tcp.tcb import RECV_STATES, SEND_STATES, TCB, State

S = State
POLLIN = select.POLLIN | select.POLLRDNORM
POLLOUT = select.POLLOUT | select.POLLWRNORM
POLLERR = select.POLLERR
POLLHUP = select.POLLHUP
POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)
# per-socket keepalive options and their upper bounds (Linux: MAX_TCP_KEEPIDLE,
# MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT)
KEEP_LIMITS = {_s.TCP_KEEPIDLE: 32767, _s.TCP_KEEPINTVL: 32767, _s.TCP_KEEPCNT: 127}
KEEP_NAMES = {_s.TCP_KEEPIDLE: "idle time", _s.TCP_KEEPINTVL: "interval", _s.TCP_KEEPCNT: "count"}


class TCPSocket:
    type = _s.SOCK_STREAM
    proto_number = _s.IPPROTO_TCP

    def __init__(self, proto: TCPProto, tcb: TCB | None = None, *,
                 family: int = AF_INET) -> None:
        self.proto = proto
        #: AF_INET, or AF_INET6 (dual-stack: IPv4 peers as IPv4-mapped, unless V6ONLY)
        self.family = family
        accepted = tcb is not None
        if tcb is None:
            tcb = TCB(proto, self)
            if family == AF_INET6:
                tcb.laddr = tcb.raddr = any_for(family)
        self.tcb = tcb
        self.tcb.sock = self
        self.on_change: list[Callable[[], None]] = []
        self._event = trio.Event()
        self.linger: tuple[int, int] = (0, 0)
        self.broadcast = False
        self.closed = False
        self._was_connected = accepted
        self._connect_reported = accepted
        self.rcvbuf_set = 0
        self.sndbuf_set = 0

    def __repr__(self) -> str:
        return f"<TCPSocket {self.tcb!r}>"

    # ------------------------------------------------------------- readiness
    def _notify(self) -> None:
        fire_change(self, self.proto.counters)

    async def _wait(self) -> None:
        await self._event.wait()

    def poll_mask(self) -> int:
        t = self.tcb
        st = t.state
        mask = 0
        if self.closed:
            return select.POLLNVAL
        if st == S.LISTEN:
            return POLLIN if t.accept_queue else 0
        if t.error:
            mask |= POLLERR
        if st == S.CLOSED:
            # a fresh socket, or a connection (attempt) that is over: refused, reset,
            # timed out or closed both ways; Linux's tcp_done() then marks both
            # directions shut, so reads see EOF
            mask |= POLLOUT | POLLHUP
            if self._ended:
                mask |= POLLIN | POLLRDHUP
            return mask
        if st in (S.SYN_SENT, S.SYN_RECEIVED):
            return mask
        if t.rcvbuf or t.fin_rcvd or t.rd_shut:
            mask |= POLLIN
        if t.fin_rcvd or t.rd_shut:
            mask |= POLLRDHUP
        if t.wr_shut:
            mask |= POLLOUT
            if t.fin_rcvd or t.rd_shut:
                mask |= POLLHUP
        elif st in SEND_STATES and t.snd_limit - len(t.sndbuf) >= max(t.snd_limit // 4, 1):
            mask |= POLLOUT
        return mask

    # ------------------------------------------------------------- names
    def _check_open(self) -> None:
        if self.closed:
            raise _err(errno.EBADF)

    def bind(self, address: SockAddr) -> None:
        self._check_open()
        laddr, port = endpoint(address, self.family, self.tcb.v6only)
        if self.tcb.state != S.CLOSED or self.tcb.bound:
            raise _err(errno.EINVAL, "socket is already bound")
        self.proto.bind(self.tcb, laddr, port)

    def getsockname(self) -> Endpoint:
        return self._scoped(self.tcb.laddr, self.tcb.lport)

    def getpeername(self) -> Endpoint:
        t = self.tcb
        if t.state in (S.CLOSED, S.LISTEN, S.SYN_SENT) or not t.rport:
            raise _err(errno.ENOTCONN)
        return self._scoped(t.raddr, t.rport)

    def _scoped(self, addr: int, port: int) -> Endpoint:
        """A link-local endpoint with its scope id: the interface of our link-local
        address (what Linux reports in sin6_scope_id)."""
        if is_link_local6(addr):
            idx = ip6opt.scope_index(self.proto.inet, self.tcb.laddr)
            if idx:
                return ScopedEndpoint(addr, port, idx)  # type: ignore[arg-type]
        return Endpoint(addr, port)  # type: ignore[arg-type]

    @property
    def state(self) -> str:
        return self.tcb.state.name

    # ------------------------------------------------------------- listen/accept
    def listen(self, backlog: int = 128) -> None:
        self._check_open()
        self.proto.listen(self.tcb, min(max(int(backlog), 1), 4096))

    def accept_nowait(self) -> tuple[TCPSocket, Endpoint]:
        self._check_open()
        t = self.tcb
        if t.state != S.LISTEN:
            raise _err(errno.EINVAL, "socket is not listening")
        while t.accept_queue:
            child = t.accept_queue.pop(0)
            child.listener = None
            if child.state == S.CLOSED:
                continue
            sock = TCPSocket(self.proto, child, family=self.family)
            self.proto.counters["accepted"] += 1
            return sock, sock._scoped(child.raddr, child.rport)
        raise BlockingIOError(errno.EAGAIN, "no pending connection")

    async def accept(self) -> tuple[TCPSocket, Endpoint]:
        while True:
            try:
                return self.accept_nowait()
            except BlockingIOError:
                await self._wait()

    # ------------------------------------------------------------- connect
    def connect_nowait(self, address: SockAddr) -> None:
        """Non-blocking connect: raises BlockingIOError(EINPROGRESS) when started,
        EALREADY while in progress, EISCONN once connected (poll for POLLOUT and read
        SO_ERROR, as with a BSD socket)."""
        self._check_open()
        t = self.tcb
        if t.state == S.CLOSED and t.error and self._was_connected is False and self._connect_started:
            err, t.error = t.error, 0
            raise _err(err)
        (raddr, rport), scope = endpoint_scope(address, self.family, t.v6only)
        if t.state == S.CLOSED:
            self.proto.connect(t, raddr, rport, scope_ifname(self.proto.inet, scope))
            self._connect_started = True
            if t.state == S.ESTABLISHED:
                self._was_connected = True
                return
            raise BlockingIOError(errno.EINPROGRESS, os.strerror(errno.EINPROGRESS))
        if t.state in (S.SYN_SENT, S.SYN_RECEIVED):
            raise _err(errno.EALREADY)
        if t.state == S.LISTEN:
            raise _err(errno.EINVAL)
        self._was_connected = True
        raise _err(errno.EISCONN)

    _connect_started = False

    @property
    def _ended(self) -> bool:
        """A connection was accepted, made or at least attempted (and, in CLOSED, is over)."""
        return self._was_connected or self._connect_started

    async def connect(self, address: SockAddr) -> None:
        try:
            self.connect_nowait(address)
            return
        except BlockingIOError:
            pass
        t = self.tcb
        try:
            while t.state in (S.SYN_SENT, S.SYN_RECEIVED):
                await self._wait()
        except trio.Cancelled:
            if t.state in (S.SYN_SENT, S.SYN_RECEIVED):
                t.user_abort()
            raise
        if t.state == S.CLOSED or t.error:
            err, t.error = t.error or errno.ECONNREFUSED, 0
            raise _err(err)
        self._was_connected = True

    # ------------------------------------------------------------- data
    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        self._check_open()
        t = self.tcb
        if t.error:
            err, t.error = t.error, 0
            raise _err(err)
        if t.wr_shut:
            raise _err(errno.EPIPE)
        if t.state in (S.SYN_SENT, S.SYN_RECEIVED):
            raise BlockingIOError(errno.EAGAIN, "connection in progress")
        if t.state not in (S.ESTABLISHED, S.CLOSE_WAIT):
            raise _err(errno.EPIPE if self._was_connected or t.state != S.CLOSED else errno.ENOTCONN)
        self._was_connected = True
        if not len(data):
            return 0
        n = t.user_send(data)
        if n == 0:
            raise BlockingIOError(errno.EAGAIN, "send buffer full")
        return n

    async def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue all of ``data`` (waiting for buffer space); returns len(data), or the
        part queued before an error (the error is reported by the next call)."""
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        total = len(view)
        done = 0
        while True:
            try:
                done += self.send_nowait(view[done:])
            except BlockingIOError:
                await self._wait()
                continue
            except OSError:
                if done:
                    return done
                raise
            if done >= total:
                return total

    sendall = send

    def recv_nowait(self, n: int = 65536, *, peek: bool = False) -> bytes:
        self._check_open()
        t = self.tcb
        if t.rcvbuf:
            return t.user_recv(n, peek)
        if t.error:
            err, t.error = t.error, 0
            raise _err(err)
        if t.fin_rcvd or t.rd_shut or (t.state == S.CLOSED and self._ended):
            return b""
        if t.state == S.LISTEN or t.state == S.CLOSED:
            raise _err(errno.ENOTCONN)
        if n == 0:
            return b""
        raise BlockingIOError(errno.EAGAIN, "no data")

    def recv_views_nowait(self, n: int = 65536) -> tuple[list[Buffer], int]:
        """``recv_nowait`` as pieces without a copy: (pieces, size); ([], 0) at EOF."""
        t = self.tcb
        if t.rcvbuf and not self.closed:
            return t.user_recv_views(n)
        data = self.recv_nowait(n)  # the errors, EOF and EAGAIN, as recv_nowait
        return ([data], len(data)) if data else ([], 0)

    async def recv(self, n: int = 65536) -> bytes:
        while True:
            try:
                return self.recv_nowait(n)
            except BlockingIOError:
                await self._wait()

    def bytes_readable(self) -> int:
        """FIONREAD."""
        return len(self.tcb.rcvbuf)

    def bytes_unsent(self) -> int:
        """TIOCOUTQ / SIOCOUTQ: bytes not yet acknowledged."""
        return len(self.tcb.sndbuf)

    # ------------------------------------------------------------- shutdown/close
    def shutdown(self, how: int) -> None:
        self._check_open()
        t = self.tcb
        if how not in (_s.SHUT_RD, _s.SHUT_WR, _s.SHUT_RDWR):
            raise _err(errno.EINVAL)
        if t.state in (S.CLOSED, S.LISTEN, S.SYN_SENT) and not self._was_connected:
            if t.state == S.LISTEN and how != _s.SHUT_WR:
                self.proto.close_listener(t)
                return
            raise _err(errno.ENOTCONN)
        if how in (_s.SHUT_RD, _s.SHUT_RDWR):
            t.rd_shut = True
            t.rcvbuf.clear()
        if how in (_s.SHUT_WR, _s.SHUT_RDWR):
            t.user_shutdown_write()
        self._notify()

    def close(self) -> None:
        """Non-blocking close; SO_LINGER with a zero timeout resets the connection."""
        if self.closed:
            return
        self.closed = True
        t = self.tcb
        t.user_close(linger_zero=bool(self.linger[0]) and self.linger[1] == 0)
        self._notify()
        self.on_change.clear()

    async def aclose(self) -> None:
        """close() honouring SO_LINGER > 0: wait (at most linger seconds) for the data
        and FIN to be acknowledged."""
        t = self.tcb
        onoff, secs = self.linger
        if onoff and secs > 0 and t.state in SEND_STATES and not self.closed:
            t.user_shutdown_write()
            with trio.move_on_after(secs):
                while t.state in SEND_STATES and not t.fin_acked():
                    await self._wait()
        self.close()

    def abort(self) -> None:
        """Reset the connection now (as close with SO_LINGER 0)."""
        self.linger = (1, 0)
        self.close()

    # ------------------------------------------------------------- options
    def setsockopt(self, level: int, opt: int, value: Any) -> None:
        self._check_open()
        t = self.tcb
        if isinstance(value, (bytes, bytearray)) and len(value) == 4:
            value = struct.unpack("i", value)[0]
        if level == _s.SOL_SOCKET:
            if opt == _s.SO_REUSEADDR:
                t.reuseaddr = bool(value)
            elif opt == _s.SO_KEEPALIVE:
                t.keepalive = bool(value)
                t.arm_keepalive()
            elif opt == _s.SO_RCVBUF:
                v = max(int(value) * 2, 4096)  # Linux doubles for bookkeeping
                self.rcvbuf_set = v
                t.rcv_limit = v
            elif opt == _s.SO_SNDBUF:
                v = max(int(value) * 2, 4096)
                self.sndbuf_set = v
                t.snd_limit = v
            elif opt == _s.SO_LINGER:
                if isinstance(value, (bytes, bytearray)):
                    onoff, secs = struct.unpack("ii", value)
                else:
                    onoff, secs = value
                self.linger = (int(onoff), int(secs))
            elif opt == _s.SO_BROADCAST:
                self.broadcast = bool(value)
            else:
                raise _err(errno.ENOPROTOOPT)
        elif level == _s.IPPROTO_TCP:
            if opt == _s.TCP_NODELAY:
                t.nodelay = bool(value)
                if t.nodelay and t.state in SEND_STATES:
                    t.output()
            elif opt in KEEP_LIMITS:
                v = int(value)
                if not 1 <= v <= KEEP_LIMITS[opt]:  # Linux's bounds, EINVAL as there
                    raise _err(errno.EINVAL, f"keepalive {KEEP_NAMES[opt]} must be 1..{KEEP_LIMITS[opt]}")
                if opt == _s.TCP_KEEPIDLE:
                    t.keepidle = float(v)
                    t.arm_keepalive()  # a new idle time counts from the last segment received
                elif opt == _s.TCP_KEEPINTVL:
                    t.keepintvl = float(v)
                else:
                    t.keepcnt = v
            elif opt == _s.TCP_MAXSEG:
                pass
            else:
                raise _err(errno.ENOPROTOOPT)
        elif level == _s.IPPROTO_IP:
            set_ip_option(t, opt, value)
        elif level == ip6opt.IPPROTO_IPV6 and self.family == AF_INET6:
            if opt == ip6opt.IPV6_V6ONLY:
                if t.bound or t.state != S.CLOSED:
                    raise _err(errno.EINVAL)
                t.v6only = bool(ip6opt.int_value(value))
            else:
                ip6opt.set_common(t, opt, value)
        else:
            raise _err(errno.ENOPROTOOPT)

    def getsockopt(self, level: int, opt: int) -> Any:
        t = self.tcb
        if level == _s.SOL_SOCKET:
            if opt == _s.SO_ERROR:
                err, t.error = t.error, 0
                return err
            if opt == _s.SO_REUSEADDR:
                return int(t.reuseaddr)
            if opt == _s.SO_KEEPALIVE:
                return int(t.keepalive)
            if opt == _s.SO_RCVBUF:
                return t.rcv_limit
            if opt == _s.SO_SNDBUF:
                return t.snd_limit
            if opt == _s.SO_LINGER:
                return self.linger
            if opt == _s.SO_BROADCAST:
                return int(self.broadcast)
            if opt == _s.SO_TYPE:
                return _s.SOCK_STREAM
            if opt == _s.SO_ACCEPTCONN:
                return int(t.state == S.LISTEN)
            raise _err(errno.ENOPROTOOPT)
        if level == _s.IPPROTO_TCP:
            if opt == _s.TCP_NODELAY:
                return int(t.nodelay)
            if opt == _s.TCP_MAXSEG:
                return t.snd_mss
            if opt == tcpinfo.TCP_INFO:  # Linux's struct tcp_info, byte for byte
                return tcpinfo.pack(tcpinfo.tcp_info(t))
            if opt in KEEP_LIMITS:  # whole seconds, as Linux reports them
                idle, intvl, cnt = t.keep_times()
                return {_s.TCP_KEEPIDLE: max(1, int(idle)), _s.TCP_KEEPINTVL: max(1, int(intvl)),
                        _s.TCP_KEEPCNT: cnt}[opt]
            raise _err(errno.ENOPROTOOPT)
        if level == _s.IPPROTO_IP:
            return get_ip_option(t, opt)
        if level == ip6opt.IPPROTO_IPV6 and self.family == AF_INET6:
            if opt == ip6opt.IPV6_V6ONLY:
                return int(t.v6only)
            return ip6opt.get_common(t, opt)
        raise _err(errno.ENOPROTOOPT)

    def info(self) -> dict[str, Any]:
        """tcp_info-like facts (for tests, netstat)."""
        t = self.tcb
        return {
            "state": t.state.name, "snd_mss": t.snd_mss, "rcv_mss": t.rcv_mss,
            "wscale": (t.snd_scale, t.rcv_scale) if t.ws_ok else None,
            "timestamps": t.ts_ok, "sack": t.sack_ok, "cwnd": t.cc.cwnd,
            "ssthresh": t.cc.ssthresh, "srtt": t.srtt, "rto": t.rto, "cc": t.cc.name,
            "snd_wnd": t.snd_wnd, "rcv_space": t.rcv_space(), "unacked": sq.sub(t.snd_max, t.snd_una),
            "rcv_limit": t.rcv_limit, "snd_limit": t.snd_limit,
            "readable": len(t.rcvbuf), "recv_states": t.state in RECV_STATES,
        }
