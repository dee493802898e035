"""Names for rmgr.libsocket: numeric addresses and ``/etc/hosts`` only (the stack has no
resolver, and a program over the stack must not reach the host's own name service
through the kernel's sockets behind its back). ``getaddrinfo`` answers AF_INET only.
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
        raise gaierror(EAI_NONAME, "Name or service not known")
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
        with contextlib.suppress(herror, gaierror):
            host = gethostbyaddr(host)[0]
    serv = str(port)
    if not flags & _std.NI_NUMERICSERV:
        with contextlib.suppress(OSError):
            serv = getservbyport(port, "udp" if flags & _std.NI_DGRAM else "tcp")
    return host, serv


_DEFAULT_PROTO: dict[int, int] = {SOCK_STREAM: IPPROTO_TCP, SOCK_DGRAM: IPPROTO_UDP}


def getaddrinfo(host: str | bytes | None, port: str | bytes | int | None, family: int = 0,
                type: int = 0, proto: int = 0, flags: int = 0) -> list[tuple[Any, ...]]:
    """Numeric IPv4 hosts and /etc/hosts; AF_INET results only."""
    if family not in (0, AF_INET):
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
    if host is None or host == "":
        addrs = ["0.0.0.0" if flags & AI_PASSIVE else "127.0.0.1"]
    elif _is_ipv4(host):
        addrs = [host]
    elif flags & AI_NUMERICHOST:
        raise gaierror(EAI_NONAME, "Name or service not known")
    else:
        name, _aliases, addrs = gethostbyname_ex(host)
        canon = name if flags & AI_CANONNAME else ""
    kinds = [(type, proto)] if type else [(SOCK_STREAM, IPPROTO_TCP), (SOCK_DGRAM, IPPROTO_UDP),
                                          (SOCK_RAW, 0)]
    out: list[tuple[Any, ...]] = []
    for addr in addrs:
        for t, p in kinds:
            if not p:
                p = _DEFAULT_PROTO.get(t, proto)
            out.append((AddressFamily.AF_INET, SocketKind(t), p, canon, (addr, portnum)))
            canon = ""
    return out

