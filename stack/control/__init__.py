"""The control plane as files: everything under ``<prefix>/dev/socket/config/``.

QNX attaches ``/dev/socket/config``; here the stack's tree already has ``config/`` with
``status``, ``sysctl`` and ``modules`` (stack/core.py). This package adds the rest:

=====================  ===========  ====================================================
file                   kind         read / write
=====================  ===========  ====================================================
``interfaces``         control      stanzas per interface / ``NAME addr A/L``, ``create``...
``routes``             control      the routing table / ``add``, ``delete``, ``change``,
                                    ``get``, ``flush``
``route_monitor``      stream       blocks until the next change message (routing socket)
``arp``                control      the ARP cache / ``set``, ``delete``, ``flush``
``bridges``            control      bridges, members, learning tables / brconfig verbs
``ndp``                control      the IPv6 neighbour cache / ``set``, ``delete``, ``flush``
``ndp_prefixes``       text         on-link prefixes from router advertisements (ndp -p)
``ndp_routers``        text         default routers from router advertisements (ndp -r)
``rtadvd``             control      router advertisements sent / ``enable``, ``disable``
``stats/<proto>``      text         ``name value`` counters (ip icmp arp udp tcp ether
                                    stack, and any other group a component registers)
``sockets``            text         the socket list with TCP states
``nicinfo/<IF>``       text         driver facts and counters of one interface
``ping``               stream       write an echo request, read its result
``sockinfo``           text         every socket with its TCP_INFO fields (ss, top)
``metrics``            text         counters and gauges, Prometheus text format
=====================  ===========  ====================================================

Formats are documented in docs/control.md. Configuration writes need root (the caller's
uid from the FUSE request), every error is ``OSError(errno, message)``, which the
ControlFile plumbing answers as the write's errno plus ``error: ENAME: message``.

The tools (stack/tools) use nothing but these files.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rmgr.nodes import Directory, HandleFile, TextFile
from stack.control import backend, metrics, sockinfo
from stack.control.bridges import BridgeFiles
from stack.control.interfaces import InterfaceFiles
from stack.control.monitor import MonitorHub
from stack.control.ndp import NdpFiles
from stack.control.ping import PingHandle
from stack.control.routes import ArpFiles, RouteFiles
from stack.control.rtadvd import RtadvdFiles
from stack.control.stats import StatsFiles
from stack.l2.iface import Interface
from stack.services import CONTROL

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack

log = logging.getLogger("io-pkt.control")


class Control:
    """Owns the config files of one stack and the change monitor."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.monitor = MonitorHub(self)
        self.interfaces = InterfaceFiles(self)
        self.routes = RouteFiles(self)
        self.arp = ArpFiles(self)
        self.bridges = BridgeFiles(self)
        self.ndp = NdpFiles(self)
        self.rtadvd = RtadvdFiles(self)
        self.stats = StatsFiles(self)
        self._snapshot: dict[str, dict[str, str]] = {}
        self._route_hooked = False
        self._held = 0

    # -- publishing ------------------------------------------------------------------
    def publish(self, cfg: Directory) -> None:
        cfg.add("interfaces", self.interfaces.node())
        cfg.add("routes", self.routes.node())
        cfg.add("arp", self.arp.node())
        cfg.add("bridges", self.bridges.node())
        self.ndp.publish(cfg)  # ndp, ndp_prefixes, ndp_routers
        cfg.add("rtadvd", self.rtadvd.node())
        cfg.add("route_monitor", HandleFile(self.monitor.open, mode=0o444))
        cfg.add("ping", HandleFile(lambda req: PingHandle(self, req), mode=0o666))
        self.stats.publish(cfg)
        # observability (docs/observability.md): ss/top's socket list, Prometheus metrics
        cfg.add("sockinfo", TextFile(lambda: sockinfo.render(self.stack)))
        cfg.add("metrics", TextFile(lambda: metrics.render(self.stack)))

    # -- change tracking (the route monitor) -----------------------------------------
    def hook_listeners(self) -> None:
        self.stack.iface_listeners.append(self._on_iface)
        self.hook_routes()
        self._snapshot = self._take_snapshot()

    def hook_routes(self) -> None:
        """Listen to the route table once the IPv4 layer has one."""
        if not self._route_hooked:
            self._route_hooked = backend.watch_routes(self.stack, self.resync)

    def _on_iface(self, event: str, iface: Interface) -> None:
        name = iface.name
        if event == "attach":
            self.monitor.post("RTM_IFANNOUNCE", f"if {name} arrival")
        elif event == "detach":
            self.monitor.post("RTM_IFANNOUNCE", f"if {name} departure")
        self.resync()

    def _take_snapshot(self) -> dict[str, dict[str, str]]:
        snap: dict[str, dict[str, str]] = {"if": {}, "addr": {}, "route": {}}
        for name, iface in list(self.stack.interfaces.items()):
            snap["if"][name] = self.interfaces.ifinfo(iface)
            for a in backend.addresses(self.stack, iface):
                snap["addr"][f"{a.prefix} if {name}"] = ""
            for a6 in backend.addresses6(self.stack, iface):
                snap["addr"][f"{a6.prefix} if {name}"] = ""
        for r in backend.list_routes(self.stack):
            key = f"{r['destination']} gateway {r['gateway']} if {r['interface']}"
            snap["route"][key] = f"metric {r['metric']} flags {r['flags']}"
        return snap

    def hold(self) -> None:
        """A configuration write starts: coalesce its changes into one diff (so a
        metric change is one RTM_CHANGE, not a delete and an add)."""
        self._held += 1

    def resync(self) -> None:
        """Diff the state against the last snapshot and post one message per change."""
        if self._held:
            return
        try:
            new = self._take_snapshot()
        except Exception:  # a half-built layer must not break the caller
            log.exception("route monitor snapshot failed")
            return
        old = self._snapshot
        self._snapshot = new
        post = self.monitor.post
        for key in old.get("addr", {}):
            if key not in new["addr"]:
                post("RTM_DELADDR", f"address {key}")
        for key in new["addr"]:
            if key not in old.get("addr", {}):
                post("RTM_NEWADDR", f"address {key}")
        for key, val in old.get("route", {}).items():
            if key not in new["route"]:
                post("RTM_DELETE", f"dst {key} {val}")
        for key, val in new["route"].items():
            was = old.get("route", {}).get(key)
            if was is None:
                post("RTM_ADD", f"dst {key} {val}")
            elif was != val:
                post("RTM_CHANGE", f"dst {key} {val}")
        for name, info in new["if"].items():
            was = old.get("if", {}).get(name)
            if was is not None and was != info:
                post("RTM_IFINFO", f"if {name} {info}")

    def changed(self) -> None:
        """Called after every configuration write (paired with ``hold``)."""
        self._held = max(0, self._held - 1)
        self.hook_routes()
        self.resync()


def attach(stack: Stack) -> None:
    """Built-in component entry (stack/core.py builtin_components)."""
    control = Control(stack)
    stack.services.register(CONTROL, control)
    control.publish(stack.config_dir)
    control.hook_listeners()
