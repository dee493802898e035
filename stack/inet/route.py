"""The routing table: longest-prefix match, connected/static/host routes, a default
gateway, metrics, several routes to one destination tried in insertion order (QNX 6.6:
the first whose interface is up wins; lower metric first, insertion order among equals).

One table serves both families: a route's destination is a stack/addr.py ``Prefix`` and
the match runs in the one 128-bit address space, where IPv4 lives at ``::ffff:0:0/96``
(an IPv4 /24 is a /120 there). An IPv4 destination is only matched by IPv4 routes (wide
prefix length 96 or more), so an IPv6 ``::/0`` never catches IPv4 traffic.

Lookups are memoised per destination, so their cost does not grow with the table; every
change bumps ``generation``, clears the memo and calls the change listeners (the
fast-forward cache invalidation, the route monitor).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stack.addr import ANY4, V4MAPPED, Addr, Prefix, format_addr, is_v4, mask128
from stack.counters import Counters
from stack.inet.counters import ROUTE_COUNTERS

# route flags (BSD letters)
RTF_UP = "U"
RTF_GATEWAY = "G"
RTF_HOST = "H"
RTF_STATIC = "S"
RTF_CONNECTED = "C"
RTF_LOCAL = "L"
RTF_BLACKHOLE = "B"
RTF_REJECT = "R"

CACHE_MAX = 4096
#: the wide prefix length of the IPv4-mapped block: IPv4 routes are this long or longer
V4_WIDE = 96


@dataclass(slots=True, eq=False)
class Route:
    """One route. ``prefix`` is the destination network (host bits are cleared when the
    route is added); ``gateway`` None means directly connected (on-link)."""

    prefix: Prefix
    gateway: Addr | None = None
    ifname: str = ""
    metric: int = 0
    mtu: int = 0  # 0: the interface MTU
    src: Addr | None = None  # preferred source (connected routes: the address that made them)
    kind: str = "static"  # connected | static | local
    reject: bool = False  # RTF_REJECT: unreachable (EHOSTUNREACH)
    blackhole: bool = False  # RTF_BLACKHOLE: silently dropped
    use: int = 0

    @property
    def dst(self) -> Addr:
        return self.prefix.addr

    @property
    def plen(self) -> int:
        """The prefix length in the destination's family (IPv4: 0-32)."""
        return self.prefix.plen

    @property
    def family(self) -> int:
        return self.prefix.family

    @property
    def flags(self) -> str:
        f = RTF_UP
        if self.gateway is not None:
            f += RTF_GATEWAY
        if self.prefix.is_host:
            f += RTF_HOST
        if self.kind == "static":
            f += RTF_STATIC
        elif self.kind == "connected":
            f += RTF_CONNECTED
        elif self.kind == "local":
            f += RTF_LOCAL
        if self.reject:
            f += RTF_REJECT
        if self.blackhole:
            f += RTF_BLACKHOLE
        return f

    @property
    def destination(self) -> str:
        if self.prefix.plen == 0:
            return "default"
        return str(self.prefix)

    def describe(self) -> dict[str, str]:
        return {
            "destination": self.destination,
            "gateway": format_addr(self.gateway) if self.gateway is not None else "link",
            "flags": self.flags,
            "metric": str(self.metric),
            "mtu": str(self.mtu) if self.mtu else "-",
            "interface": self.ifname or "-",
            "use": str(self.use),
        }


#: the memos' "not looked up yet" (None is a memoised miss)
_MISS = Route(Prefix(ANY4, 0))


class RouteTable:
    def __init__(self, usable: Callable[[Route], bool] | None = None) -> None:
        #: wide prefix length → network (128-bit) → routes, tried in order
        self._by_plen: dict[int, dict[int, list[Route]]] = {}
        #: what a lookup scans, longest first: (wide plen, its mask, its bucket)
        self._scan: list[tuple[int, int, dict[int, list[Route]]]] = []
        #: the same, IPv4 prefixes only (an IPv4 destination is never matched by
        #: an IPv6 route shorter than ::ffff:0:0/96)
        self._scan4: list[tuple[int, int, dict[int, list[Route]]]] = []
        self._cache: dict[int, Route | None] = {}
        #: the IPv4 data path's memo, keyed by the 32-bit value (see lookup_v4)
        self._cache4: dict[int, Route | None] = {}
        self.generation = 0
        self.listeners: list[Callable[[], None]] = []
        self.usable = usable or (lambda r: True)
        self.counters = Counters("route", ROUTE_COUNTERS)

    # -- lookup ----------------------------------------------------------------------
    def lookup(self, dst: Addr) -> Route | None:
        """Longest-prefix match; among routes to one destination the first usable."""
        cache = self._cache
        r = cache.get(dst, _MISS)
        if r is not _MISS:
            return r
        r = self._lookup(dst)
        if len(cache) >= CACHE_MAX:
            cache.clear()
        cache[dst] = r
        return r

    def lookup_v4(self, bits: int) -> Route | None:
        """``lookup(v4(bits))`` for the IPv4 data path, which holds 32-bit values: a memo
        of its own keyed by them. Measured (bench in docs/inet.md): 45 ns a hit, as the
        32-bit table before; ``lookup(V4MAPPED | bits)`` costs 68 ns (the OR allocates a
        128-bit int, whose hash is longer), ``lookup(v4(bits))`` 110 ns."""
        cache = self._cache4
        r = cache.get(bits, _MISS)
        if r is not _MISS:
            return r
        r = self._lookup(V4MAPPED | bits)
        if len(cache) >= CACHE_MAX:
            cache.clear()
        cache[bits] = r
        return r

    def _lookup(self, dst: int, skip: Route | None = None) -> Route | None:
        self.counters["lookups"] += 1
        for _, mask, bucket in (self._scan4 if is_v4(dst) else self._scan):
            routes = bucket.get(dst & mask)
            if routes:
                for r in routes:
                    if r is not skip and self.usable(r):
                        return r
        self.counters["lookup_miss"] += 1
        return None

    def exact(self, prefix: Prefix) -> list[Route]:
        """The routes to exactly ``prefix`` (host bits ignored), in the order tried."""
        return list(self._by_plen.get(prefix.wide, {}).get(prefix.network, ()))

    def __iter__(self) -> Iterator[Route]:
        """Every route in lookup order: longest prefix first."""
        for wide, _, bucket in self._scan:
            for net in sorted(bucket):
                yield from self._by_plen[wide][net]

    def __len__(self) -> int:
        return sum(len(v) for d in self._by_plen.values() for v in d.values())

    # -- changes ---------------------------------------------------------------------
    def changed(self) -> None:
        self.generation += 1
        self._cache.clear()
        self._cache4.clear()
        self.counters["changes"] += 1
        for fn in list(self.listeners):
            fn()

    def _rescan(self) -> None:
        self._scan = [(w, mask128(w), self._by_plen[w]) for w in sorted(self._by_plen, reverse=True)]
        self._scan4 = [s for s in self._scan if s[0] >= V4_WIDE]

    def add(self, route: Route) -> Route:
        p = route.prefix
        if p.addr != p.network:
            route.prefix = p = Prefix(p.network, p.plen)
        wide = p.wide
        new_plen = wide not in self._by_plen
        bucket = self._by_plen.setdefault(wide, {})
        routes = bucket.setdefault(p.addr, [])
        for r in routes:
            if r.gateway == route.gateway and r.ifname == route.ifname and r.kind == route.kind:
                raise OSError(errno.EEXIST, f"route to {route.destination} exists")
        # lower metric first; insertion order among equal metrics
        i = len(routes)
        while i > 0 and routes[i - 1].metric > route.metric:
            i -= 1
        routes.insert(i, route)
        if new_plen:
            self._rescan()
        self.changed()
        return route

    def _match(self, prefix: Prefix, gateway: Addr | None, ifname: str | None,
               kind: str | None = None) -> Route | None:
        for r in self._by_plen.get(prefix.wide, {}).get(prefix.network, ()):
            if gateway is not None and r.gateway != gateway:
                continue
            if ifname is not None and r.ifname != ifname:
                continue
            if kind is not None and r.kind != kind:
                continue
            return r
        return None

    def remove(self, route: Route) -> None:
        wide = route.prefix.wide
        bucket = self._by_plen.get(wide, {})
        routes = bucket.get(route.dst, [])
        if route in routes:
            routes.remove(route)
            if not routes:
                del bucket[route.dst]
            if not bucket:
                self._by_plen.pop(wide, None)
                self._rescan()
            self.changed()

    def delete(self, prefix: Prefix, gateway: Addr | None = None,
               ifname: str | None = None, kind: str | None = None) -> Route:
        r = self._match(prefix, gateway, ifname, kind)
        if r is None:
            raise OSError(errno.ESRCH, f"no route to {prefix}")
        self.remove(r)
        return r

    def change(self, prefix: Prefix, *, gateway: Addr | None = None,
               ifname: str | None = None, metric: int | None = None,
               mtu: int | None = None) -> Route:
        """Modify the first route to ``prefix`` (QNX/BSD ``route change``)."""
        r = self._match(prefix, None, None)
        if r is None:
            raise OSError(errno.ESRCH, f"no route to {prefix}")
        if gateway is not None:
            r.gateway = gateway
        if ifname is not None:
            r.ifname = ifname
        if mtu is not None:
            r.mtu = mtu
        if metric is not None and metric != r.metric:
            self.remove(r)
            r.metric = metric
            return self.add(r)
        self.changed()
        return r

    def remove_where(self, pred: Callable[[Route], bool]) -> list[Route]:
        gone = [r for r in self if pred(r)]
        for r in gone:
            self.remove(r)
        return gone

    # -- text ------------------------------------------------------------------------
    def render(self) -> str:
        """``netstat -rn`` style; see docs/inet.md."""
        rows = [r.describe() for r in self]
        head = f"{'Destination':<20} {'Gateway':<16} {'Flags':<6} {'Metric':>6} {'Mtu':>6} {'Use':>8}  Interface\n"
        out = [head]
        for d in rows:
            out.append(f"{d['destination']:<20} {d['gateway']:<16} {d['flags']:<6} "
                       f"{d['metric']:>6} {d['mtu']:>6} {d['use']:>8}  {d['interface']}\n")
        return "".join(out)
