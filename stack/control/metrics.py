"""``config/metrics``: the stack's counters and gauges in the Prometheus text format
(version 0.0.4, which OpenMetrics parsers read too), so a node exporter's textfile
collector (``cat $SOCK/dev/socket/config/metrics > /var/lib/node_exporter/io-pkt.prom``)
or any scraper reads the stack without new code.

Families (every counter ends in ``_total``):

================================================  =======  ==============================
``iopkt_interface_{receive,transmit}_{packets,    counter  per ``interface``: BSD's
bytes,errors}_total``                                      if_data (ipackets, obytes...)
``iopkt_interface_drops_total``                   counter  ``interface``, ``reason``
                                                           (input_queue, output_queue and
                                                           each ``drop_*`` counter)
``iopkt_interface_events_total``                  counter  ``interface``, ``event``: the
                                                           interface's other counters
``iopkt_interface_up``, ``iopkt_interface_mtu``   gauge    ``interface``
``iopkt_drops_total``                             counter  ``protocol`` (the stats group:
                                                           ip, tcp, udp, ether...),
                                                           ``reason``: every ``drop_*``
``iopkt_protocol_events_total``                   counter  ``protocol``, ``event``: every
                                                           other counter of the group
``iopkt_fuse_requests_total``                     counter  FUSE requests served
``iopkt_tcp_connections``                         gauge    ``state``
``iopkt_sockets``                                 gauge    ``protocol``
``iopkt_routes``, ``iopkt_arp_entries``           gauge
``iopkt_info``                                    gauge    ``instance``, ``prefix``; 1
``process_cpu_seconds_total``,                    both     the io-pkt process, as
``process_resident_memory_bytes``,                         prometheus_client's process
``process_start_time_seconds``                             collector names them
================================================  =======  ==============================

``config/stats/<group>`` has the same counters as ``name value`` lines; this file adds the
types, labels and gauges a scraper needs.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from stack.control import backend
from stack.services import CONTROL, TRANSPORTS

if TYPE_CHECKING:  # cycle: the Stack owns the control part, which holds the Stack
    from stack.core import Stack

#: if_data → (family suffix); the rest of an interface's counters are events or drops
IF_STATS = {
    "ipackets": "receive_packets", "ibytes": "receive_bytes", "ierrors": "receive_errors",
    "opackets": "transmit_packets", "obytes": "transmit_bytes", "oerrors": "transmit_errors",
}
IF_QUEUE_DROPS = {"iqdrops": "input_queue", "oqdrops": "output_queue"}

_HELP = {
    "iopkt_interface_receive_packets_total": "Packets received by the interface.",
    "iopkt_interface_receive_bytes_total": "Bytes received by the interface.",
    "iopkt_interface_receive_errors_total": "Receive errors of the interface.",
    "iopkt_interface_transmit_packets_total": "Packets sent by the interface.",
    "iopkt_interface_transmit_bytes_total": "Bytes sent by the interface.",
    "iopkt_interface_transmit_errors_total": "Transmit errors of the interface.",
    "iopkt_interface_drops_total": "Packets the interface dropped, by reason.",
    "iopkt_interface_events_total": "The interface's other counters, by name.",
    "iopkt_interface_up": "1 when the interface is administratively up.",
    "iopkt_interface_mtu": "The interface's MTU in bytes.",
    "iopkt_drops_total": "Packets a protocol dropped, by protocol and reason.",
    "iopkt_protocol_events_total": "A protocol's other counters, by protocol and name.",
    "iopkt_fuse_requests_total": "FUSE requests the stack's mounts served.",
    "iopkt_tcp_connections": "TCP connections (and listeners) by state.",
    "iopkt_sockets": "Sockets by protocol.",
    "iopkt_routes": "Routes in the routing table.",
    "iopkt_arp_entries": "Entries in the ARP cache.",
    "iopkt_info": "The io-pkt instance; always 1.",
    "process_cpu_seconds_total": "User and system CPU time of the io-pkt process in seconds.",
    "process_resident_memory_bytes": "Resident memory of the io-pkt process in bytes.",
    "process_start_time_seconds": "Start time of the io-pkt process since the epoch.",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class _Out:
    """Samples grouped by family, written family by family (each TYPE once)."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] = {}

    def add(self, name: str, kind: str, value: float, **labels: str) -> None:
        fam = self.families.setdefault(name, (kind, []))
        fam[1].append((labels, value))

    def render(self) -> str:
        lines: list[str] = []
        for name, (kind, samples) in self.families.items():
            lines.append(f"# HELP {name} {_HELP.get(name, name)}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                v = int(value) if float(value).is_integer() else value
                lines.append(f"{name}{_labels(labels)} {v}")
        return "\n".join(lines) + "\n"


def _interfaces(out: _Out, stack: Stack) -> None:
    for name, iface in list(stack.interfaces.items()):
        c = dict(iface.counters.items())
        for key, suffix in IF_STATS.items():
            out.add(f"iopkt_interface_{suffix}_total", "counter", c.get(key, 0), interface=name)
        for key, reason in IF_QUEUE_DROPS.items():
            out.add("iopkt_interface_drops_total", "counter", c.get(key, 0),
                    interface=name, reason=reason)
        for key, v in sorted(c.items()):
            if key in IF_STATS or key in IF_QUEUE_DROPS:
                continue
            if key.startswith("drop_"):
                out.add("iopkt_interface_drops_total", "counter", v, interface=name,
                        reason=key[5:])
            else:
                out.add("iopkt_interface_events_total", "counter", v, interface=name,
                        event=key)
        out.add("iopkt_interface_up", "gauge", 1 if iface.up else 0, interface=name)
        out.add("iopkt_interface_mtu", "gauge", iface.mtu, interface=name)


def _protocols(out: _Out, groups: Mapping[str, Mapping[str, int]]) -> None:
    # every declared family once, even with no sample yet
    out.families.setdefault("iopkt_drops_total", ("counter", []))
    out.families.setdefault("iopkt_protocol_events_total", ("counter", []))
    for group, values in sorted(groups.items()):
        for key, v in sorted(values.items()):
            if key.startswith("drop_"):
                out.add("iopkt_drops_total", "counter", v, protocol=group, reason=key[5:])
            else:
                out.add("iopkt_protocol_events_total", "counter", v, protocol=group, event=key)


def _sockets(out: _Out, stack: Stack) -> None:
    t = stack.services.get(TRANSPORTS)
    states: Counter[str] = Counter()
    socks: Counter[str] = Counter()
    if t is not None:
        for c in t.tcp.connections():
            states[c.state.name] += 1
        socks["tcp"] = sum(states.values())
        socks["udp"] = sum(len(v) for v in list(t.udp.ports.values()))
        socks["raw"] = len(t.raw.sockets)
    out.families.setdefault("iopkt_tcp_connections", ("gauge", []))
    for state, n in sorted(states.items()):
        out.add("iopkt_tcp_connections", "gauge", n, state=state)
    for proto, n in sorted(socks.items()):
        out.add("iopkt_sockets", "gauge", n, protocol=proto)
    out.add("iopkt_routes", "gauge", len(backend.list_routes(stack)))
    out.add("iopkt_arp_entries", "gauge", len(backend.list_arp(stack)))


def process_stats(pid: int | str = "self") -> tuple[float, int, float]:
    """(CPU seconds, RSS bytes, start time since the epoch) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tck
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    with open("/proc/stat") as f:
        btime = next((int(ln.split()[1]) for ln in f if ln.startswith("btime ")), 0)
    return cpu, rss, btime + int(fields[19]) / tck


def render(stack: Stack) -> str:
    out = _Out()
    control = stack.services.get(CONTROL)
    groups: dict[str, Mapping[str, int]] = dict(control.stats.collect()) if control else {}
    _interfaces(out, stack)
    fuse = groups.get("fuse", {})
    out.add("iopkt_fuse_requests_total", "counter", fuse.get("requests", 0))
    _protocols(out, groups)
    _sockets(out, stack)
    c = stack.config
    out.add("iopkt_info", "gauge", 1, instance=str(c.instance), prefix=c.prefix or "/")
    try:
        cpu, rss, start = process_stats()
    except (OSError, ValueError, IndexError):  # no /proc: leave the process out
        cpu, rss, start = 0.0, 0, time.time()
    out.add("process_cpu_seconds_total", "counter", round(cpu, 2))
    out.add("process_resident_memory_bytes", "gauge", rss)
    out.add("process_start_time_seconds", "gauge", round(start, 2))
    return out.render()
