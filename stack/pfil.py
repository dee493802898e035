"""Packet filter hooks, as NetBSD's pfil(9) (and QNX's io-pkt, which uses it).

Heads and who runs them::

    "ether"  in/out   layer 2 (stack.l2.ether.Layer2): in = a received frame (Packet,
                      after the runt check, before bridge/VLAN/dispatch), out = the frame
                      about to be handed to the driver (a list of buffers, header first)
    "inet"   in/out   the IPv4 layer: in = the Packet (``pkt.l3`` at the IP header) after
                      header validation, out = the list of buffers of the IP datagram
                      (IP header first) before the link layer. Forwarded packets pass
                      "inet" in then out, as in NetBSD.
    "inet_out_prefrag"
             out      the IPv4 layer, after the route is chosen and before fragmentation
                      (IPsec's hook point, as NetBSD's ipsec4_output in ip_output): the
                      whole datagram as a list of buffers (IP header first, its total
                      length and checksum those of the whole datagram, which may exceed
                      the MTU); ``iface`` is the interface routing chose. Our own
                      datagrams and forwarded ones (TTL already lowered). A partial
                      checksum is completed and a TSO/USO super-segment cut into its
                      segments before the hooks (Linux's xfrm output does the same), so
                      a hook sees finished datagrams, each on its own. Besides pass,
                      drop and a replacement datagram (a buffer list; the IP layer reads
                      its header again), a hook may return ``Reroute(iface, nexthop,
                      bufs)``: send by another interface (a tunnel such as enc0, a
                      point-to-point link) and/or to another next hop, optionally with a
                      replacement datagram. Fragmentation then follows the datagram that
                      comes out, for the MTU of the interface it leaves by (DF set and
                      too big: EMSGSIZE for our own, ICMP "fragmentation needed" for a
                      forwarded one); then "inet" out runs on each datagram or fragment.
                      The "in" direction of this head is never run.
    "inet6"  in/out   the IPv6 layer (stack/inet6/ipv6.py), as "inet" for IPv4
    "inet6_out_prefrag"
             out      the IPv6 layer, after the route and the source address are chosen
                      and before source fragmentation (IPsec's IPv6 output point, as
                      NetBSD's ipsec6_output in ip6_output): the whole datagram (fixed
                      header first, payload length that of the whole datagram), our own
                      datagrams only (forwarded IPv6 datagrams do not pass it). Checksums
                      completed and super-segments cut first, as on "inet_out_prefrag",
                      and the same results (a ``Reroute``'s ``nexthop`` is a 128-bit
                      address); a datagram bigger than the MTU of the interface it leaves
                      by is fragmented at the source unless IPV6_DONTFRAG (EMSGSIZE).
    "ifnet"  events   interface attach / detach (called by the stack for every interface)
    "ifaddr" events   address added / deleted (the IPv4 layer calls ``run_event``)

A packet hook is ``fn(obj, iface, direction) -> result`` where result is

* ``PFIL_PASS`` (``None``/``True``): go on with ``obj`` unchanged,
* ``PFIL_DROP`` (``False``): drop the packet (the caller counts it),
* any other object: a replacement (a ``Packet`` in, a buffer list out — the same kind
  as ``obj``); the next hook and the stack see the replacement;
* on "inet_out_prefrag" and "inet6_out_prefrag" only, a ``Reroute`` (see above); the hooks after it see its
  datagram (``bufs``, or the one they would have seen) and the new interface is used.

Hooks of one head/direction run in order of ``priority`` (lower first), then of
registration. A hook that raises drops that packet; the error is counted
(``pfil.counters["hook_errors"]`` and per hook) and logged once per hook, and the stack
keeps running. Event hooks are ``fn(event, iface, *args) -> None``; raising is counted
and logged once.

Callers on the data path check ``if pfil.active(head, dir)`` (a list truth test) first,
so a stack without filters pays one attribute load per packet and direction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stack.addr import Addr
from stack.counters import Counters, names
from stack.packet import Buffer
from stack.registry import Registration

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack
    from stack.l2.iface import Interface

log = logging.getLogger("io-pkt.pfil")

PFIL_PASS: None = None
PFIL_DROP = False
PFIL_IN = 1
PFIL_OUT = 2
PFIL_ALL = PFIL_IN | PFIL_OUT

PacketHook = Callable[[Any, "Interface", str], Any]
EventHook = Callable[..., None]

#: the IPv4 output hook before fragmentation (see the module docstring)
INET_OUT_PREFRAG = "inet_out_prefrag"
#: the IPv6 output hook before source fragmentation (see the module docstring)
INET6_OUT_PREFRAG = "inet6_out_prefrag"

PACKET_HEADS = ("ether", "inet", "inet6", INET_OUT_PREFRAG, INET6_OUT_PREFRAG)


@dataclass(slots=True)
class Reroute:
    """What an "inet_out_prefrag" / "inet6_out_prefrag" hook returns to send the datagram another way: by
    ``iface`` (None: the one routing chose) to ``nexthop`` (None: the datagram's own
    destination when the interface changed, else the routed next hop), as ``bufs``
    (None: the datagram the hook was given)."""

    iface: Interface | None = None
    nexthop: Addr | None = None
    bufs: Sequence[Buffer] | None = None


EVENT_HEADS = ("ifnet", "ifaddr")


def head_counters(head: str) -> frozenset[str]:
    """A packet head's counters: ``<head>_<in|out>_<dropped|replaced>`` (``run_chain``),
    declared when the head is created."""
    return frozenset(f"{head}_{d}_{r}" for d in ("in", "out") for r in ("dropped", "replaced"))


#: the ``pfil`` group's names (stack/counters.py); a head a protocol creates adds its own
PFIL_COUNTERS: frozenset[str] = names("hook_errors").union(*map(head_counters, PACKET_HEADS))


@dataclass(eq=False)
class Hook:
    fn: Callable[..., Any]
    head: str
    dirs: int
    priority: int
    name: str
    seq: int
    errors: int = 0
    calls: int = 0
    drops: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Pfil:
    def __init__(self, stack: Stack | None = None) -> None:
        self.stack = stack
        self.counters = Counters("pfil", PFIL_COUNTERS)
        self._seq = 0
        self.hooks: list[Hook] = []
        #: (head, "in"/"out") → ordered hooks; event heads under (head, "event")
        self.chains: dict[tuple[str, str], list[Hook]] = {}
        for h in PACKET_HEADS:
            self.chains[(h, "in")] = []
            self.chains[(h, "out")] = []
        for h in EVENT_HEADS:
            self.chains[(h, "event")] = []
        # fast attributes for layer 2's hot path (same list objects as in chains)
        self.ether_in = self.chains[("ether", "in")]
        self.ether_out = self.chains[("ether", "out")]
        self.inet_in = self.chains[("inet", "in")]
        self.inet_out = self.chains[("inet", "out")]
        self.inet6_in = self.chains[("inet6", "in")]
        self.inet6_out = self.chains[("inet6", "out")]
        self.inet_out_prefrag = self.chains[(INET_OUT_PREFRAG, "out")]
        self.inet6_out_prefrag = self.chains[(INET6_OUT_PREFRAG, "out")]
        if stack is not None:
            stack.iface_listeners.append(self._iface_event)

    # -- registration ------------------------------------------------------------------
    def create_head(self, head: str, *, events: bool = False) -> Registration:
        """A protocol creates its own head (NetBSD's pfil_head_create): a packet head
        with in/out chains, or an event head. Its owner runs it with ``run``/``__call__``
        or ``run_event``; removing the registration removes the head and its hooks."""
        if (head, "in") in self.chains or (head, "event") in self.chains:
            raise ValueError(f"pfil head {head!r} already exists")
        keys = [(head, "event")] if events else [(head, "in"), (head, "out")]
        for key in keys:
            self.chains[key] = []
        if not events:
            self.counters.declare(head_counters(head))

        def undo() -> None:
            for hook in [h for h in self.hooks if h.head == head]:
                self.remove_hook(hook)
            for key in keys:
                self.chains.pop(key, None)

        return Registration(f"pfil head {head}", undo)

    def heads(self) -> list[str]:
        return sorted({head for head, _ in self.chains})

    def add_hook(self, fn: Callable[..., Any], head: str = "ether", dirs: int = PFIL_ALL,
                 *, priority: int = 0, name: str = "") -> Hook:
        """Register ``fn`` on ``head`` for ``dirs`` (PFIL_IN|PFIL_OUT; ignored for the
        event heads). Returns a handle for ``remove_hook``."""
        is_event = (head, "event") in self.chains
        if not is_event and (head, "in") not in self.chains:
            raise ValueError(f"unknown pfil head {head!r}")
        self._seq += 1
        hook = Hook(fn, head, dirs, priority, name or getattr(fn, "__name__", "hook"), self._seq)
        self.hooks.append(hook)
        if is_event:
            self._insert(self.chains[(head, "event")], hook)
        else:
            if dirs & PFIL_IN:
                self._insert(self.chains[(head, "in")], hook)
            if dirs & PFIL_OUT:
                self._insert(self.chains[(head, "out")], hook)
        self._changed()
        return hook

    @staticmethod
    def _insert(chain: list[Hook], hook: Hook) -> None:
        chain.append(hook)
        chain.sort(key=lambda h: (h.priority, h.seq))  # in place: fast aliases stay valid

    def remove_hook(self, hook: Hook) -> None:
        if hook in self.hooks:
            self.hooks.remove(hook)
        for chain in self.chains.values():
            if hook in chain:
                chain.remove(hook)
        self._changed()

    def _changed(self) -> None:
        # the fast-forward path must not bypass inet filters (layer 2 exists once the
        # Stack is built; hooks added while it is being built need no update)
        l2 = self.stack.__dict__.get("l2") if self.stack is not None else None
        if l2 is not None:
            l2.fastfwd.update_active()

    def active(self, head: str, direction: str) -> bool:
        return bool(self.chains[(head, direction)])

    def inet_filtered(self) -> bool:
        """Some hook must see every forwarded IPv4 packet ("inet" either way, the output
        hook before fragmentation): the fast-forward path must not bypass them."""
        return bool(self.inet_in or self.inet_out or self.inet_out_prefrag)

    # -- running -------------------------------------------------------------------------
    def run(self, head: str, direction: str, obj: Any, iface: Interface) -> Any:
        """Run the chain; returns the (possibly replaced) object, or None if dropped."""
        return self.run_chain(self.chains[(head, direction)], direction, obj, iface)

    def run_chain(self, chain: list[Hook], direction: str, obj: Any, iface: Interface) -> Any:
        c = self.counters
        for hook in chain:
            hook.calls += 1
            try:
                res = hook.fn(obj, iface, direction)
            except Exception:
                hook.errors += 1
                c["hook_errors"] += 1
                if hook.errors == 1:
                    log.exception("pfil hook %s (%s %s) raised: packet dropped; later "
                                  "errors of this hook are only counted", hook.name,
                                  hook.head, direction)
                return None
            if res is None or res is True:
                continue
            if res is False:
                hook.drops += 1
                c[f"{hook.head}_{direction}_dropped"] += 1
                return None
            c[f"{hook.head}_{direction}_replaced"] += 1
            obj = res
        return obj

    def __call__(self, iface: Interface, obj: Any, direction: str, head: str = "inet") -> Any:
        """``pfil(iface, pkt, "in")``: run ``head``'s chain; the (possibly replaced)
        object, or None when dropped. Cheap when the chain is empty."""
        chain = self.chains[(head, direction)]
        if not chain:
            return obj
        return self.run_chain(chain, direction, obj, iface)

    def run_event(self, head: str, event: str, iface: Interface, *args: Any) -> None:
        """Event heads: ``run_event("ifaddr", "add", iface, addr)`` etc."""
        for hook in list(self.chains[(head, "event")]):
            hook.calls += 1
            try:
                hook.fn(event, iface, *args)
            except Exception:
                hook.errors += 1
                self.counters["hook_errors"] += 1
                if hook.errors == 1:
                    log.exception("pfil %s hook %s raised on %s", head, hook.name, event)

    def _iface_event(self, event: str, iface: Interface) -> None:
        if event in ("attach", "detach") and self.chains[("ifnet", "event")]:
            self.run_event("ifnet", event, iface)

    def render(self) -> str:
        lines = []
        for key, chain in self.chains.items():
            for h in chain:
                lines.append(f"{key[0]} {key[1]} prio={h.priority} {h.name} calls={h.calls} "
                             f"drops={h.drops} errors={h.errors}\n")
        return "".join(lines)

