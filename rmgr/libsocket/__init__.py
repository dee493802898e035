"""rmgr.libsocket: the stdlib ``socket`` API over io-pkt's socket files.

Like QNX's socket library, this turns the BSD socket calls into open/read/write/ioctl on
``$SOCK/dev/socket`` (see docs/sockets.md and ``rmgr/include/io_pkt_socket.h``)::

    from rmgr import libsocket as socket
    s = socket.create_connection(("10.0.0.1", 80))

``SOCK`` selects the stack (``SOCK=/alt`` → ``/alt/dev/socket``); ``setsockprefix()`` and
``clearsockprefix()`` override it for this process. ``patch()`` swaps the library in for
the stdlib ``socket`` module, and ``python -m rmgr.libsocket [-m MODULE | SCRIPT] ARGS``
runs an unmodified program over the stack.

Only the families the stack's socket door serves go to the stack (AF_INET: stream,
datagram, raw, and whatever else its socket table holds); other families (AF_UNIX,
socketpair(), ...) are the kernel's, as before.

By role: ``sock`` (the socket class), ``resolver`` (numeric names and /etc/hosts),
``api`` (create_connection, create_server, patch), ``where`` (which stack, which door
file), ``abi`` (the ioctls and structs); this package re-exports them with the stdlib's
constants, so ``from rmgr.libsocket import socket, getaddrinfo, patch`` is the API.
"""

from __future__ import annotations

import socket as _std

# Re-export the stdlib's constants and exception types: AF_*, SOCK_*, SOL_*, SO_*,
# IPPROTO_*, TCP_*, IP_*, MSG_*, SHUT_*, AI_*, NI_*, EAI_*, error, herror, gaierror, timeout.
for _name in dir(_std):
    if _name.isupper() and not _name.startswith("_"):
        globals()[_name] = getattr(_std, _name)
# the stdlib's names this package is typed with (mypy cannot see the loop above)
from socket import (  # noqa: E402
    AF_INET,
    AI_CANONNAME,
    AI_NUMERICHOST,
    AI_PASSIVE,
    EAI_FAMILY,
    EAI_NONAME,
    EAI_SERVICE,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SO_ERROR,
    SOCK_DGRAM,
    SOCK_RAW,
    SOCK_STREAM,
    SOL_SOCKET,
    AddressFamily,
    SocketKind,
    error,
    gaierror,
    herror,
    timeout,
)

from . import abi  # noqa: E402,F401 - rmgr.libsocket.abi, as before
from .api import (  # noqa: E402
    create_connection,
    create_server,
    has_dualstack_ipv6,
    has_ipv6,
    patch,
)
from .resolver import (  # noqa: E402
    getaddrinfo,
    getfqdn,
    gethostbyaddr,
    gethostbyname,
    gethostbyname_ex,
    getnameinfo,
)
from .sock import (  # noqa: E402
    IO_MAX,  # noqa: F401 - the read/write size limit, as before
    MSG_DONTWAIT,
    MSG_NOSIGNAL,
    MSG_PEEK,
    MSG_WAITALL,
    SOCK_CLOEXEC,
    SOCK_NONBLOCK,
    SocketType,
    fromfd,
    socket,
)
from .where import (  # noqa: E402
    clearsockprefix,
    getsockprefix,
    if_indextoname,
    if_nameindex,
    if_nametoindex,
    setsockprefix,
    socket_dir,
)

getdefaulttimeout = _std.getdefaulttimeout
setdefaulttimeout = _std.setdefaulttimeout
gethostname = _std.gethostname
inet_aton, inet_ntoa, inet_pton, inet_ntop = _std.inet_aton, _std.inet_ntoa, _std.inet_pton, \
    _std.inet_ntop
htons, ntohs, htonl, ntohl = _std.htons, _std.ntohs, _std.htonl, _std.ntohl
getservbyname, getservbyport, getprotobyname = _std.getservbyname, _std.getservbyport, \
    _std.getprotobyname
socketpair = _std.socketpair  # AF_UNIX: the kernel's
SocketIO = _std.SocketIO

__all__ = [
    "socket", "SocketType", "error", "herror", "gaierror", "timeout", "create_connection",
    "create_server", "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
    "getfqdn", "getnameinfo", "fromfd", "socketpair", "has_dualstack_ipv6", "has_ipv6",
    "if_nametoindex", "if_indextoname", "if_nameindex", "setsockprefix",
    "clearsockprefix", "getsockprefix", "socket_dir", "patch", "getdefaulttimeout",
    "setdefaulttimeout", "gethostname", "inet_aton", "inet_ntoa", "inet_pton", "inet_ntop",
    "htons", "ntohs", "htonl", "ntohl", "SocketIO", "AddressFamily", "SocketKind",
    # (also among the stdlib's constants below; named here for the linters)
    "AF_INET", "AI_CANONNAME", "AI_NUMERICHOST", "AI_PASSIVE", "EAI_FAMILY", "EAI_NONAME",
    "EAI_SERVICE", "IPPROTO_TCP", "IPPROTO_UDP", "SO_ERROR", "SOCK_DGRAM", "SOCK_RAW",
    "SOCK_STREAM", "SOL_SOCKET", "MSG_DONTWAIT", "MSG_NOSIGNAL", "MSG_PEEK", "MSG_WAITALL",
    "SOCK_CLOEXEC", "SOCK_NONBLOCK",
] + [n for n in dir(_std) if n.isupper() and not n.startswith("_")]
