"""The router side of Neighbor Discovery (rtadvd's job, RFC 4861 §6.2): in router mode
(``net.inet6.ip6.forwarding=1``) an interface with advertising enabled sends router
advertisements — unsolicited every MinRtrAdvInterval..MaxRtrAdvInterval (the first
three at most 16 s apart), and in answer to router solicitations — carrying its source
link-layer address, the link MTU when set, the prefixes (by default the /64s of the
interface's global addresses, on-link and autonomous) and RDNSS servers. Leaving router
mode, disabling advertising or stopping the stack sends a final advertisement with
router lifetime 0 (§6.2.5), so hosts drop this router at once.

Settings per interface (``enable``): ``prefixes`` (None: derived), ``mtu`` (0: none),
``rdnss``, ``lifetime`` (router lifetime, s), ``interval`` (max, s; min is a third),
``managed``/``other`` flags, ``hop_limit``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from stack.addr import Addr, Prefix
from stack.inet.timers import Timer
from stack.inet6.ifaddr import ALL_NODES, is_link_local, scope
from stack.inet6.wire import icmp6 as w6
from stack.l2.iface import Interface

if TYPE_CHECKING:  # cycle: the layer owns this part and the part calls back into it
    from stack.inet6.ipv6 import IPv6Layer

MAX_INITIAL_RTR_ADVERT_INTERVAL = 16.0
MAX_INITIAL_RTR_ADVERTISEMENTS = 3
MIN_DELAY_BETWEEN_RAS = 3.0
MAX_RA_DELAY_TIME = 0.5


@dataclass
class AdvertConfig:
    prefixes: list[Prefix] | None = None
    mtu: int = 0
    rdnss: list[Addr] = field(default_factory=list)
    rdnss_lifetime: int = 600
    lifetime: int = 1800
    interval: float = 600.0
    hop_limit: int = 64
    managed: bool = False
    other: bool = False
    valid_lifetime: int = 2592000
    preferred_lifetime: int = 604800
    # run time
    sent: int = 0
    last: float = -1e9
    timer: Timer | None = None


class RouterAdvertiser:
    def __init__(self, ip6: IPv6Layer) -> None:
        self.ip6 = ip6
        self.configs: dict[str, AdvertConfig] = {}
        ip6.stack.shutdown_hooks.append(self.shutdown)

    def enable(self, ifname: str, cfg: AdvertConfig | None = None) -> AdvertConfig:
        old = self.configs.get(ifname)
        if old is not None and old.timer is not None:
            old.timer.cancel()
        cfg = cfg or AdvertConfig()
        self.configs[ifname] = cfg
        self._schedule(ifname, 0.05)
        return cfg

    def disable(self, ifname: str) -> None:
        cfg = self.configs.pop(ifname, None)
        if cfg is None:
            return
        if cfg.timer is not None:
            cfg.timer.cancel()
        iface = self.ip6.stack.interfaces.get(ifname)
        if iface is not None and self.ip6.k_forwarding.value:
            self._send(iface, cfg, ALL_NODES, final=True)

    def active(self, ifname: str) -> bool:
        return ifname in self.configs and bool(self.ip6.k_forwarding.value)

    def forwarding_changed(self, on: bool) -> None:
        for ifname, cfg in self.configs.items():
            iface = self.ip6.stack.interfaces.get(ifname)
            if iface is None:
                continue
            if on:
                cfg.sent = 0
                self._schedule(ifname, 0.05)
            else:
                if cfg.timer is not None:
                    cfg.timer.cancel()
                    cfg.timer = None
                self._send(iface, cfg, ALL_NODES, final=True)

    def shutdown(self) -> None:
        """The stack stops: a final advertisement on every advertising interface."""
        if not self.ip6.k_forwarding.value:
            return
        for ifname, cfg in self.configs.items():
            iface = self.ip6.stack.interfaces.get(ifname)
            if iface is not None:
                self._send(iface, cfg, ALL_NODES, final=True)

    def solicited(self, iface: Interface, src: int) -> None:
        """A router solicitation: answer (multicast, after a small random delay)."""
        cfg = self.configs.get(iface.name)
        if cfg is None or not self.ip6.k_forwarding.value:
            return
        now = trio.current_time()
        delay = random.uniform(0, MAX_RA_DELAY_TIME)
        if now + delay - cfg.last < MIN_DELAY_BETWEEN_RAS:
            delay = cfg.last + MIN_DELAY_BETWEEN_RAS - now
        self._schedule(iface.name, delay)

    def _schedule(self, ifname: str, delay: float) -> None:
        cfg = self.configs.get(ifname)
        if cfg is None:
            return
        if cfg.timer is not None:
            cfg.timer.cancel()
        cfg.timer = self.ip6.timers.call_at(trio.current_time() + delay,
                                            lambda: self._periodic(ifname))

    def _periodic(self, ifname: str) -> None:
        cfg = self.configs.get(ifname)
        iface = self.ip6.stack.interfaces.get(ifname)
        if cfg is None or iface is None:
            return
        cfg.timer = None
        if not self.ip6.k_forwarding.value:
            return
        if iface.up:
            self._send(iface, cfg, ALL_NODES)
        cfg.sent += 1
        hi = cfg.interval
        lo = hi / 3
        nxt = random.uniform(lo, hi)
        if cfg.sent < MAX_INITIAL_RTR_ADVERTISEMENTS:
            nxt = min(nxt, MAX_INITIAL_RTR_ADVERT_INTERVAL)
        self._schedule(ifname, nxt)

    def _prefixes(self, iface: Interface, cfg: AdvertConfig) -> list[Prefix]:
        if cfg.prefixes is not None:
            return cfg.prefixes
        out: list[Prefix] = []
        for ia in self.ip6.iface_addrs(iface):
            if ia.usable and not is_link_local(ia.addr) and scope(ia.addr) > 2 and \
                    not ia.autoconf:
                p = ia.network
                if p not in out:
                    out.append(p)
        return out

    def _send(self, iface: Interface, cfg: AdvertConfig, dst: int, final: bool = False) -> None:
        ip6 = self.ip6
        src = None
        for ia in ip6.iface_addrs(iface):
            if ia.usable and is_link_local(ia.addr):
                src = ia.addr
                break
        if src is None:
            return  # RFC 4861 §6.2.2: RAs come from a link-local address
        opts = [w6.opt_lla(w6.OPT_SLLA, iface.mac)] if iface.mac else []
        if cfg.mtu:
            opts.append(w6.opt_mtu(cfg.mtu))
        for p in self._prefixes(iface, cfg):
            opts.append(w6.opt_prefix(p.network, p.plen, w6.PI_ONLINK | w6.PI_AUTO,
                                      cfg.valid_lifetime, cfg.preferred_lifetime))
        if cfg.rdnss:
            opts.append(w6.opt_rdnss(cfg.rdnss_lifetime, cfg.rdnss))
        flags = (w6.RA_MANAGED if cfg.managed else 0) | (w6.RA_OTHER if cfg.other else 0)
        msg = w6.ra(src, dst, cfg.hop_limit, flags, 0 if final else cfg.lifetime, 0, 0, opts)
        ip6.nd.counters["out_ra"] += 1
        cfg.last = trio.current_time()
        ip6.link_output(iface, src, dst, w6.NH_ICMPV6, [msg], 255)
