"""rmgr.libsocket: the stdlib ``socket`` API over io-pkt's socket files.

Like QNX's socket library, this turns the BSD socket calls into open/read/write/ioctl on
``$SOCK/dev/socket`` (see docs/sockets.md and ``rmgr/include/io_pkt_socket.h``)::

    from rmgr import libsocket as socket
    s = socket.create_connection(("10.0.0.1", 80))

``SOCK`` selects the stack (``SOCK=/alt`` → ``/alt/dev/socket``); ``setsockprefix()`` and
``clearsockprefix()`` override it for this process. ``patch()`` swaps the library in for
the stdlib ``socket`` module, and ``python -m rmgr.libsocket [-m MODULE | SCRIPT] ARGS``
runs an unmodified program over the stack.

Only AF_INET stream, datagram and raw sockets go to the stack; other families (AF_UNIX,
socketpair(), ...) are the kernel's, as before.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import os
import select
import socket as _std
import struct
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import abi

# Re-export the stdlib's constants and exception types: AF_*, SOCK_*, SOL_*, SO_*,
# IPPROTO_*, TCP_*, IP_*, MSG_*, SHUT_*, AI_*, NI_*, EAI_*, error, herror, gaierror, timeout.
for _name in dir(_std):
    if _name.isupper() and not _name.startswith("_"):
        globals()[_name] = getattr(_std, _name)
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

SOCK_NONBLOCK: int = getattr(_std, "SOCK_NONBLOCK", 0o4000)
SOCK_CLOEXEC: int = getattr(_std, "SOCK_CLOEXEC", 0o2000000)
MSG_DONTWAIT: int = getattr(_std, "MSG_DONTWAIT", 0x40)
MSG_NOSIGNAL: int = getattr(_std, "MSG_NOSIGNAL", 0x4000)
MSG_PEEK: int = getattr(_std, "MSG_PEEK", abi.RECV_PEEK)
MSG_WAITALL: int = getattr(_std, "MSG_WAITALL", abi.RECV_WAITALL)
_GLOBAL_DEFAULT_TIMEOUT = _std._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]

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

#: the stdlib socket class (for families the stack does not serve)
_StdSocket = _std.socket
#: the stdlib's makefile, called with one of our sockets as ``self`` (it only needs the
#: socket API), which its typed overloads cannot express
_std_makefile: Callable[..., Any] = _StdSocket.makefile

#: Largest read or write given to the kernel in one call: FUSE carries up to 1 MiB per
#: request, and a longer read(2) on a FUSE file would wait for a second request.
IO_MAX = 1 << 20

# -- which stack ----------------------------------------------------------------------
_prefix: str | None = None


def setsockprefix(prefix: str) -> None:
    """Use the stack at ``prefix`` (its files at ``prefix/dev/socket``) from now on."""
    global _prefix
    _prefix = prefix.rstrip("/")


def clearsockprefix() -> None:
    """Go back to ``$SOCK`` (or the default stack)."""
    global _prefix
    _prefix = None


def getsockprefix() -> str:
    if _prefix is not None:
        return _prefix
    return os.environ.get("SOCK", "").rstrip("/")


def socket_dir() -> str:
    return f"{getsockprefix()}/dev/socket"


def _path_for(type_: int, proto: int) -> str:
    return f"{socket_dir()}/{AF_INET}/{type_}/{proto}"


# -- ioctl ------------------------------------------------------------------------------
def _ioctl(fd: int, cmd: int, arg: bytes = b"") -> bytes:
    size = abi.ioc_size(cmd)
    buf = arg.ljust(size, b"\0") if len(arg) < size else arg
    out = fcntl.ioctl(fd, cmd, buf)
    return out if isinstance(out, bytes) else b""


def _sockaddr(address: Any, flags: int = 0) -> bytes:
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    host, port = address
    if not isinstance(port, int):
        raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
    if not 0 <= port <= 65535:
        raise OverflowError("bind(): port must be 0-65535.")
    return abi.pack_sockaddr_in(_resolve(host), port, flags)


def _resolve(host: str | bytes) -> str:
    if isinstance(host, bytes):
        host = host.decode("idna")
    if host in ("", "0.0.0.0"):
        return "0.0.0.0"
    if host == "<broadcast>":
        return "255.255.255.255"
    return gethostbyname(host)


class _Meta(type):
    """isinstance(x, libsocket.socket) also holds for the kernel's sockets, so code that
    checks against ``socket.socket`` under patch() accepts both."""

    def __instancecheck__(cls, obj: object) -> bool:
        return type.__instancecheck__(cls, obj) or isinstance(obj, _StdSocket)


class socket(metaclass=_Meta):  # noqa: N801 - the stdlib's name
    """A socket of the stack: an open file under ``$SOCK/dev/socket``."""

    def __new__(cls, family: int = -1, type: int = -1, proto: int = -1,
                fileno: int | None = None) -> Any:
        if family not in (-1, AF_INET):
            return _StdSocket(family, type, proto, fileno)
        if fileno is not None and not _is_stack_fd(fileno):
            return _StdSocket(family, type, proto, fileno)
        return super().__new__(cls)

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None) -> None:
        self._fd = -1
        self._io_refs = 0
        self._closed = False
        if fileno is None:
            type_ = SOCK_STREAM if type == -1 else type
            nonblock = bool(type_ & SOCK_NONBLOCK)
            type_ &= ~(SOCK_NONBLOCK | SOCK_CLOEXEC)
            proto_ = 0 if proto == -1 else proto
            if type_ not in (SOCK_STREAM, SOCK_DGRAM, SOCK_RAW):
                raise OSError(_errno.EINVAL, "Invalid argument")
            path = _path_for(type_, proto_)
            try:
                self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                if os.path.isdir(socket_dir()):
                    raise OSError(_errno.EPROTONOSUPPORT, "Protocol not supported") from None
                raise FileNotFoundError(
                    _errno.ENOENT, f"no io-pkt socket manager at {socket_dir()} "
                                   f"(set SOCK or setsockprefix())") from None
            except PermissionError:
                raise PermissionError(_errno.EPERM, "Operation not permitted") from None
            self._type = type_
            self._proto = proto_  # as the stdlib: 0 stays 0
            timeout = 0.0 if nonblock else getdefaulttimeout()
        else:
            self._fd = fileno
            info = abi.SockInfo.unpack(_ioctl(fileno, abi.IOP_SOCKINFO))
            self._type = info.type if type == -1 else type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)
            self._proto = info.protocol if proto == -1 else proto
            flags = fcntl.fcntl(fileno, fcntl.F_GETFL)
            timeout = 0.0 if flags & os.O_NONBLOCK else getdefaulttimeout()
        self._timeout: float | None = None
        self.settimeout(timeout)

    # -- identity ----------------------------------------------------------------------
    @property
    def family(self) -> AddressFamily:
        return AddressFamily.AF_INET

    @property
    def type(self) -> SocketKind:
        return SocketKind(self._type)

    @property
    def proto(self) -> int:
        return self._proto

    @property
    def timeout(self) -> float | None:
        return self._timeout

    def fileno(self) -> int:
        return self._fd

    def __repr__(self) -> str:
        closed = getattr(self, "_closed", False)
        s = (f"<rmgr.libsocket.socket{' [closed]' if closed else ''} fd={self._fd}, "
             f"family={self.family!s}, type={self.type!s}, proto={self._proto}")
        if not closed and self._fd >= 0:
            with contextlib.suppress(OSError):
                s += f", laddr={self.getsockname()}"
            with contextlib.suppress(OSError):
                s += f", raddr={self.getpeername()}"
        return s + ">"

    def __getstate__(self) -> None:
        raise TypeError(f"cannot pickle {self.__class__.__name__!r} object")

    def __enter__(self) -> socket:
        return self

    def __exit__(self, *args: object) -> None:
        if not self._closed:
            self.close()

    # -- closing -----------------------------------------------------------------------
    def _real_close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed:
            self.close()

    def detach(self) -> int:
        self._closed = True
        fd, self._fd = self._fd, -1
        return fd

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)
            with contextlib.suppress(OSError):
                self._real_close()

    def dup(self) -> socket:
        return socket(AF_INET, self._type, self._proto, fileno=os.dup(self._checked_fd()))

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        return _std_makefile(self, mode, buffering, encoding=encoding, errors=errors,
                             newline=newline)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        return _StdSocket._sendfile_use_send(self, file, offset, count)  # type: ignore[attr-defined,no-any-return]

    def _check_sendfile_params(self, file: Any, offset: int, count: int | None) -> None:
        _StdSocket._check_sendfile_params(self, file, offset, count)  # type: ignore[attr-defined]

    def _checked_fd(self) -> int:
        if self._fd < 0:
            raise OSError(_errno.EBADF, "Bad file descriptor")
        return self._fd

    # -- timeouts ----------------------------------------------------------------------
    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value
        fd = self._checked_fd()
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        want = flags | os.O_NONBLOCK if value is not None else flags & ~os.O_NONBLOCK
        if want != flags:
            fcntl.fcntl(fd, fcntl.F_SETFL, want)

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _wait(self, events: int, deadline: float | None) -> None:
        """Wait for ``events`` on the fd until ``deadline`` (None: forever)."""
        p = select.poll()
        p.register(self._checked_fd(), events)
        while True:
            if deadline is None:
                ms = None
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                ms = max(1, int(left * 1000 + 0.999))
            if p.poll(ms):
                return

    def _nbflag(self) -> int:
        return abi.IOP_F_NONBLOCK if self._timeout is not None else 0

    def _io(self, fn: Any, events: int, flags: int = 0) -> Any:
        """Run a non-blocking read/write ``fn`` with this socket's timeout rules."""
        if self._timeout == 0.0 or (flags & MSG_DONTWAIT and self._timeout is not None):
            return fn()
        if flags & MSG_DONTWAIT:
            return self._dontwait(fn)
        if self._timeout is None:
            return fn()  # the fd blocks; a signal gives EINTR and Python retries (PEP 475)
        deadline = self._deadline()
        while True:
            try:
                return fn()
            except BlockingIOError:
                self._wait(events, deadline)

    def _dontwait(self, fn: Any) -> Any:
        fd = self._checked_fd()
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        try:
            return fn()
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)

    # -- setup -------------------------------------------------------------------------
    def bind(self, address: tuple[str, int]) -> None:
        _ioctl(self._checked_fd(), abi.IOP_BIND, _sockaddr(address))

    def listen(self, backlog: int = min(_std.SOMAXCONN, 128)) -> None:
        _ioctl(self._checked_fd(), abi.IOP_LISTEN, abi.INT.pack(max(0, backlog)))

    def connect(self, address: tuple[str, int]) -> None:
        fd = self._checked_fd()
        arg = _sockaddr(address, self._nbflag())
        try:
            _ioctl(fd, abi.IOP_CONNECT, arg)
            return
        except InterruptedError:
            if self._timeout is not None:
                raise
            # like CPython: a signal during a blocking connect waits for the outcome
            self._wait(select.POLLOUT, None)
        except BlockingIOError as exc:
            if self._timeout == 0.0 or exc.errno != _errno.EINPROGRESS:
                raise
            try:
                self._wait(select.POLLOUT, self._deadline())
            except TimeoutError:
                raise TimeoutError("timed out") from None
        err = self.getsockopt(SOL_SOCKET, SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))

    def connect_ex(self, address: tuple[str, int]) -> int:
        try:
            self.connect(address)
        except TimeoutError:
            return _errno.EAGAIN  # as CPython's connect_ex on a timeout
        except gaierror:
            raise
        except OSError as exc:
            if exc.errno is None:
                raise
            return exc.errno
        return 0

    def accept(self) -> tuple[socket, tuple[str, int]]:
        fd = self._checked_fd()
        arg = abi.ACCEPT.pack(self._nbflag(), 0, b"", b"")

        def once() -> bytes:
            while True:
                try:
                    return _ioctl(fd, abi.IOP_ACCEPT, arg)
                except InterruptedError:  # PEP 475: retry after the signal handlers ran
                    continue

        out = self._io(once, select.POLLIN)
        _flags, _alen, addr, name = abi.ACCEPT.unpack(out)
        rel = name.split(b"\0", 1)[0].decode()
        newfd = os.open(f"{socket_dir()}/{rel}", os.O_RDWR | os.O_CLOEXEC)
        # like the stdlib: the new socket blocks unless a default timeout is set
        sock = socket(AF_INET, self._type, self._proto, fileno=newfd)
        return sock, abi.unpack_sockaddr_in(addr)

    def shutdown(self, how: int) -> None:
        _ioctl(self._checked_fd(), abi.IOP_SHUTDOWN, abi.INT.pack(how))

    def getsockname(self) -> tuple[str, int]:
        return abi.unpack_sockaddr_in(_ioctl(self._checked_fd(), abi.IOP_GETSOCKNAME))

    def getpeername(self) -> tuple[str, int]:
        return abi.unpack_sockaddr_in(_ioctl(self._checked_fd(), abi.IOP_GETPEERNAME))

    def setsockopt(self, level: int, optname: int, value: int | bytes | None,
                   optlen: int | None = None) -> None:
        if value is None:
            raw = b"\0" * (optlen or 0)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
        else:
            raw = struct.pack("<i", int(value))
        if len(raw) > abi.IOP_OPTVAL_MAX:
            raise OSError(_errno.EINVAL, "Invalid argument")
        _ioctl(self._checked_fd(), abi.IOP_SETSOCKOPT,
               abi.SOCKOPT.pack(level, optname, len(raw), 0, raw))

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        out = _ioctl(self._checked_fd(), abi.IOP_GETSOCKOPT,
                     abi.SOCKOPT.pack(level, optname, buflen or 4, 0, b""))
        _lv, _nm, length, _fl, val = abi.SOCKOPT.unpack(out)
        if buflen is None:
            return struct.unpack_from("<i", val.ljust(4, b"\0"))[0]
        if not 0 < buflen <= 1024:
            raise OSError(_errno.EINVAL, "getsockopt buflen out of range")
        return bytes(val[:min(buflen, length)])

    # -- data --------------------------------------------------------------------------
    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        fd = self._checked_fd()
        rflags = self._recv_flags(flags)
        n = min(bufsize, IO_MAX)
        if not rflags:
            return self._io(lambda: os.read(fd, n), select.POLLIN, flags)  # type: ignore[no-any-return]

        def once() -> bytes:
            _ioctl(fd, abi.IOP_RECVFLAGS, abi.INT.pack(rflags))
            return os.read(fd, n)

        return self._io(once, select.POLLIN, flags)  # type: ignore[no-any-return]

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        fd = self._checked_fd()
        rflags = self._recv_flags(flags)
        view = memoryview(buffer).cast("B")
        if nbytes:
            if nbytes > len(view):
                raise ValueError("buffer too small for requested bytes")
            view = view[:nbytes]
        view = view[:IO_MAX]
        if not len(view):
            return 0

        def once() -> int:
            if rflags:
                _ioctl(fd, abi.IOP_RECVFLAGS, abi.INT.pack(rflags))
            return os.readv(fd, [view])

        return self._io(once, select.POLLIN, flags)  # type: ignore[no-any-return]

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        data = self.recv(bufsize, flags)
        return data, self._last_from()

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        n = self.recv_into(buffer, nbytes, flags)
        return n, self._last_from()

    def _last_from(self) -> tuple[str, int] | None:
        if self._type == SOCK_STREAM:
            return None
        out = _ioctl(self._checked_fd(), abi.IOP_RECVADDR)
        _f, length, _a = abi.SOCKADDR.unpack(out)
        return abi.unpack_sockaddr_in(out) if length else None

    def send(self, data: Any, flags: int = 0) -> int:
        fd = self._checked_fd()
        self._check_flags(flags)
        view = memoryview(data).cast("B")[:IO_MAX]
        if not len(view):
            return self._send0(None, flags)
        return self._io(lambda: os.write(fd, view), select.POLLOUT, flags)  # type: ignore[no-any-return]

    def _send0(self, address: Any, flags: int) -> int:
        """An empty send: the kernel never passes a 0-byte write to the stack, so an
        empty datagram goes by ``IOP_SEND0`` (on a stream it sends nothing; errors as
        for a write)."""
        fd = self._checked_fd()
        nb = abi.IOP_F_NONBLOCK if self._timeout is not None or flags & MSG_DONTWAIT else 0
        arg = _sockaddr(address, nb) if address is not None else abi.SOCKADDR.pack(nb, 0, b"")

        def once() -> int:
            _ioctl(fd, abi.IOP_SEND0, arg)
            return 0

        if self._timeout is None or self._timeout == 0.0 or flags & MSG_DONTWAIT:
            return once()
        deadline = self._deadline()
        while True:
            try:
                return once()
            except BlockingIOError:
                self._wait(select.POLLOUT, deadline)

    def sendall(self, data: Any, flags: int = 0) -> None:
        fd = self._checked_fd()
        self._check_flags(flags)
        view = memoryview(data).cast("B")
        if not len(view):  # the stdlib's sendall sends once even when empty
            self._send0(None, flags)
            return
        deadline = self._deadline()
        while len(view):
            try:
                n = os.write(fd, view[:IO_MAX])
            except BlockingIOError:
                if self._timeout == 0.0:
                    raise
                self._wait(select.POLLOUT, deadline)
                continue
            view = view[n:]

    def sendto(self, data: Any, flags_or_addr: Any, addr: Any = None) -> int:
        if addr is None:
            flags, address = 0, flags_or_addr
        else:
            flags, address = flags_or_addr, addr
        fd = self._checked_fd()
        self._check_flags(flags)
        arg = _sockaddr(address)
        view = memoryview(data).cast("B")
        if not len(view):
            return self._send0(address, flags)

        def once() -> int:
            _ioctl(fd, abi.IOP_SENDTO, arg)
            return os.write(fd, view)

        return self._io(once, select.POLLOUT, flags)  # type: ignore[no-any-return]

    def sendmsg(self, buffers: Iterable[Any], ancdata: Iterable[Any] = (), flags: int = 0,
                address: Any = None) -> int:
        if list(ancdata):
            raise OSError(_errno.EOPNOTSUPP, "ancillary data is not supported")
        data = b"".join(bytes(b) for b in buffers)
        return self.sendto(data, flags, address) if address else self.send(data, flags)

    def _check_flags(self, flags: int) -> None:
        if flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL):
            raise OSError(_errno.EOPNOTSUPP, f"send flags {flags:#x} are not supported")

    @staticmethod
    def _recv_flags(flags: int) -> int:
        """The flags the stack applies to the next read (MSG_DONTWAIT is done here)."""
        if flags & ~(MSG_DONTWAIT | MSG_PEEK | MSG_WAITALL):
            raise OSError(_errno.EOPNOTSUPP, f"recv flags {flags:#x} are not supported")
        return flags & (MSG_PEEK | MSG_WAITALL)

    # -- stack extras ------------------------------------------------------------------
    def nread(self) -> int:
        """Bytes readable now (the size of the next datagram for UDP), like FIONREAD."""
        return abi.INT.unpack(_ioctl(self._checked_fd(), abi.IOP_NREAD))[0]  # type: ignore[no-any-return]

    def info(self) -> abi.SockInfo:
        return abi.SockInfo.unpack(_ioctl(self._checked_fd(), abi.IOP_SOCKINFO))


SocketType = socket


def _is_stack_fd(fd: int) -> bool:
    try:
        _ioctl(fd, abi.IOP_SOCKINFO)
    except OSError:
        return False
    return True


def fromfd(fd: int, family: int, type: int, proto: int = 0) -> Any:
    return socket(family, type, proto, fileno=os.dup(fd))


# -- names: numeric and /etc/hosts only (the stack has no resolver) --------------------
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


# -- helpers built on the socket ---------------------------------------------------------
def create_connection(address: tuple[str, int], timeout: Any = _GLOBAL_DEFAULT_TIMEOUT,
                      source_address: tuple[str, int] | None = None, *,
                      all_errors: bool = False) -> socket:
    host, port = address
    exceptions: list[OSError] = []
    for af, socktype, proto, _canon, sa in getaddrinfo(host, port, 0, SOCK_STREAM):
        sock = None
        try:
            sock = socket(af, socktype, proto)
            if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sa)
            exceptions.clear()
            return sock
        except OSError as exc:
            exceptions.append(exc)
            if sock is not None:
                sock.close()
    if exceptions:
        try:
            if not all_errors:
                raise exceptions[0]
            raise ExceptionGroup("create_connection failed", exceptions)  # noqa: F821
        finally:
            exceptions.clear()
    raise OSError("getaddrinfo returns an empty list")


def has_dualstack_ipv6() -> bool:
    return False


def create_server(address: tuple[str, int], *, family: int = AF_INET,
                  backlog: int | None = None, reuse_port: bool = False,
                  dualstack_ipv6: bool = False) -> socket:
    if family != AF_INET or dualstack_ipv6:
        raise ValueError("only AF_INET is served by the stack")
    if reuse_port and not hasattr(_std, "SO_REUSEPORT"):
        raise ValueError("SO_REUSEPORT not supported on this platform")
    sock = socket(AF_INET, SOCK_STREAM)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_SOCKET, _std.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(SOL_SOCKET, _std.SO_REUSEPORT, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise OSError(exc.errno, f"{exc.strerror} (while attempting to bind on address "
                                     f"{address!r})") from None
        if backlog is None:
            sock.listen()
        else:
            sock.listen(backlog)
        return sock
    except OSError:
        sock.close()
        raise


# -- swapping in for the stdlib -------------------------------------------------------
_PATCHED = ("socket", "SocketType", "create_connection", "create_server", "getaddrinfo",
            "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getfqdn", "getnameinfo",
            "fromfd", "has_dualstack_ipv6")


@contextlib.contextmanager
def patch(prefix: str | None = None) -> Iterator[None]:
    """Within the block, the stdlib ``socket`` module (and so asyncio, selectors,
    socketserver, http, urllib, ...) uses the stack for AF_INET."""
    saved = {name: getattr(_std, name) for name in _PATCHED}
    saved_prefix = _prefix
    if prefix is not None:
        setsockprefix(prefix)
    here = sys.modules[__name__]
    try:
        for name in _PATCHED:
            setattr(_std, name, getattr(here, name))
        yield
    finally:
        for name, value in saved.items():
            setattr(_std, name, value)
        if prefix is not None:
            globals()["_prefix"] = saved_prefix


__all__ = [n for n in dir(_std) if n.isupper() and not n.startswith("_")] + [
    "socket", "SocketType", "error", "herror", "gaierror", "timeout", "create_connection",
    "create_server", "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
    "getfqdn", "getnameinfo", "fromfd", "socketpair", "has_dualstack_ipv6", "setsockprefix",
    "clearsockprefix", "getsockprefix", "socket_dir", "patch", "getdefaulttimeout",
    "setdefaulttimeout", "gethostname", "inet_aton", "inet_ntoa", "inet_pton", "inet_ntop",
    "htons", "ntohs", "htonl", "ntohl", "SocketIO", "AddressFamily", "SocketKind"]
