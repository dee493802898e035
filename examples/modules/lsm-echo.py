"""lsm-echo: the worked example of docs/architecture.md — a protocol module that uses
every registration a module context offers, each undone when the module unloads.

    io-pkt -d tap name=tap0 -p /path/to/examples/modules/lsm-echo.py
    io-pkt mount -T io-pkt /path/to/examples/modules/lsm-echo.py

What it does (small, but real):

* EtherType 0x88B5 (IEEE 802 "local experimental"): a frame of that type is answered with
  the same payload, back to its sender (a layer-2 echo, like an 802.1ag loopback).
* IP protocol 253 (RFC 3692 "experimentation") over IPv4: datagrams are counted, and an
  ICMP error about one is counted too — a transport in ``registries.transports``.
* A pfil head of its own, ``echo``, that runs on every echoed frame before it is sent
  (other modules may hook it), and a hook on the ``inet`` head counting IP packets in.
* An interface listener that counts attach / detach events.
* The service ``ECHO`` (this module's state) for other parts of the stack.
* Its own mount ``<prefix>/dev/echo`` with a ``status`` file of its counters.
"""

from __future__ import annotations

from typing import Any

from rmgr.nodes import Directory, TextFile
from stack.counters import Counters, names
from stack.l2.iface import Interface
from stack.loader import ModuleContext
from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.packet import Packet
from stack.pfil import PFIL_IN
from stack.registry import AF_INET, ServiceKey

ETHERTYPE_ECHO = 0x88B5
IPPROTO_EXPERIMENT = 253

#: its counters, declared (stack/counters.py): a name not listed raises in the tests
COUNTERS: frozenset[str] = names("""
    frames_in frames_filtered frames_not_sent frames_echoed datagrams_in icmp_errors
    inet_packets_seen
""") | frozenset(f"iface_{event}" for event in ("attach", "detach", "change"))


class Echo:
    """The module's state: a transport (``name``/``input``/``icmp_error``) as well."""

    name = "echo"

    def __init__(self, ctx: ModuleContext) -> None:
        self.stack = ctx.stack
        self.counters = Counters("echo", COUNTERS)

    # -- layer 2: the EtherType handler -------------------------------------------------
    def frame_in(self, iface: Interface, pkt: Packet) -> None:
        c = self.counters
        c["frames_in"] += 1
        payload = pkt.payload()
        stack = self.stack
        if stack.pfil.active("echo", "out"):
            replaced = stack.pfil(iface, payload, "out", head="echo")
            if replaced is None:
                c["frames_filtered"] += 1
                return
            payload = replaced
        if not pkt.src_mac or stack.l2.output(iface, bytes(pkt.src_mac), ETHERTYPE_ECHO,
                                              [bytes(payload)]) is False:
            c["frames_not_sent"] += 1
            return
        c["frames_echoed"] += 1

    # -- the transport: AF_INET protocol 253 ----------------------------------------------
    def input(self, info: Any) -> None:
        self.counters["datagrams_in"] += 1

    def icmp_error(self, icmp_type: int, code: int, src: Any, dst: Any, hdr: memoryview,
                   extra: int = 0) -> None:
        self.counters["icmp_errors"] += 1

    # -- pfil and interface events ---------------------------------------------------------
    def count_inet(self, pkt: object, iface: Interface, direction: str) -> None:
        self.counters["inet_packets_seen"] += 1

    def iface_event(self, event: str, iface: Interface) -> None:
        self.counters[f"iface_{event}"] += 1

    def render(self) -> str:
        return "".join(f"{k} {v}\n" for k, v in self.counters.snapshot().items())


#: the service other parts look this module up by: ``stack.services.get(ECHO)``
ECHO: ServiceKey[Echo] = ServiceKey("echo")


async def main(ctx: ModuleContext) -> None:
    echo = Echo(ctx)
    ctx.register_ethertype(ETHERTYPE_ECHO, echo.frame_in)
    ctx.register_transport(AF_INET, IPPROTO_EXPERIMENT, echo)
    ctx.create_pfil_head("echo")
    ctx.add_hook(echo.count_inet, "inet", PFIL_IN, name="echo-count")
    ctx.on_interface(echo.iface_event)
    ctx.service(ECHO, echo)
    prefix = ctx.stack.config.prefix
    await ctx.mount(Directory({"status": TextFile(echo.render)}), f"{prefix}/dev/echo",
                    fsname=f"echo{ctx.stack.config.instance}")
    ctx.started()


IO_PKT_MODULE = ModuleEntry(kind="protocol", api=MODULE_API_VERSION, entry=main,
                            description="example: one registration of every kind")
