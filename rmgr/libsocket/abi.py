"""The binary interface of the socket door, defined once for Python.

The C twin is ``rmgr/include/io_pkt_socket.h``; ``tests/sockets/test_abi.py`` compiles a
program against the header and checks every number and size here against it.

Every command is a *restricted* FUSE ioctl: direction and size come from the ``_IOC``
encoding, so each one is ``_IOR``/``_IOW``/``_IOWR`` with a fixed-size struct. All
structs are little-endian/native with no implicit padding.
"""

from __future__ import annotations

import socket as _std
import struct
from dataclasses import dataclass

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
#: ``addr`` holds a Linux ``struct sockaddr_in`` (family u16 host order, port and
#: address in network order) - room for sockaddr_in6 later.
SOCKADDR = struct.Struct("<II32s")
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

IOP_ADDR_MAX = 32
IOP_NAME_MAX = 88
IOP_OPTVAL_MAX = 32

# flags in iop_sockaddr.flags / iop_accept.flags: the ioctl request carries no file
# flags, so a caller that wants a non-blocking connect or accept says so here
IOP_F_NONBLOCK = 0x1

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

COMMANDS: dict[str, int] = {k: v for k, v in dict(globals()).items()
                            if k.startswith("IOP_") and isinstance(v, int)
                            and k not in ("IOP_MAGIC", "IOP_ADDR_MAX", "IOP_NAME_MAX",
                                          "IOP_OPTVAL_MAX", "IOP_F_NONBLOCK")}

# -- socket states (iop_sockinfo.state) -------------------------------------------
ST_CLOSED, ST_BOUND, ST_LISTEN, ST_CONNECTING, ST_CONNECTED, ST_CLOSING = range(6)
STATE_NAMES = ["Closed", "Bound", "Listen", "Connecting", "Established", "Closing"]

AF_INET = 2
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = 1, 2, 3

# sockopt constants (Linux numbering, the same as the stdlib socket module here)
SOL_SOCKET = _std.SOL_SOCKET
IPPROTO_TCP = _std.IPPROTO_TCP
IPPROTO_IP = _std.IPPROTO_IP


# -- helpers -----------------------------------------------------------------------
def pack_sockaddr_in(host: str, port: int, flags: int = 0) -> bytes:
    raw = struct.pack("=H", AF_INET) + struct.pack("!H", port) + _std.inet_aton(host) + bytes(8)
    return SOCKADDR.pack(flags, 16, raw)


def unpack_sockaddr_in(raw: bytes) -> tuple[str, int]:
    """``addr`` field (or whole iop_sockaddr when 40 bytes) → (host, port)."""
    if len(raw) == SOCKADDR.size:
        _flags, length, raw = SOCKADDR.unpack(raw)
        if length == 0:
            return ("0.0.0.0", 0)
    (family,) = struct.unpack_from("=H", raw, 0)
    if family not in (AF_INET, 0):
        raise OSError(97, "Address family not supported by protocol")  # EAFNOSUPPORT
    (port,) = struct.unpack_from("!H", raw, 2)
    return (_std.inet_ntoa(bytes(raw[4:8])), port)


def addr_field(host: str, port: int) -> bytes:
    return struct.pack("=H", AF_INET) + struct.pack("!H", port) + _std.inet_aton(host) + bytes(24)


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
