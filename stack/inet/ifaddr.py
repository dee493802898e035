"""Interface addresses: what the IPv4 data path consults and the management API
(stack/inet/manage.py) changes.

An ``IfAddr`` is a stack/addr.py ``Prefix`` (the address with its subnet's length) and a
directed broadcast address; it also carries the 32-bit forms the IPv4 data path compares
(source selection, ``iface_has``), computed once here so the hot path does no
conversion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stack.addr import Addr, Prefix, is_v4


@dataclass(slots=True, eq=False)
class IfAddr:
    prefix: Prefix
    ifname: str
    broadcast: Addr | None = None
    #: the IPv4 data path's 32-bit address and subnet mask (0 for another family)
    addr4: int = field(init=False, default=0)
    mask4: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if is_v4(self.prefix.addr):
            self.addr4 = self.prefix.addr & 0xFFFFFFFF
            self.mask4 = (0xFFFFFFFF << (32 - self.prefix.plen)) & 0xFFFFFFFF

    @property
    def addr(self) -> Addr:
        return self.prefix.addr

    @property
    def plen(self) -> int:
        return self.prefix.plen

    @property
    def network(self) -> Prefix:
        """The subnet (host bits cleared): what the connected route covers."""
        return Prefix(self.prefix.network, self.prefix.plen)

    def contains(self, a: Addr) -> bool:
        return self.prefix.contains(a)

    def contains4(self, bits: int) -> bool:
        """``contains`` for the IPv4 data path's 32-bit values."""
        return (bits ^ self.addr4) & self.mask4 == 0

    def __str__(self) -> str:
        return str(self.prefix)


class IfInet:
    """Per-interface IPv4 state (``iface.proto["inet"]``)."""

    __slots__ = ("addrs",)

    def __init__(self) -> None:
        self.addrs: list[IfAddr] = []
