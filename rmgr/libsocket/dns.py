"""DNS for rmgr.libsocket: queries go through the stack's own UDP sockets (TCP when an
answer comes back truncated) to the servers of the stack's resolver configuration,
``$SOCK/dev/socket/config/resolv.conf`` (filled by the stack's DHCP client, or written
by hand) - never through the kernel's sockets or the host's resolver.

The logic (search list, CNAME chains, which answers to refuse, EAI_* codes) is
stack/dns/lookup.py's, shared with the stack's own ``cs`` file; this module is its
blocking I/O: for each attempt (``options attempts``), each server in turn gets the
questions of a candidate name and ``options timeout`` seconds to answer them all. What
it refused is counted in ``counters`` (this process's, group ``dns``).

A stack whose configuration names no server is not asked at all (the name is unknown:
``EAI_NONAME``), unlike glibc's fallback to 127.0.0.1, so programs over a stack with no
DNS fail at once instead of after the timeouts.
"""

from __future__ import annotations

import contextlib
import select
import socket as _std
import time
from collections.abc import Iterator
from typing import Any

from stack.counters import Counters
from stack.dns import wire
from stack.dns.conf import ResolvConf
from stack.dns.lookup import DNS_COUNTERS, Answers, Exchange, Result, plan, server_order, tcp_frame

from . import where

DNS_PORT = 53

#: what this process's lookups counted (``drop_spoofed_source``, ``timeouts``...)
counters = Counters("dns", DNS_COUNTERS)


def resolv_conf_path() -> str:
    return f"{where.socket_dir()}/config/resolv.conf"


def config() -> ResolvConf | None:
    """The stack's resolver configuration; None when it has no server (or no stack)."""
    try:
        with open(resolv_conf_path()) as f:
            conf = ResolvConf.parse(f.read())
    except OSError:
        return None
    return conf if conf.nameservers else None


def lookup(name: str, qtypes: list[int]) -> Result:
    """Resolve ``name`` for ``qtypes`` (A, AAAA) through the stack."""
    conf = config()
    if conf is None:
        return Result(name, error=_std.EAI_NONAME)
    counters["lookups"] += 1
    gen = plan(name, qtypes, conf)
    try:
        questions = next(gen)
        while True:
            questions = gen.send(ask(conf, questions))
    except StopIteration as stop:
        result: Result = stop.value
    if result.error:
        counters["lookup_errors"] += 1
    return result


def ask(conf: ResolvConf, questions: list[wire.Question]) -> Answers | None:
    """The answers of the first server that answers every question usably (or the last
    partial ones; None when no server answered at all)."""
    last: Answers | None = None
    for _ in range(conf.attempts):
        for server in server_order(conf):
            ex = Exchange(server.partition("%")[0], DNS_PORT, questions, counters)
            _udp(ex, conf.timeout)
            for qid, query in ex.truncated():
                _tcp(ex, qid, query, conf.timeout)
            if ex.usable():
                return ex.answers
            if ex.answers:
                last = ex.answers
    return last


def _family(server: str) -> int:
    return _std.AF_INET6 if ":" in server else _std.AF_INET


@contextlib.contextmanager
def _stack_socket(family: int, type_: int) -> Iterator[Any]:
    from .sock import socket  # run time: sock imports the resolver, which imports this

    s = socket(family, type_)
    try:
        yield s
    finally:
        s.close()


def _udp(ex: Exchange, timeout: float) -> None:
    try:
        with _stack_socket(_family(ex.server), _std.SOCK_DGRAM) as s:
            for q in ex.datagrams():
                s.sendto(q, (ex.server, ex.port))
                counters["queries_out"] += 1
            deadline = time.monotonic() + timeout
            while not ex.done:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ready, _, _ = select.select([s], [], [], left)
                if not ready:
                    break
                try:
                    data, src = s.recvfrom(65536)
                except BlockingIOError:
                    continue
                ex.accept(data, src[0], src[1])
    except OSError:
        counters["send_errors"] += 1
        return
    if not ex.done and not ex.truncated():
        counters["timeouts"] += 1


def _tcp(ex: Exchange, qid: int, query: bytes, timeout: float) -> None:
    try:
        with _stack_socket(_family(ex.server), _std.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect((ex.server, ex.port))
            s.sendall(tcp_frame(query))
            buf = b""
            need = 2
            while len(buf) < need:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) >= 2:
                    need = 2 + int.from_bytes(buf[:2], "big")
            if len(buf) >= need > 2 and not ex.accept(buf[2:need], ex.server, ex.port,
                                                      tcp_id=qid):
                return
    except OSError:
        pass
    ex.tcp_failed(qid)


def ptr(addr: str) -> list[str]:
    """The names a PTR lookup of ``addr`` gives (empty: none, or no server)."""
    import ipaddress

    conf = config()
    if conf is None:
        return []
    rname = ipaddress.ip_address(addr).reverse_pointer
    answers = ask(conf, [wire.Question(rname, wire.TYPE_PTR)])
    msg = (answers or {}).get((rname, wire.TYPE_PTR))
    if msg is None:
        return []
    return [str(r.data) for r in msg.answers if r.rtype == wire.TYPE_PTR]
