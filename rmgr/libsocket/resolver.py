"""Names for rmgr.libsocket: numeric addresses, ``/etc/hosts``, then DNS through the
stack (rmgr/libsocket/dns.py: the stack's own UDP/TCP sockets to the servers of its
``config/resolv.conf``), as glibc's "files dns". A program over the stack never reaches
the host's own name service through the kernel's sockets behind its back.

Errors are glibc's: ``gaierror(EAI_NONAME, "Name or service not known")`` for a name no
source knows (NXDOMAIN), ``EAI_NODATA`` for a name without an address of the family
asked, ``EAI_AGAIN`` ("Temporary failure in name resolution") when no server answered
(the timeout) or they failed (SERVFAIL), ``EAI_SERVICE``, ``EAI_FAMILY``.
``getaddrinfo`` asks for AAAA records (AF_INET6 results) when the family is AF_INET6, or
AF_UNSPEC on a stack that serves AF_INET6.
"""

from __future__ import annotations

import contextlib
import socket as _std
from collections.abc import Iterator
from socket import (
    AF_INET,
    AI_CANONNAME,
    AI_NUMERICHOST,
    AI_PASSIVE,
    EAI_FAMILY,
    EAI_NONAME,
    EAI_SERVICE,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SOCK_DGRAM,
    SOCK_RAW,
    SOCK_STREAM,
    AddressFamily,
    SocketKind,
    gaierror,
    herror,
)
from typing import Any

from stack.dns import wire as _dnswire
from stack.dns.lookup import EAI_MESSAGES

from . import dns as _dns
from . import where as _where

gethostname = _std.gethostname
getservbyname, getservbyport = _std.getservbyname, _std.getservbyport

HOSTS_FILE = "/etc/hosts"


def _hosts() -> Iterator[tuple[str, list[str]]]:
    try:
        with open(HOSTS_FILE) as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        words = line.split("#", 1)[0].split()
        if len(words) >= 2:
            yield words[0], words[1:]


def _is_ipv4(text: str) -> bool:
    try:
        _std.inet_pton(AF_INET, text)
    except (OSError, TypeError):
        return False
    return True


def gethostbyname_ex(hostname: str) -> tuple[str, list[str], list[str]]:
    if isinstance(hostname, bytes):
        hostname = hostname.decode("idna")
    if _is_ipv4(hostname):
        return hostname, [], [hostname]
    if hostname == "":
        return gethostbyname_ex(gethostname())
    addrs: list[str] = []
    canon: str | None = None
    aliases: list[str] = []
    for addr, names in _hosts():
        if hostname.lower() in (n.lower() for n in names) and _is_ipv4(addr):
            if canon is None:
                canon, aliases = names[0], names[1:]
            if addr not in addrs:
                addrs.append(addr)
    if not addrs and hostname.lower() in ("localhost", "localhost.localdomain"):
        return hostname, [], ["127.0.0.1"]
    if not addrs:
        res = _dns.lookup(hostname, [_dnswire.TYPE_A])
        if res.error:
            raise gaierror(res.error, res.message)
        canon = res.canonical if res.canonical != hostname.rstrip(".").lower() else None
        addrs = [a for _, a in res.addrs]
    return canon or hostname, aliases, addrs


def gethostbyname(hostname: str) -> str:
    return gethostbyname_ex(hostname)[2][0]


def gethostbyaddr(ip_address: str) -> tuple[str, list[str], list[str]]:
    if not _is_ipv4(ip_address):
        try:
            ip_address = gethostbyname(ip_address)
        except gaierror:
            raise herror(1, "Unknown host") from None
    for addr, names in _hosts():
        if addr == ip_address:
            return names[0], names[1:], [addr]
    found = _dns.ptr(ip_address)
    if found:
        return found[0], found[1:], [ip_address]
    raise herror(1, "Unknown host")


def getfqdn(name: str = "") -> str:
    name = name.strip()
    if not name or name == "0.0.0.0":
        name = gethostname()
    try:
        hostname, aliases, _ = gethostbyaddr(name)
    except (OSError, herror):
        return name
    for candidate in [hostname, *aliases]:
        if "." in candidate:
            return candidate
    return hostname


def getnameinfo(sockaddr: tuple[str, int], flags: int) -> tuple[str, str]:
    host, port = sockaddr[0], sockaddr[1]
    if not flags & _std.NI_NUMERICHOST:
        try:
            host = gethostbyaddr(host)[0]
            if flags & _std.NI_NOFQDN:
                host = host.split(".", 1)[0]
        except (herror, gaierror):
            if flags & _std.NI_NAMEREQD:
                raise gaierror(EAI_NONAME, EAI_MESSAGES[EAI_NONAME]) from None
    serv = str(port)
    if not flags & _std.NI_NUMERICSERV:
        with contextlib.suppress(OSError):
            serv = getservbyport(port, "udp" if flags & _std.NI_DGRAM else "tcp")
    return host, serv


_DEFAULT_PROTO: dict[int, int] = {SOCK_STREAM: IPPROTO_TCP, SOCK_DGRAM: IPPROTO_UDP}


def _v6_served() -> bool:
    try:
        return _where.serves(_std.AF_INET6)
    except Exception:
        return False


def _is_ipv6(text: str) -> bool:
    try:
        _std.inet_pton(_std.AF_INET6, text.partition("%")[0])
    except (OSError, TypeError):
        return False
    return True


def _scope(addr: str) -> int:
    """The scope id of ``fe80::1%tap0`` (the stack's interface index; 0 without a zone)."""
    if "%" not in addr:
        return 0
    try:
        return _where.scope_id(addr.partition("%")[2])
    except OSError:
        raise gaierror(EAI_NONAME, "Name or service not known") from None


def _resolve(host: str, family: int) -> tuple[str, list[tuple[int, str]]]:
    """(canonical name, [(4|6, address)]): /etc/hosts, then DNS through the stack."""
    want = 4 if family == AF_INET else 6 if family == _std.AF_INET6 else None
    found: list[tuple[int, str]] = []
    canon = ""
    for addr, names in _hosts():
        if host.lower() in (n.lower() for n in names):
            v = 6 if ":" in addr else 4
            if (want is None or v == want) and (v, addr) not in found:
                if v == 6 and want is None and not _v6_served():
                    continue
                canon = canon or names[0]
                found.append((v, addr))
    if found:
        return canon, found
    if host.lower() in ("localhost", "localhost.localdomain") and want != 6:
        return host, [(4, "127.0.0.1")]
    qtypes = [_dnswire.TYPE_AAAA] if want == 6 else [_dnswire.TYPE_A] \
        if want == 4 or not _v6_served() else [_dnswire.TYPE_A, _dnswire.TYPE_AAAA]
    res = _dns.lookup(host, qtypes)
    if res.error:
        raise gaierror(res.error, res.message)
    return res.canonical, res.addrs


def getaddrinfo(host: str | bytes | None, port: str | bytes | int | None, family: int = 0,
                type: int = 0, proto: int = 0, flags: int = 0) -> list[tuple[Any, ...]]:
    """Numeric hosts, /etc/hosts, then DNS through the stack (see the module docstring).
    AF_INET6 only on a stack that serves it."""
    if family not in (0, AF_INET) and not (family == _std.AF_INET6 and _v6_served()):
        raise gaierror(EAI_FAMILY, "ai_family not supported")
    if isinstance(host, bytes):
        host = host.decode("idna")
    if isinstance(port, bytes):
        port = port.decode()
    if host is None and port is None:
        raise gaierror(EAI_NONAME, "Name or service not known")
    if port is None:
        portnum = 0
    elif isinstance(port, int):
        portnum = port
    elif port.isdigit():
        portnum = int(port)
    else:
        try:
            portnum = getservbyname(port, "udp" if type == SOCK_DGRAM else "tcp")
        except OSError:
            raise gaierror(EAI_SERVICE, "Servname not supported for ai_socktype") from None
    canon = ""
    addrs: list[tuple[int, str]]
    if host is None or host == "":
        if family == _std.AF_INET6:
            addrs = [(6, "::" if flags & AI_PASSIVE else "::1")]
        else:
            addrs = [(4, "0.0.0.0" if flags & AI_PASSIVE else "127.0.0.1")]
    elif _is_ipv4(host):
        if family == _std.AF_INET6:
            raise gaierror(EAI_NONAME if flags & AI_NUMERICHOST else _std.EAI_ADDRFAMILY,
                           "Address family for hostname not supported")
        addrs = [(4, host)]
    elif _is_ipv6(host):
        if family == AF_INET or not _v6_served():
            raise gaierror(_std.EAI_ADDRFAMILY if family == AF_INET else EAI_FAMILY,
                           "Address family for hostname not supported")
        addrs = [(6, host)]
    elif flags & AI_NUMERICHOST:
        raise gaierror(EAI_NONAME, "Name or service not known")
    else:
        name, addrs = _resolve(host, family)
        canon = (name or host) if flags & AI_CANONNAME else ""
    kinds = [(type, proto)] if type else [(SOCK_STREAM, IPPROTO_TCP), (SOCK_DGRAM, IPPROTO_UDP),
                                          (SOCK_RAW, 0)]
    out: list[tuple[Any, ...]] = []
    for v, addr in addrs:
        fam = AddressFamily.AF_INET if v == 4 else AddressFamily.AF_INET6
        sa: tuple[Any, ...] = (addr, portnum) if v == 4 else (addr, portnum, 0, _scope(addr))
        for t, p in kinds:
            if not p:
                p = _DEFAULT_PROTO.get(t, proto)
            out.append((fam, SocketKind(t), p, canon, sa))
            canon = ""
    return out
