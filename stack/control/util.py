"""Small helpers shared by the control files: their base class, permission checks,
argument parsing."""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from rmgr.nodes import Caller, ControlFile
from stack.addr import ANY4, Addr, Prefix, format_addr, from_ip, is_v4

if TYPE_CHECKING:  # cycle: the Control object owns these file groups, each holds it; types only
    from stack.control import Control

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def parse_addr(text: str, *, any_family: bool = False) -> Addr:
    """An address in its family's text form. Only IPv4 unless ``any_family`` (the stack
    has no IPv6 layer yet: EAFNOSUPPORT)."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise einval(f"bad address: {text}") from None
    if addr.version != 4 and not any_family:
        raise OSError(errno.EAFNOSUPPORT, f"{text}: IPv6 is not supported yet")
    return from_ip(addr)


def _netmask(text: str) -> IPAddr:
    """A dotted netmask or BSD's hexadecimal form (0xffffff00)."""
    return ipaddress.IPv4Address(int(text, 16)) if text.lower().startswith("0x") \
        else ipaddress.IPv4Address(text)


def parse_ifaddr(text: str, netmask: str | None = None) -> Prefix | Addr:
    """``10.0.0.2/24``, ``10.0.0.2`` + netmask (dotted or 0xffffff00), or a bare address:
    then the address alone, whose length the IP layer chooses (IPv4: the classful mask,
    as ifconfig does)."""
    addr_text, _, plen = text.partition("/")
    addr = parse_addr(addr_text)
    if plen and netmask:
        raise einval(f"{text}: give a prefix length or a netmask, not both")
    if netmask:
        try:
            return Prefix.from_ip(ipaddress.ip_interface(f"{format_addr(addr)}/{_netmask(netmask)}"))
        except ValueError:
            raise einval(f"bad netmask: {netmask}") from None
    if not plen:
        return addr
    try:
        n = int(plen)
        return Prefix(addr, n)
    except ValueError:
        raise einval(f"bad prefix length in {text}") from None


def parse_dest(text: str, netmask: str | None = None) -> Prefix:
    """A route destination: ``default``, ``10.1.0.0/16``, ``10.1.2.3`` (host), or an
    address with a netmask. Host bits are cleared (``10.1.2.3/16`` is 10.1.0.0/16)."""
    if text == "default":
        return Prefix(ANY4, 0)
    addr_text, _, plen = text.partition("/")
    addr = parse_addr(addr_text)
    try:
        if netmask:
            return Prefix.from_ip(ipaddress.ip_network(f"{format_addr(addr)}/{_netmask(netmask)}",
                                                       strict=False))
        if plen:
            p = Prefix(addr, int(plen))
            return Prefix(p.network, p.plen)
    except ValueError:
        raise einval(f"bad destination: {text}" + (f" netmask {netmask}" if netmask else "")) from None
    return Prefix(addr, 32 if is_v4(addr) else 128)


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


# -- IPv6 text (KAME forms: ``fe80::1%tap0``, ``2001:db8::2/64``) -----------------------
def parse_addr6(text: str) -> tuple[Addr, str | None]:
    """An IPv6 address with an optional zone: ``2001:db8::1`` → (addr, None),
    ``fe80::1%tap0`` → (addr, "tap0"). An IPv4 address is EAFNOSUPPORT (wrong family
    for the command); anything else EINVAL."""
    addr_text, sep, zone = text.partition("%")
    if sep and not zone:
        raise einval(f"bad address: {text} (empty scope after %)")
    try:
        ip = ipaddress.ip_address(addr_text)
    except ValueError:
        raise einval(f"bad address: {text}") from None
    a = from_ip(ip)
    if is_v4(a):
        raise OSError(errno.EAFNOSUPPORT, f"{text}: not an IPv6 address")
    return a, (zone or None)


def parse_prefix6(text: str, prefixlen: str | None = None, *,
                  default_plen: int = 64) -> tuple[Prefix, str | None]:
    """``2001:db8::2/64``, ``2001:db8::2`` + ``prefixlen 64``, or a bare address (its
    length ``default_plen``: KAME's 64 for an interface address). The zone is returned
    as parse_addr6 does."""
    addr_text, sep, plen_text = text.partition("/")
    if sep and prefixlen is not None:
        raise einval(f"{text}: give /LEN or prefixlen, not both")
    if prefixlen is not None:
        plen_text, sep = prefixlen, "/"
    a, zone = parse_addr6(addr_text)
    if not sep:
        return Prefix(a, default_plen), zone
    if not plen_text.isdigit():
        raise einval(f"bad prefix length: {plen_text or '(none)'}")
    plen = int(plen_text)
    if plen > 128:
        raise einval(f"bad prefix length: {plen} (0..128)")
    return Prefix(a, plen), zone


def format_addr6(a: int, ifname: str | None) -> str:
    """The KAME text form: a link-local (or link-scope multicast) address with its zone
    ``%IF``, any other address as it is."""
    text = format_addr(a)
    if ifname and not is_v4(a) and (a >> 118 == 0xFE80 >> 6 or a >> 112 == 0xFF02):
        return f"{text}%{ifname}"
    return text
