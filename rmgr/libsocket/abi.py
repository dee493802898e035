"""The binary interface of the socket door, defined once for Python.

The C twin is ``rmgr/include/io_pkt_socket.h``; ``tests/sockets/test_abi.py`` compiles a
program against the header and checks every number and size here against it.

Every command is a *restricted* FUSE ioctl: direction and size come from the ``_IOC``
encoding, so each one is ``_IOR``/``_IOW``/``_IOWR`` with a fixed-size struct. All
structs are little-endian/native with no implicit padding.
"""

from __future__ import annotations

import errno
import socket as _std
import struct
from dataclasses import dataclass

from stack import addr as _addr
from stack.addr import Endpoint

# -- _IOC encoding (asm-generic, as on x86_64 / arm64) -------------------------------
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
IOC_NONE, IOC_WRITE, IOC_READ = 0, 1, 2


def _IOC(direction: int, typ: int, nr: int, size: int) -> int:
    return (direction << _IOC_DIRSHIFT) | (size << _IOC_SIZESHIFT) | \
        (typ << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT)


def _IOR(typ: int, nr: int, size: int) -> int:
    return _IOC(IOC_READ, typ, nr, size)


def _IOW(typ: int, nr: int, size: int) -> int:
    return _IOC(IOC_WRITE, typ, nr, size)


def _IOWR(typ: int, nr: int, size: int) -> int:
    return _IOC(IOC_READ | IOC_WRITE, typ, nr, size)


def ioc_size(cmd: int) -> int:
    return (cmd >> _IOC_SIZESHIFT) & ((1 << _IOC_SIZEBITS) - 1)


def ioc_dir(cmd: int) -> int:
    return (cmd >> _IOC_DIRSHIFT) & 3


IOP_MAGIC = ord("Q")

# -- structs -----------------------------------------------------------------------
#: struct iop_sockaddr { uint32_t flags; uint32_t len; unsigned char addr[32]; }
#: ``addr`` holds a Linux ``struct sockaddr_in`` or ``struct sockaddr_in6`` (below),
#: ``len`` its size.
SOCKADDR = struct.Struct("<II32s")
#: struct sockaddr_in { sa_family_t (u16, host order); in_port_t (network order);
#:                      struct in_addr (4 bytes); zero[8]; } - 16 bytes
SOCKADDR_IN = struct.Struct("=H2s4s8x")
#: struct sockaddr_in6 { sa_family_t; in_port_t; uint32_t sin6_flowinfo (network order);
#:                       struct in6_addr (16 bytes); uint32_t sin6_scope_id; } - 28 bytes
SOCKADDR_IN6 = struct.Struct("=H2s4s16sI")
#: struct iop_accept { uint32_t flags; uint32_t addrlen; unsigned char addr[32];
#:                     char name[88]; }
ACCEPT = struct.Struct("<II32s88s")
#: struct iop_sockopt { int32_t level; int32_t name; uint32_t len; uint32_t flags;
#:                      unsigned char val[32]; }
SOCKOPT = struct.Struct("<iiII32s")
#: struct iop_sockinfo { int32_t domain, type, protocol; uint32_t id, state, flags,
#:                       nread, reserved; char name[32]; }
SOCKINFO = struct.Struct("<iiiIIIII32s")
INT = struct.Struct("<i")
#: struct iop_recvinfo { uint32_t flags; int32_t ifindex, hoplimit, tclass;
#:                       unsigned char dst[16]; } - what IPV6_RECVPKTINFO / RECVHOPLIMIT /
#: RECVTCLASS kept of the datagram this fd read last (``flags``: IOP_RI_* valid)
RECVINFO = struct.Struct("<Iiii16s")
IOP_RI_PKTINFO, IOP_RI_HOPLIMIT, IOP_RI_TCLASS = 1, 2, 4
#: struct iop_msg { uint32_t len; uint32_t flags; uint32_t addrlen; int32_t ifindex;
#:                  unsigned char addr[32]; } - the header of one datagram in message mode
#: (IOP_MSGMODE): ``len`` data bytes follow it, then padding to IOP_MSG_ALIGN before the
#: next record. Read: ``flags`` IOP_MSG_TRUNC when the datagram was cut to fit, ``addr``
#: the source (``addrlen`` 0: none), ``ifindex`` the arrival interface when
#: IPV6_RECVPKTINFO is on, else 0. Write: ``flags`` and ``ifindex`` 0, ``addr`` the
#: destination (``addrlen`` 0: the connected peer).
MSG = struct.Struct("<IIIi32s")
IOP_MSG_ALIGN = 8
#: iop_msg.flags: the datagram was longer than the room the read had; the rest is dropped
#: (Linux's MSG_TRUNC value)
IOP_MSG_TRUNC = 0x20
#: the most records one read returns (a larger IOP_MSGMODE count is cut to it, as Linux
#: cuts recvmmsg's vlen to UIO_MAXIOV) and one write takes (the rest: a short write)
IOP_MSG_MAXCOUNT = 1024


def msg_pad(n: int) -> int:
    """``n`` rounded up to IOP_MSG_ALIGN: where the record after ``n`` bytes starts."""
    return (n + IOP_MSG_ALIGN - 1) & ~(IOP_MSG_ALIGN - 1)


#: struct iop_sockopt_large: iop_sockopt with val[IOP_OPTVAL_LARGE], for getsockopt
#: values longer than IOP_OPTVAL_MAX (TCP_INFO: Linux's 232-byte struct tcp_info)
IOP_OPTVAL_LARGE = 256
SOCKOPT_LARGE = struct.Struct(f"<iiII{IOP_OPTVAL_LARGE}s")

IOP_ADDR_MAX = 32
IOP_NAME_MAX = 88
IOP_OPTVAL_MAX = 32

# flags in iop_sockaddr.flags / iop_accept.flags: the ioctl request carries no file
# flags, so a caller that wants a non-blocking connect or accept says so here
IOP_F_NONBLOCK = 0x1
#: iop_accept.flags: name the accepted connection ``accepted/K`` (a handover slot, K the
#: smallest free one: the same few names serve one accept after another, so the kernel's
#: cached entries spare a LOOKUP per connection) instead of ``tcp/N/data``. Open it from
#: the thread that called IOP_ACCEPT; the slot is free again once it is opened.
IOP_F_HANDOVER = 0x2

# -- commands ----------------------------------------------------------------------
IOP_BIND = _IOW(IOP_MAGIC, 1, SOCKADDR.size)
IOP_CONNECT = _IOW(IOP_MAGIC, 2, SOCKADDR.size)
IOP_LISTEN = _IOW(IOP_MAGIC, 3, INT.size)
IOP_ACCEPT = _IOWR(IOP_MAGIC, 4, ACCEPT.size)
IOP_SHUTDOWN = _IOW(IOP_MAGIC, 5, INT.size)
IOP_GETSOCKNAME = _IOR(IOP_MAGIC, 6, SOCKADDR.size)
IOP_GETPEERNAME = _IOR(IOP_MAGIC, 7, SOCKADDR.size)
IOP_SETSOCKOPT = _IOW(IOP_MAGIC, 8, SOCKOPT.size)
IOP_GETSOCKOPT = _IOWR(IOP_MAGIC, 9, SOCKOPT.size)
IOP_NREAD = _IOR(IOP_MAGIC, 10, INT.size)
IOP_SENDTO = _IOW(IOP_MAGIC, 11, SOCKADDR.size)
IOP_RECVADDR = _IOR(IOP_MAGIC, 12, SOCKADDR.size)
IOP_SOCKINFO = _IOR(IOP_MAGIC, 13, SOCKINFO.size)
#: recv(flags) = IOP_RECVFLAGS (flags for the next read on this fd) + read()
IOP_RECVFLAGS = _IOW(IOP_MAGIC, 14, INT.size)
#: the recv flags IOP_RECVFLAGS takes (Linux values)
RECV_PEEK = 0x2
RECV_WAITALL = 0x100
RECV_DONTWAIT = 0x40
#: send an empty datagram (a 0-byte write(2) never reaches a FUSE server): flags
#: (IOP_F_NONBLOCK) and the destination, or ``len`` 0 for the connected peer. On a
#: stream socket it sends nothing and returns 0 (as send(2) of 0 bytes), after the
#: same error checks as a write.
IOP_SEND0 = _IOW(IOP_MAGIC, 15, SOCKADDR.size)
#: getsockopt with room for IOP_OPTVAL_LARGE bytes (``len``: the caller's buffer)
IOP_GETSOCKOPT_LARGE = _IOWR(IOP_MAGIC, 16, SOCKOPT_LARGE.size)
#: the ancillary facts of the datagram this fd read last (IPV6_RECVPKTINFO...): recvmsg
IOP_RECVINFO = _IOR(IOP_MAGIC, 17, RECVINFO.size)
#: message mode (datagram sockets; EOPNOTSUPP on a stream): int in, the most records a
#: read returns (0: off, plain read/write); int out, the value before. Per open file
#: description. In the mode a read returns iop_msg records (the first waits as a read
#: does, more only when already queued) and a write takes them (one datagram each)
IOP_MSGMODE = _IOWR(IOP_MAGIC, 18, INT.size)

COMMANDS: dict[str, int] = {k: v for k, v in dict(globals()).items()
                            if k.startswith("IOP_") and isinstance(v, int)
                            and k not in ("IOP_MAGIC", "IOP_ADDR_MAX", "IOP_NAME_MAX",
                                          "IOP_OPTVAL_MAX", "IOP_F_NONBLOCK", "IOP_F_HANDOVER",
                                          "IOP_OPTVAL_LARGE", "IOP_RI_PKTINFO",
                                          "IOP_RI_HOPLIMIT", "IOP_RI_TCLASS", "IOP_MSG_ALIGN",
                                          "IOP_MSG_TRUNC", "IOP_MSG_MAXCOUNT")}

# -- socket states (iop_sockinfo.state) -------------------------------------------
ST_CLOSED, ST_BOUND, ST_LISTEN, ST_CONNECTING, ST_CONNECTED, ST_CLOSING = range(6)
STATE_NAMES = ["Closed", "Bound", "Listen", "Connecting", "Established", "Closing"]

SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = 1, 2, 3

# sockopt constants (Linux numbering, the same as the stdlib socket module here)
SOL_SOCKET = _std.SOL_SOCKET
IPPROTO_TCP = _std.IPPROTO_TCP
IPPROTO_IP = _std.IPPROTO_IP


# -- address families ------------------------------------------------------------------
#: Linux's numbering: what a sockaddr, SO_DOMAIN and iop_sockinfo.domain carry (the
#: structs are Linux's, and C programs compare with <netinet/in.h>'s AF_INET6 = 10)
AF_INET = 2
AF_INET6 = 10
#: Linux's family → the socket door's (host numbering as on QNX: the directory
#: ``$SOCK/dev/socket/<family>``, the stack's registries and stack.addr.family())
_DOOR_FAMILY = {AF_INET: _addr.AF_INET, AF_INET6: _addr.AF_INET6}
_LINUX_FAMILY = {v: k for k, v in _DOOR_FAMILY.items()}


def door_family(linux_family: int) -> int | None:
    """The door's number for a Linux address family (None: the door has none)."""
    return _DOOR_FAMILY.get(linux_family)


def linux_family(family: int) -> int:
    """Linux's number for a door (stack) address family; unknown ones pass through."""
    return _LINUX_FAMILY.get(family, family)


# -- sockaddrs: the one place they are encoded and decoded -------------------------------
def _eafnosupport(family: int) -> OSError:
    return OSError(errno.EAFNOSUPPORT, f"address family {family} not supported")


def encode_sockaddr(ep: Endpoint, family: int = _addr.AF_INET) -> tuple[int, bytes]:
    """(len, the 32-byte ``addr`` field) for ``ep`` as a socket of ``family`` (door
    numbering) reports it: a sockaddr_in for AF_INET, a sockaddr_in6 for AF_INET6 (an
    IPv4 peer of an IPv6 socket as ``::ffff:a.b.c.d``; a link-local one with its scope
    id, ``stack.addr.ScopedEndpoint``)."""
    port = ep.port.to_bytes(2, "big")
    if family == _addr.AF_INET:
        if not _addr.is_v4(ep.addr):
            raise _eafnosupport(AF_INET6)
        return SOCKADDR_IN.size, SOCKADDR_IN.pack(
            AF_INET, port, _addr.v4_bits(ep.addr).to_bytes(4, "big")).ljust(IOP_ADDR_MAX, b"\0")
    if family == _addr.AF_INET6:
        return SOCKADDR_IN6.size, SOCKADDR_IN6.pack(
            AF_INET6, port, bytes(4), ep.addr.to_bytes(16, "big"),
            _addr.scope_of(ep)).ljust(IOP_ADDR_MAX, b"\0")
    raise _eafnosupport(linux_family(family))


def _fields(field: bytes) -> tuple[int, int, bytes, int, int]:
    """(Linux family, port, address bytes (4 or 16), flowinfo, scope id) of the
    sockaddr_in or sockaddr_in6 in ``field`` (any other family is read as sockaddr_in)."""
    (sa_family,) = struct.unpack_from("=H", field, 0)
    if sa_family == AF_INET6:
        _f, port, flow, a16, scope = SOCKADDR_IN6.unpack_from(
            field.ljust(SOCKADDR_IN6.size, b"\0"))
        return sa_family, int.from_bytes(port, "big"), a16, int.from_bytes(flow, "big"), scope
    _f, port, a4 = SOCKADDR_IN.unpack_from(field.ljust(SOCKADDR_IN.size, b"\0"))
    return sa_family, int.from_bytes(port, "big"), a4, 0, 0


def decode_sockaddr(field: bytes, length: int, family: int = _addr.AF_INET) -> Endpoint:
    """The endpoint in an ``addr`` field of ``length`` bytes given to a socket of
    ``family`` (door numbering). EINVAL when too short for its family, EAFNOSUPPORT when
    the sockaddr's family is not the socket's (as Linux's inet and inet6 binds and
    connects). A sockaddr_in6 with a scope id gives a ``ScopedEndpoint``."""
    if length < 8:
        raise OSError(errno.EINVAL, "address too short")
    sa_family, port, raw, _flow, scope = _fields(field)
    if sa_family != linux_family(family):
        raise _eafnosupport(sa_family)
    if sa_family == AF_INET6 and length < 24:  # Linux takes SIN6_LEN_RFC2133 (no scope)
        raise OSError(errno.EINVAL, "address too short")
    a = _addr.addr_from_bytes(raw)
    if scope and length >= SOCKADDR_IN6.size and not _addr.is_v4(a):
        return _addr.ScopedEndpoint(a, port, scope)
    return Endpoint(a, port)


def pack_sockaddr(family: int, host: str, port: int, flags: int = 0,
                  scope_id: int = 0) -> bytes:
    """A whole iop_sockaddr for a numeric ``host`` (libsocket's side; ``family`` in
    Linux numbering; ``scope_id``: sin6_scope_id)."""
    fam = door_family(family)
    if fam is None:
        raise _eafnosupport(family)
    a = _addr.parse_addr(host) if fam == _addr.AF_INET6 else \
        _addr.v4(int.from_bytes(_std.inet_aton(host), "big"))
    ep = _addr.ScopedEndpoint(a, port, scope_id) if scope_id else Endpoint(a, port)
    length, field = encode_sockaddr(ep, fam)
    return SOCKADDR.pack(flags, length, field)


def unpack_sockaddr(raw: bytes) -> tuple[str, int] | tuple[str, int, int, int]:
    """``addr`` field (or a whole iop_sockaddr when 40 bytes) → what the stdlib returns
    for its family: ``(host, port)`` for AF_INET, ``(host, port, flowinfo, scope_id)``
    for AF_INET6 (a family of 0, or ``len`` 0: nothing there, reads as AF_INET)."""
    if len(raw) == SOCKADDR.size:
        _flags, length, raw = SOCKADDR.unpack(raw)
        if length == 0:
            return ("0.0.0.0", 0)
    family, port, a, flow, scope = _fields(raw)
    if family == AF_INET6:
        return (_std.inet_ntop(_std.AF_INET6, a), port, flow, scope)
    if family not in (AF_INET, 0):
        raise _eafnosupport(family)
    return (_std.inet_ntoa(a), port)


def pack_sockaddr_in(host: str, port: int, flags: int = 0) -> bytes:
    """A whole iop_sockaddr holding a sockaddr_in."""
    return pack_sockaddr(AF_INET, host, port, flags)


def unpack_sockaddr_in(raw: bytes) -> tuple[str, int]:
    """``addr`` field (or whole iop_sockaddr when 40 bytes) → (host, port) of a
    sockaddr_in (EAFNOSUPPORT for another family)."""
    out = unpack_sockaddr(raw)
    if len(out) != 2:
        raise _eafnosupport(AF_INET6)
    return out[0], out[1]


@dataclass
class SockInfo:
    domain: int
    type: int
    protocol: int
    id: int
    state: int
    flags: int
    nread: int
    name: str

    @classmethod
    def unpack(cls, raw: bytes) -> SockInfo:
        d, t, p, i, s, f, n, _r, name = SOCKINFO.unpack(raw)
        return cls(d, t, p, i, s, f, n, name.split(b"\0", 1)[0].decode())

    def pack(self) -> bytes:
        return SOCKINFO.pack(self.domain, self.type, self.protocol, self.id, self.state,
                             self.flags, self.nread, 0, self.name.encode()[:31])
