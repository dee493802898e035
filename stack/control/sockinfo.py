"""``config/sockinfo``: every socket of the transports with what ``ss`` and ``top`` show.

One line per socket, ``key=value`` words (values never hold a space or ``=``)::

    proto=tcp state=ESTABLISHED laddr=10.0.0.2 lport=80 raddr=10.0.0.1 rport=40312
        recvq=0 sendq=0 uid=0 sock=tcp/3 pids=4711 cc=cubic rto=204000 ... snd_wnd=65535

``proto`` (tcp, udp, rawN), ``state`` (the TCP state; ``-`` for datagram sockets),
the addresses (``*`` when unspecified) and ports, ``recvq``/``sendq`` (bytes queued;
for a listener, as Linux's ss: the accept queue and the backlog), and, for a socket
opened through the files, ``uid``, ``sock`` (its text-door name) and ``pids`` (the
processes that opened it, comma-separated). TCP connections carry every field of
``struct tcp_info`` by Linux's name without the ``tcpi_`` prefix (stack/transport/tcp/
info.py, with ``snd_wscale``/``rcv_wscale`` split out), ``cc`` (the congestion
control) and ``timer`` (``on|persist|keepalive|timewait|off,MS,COUNT``: what ss -o
shows): the fields are what TCP_INFO returns for that connection. The tools read it
with ``stack.tools.ss.parse_sockinfo``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.addr import format_addr, is_unspecified
from stack.services import SOCKETS, TRANSPORTS
from stack.transport.tcp.info import tcp_info
from stack.transport.tcp.state import INF, State
from stack.transport.tcp.tcb import TCB
from stack.transport.tcp.timewait import TimeWait

if TYPE_CHECKING:  # cycle: the Stack owns the control part, which holds the Stack
    from stack.core import Stack
    from stack.sockets.conn import Conn


def _host(addr: int) -> str:
    return "*" if not addr or is_unspecified(addr) else format_addr(addr)


def _openers(stack: Stack) -> dict[int, Conn]:
    """id(transport object) → the file-door socket holding it: a TCP connection's TCB,
    a UDP or raw socket object."""
    table = stack.services.get(SOCKETS)
    out: dict[int, Conn] = {}
    if table is None:
        return out
    for conn in table.all():
        # the transport adapters (stack/sockets/backend.py) hold the transport socket as
        # ``s``; a module's own endpoint type may hold none
        inner = getattr(conn.ep, "s", None)
        if inner is None:
            continue
        out[id(inner)] = conn
        tcb = getattr(inner, "tcb", None)
        if tcb is not None:
            out[id(tcb)] = conn
    return out


def _door_fields(row: dict[str, str], conn: Conn | None) -> None:
    if conn is None:
        return
    row["uid"] = str(conn.uid)
    row["sock"] = conn.name
    pids = sorted({pid for h in list(conn.handles)
                   if (pid := getattr(getattr(h, "caller", None), "pid", 0))})
    if pids:
        row["pids"] = ",".join(map(str, pids))


def _timer(c: TCB | TimeWait) -> str:
    """``name,ms,retransmissions`` of the timer ss -o shows: ``on`` (retransmission),
    ``persist``, ``keepalive``, ``timewait`` or ``off``."""
    now = c.proto.now()
    if isinstance(c, TimeWait):
        name, at, n = "timewait", c.timer_at, 0
    elif c.t_rexmt != INF:
        name, at, n = "on", c.t_rexmt, c.backoff
    elif c.t_persist != INF:
        name, at, n = "persist", c.t_persist, c.persist_shift
    elif c.t_keep != INF:
        name, at, n = "keepalive", c.t_keep, c.keep_probes
    else:
        return "off,0,0"
    left = max(int((at - now) * 1000), 0) if at != INF else 0
    return f"{name},{left},{n}"


def socket_rows(stack: Stack) -> list[dict[str, str]]:
    """One dict per socket (see the module's docstring for the keys)."""
    rows: list[dict[str, str]] = []
    t = stack.services.get(TRANSPORTS)
    if t is None:
        return rows
    opened = _openers(stack)
    for c in t.tcp.connections():
        row = {"proto": "tcp", "state": c.state.name, "laddr": _host(c.laddr),
               "lport": str(c.lport), "raddr": _host(c.raddr), "rport": str(c.rport)}
        if isinstance(c, TCB) and c.state == State.LISTEN:
            row["recvq"], row["sendq"] = str(len(c.accept_queue)), str(c.backlog)
        else:
            row["recvq"], row["sendq"] = str(len(c.rcvbuf)), str(len(c.sndbuf))
        _door_fields(row, opened.get(id(c)) or (opened.get(id(c.sock))
                                                if isinstance(c, TCB) else None))
        if isinstance(c, TCB):
            row["cc"] = c.cc.name
        row["timer"] = _timer(c)
        info = tcp_info(c)
        info["snd_wscale"], info["rcv_wscale"] = info["wscale"] & 0xF, info["wscale"] >> 4
        row.update((k, str(v)) for k, v in info.items() if k not in ("state", "wscale", "flags"))
        rows.append(row)
    for socks in list(t.udp.ports.values()):
        for u in socks:
            row = {"proto": "udp", "state": "-", "laddr": _host(u.laddr),
                   "lport": str(u.lport), "raddr": _host(u.raddr), "rport": str(u.rport),
                   "recvq": str(sum(len(d[0]) for d in u.queue)), "sendq": "0"}
            _door_fields(row, opened.get(id(u)))
            rows.append(row)
    for r in list(t.raw.sockets):
        row = {"proto": f"raw{r.proto_number}", "state": "-", "laddr": _host(r.laddr),
               "lport": "0", "raddr": _host(r.raddr), "rport": "0",
               "recvq": str(r.queued), "sendq": "0"}
        _door_fields(row, opened.get(id(r)))
        rows.append(row)
    return rows


def render(stack: Stack) -> str:
    return "".join(" ".join(f"{k}={v or '-'}" for k, v in row.items()) + "\n"
                   for row in socket_rows(stack))

