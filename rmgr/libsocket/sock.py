"""The socket class of rmgr.libsocket: the stdlib ``socket.socket`` API over an open file
of the stack's socket door (``$SOCK/dev/socket/<family>/<type>/<proto>``).

Every call is open/read/write/ioctl/poll on that file (the ioctls and structs are
rmgr/libsocket/abi.py, the C twin rmgr/include/io_pkt_socket.h); addresses are encoded
and decoded by abi (sockaddr_in, sockaddr_in6) and resolved by .resolver.
"""

from __future__ import annotations

import bisect
import contextlib
import errno as _errno
import fcntl
import os
import select
import socket as _std
import struct
import time
import warnings
from collections.abc import Callable, Iterable
from socket import (
    AF_INET,
    AF_INET6,
    SO_ERROR,
    SOCK_STREAM,
    SOL_SOCKET,
    AddressFamily,
    SocketKind,
    gaierror,
)
from typing import Any

from . import abi, where
from .resolver import gethostbyname

SOCK_NONBLOCK: int = getattr(_std, "SOCK_NONBLOCK", 0o4000)
SOCK_CLOEXEC: int = getattr(_std, "SOCK_CLOEXEC", 0o2000000)
MSG_DONTWAIT: int = getattr(_std, "MSG_DONTWAIT", 0x40)
MSG_NOSIGNAL: int = getattr(_std, "MSG_NOSIGNAL", 0x4000)
MSG_PEEK: int = getattr(_std, "MSG_PEEK", abi.RECV_PEEK)
MSG_WAITALL: int = getattr(_std, "MSG_WAITALL", abi.RECV_WAITALL)
#: the kernel's socket types are 1..SOCK_MAX-1 (Linux: 10); another is EINVAL at once
_SOCK_MAX = 11

getdefaulttimeout = _std.getdefaulttimeout

#: the stdlib socket class (for families the stack does not serve), taken before any
#: patch() replaces ``socket.socket``
_StdSocket = _std.socket
#: the stdlib's makefile, called with one of our sockets as ``self`` (it only needs the
#: socket API), which its typed overloads cannot express
_std_makefile: Callable[..., Any] = _StdSocket.makefile

#: Largest read or write given to the kernel in one call: FUSE carries up to 1 MiB per
#: request, and a longer read(2) on a FUSE file would wait for a second request.
IO_MAX = 1 << 20

#: An address as the stdlib gives it: (host, port), or for AF_INET6 (host, port,
#: flowinfo, scope_id)
Address = tuple[str, int] | tuple[str, int, int, int]


# -- ioctl ------------------------------------------------------------------------------
def _ioctl(fd: int, cmd: int, arg: bytes = b"") -> bytes:
    size = abi.ioc_size(cmd)
    buf = arg.ljust(size, b"\0") if len(arg) < size else arg
    out = fcntl.ioctl(fd, cmd, buf)
    return out if isinstance(out, bytes) else b""


def _sockaddr(family: int, address: Any, flags: int = 0) -> bytes:
    """An iop_sockaddr for the stdlib-style ``address`` of a ``family`` socket (AF_INET6:
    ``(host, port[, flowinfo[, scope_id]])``, a link-local host may name its interface
    as ``fe80::1%tap0``)."""
    scope = 0
    if family == AF_INET6:
        if not isinstance(address, tuple) or not 2 <= len(address) <= 4:
            raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])")
        if len(address) == 4:
            scope = int(address[3])
    elif not isinstance(address, tuple) or len(address) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    host, port = address[0], address[1]
    if not isinstance(port, int):
        raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
    if not 0 <= port <= 65535:
        raise OverflowError("bind(): port must be 0-65535.")
    text = _resolve(family, host)
    if family == AF_INET6 and "%" in text:
        text, _, zone = text.partition("%")
        scope = scope or where.scope_id(zone)
    return abi.pack_sockaddr(family, text, port, flags, scope)


def _resolve(family: int, host: str | bytes) -> str:
    if isinstance(host, bytes):
        host = host.decode("idna")
    if family == AF_INET6:
        if not host:
            return "::"
        if ":" in host:
            return host
        # a name: its first IPv6 address (the stack's resolver asks for AAAA)
        from .resolver import getaddrinfo

        return str(getaddrinfo(host, None, AF_INET6)[0][4][0])
    if host in ("", "0.0.0.0"):
        return "0.0.0.0"
    if host == "<broadcast>":
        return "255.255.255.255"
    return gethostbyname(host)


def _named(addr: Address) -> Address:
    """An AF_INET6 address with a scope id as the stdlib shows it: ``fe80::1%tap0``
    (the stack's interface name)."""
    if len(addr) == 4 and addr[3]:
        host, port, flow, scope = addr  # type: ignore[misc]
        try:
            host = f"{host}%{where.if_indextoname(scope)}"
        except OSError:
            host = f"{host}%{scope}"
        return (host, port, flow, scope)
    return addr


_IPV6_PKTINFO, _IPV6_HOPLIMIT, _IPV6_TCLASS = 50, 52, 67
_MSG = abi.MSG
_MSG_TRUNC: int = getattr(_std, "MSG_TRUNC", abi.IOP_MSG_TRUNC)


class _Meta(type):
    """isinstance(x, libsocket.socket) also holds for the kernel's sockets, so code that
    checks against ``socket.socket`` under patch() accepts both."""

    def __instancecheck__(cls, obj: object) -> bool:
        return type.__instancecheck__(cls, obj) or isinstance(obj, _StdSocket)


class socket(metaclass=_Meta):  # noqa: N801 - the stdlib's name
    """A socket of the stack: an open file under ``$SOCK/dev/socket``."""

    # message mode's state, as class defaults (so a socket object made without
    # __init__ has them too)
    #: the mode (IOP_MSGMODE) of the open file as this object knows it: 0 for a socket
    #: it opened, None (ask the stack first) for one given by ``fileno``
    _mm: int | None = 0
    #: the last sendto address and its iop_msg header fields (addrlen, addr)
    _to: tuple[Any, int, bytes] | None = None
    #: recvmmsg's buffer, kept between calls
    _mbuf: bytearray | None = None
    #: the last source decoded from an iop_msg: (addr field, address)
    _from: tuple[bytes, Any] = (b"", None)

    def __new__(cls, family: int = -1, type: int = -1, proto: int = -1,
                fileno: int | None = None) -> Any:
        if family != -1 and not where.serves(family):
            return _StdSocket(family, type, proto, fileno)
        if fileno is not None and not _is_stack_fd(fileno):
            return _StdSocket(family, type, proto, fileno)
        return super().__new__(cls)

    # the object's state before ``_adopt`` gives it a file (close() and __del__ of a
    # socket whose open failed see these)
    _fd = -1
    _io_refs = 0
    _closed = False
    _timeout: float | None = None

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None) -> None:
        if fileno is None:
            family_ = AF_INET if family == -1 else family
            type_ = SOCK_STREAM if type == -1 else type
            nonblock = bool(type_ & SOCK_NONBLOCK)
            type_ &= ~(SOCK_NONBLOCK | SOCK_CLOEXEC)
            proto_ = 0 if proto == -1 else proto  # as the stdlib: 0 stays 0
            if not 0 < type_ < _SOCK_MAX:
                raise OSError(_errno.EINVAL, "Invalid argument")
            try:
                fd = os.open(where.path_for(family_, type_, proto_), os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                raise where.open_error(family_, type_) from None
            except PermissionError:
                raise PermissionError(_errno.EPERM, "Operation not permitted") from None
            self._adopt(fd, family_, type_, proto_, 0.0 if nonblock else getdefaulttimeout())
        else:
            self._mm = None  # another open of the file may have set it: ask when needed
            info = abi.SockInfo.unpack(_ioctl(fileno, abi.IOP_SOCKINFO))
            flags = fcntl.fcntl(fileno, fcntl.F_GETFL)
            self._adopt(fileno, info.domain if family == -1 else family,
                        info.type if type == -1 else type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC),
                        info.protocol if proto == -1 else proto,
                        0.0 if flags & os.O_NONBLOCK else getdefaulttimeout())

    def _adopt(self, fd: int, family: int, type_: int, proto: int,
               timeout: float | None) -> None:
        """This object is the socket open as ``fd``, of the kind given, in ``timeout``'s
        mode (None: blocking)."""
        self._fd = fd
        self._family = family
        self._type = type_
        self._proto = proto
        self.settimeout(timeout)

    # -- identity ----------------------------------------------------------------------
    @property
    def family(self) -> AddressFamily:
        return AddressFamily(self._family)

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
        return socket(self._family, self._type, self._proto, fileno=os.dup(self._checked_fd()))

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
    def bind(self, address: Address) -> None:
        _ioctl(self._checked_fd(), abi.IOP_BIND, _sockaddr(self._family, address))

    def listen(self, backlog: int = min(_std.SOMAXCONN, 128)) -> None:
        _ioctl(self._checked_fd(), abi.IOP_LISTEN, abi.INT.pack(max(0, backlog)))

    def connect(self, address: Address) -> None:
        fd = self._checked_fd()
        arg = _sockaddr(self._family, address, self._nbflag())
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

    def connect_ex(self, address: Address) -> int:
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

    def accept(self) -> tuple[socket, Address]:
        """accept(2): the IOP_ACCEPT ioctl (the peer, and a handover slot's name), then
        an open of that name - two requests to the stack; the new socket's family, type
        and protocol are the listener's, so nothing more is asked."""
        fd = self._checked_fd()
        arg = abi.ACCEPT.pack(self._nbflag() | abi.IOP_F_HANDOVER, 0, b"", b"")

        def once() -> bytes:
            while True:
                try:
                    return _ioctl(fd, abi.IOP_ACCEPT, arg)
                except InterruptedError:  # PEP 475: retry after the signal handlers ran
                    continue

        out = self._io(once, select.POLLIN)
        _flags, _alen, addr, name = abi.ACCEPT.unpack(out)
        rel = name.split(b"\0", 1)[0].decode()
        # the same thread opens it (a handover slot is the accepting thread's)
        newfd = os.open(f"{where.socket_dir()}/{rel}", os.O_RDWR | os.O_CLOEXEC)
        # like the stdlib: the new socket blocks unless a default timeout is set
        sock = socket._accepted(newfd, self._family, self._type, self._proto)
        return sock, _named(abi.unpack_sockaddr(addr))

    @classmethod
    def _accepted(cls, fd: int, family: int, type_: int, proto: int) -> socket:
        """The socket object for ``fd``, just opened (blocking) from an accept's name:
        what socket(fileno=fd) would ask the stack (IOP_SOCKINFO, twice) is known."""
        sock: socket = object.__new__(cls)
        sock._adopt(fd, family, type_, proto, getdefaulttimeout())
        return sock

    def shutdown(self, how: int) -> None:
        _ioctl(self._checked_fd(), abi.IOP_SHUTDOWN, abi.INT.pack(how))

    def getsockname(self) -> Address:
        return _named(abi.unpack_sockaddr(_ioctl(self._checked_fd(), abi.IOP_GETSOCKNAME)))

    def getpeername(self) -> Address:
        return _named(abi.unpack_sockaddr(_ioctl(self._checked_fd(), abi.IOP_GETPEERNAME)))

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
        if buflen is not None and buflen > abi.IOP_OPTVAL_MAX:
            return self._getsockopt_large(level, optname, buflen)
        out = _ioctl(self._checked_fd(), abi.IOP_GETSOCKOPT,
                     abi.SOCKOPT.pack(level, optname, buflen or 4, 0, b""))
        _lv, _nm, length, _fl, val = abi.SOCKOPT.unpack(out)
        if buflen is None:
            return struct.unpack_from("<i", val.ljust(4, b"\0"))[0]
        if not 0 < buflen <= 1024:
            raise OSError(_errno.EINVAL, "getsockopt buflen out of range")
        return bytes(val[:min(buflen, length)])

    def _getsockopt_large(self, level: int, optname: int, buflen: int) -> bytes:
        """A value longer than iop_sockopt holds (TCP_INFO: Linux's struct tcp_info, the
        same bytes): min(buflen, its size) bytes, as Linux returns."""
        if buflen > 1024:
            raise OSError(_errno.EINVAL, "getsockopt buflen out of range")
        out = _ioctl(self._checked_fd(), abi.IOP_GETSOCKOPT_LARGE,
                     abi.SOCKOPT_LARGE.pack(level, optname, min(buflen, abi.IOP_OPTVAL_LARGE),
                                            0, b""))
        _lv, _nm, length, _fl, val = abi.SOCKOPT_LARGE.unpack(out)
        return bytes(val[:min(buflen, length)])

    # -- data --------------------------------------------------------------------------
    # message mode (IOP_MSGMODE): a datagram socket switches it on at its first
    # recvfrom/sendto (max 1 record per read), so each of those is one read or write
    # carrying an iop_msg header (the address with the data), not an ioctl and a read;
    # recvmmsg/sendmmsg move many datagrams per request. recv/send on a socket in the
    # mode add and strip the header. Dup'ed sockets share one open file and its mode:
    # each asks the stack the first time (a mode changed later by another of them is
    # not seen here).
    def _msgmode(self) -> int:
        """The mode's record count (0: off) on a datagram socket; a socket made from a
        file descriptor asks (setting 0, then back to what it was)."""
        if self._mm is None:
            fd = self._checked_fd()
            old = abi.INT.unpack(_ioctl(fd, abi.IOP_MSGMODE, abi.INT.pack(0)))[0]
            if old:
                _ioctl(fd, abi.IOP_MSGMODE, abi.INT.pack(old))
            self._mm = old
        return self._mm

    def _set_msgmode(self, count: int) -> None:
        if self._mm != count:
            _ioctl(self._checked_fd(), abi.IOP_MSGMODE, abi.INT.pack(count))
            self._mm = count

    def _one_msg_mode(self) -> bool:
        """Message mode with one record per read, on a datagram socket (False: a stream)."""
        if self._type == SOCK_STREAM:
            return False
        self._set_msgmode(1)
        return True

    def _source(self, alen: int, field: bytes) -> Any:
        """The address in an iop_msg's field (None without one); the last one is kept,
        a server hears the same few peers again and again."""
        if not alen:
            return None
        last = self._from
        if last[0] == field:
            return last[1]
        addr = _named(abi.unpack_sockaddr(field))
        self._from = (field, addr)
        return addr

    def _recv_record(self, bufsize: int, flags: int) -> tuple[bytes, Address | None, int]:
        """One datagram through message mode: (data, source, iop_msg flags)."""
        fd = self._checked_fd()
        rflags = self._recv_flags(flags)
        n = _MSG.size + min(bufsize, IO_MAX - _MSG.size)

        def once() -> bytes:
            if rflags:
                _ioctl(fd, abi.IOP_RECVFLAGS, abi.INT.pack(rflags))
            return os.read(fd, n)

        raw: bytes = self._io(once, select.POLLIN, flags)
        if not raw:  # read side shut
            return b"", None, 0
        length, mflags, alen, _ifindex, field = _MSG.unpack_from(raw)
        return raw[_MSG.size:_MSG.size + length], self._source(alen, field), mflags

    def _recv_record_into(self, view: memoryview, flags: int) -> tuple[int, Address | None]:
        """One datagram through message mode into ``view``: (bytes, source)."""
        fd = self._checked_fd()
        rflags = self._recv_flags(flags)
        head = bytearray(_MSG.size)

        def once() -> int:
            if rflags:
                _ioctl(fd, abi.IOP_RECVFLAGS, abi.INT.pack(rflags))
            return os.readv(fd, [head, view])

        got: int = self._io(once, select.POLLIN, flags)
        if not got:
            return 0, None
        length, _mflags, alen, _ifindex, field = _MSG.unpack_from(head)
        return min(length, len(view)), self._source(alen, field)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if self._type != SOCK_STREAM and self._msgmode():
            self._set_msgmode(1)  # one datagram per recv
            return self._recv_record(bufsize, flags)[0]
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
        if self._type != SOCK_STREAM and self._msgmode():
            self._set_msgmode(1)
            return self._recv_record_into(view[:IO_MAX - _MSG.size], flags)[0]

        def once() -> int:
            if rflags:
                _ioctl(fd, abi.IOP_RECVFLAGS, abi.INT.pack(rflags))
            return os.readv(fd, [view])

        return self._io(once, select.POLLIN, flags)  # type: ignore[no-any-return]

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        if bufsize < 0:
            raise ValueError("negative buffersize in recvfrom")
        if self._one_msg_mode():
            data, addr, _mf = self._recv_record(bufsize, flags)
            return data, addr
        data = self.recv(bufsize, flags)
        return data, self._last_from()

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        if nbytes < 0:
            raise ValueError("negative buffersize in recvfrom_into")
        if self._type != SOCK_STREAM:
            view = memoryview(buffer).cast("B")
            if nbytes:
                if nbytes > len(view):
                    raise ValueError("nbytes is greater than the length of the buffer")
                view = view[:nbytes]
            self._checked_fd()
            self._one_msg_mode()
            return self._recv_record_into(view[:IO_MAX - _MSG.size], flags)
        n = self.recv_into(buffer, nbytes, flags)
        return n, self._last_from()

    def recvmmsg(self, vlen: int, bufsize: int = 65535,
                 flags: int = 0) -> list[tuple[bytes, Any]]:
        """Up to ``vlen`` datagrams of up to ``bufsize`` bytes each (a longer one is cut)
        with their sources, in one request: waits for the first as recvfrom does (timeout,
        non-blocking, MSG_DONTWAIT), then takes those already queued (an extension, like
        Linux's recvmmsg(2); ``[]`` when the read side is shut)."""
        if vlen < 0 or bufsize < 0:
            raise ValueError("negative vlen or buffersize in recvmmsg")
        if self._type == SOCK_STREAM:
            raise OSError(_errno.EOPNOTSUPP, "recvmmsg is for datagram sockets")
        if vlen == 0:
            return []
        vlen = min(vlen, abi.IOP_MSG_MAXCOUNT)
        self._set_msgmode(vlen)
        fd = self._checked_fd()
        rflags = self._recv_flags(flags)
        size = min(vlen * abi.msg_pad(_MSG.size + bufsize), IO_MAX)
        buf = self._mbuf
        if buf is None or len(buf) != size:
            buf = self._mbuf = bytearray(size)

        def once() -> int:
            if rflags:
                _ioctl(fd, abi.IOP_RECVFLAGS, abi.INT.pack(rflags))
            return os.readv(fd, [buf])

        got: int = self._io(once, select.POLLIN, flags)
        view = memoryview(buf)
        out: list[tuple[bytes, Any]] = []
        append, unpack, source, hdr = out.append, _MSG.unpack_from, self._source, _MSG.size
        off = 0
        while off + hdr <= got:
            length, _mflags, alen, _ifindex, field = unpack(view, off)
            start = off + hdr
            append((bytes(view[start:start + min(length, bufsize)]), source(alen, field)))
            off = (start + length + 7) & ~7  # abi.msg_pad
        return out

    def recvmsg(self, bufsize: int, ancbufsize: int = 0,
                flags: int = 0) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        """recv + the sender; for AF_INET6 datagrams the control messages asked for with
        IPV6_RECVPKTINFO (IPV6_PKTINFO: struct in6_pktinfo), IPV6_RECVHOPLIMIT
        (IPV6_HOPLIMIT) and IPV6_RECVTCLASS (IPV6_TCLASS), when ``ancbufsize`` allows."""
        mflags = 0
        if self._one_msg_mode():
            data, addr, mflags = self._recv_record(bufsize, flags)
        else:
            data = self.recv(bufsize, flags)
            addr = self._last_from()
        anc: list[tuple[int, int, bytes]] = []
        if ancbufsize > 0 and self._family == AF_INET6 and self._type != SOCK_STREAM:
            ri, ifindex, hlim, tclass, dst = abi.RECVINFO.unpack(
                _ioctl(self._checked_fd(), abi.IOP_RECVINFO))
            if ri & abi.IOP_RI_PKTINFO:
                anc.append((_std.IPPROTO_IPV6, _IPV6_PKTINFO, dst + struct.pack("@I", ifindex)))
            if ri & abi.IOP_RI_HOPLIMIT:
                anc.append((_std.IPPROTO_IPV6, _IPV6_HOPLIMIT, struct.pack("@i", hlim)))
            if ri & abi.IOP_RI_TCLASS:
                anc.append((_std.IPPROTO_IPV6, _IPV6_TCLASS, struct.pack("@i", tclass)))
        return data, anc, _MSG_TRUNC if mflags & abi.IOP_MSG_TRUNC else 0, addr

    def _last_from(self) -> Address | None:
        if self._type == SOCK_STREAM:
            return None
        out = _ioctl(self._checked_fd(), abi.IOP_RECVADDR)
        _f, length, _a = abi.SOCKADDR.unpack(out)
        return _named(abi.unpack_sockaddr(out)) if length else None

    def send(self, data: Any, flags: int = 0) -> int:
        fd = self._checked_fd()
        self._check_flags(flags)
        if self._type != SOCK_STREAM and self._msgmode():
            return self._send_record(data, None, flags)
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
        arg = _sockaddr(self._family, address, nb) if address is not None \
            else abi.SOCKADDR.pack(nb, 0, b"")

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
        if self._type != SOCK_STREAM:
            if not self._msgmode():
                self._set_msgmode(1)
            return self._send_record(data, address, flags)
        arg = _sockaddr(self._family, address)
        view = memoryview(data).cast("B")
        if not len(view):
            return self._send0(address, flags)

        def once() -> int:
            _ioctl(fd, abi.IOP_SENDTO, arg)
            return os.write(fd, view)

        return self._io(once, select.POLLOUT, flags)  # type: ignore[no-any-return]

    def _msg_header(self, length: int, address: Any) -> bytes:
        """An iop_msg header for ``length`` bytes to ``address`` (None: the peer)."""
        if address is None:
            return _MSG.pack(length, 0, 0, 0, b"")
        to = self._to
        if to is None or to[0] != address:
            _f, alen, field = abi.SOCKADDR.unpack(_sockaddr(self._family, address))
            to = self._to = (address, alen, field)
        return _MSG.pack(length, 0, to[1], 0, to[2])

    def _send_record(self, data: Any, address: Any, flags: int) -> int:
        """One datagram through message mode: one write of header and data (an empty
        datagram too: the header makes the write non-empty)."""
        fd = self._checked_fd()
        self._check_flags(flags)
        view = memoryview(data).cast("B")[:IO_MAX - _MSG.size]
        parts: list[Any] = [self._msg_header(len(view), address), view]
        n: int = self._io(lambda: os.writev(fd, parts), select.POLLOUT, flags)
        return max(0, n - _MSG.size)

    def sendmmsg(self, msgs: Iterable[tuple[Any, Any]], flags: int = 0) -> int:
        """Send each ``(data, address)`` (address None: the connected peer) as one
        datagram, as many as fit one request (IO_MAX bytes, IOP_MSG_MAXCOUNT records):
        the number sent (an extension, like Linux's sendmmsg(2)). The first waits for
        room as sendto does and raises its error; one after it that would block or fails
        ends the batch there (call again for the rest)."""
        fd = self._checked_fd()
        self._check_flags(flags)
        if self._type == SOCK_STREAM:
            raise OSError(_errno.EOPNOTSUPP, "sendmmsg is for datagram sockets")
        if not self._msgmode():
            self._set_msgmode(1)
        parts: list[Any] = []
        ends: list[int] = []
        size = 0
        for data, address in msgs:
            view = memoryview(data).cast("B")
            start = abi.msg_pad(size)
            end = start + _MSG.size + len(view)
            if end > IO_MAX:
                if ends:
                    break  # for the next call
                view = view[:IO_MAX - _MSG.size]
                end = IO_MAX
            if start > size:
                parts.append(bytes(start - size))
            parts.append(self._msg_header(len(view), address))
            parts.append(view)
            ends.append(end)
            size = end
            if len(ends) >= abi.IOP_MSG_MAXCOUNT:
                break
        if not ends:
            return 0
        batch = b"".join(parts)
        n: int = self._io(lambda: os.write(fd, batch), select.POLLOUT, flags)
        return bisect.bisect_right(ends, n)

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

