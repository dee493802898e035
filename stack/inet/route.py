"""The IPv4 routing table: longest-prefix match, connected/static/host routes, a default
gateway, metrics, several routes to one destination tried in insertion order (QNX 6.6:
the first whose interface is up wins; lower metric first, insertion order among equals).

Lookups are memoised per destination; every change bumps ``generation``, clears the
memo and calls the change listeners (the fast-forward cache invalidation).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from stack.counters import Counters
from stack.inet.wire.ipv4 import int_to_ip, prefix_mask

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


@dataclass(slots=True, eq=False)
class Route:
    dst: int
    plen: int
    gateway: int = 0  # 0: directly connected (on-link)
    ifname: str = ""
    metric: int = 0
    mtu: int = 0  # 0: the interface MTU
    src: int = 0  # preferred source (connected routes: the address that made them)
    kind: str = "static"  # connected | static | local
    reject: bool = False  # RTF_REJECT: unreachable (EHOSTUNREACH)
    blackhole: bool = False  # RTF_BLACKHOLE: silently dropped
    use: int = 0

    @property
    def flags(self) -> str:
        f = RTF_UP
        if self.gateway:
            f += RTF_GATEWAY
        if self.plen == 32:
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
        if self.plen == 0 and self.dst == 0:
            return "default"
        return f"{int_to_ip(self.dst)}/{self.plen}"

    def describe(self) -> dict[str, str]:
        return {
            "destination": self.destination,
            "gateway": int_to_ip(self.gateway) if self.gateway else "link",
            "flags": self.flags,
            "metric": str(self.metric),
            "mtu": str(self.mtu) if self.mtu else "-",
            "interface": self.ifname or "-",
            "use": str(self.use),
        }


class RouteTable:
    def __init__(self, usable: Callable[[Route], bool] | None = None) -> None:
        self._by_plen: dict[int, dict[int, list[Route]]] = {}
        self._plens: list[int] = []
        self._cache: dict[int, Route | None] = {}
        self.generation = 0
        self.listeners: list[Callable[[], None]] = []
        self.usable = usable or (lambda r: True)
        self.counters = Counters("route")

    # -- lookup ----------------------------------------------------------------------
    def lookup(self, dst: int) -> Route | None:
        """Longest-prefix match; among routes to one destination the first usable."""
        cache = self._cache
        r = cache.get(dst, False)
        if r is not False:
            return r  # type: ignore[return-value]
        r = self._lookup(dst)
        if len(cache) >= CACHE_MAX:
            cache.clear()
        cache[dst] = r
        return r

    def _lookup(self, dst: int, skip: Route | None = None) -> Route | None:
        self.counters["lookups"] += 1
        for plen in self._plens:
            routes = self._by_plen[plen].get(dst & prefix_mask(plen))
            if routes:
                for r in routes:
                    if r is not skip and self.usable(r):
                        return r
        self.counters["lookup_miss"] += 1
        return None

    def exact(self, dst: int, plen: int) -> list[Route]:
        return list(self._by_plen.get(plen, {}).get(dst & prefix_mask(plen), ()))

    def __iter__(self) -> Iterator[Route]:
        for plen in self._plens:
            for net in sorted(self._by_plen[plen]):
                yield from self._by_plen[plen][net]

    def __len__(self) -> int:
        return sum(len(v) for d in self._by_plen.values() for v in d.values())

    # -- changes ---------------------------------------------------------------------
    def changed(self) -> None:
        self.generation += 1
        self._cache.clear()
        self.counters["changes"] += 1
        for fn in list(self.listeners):
            fn()

    def add(self, route: Route) -> Route:
        route.dst &= prefix_mask(route.plen)
        bucket = self._by_plen.setdefault(route.plen, {})
        routes = bucket.setdefault(route.dst, [])
        for r in routes:
            if r.gateway == route.gateway and r.ifname == route.ifname and r.kind == route.kind:
                raise OSError(errno.EEXIST, f"route to {route.destination} exists")
        # lower metric first; insertion order among equal metrics
        i = len(routes)
        while i > 0 and routes[i - 1].metric > route.metric:
            i -= 1
        routes.insert(i, route)
        if route.plen not in self._plens:
            self._plens.append(route.plen)
            self._plens.sort(reverse=True)
        self.changed()
        return route

    def _match(self, dst: int, plen: int, gateway: int | None, ifname: str | None,
               kind: str | None = None) -> Route | None:
        for r in self._by_plen.get(plen, {}).get(dst & prefix_mask(plen), ()):
            if gateway is not None and r.gateway != gateway:
                continue
            if ifname is not None and r.ifname != ifname:
                continue
            if kind is not None and r.kind != kind:
                continue
            return r
        return None

    def remove(self, route: Route) -> None:
        bucket = self._by_plen.get(route.plen, {})
        routes = bucket.get(route.dst, [])
        if route in routes:
            routes.remove(route)
            if not routes:
                del bucket[route.dst]
            if not bucket:
                self._by_plen.pop(route.plen, None)
                self._plens.remove(route.plen)
            self.changed()

    def delete(self, dst: int, plen: int, gateway: int | None = None,
               ifname: str | None = None, kind: str | None = None) -> Route:
        r = self._match(dst, plen, gateway, ifname, kind)
        if r is None:
            raise OSError(errno.ESRCH, f"no route to {int_to_ip(dst)}/{plen}")
        self.remove(r)
        return r

    def change(self, dst: int, plen: int, *, gateway: int | None = None,
               ifname: str | None = None, metric: int | None = None,
               mtu: int | None = None) -> Route:
        """Modify the first route to dst/plen (QNX/BSD ``route change``)."""
        r = self._match(dst, plen, None, None)
        if r is None:
            raise OSError(errno.ESRCH, f"no route to {int_to_ip(dst)}/{plen}")
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
