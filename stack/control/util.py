"""Small helpers shared by the control files: their base class, permission checks,
argument parsing."""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from rmgr.nodes import Caller, ControlFile

if TYPE_CHECKING:  # cycle: the Control object owns these file groups, each holds it; types only
    from stack.control import Control

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPIf = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class ControlFiles:
    """One control file's two halves on one object: ``render`` answers reads (the
    table), ``command`` takes writes. Subclasses implement both."""

    def __init__(self, control: Control) -> None:
        self.control = control
        self.stack = control.stack

    def node(self) -> ControlFile:
        return ControlFile(self.command, self.render)

    def render(self) -> str:
        raise NotImplementedError

    def command(self, text: str, caller: Caller) -> str | Awaitable[str]:
        raise NotImplementedError


def require_root(caller: Caller, what: str) -> None:
    if not caller.is_root:
        raise OSError(errno.EPERM, f"{what} needs root")


def einval(msg: str) -> OSError:
    return OSError(errno.EINVAL, msg)


def parse_addr(text: str) -> IPAddr:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise einval(f"bad address: {text}") from None
    if addr.version != 4:
        raise OSError(errno.EAFNOSUPPORT, f"{text}: IPv6 is not supported yet")
    return addr


def parse_ifaddr(text: str, netmask: str | None = None) -> IPIf:
    """``10.0.0.2/24``, ``10.0.0.2`` + netmask (dotted or 0xffffff00), or a bare address
    (classful default as ifconfig does: here /32 for host-less input is wrong, so the
    natural class mask is used)."""
    addr_text, _, plen = text.partition("/")
    addr = parse_addr(addr_text)
    if plen and netmask:
        raise einval(f"{text}: give a prefix length or a netmask, not both")
    if netmask:
        try:
            mask = ipaddress.IPv4Address(int(netmask, 16)) if netmask.lower().startswith("0x") \
                else ipaddress.IPv4Address(netmask)
            iface = ipaddress.ip_interface(f"{addr}/{mask}")
        except ValueError:
            raise einval(f"bad netmask: {netmask}") from None
        return iface
    if not plen:
        first = int(addr) >> 24
        plen = "8" if first < 128 else "16" if first < 192 else "24"
    try:
        n = int(plen)
        if not 0 <= n <= addr.max_prefixlen:
            raise ValueError
        return ipaddress.ip_interface(f"{addr}/{n}")
    except ValueError:
        raise einval(f"bad prefix length in {text}") from None


def parse_dest(text: str, netmask: str | None = None, *, host: bool = False) -> IPNet:
    """A route destination: ``default``, ``10.1.0.0/16``, ``10.1.2.3`` (host), or an
    address with a netmask."""
    if text == "default":
        return ipaddress.IPv4Network("0.0.0.0/0")
    addr_text, _, plen = text.partition("/")
    addr = parse_addr(addr_text)
    try:
        if netmask:
            mask = ipaddress.IPv4Address(int(netmask, 16)) if netmask.lower().startswith("0x") \
                else ipaddress.IPv4Address(netmask)
            return ipaddress.ip_network(f"{addr}/{mask}", strict=False)
        if plen:
            n = int(plen)
            if not 0 <= n <= addr.max_prefixlen:
                raise ValueError
            return ipaddress.ip_network(f"{addr}/{n}", strict=False)
    except ValueError:
        raise einval(f"bad destination: {text}" + (f" netmask {netmask}" if netmask else "")) from None
    return ipaddress.ip_network(f"{addr}/{addr.max_prefixlen}")


def parse_int(text: str, what: str, lo: int | None = None, hi: int | None = None) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise einval(f"bad {what}: {text}") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"{lo if lo is not None else ''}..{hi if hi is not None else ''}"
        raise einval(f"{what} {v} out of range {rng}")
    return v


def take(words: list[str], what: str) -> str:
    """Pop the argument a keyword needs, or EINVAL saying which."""
    if not words:
        raise einval(f"{what} needs an argument")
    return words.pop(0)
