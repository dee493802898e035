"""Open devices and sockets inside a named network namespace while the process stays home.

How (the choice, and why): Python 3.11 has no ``os.setns``, so we call ``libc.setns``
through ctypes — but **only in a short-lived helper thread** made for the purpose.
``setns(CLONE_NEWNET)`` changes the network namespace of the calling *thread*; a file
descriptor keeps the namespace it was created in for its whole life. So the helper thread
joins ``/run/netns/NAME``, opens the TAP device (TUNSETIFF creates the netdev in the
thread's namespace) or the AF_PACKET/AF_INET/netlink socket, returns the fd and exits.
The trio thread, the FUSE mounts and every other thread stay in the caller's namespaces.

We do not use trio's worker threads for this (they are cached and reused: a worker that
had joined another namespace would carry it into unrelated jobs); each call makes one
plain ``threading.Thread`` and joins it, which costs well under a millisecond.

The alternative — create the device in our own namespace and move it with
``ip link set DEV netns NAME`` — works for netdevs but not for sockets, briefly shows the
device in the host namespace and loses its addresses on the move; ``move_link`` below
offers it for links that already exist (e.g. one end of a veth pair).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int

# ioctls on an AF_INET datagram socket (linux/sockios.h)
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922
SIOCGIFHWADDR = 0x8927
SIOCGIFINDEX = 0x8933
IFF_UP = 0x1


def netns_path(name: str) -> str:
    if "/" in name:
        return name  # a path such as /proc/PID/ns/net
    return os.path.join(NETNS_RUN_DIR, name)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """``setns(2)`` for the calling thread."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def run_in_netns(name: str | None, fn: Callable[[], T]) -> T:
    """Call ``fn()`` in a fresh thread that has joined network namespace ``name``
    (``None``/empty: the caller's own namespace, run directly). Re-raises fn's error."""
    if not name:
        return fn()
    path = netns_path(name)
    try:
        nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(errno.ENOENT, f"no network namespace {name!r} ({path})") from None
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            setns(nsfd)
            result.append(fn())
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    try:
        t = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
        t.start()
        t.join()
    finally:
        os.close(nsfd)
    if error:
        raise error[0]
    return result[0]


def socket_in_netns(name: str | None, family: int, type_: int, proto: int = 0) -> socket.socket:
    """A socket created inside namespace ``name`` (it stays there for its life)."""
    return run_in_netns(name, lambda: socket.socket(family, type_, proto))


def open_in_netns(name: str | None, path: str, flags: int) -> int:
    return run_in_netns(name, lambda: os.open(path, flags))


class LinkControl:
    """Up/down, MTU and MAC of links in one namespace through classic ioctls on an
    AF_INET datagram socket created in that namespace (no netlink, no threads after
    creation)."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self.sock = socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM)

    def _ifreq(self, ifname: str, req: int, fmt: str = "", *vals: int | bytes) -> bytes:
        data = struct.pack("16s", ifname.encode()) + (struct.pack(fmt, *vals) if fmt else b"")
        data = data.ljust(40, b"\0")
        return fcntl.ioctl(self.sock.fileno(), req, data)

    def get_flags(self, ifname: str) -> int:
        return int(struct.unpack_from("H", self._ifreq(ifname, SIOCGIFFLAGS), 16)[0])

    def set_up(self, ifname: str, up: bool = True) -> None:
        flags = self.get_flags(ifname)
        flags = flags | IFF_UP if up else flags & ~IFF_UP
        self._ifreq(ifname, SIOCSIFFLAGS, "H", flags)

    def set_mtu(self, ifname: str, mtu: int) -> None:
        self._ifreq(ifname, SIOCSIFMTU, "i", mtu)

    def get_mtu(self, ifname: str) -> int:
        return int(struct.unpack_from("i", self._ifreq(ifname, SIOCGIFMTU), 16)[0])

    def get_mac(self, ifname: str) -> bytes:
        return bytes(self._ifreq(ifname, SIOCGIFHWADDR)[18:24])

    def get_index(self, ifname: str) -> int:
        return int(struct.unpack_from("i", self._ifreq(ifname, SIOCGIFINDEX), 16)[0])

    def close(self) -> None:
        self.sock.close()


def _ipr(netns: str | None):  # type: ignore[no-untyped-def]
    from pyroute2 import IPRoute

    return run_in_netns(netns, IPRoute)


def move_link(ifname: str, to_netns: str, from_netns: str | None = None) -> None:
    """Move link ``ifname`` from ``from_netns`` (default: ours) into ``to_netns``
    (``ip link set IF netns NAME``)."""
    fd = os.open(netns_path(to_netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        ipr = _ipr(from_netns)
        try:
            idx = ipr.link_lookup(ifname=ifname)
            if not idx:
                raise OSError(errno.ENODEV, f"no link {ifname}")
            ipr.link("set", index=idx[0], net_ns_fd=fd)
        finally:
            ipr.close()
    finally:
        os.close(fd)


def delete_link(ifname: str, netns: str | None = None) -> None:
    """``ip link del IF`` in a namespace; a missing link is not an error."""
    ipr = _ipr(netns)
    try:
        idx = ipr.link_lookup(ifname=ifname)
        if idx:
            ipr.link("del", index=idx[0])
    finally:
        ipr.close()


def link_exists(ifname: str, netns: str | None = None) -> bool:
    ctl = LinkControl(netns)
    try:
        ctl.get_index(ifname)
        return True
    except OSError:
        return False
    finally:
        ctl.close()
