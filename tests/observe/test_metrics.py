"""``$SOCK/dev/socket/config/metrics`` is valid Prometheus text (prometheus_client's own
parser reads it) and its figures follow the traffic: interface packets and bytes, drops
by protocol and reason, TCP connections by state, FUSE requests, the process's CPU and
RSS."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import needs_fuse, needs_tun

from .conftest import ADDR

pytestmark = [needs_fuse, needs_tun]

parser = pytest.importorskip("prometheus_client.parser")


def scrape(sp: object) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """family name → {sorted labels: value}, every sample through prometheus_client."""
    text = open(f"{sp.prefix}/dev/socket/config/metrics").read()  # type: ignore[attr-defined]
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    types: dict[str, str] = {}
    for fam in parser.text_string_to_metric_families(text):
        types[fam.name] = fam.type
        assert fam.documentation, fam.name
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    scrape.types = types  # type: ignore[attr-defined]
    return out


def one_value(m: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str,
              **labels: str) -> float:
    return m[name][tuple(sorted(labels.items()))]


def test_metrics_parse_and_follow_traffic(one: tuple[object, object]) -> None:
    sp, ns = one
    before = scrape(sp)
    types = scrape.types  # type: ignore[attr-defined]
    assert types["iopkt_interface_receive_packets"] == "counter"
    assert types["iopkt_drops"] == "counter"
    assert types["iopkt_tcp_connections"] == "gauge"
    assert types["process_resident_memory_bytes"] == "gauge"
    assert one_value(before, "iopkt_interface_up", interface="tap0") == 1
    assert one_value(before, "iopkt_interface_mtu", interface="tap0") == 1500
    assert one_value(before, "iopkt_info", instance="0", prefix=sp.prefix) == 1  # type: ignore[attr-defined]
    assert before["process_resident_memory_bytes"][()] > 10e6
    assert before["iopkt_fuse_requests_total"][()] > 0

    # traffic: 20 pings, a TCP connection to a closed port (a RST: a counted event), UDP
    # with a bad checksum (a drop with a reason)
    ns.run("ping", "-c", "20", "-i", "0.01", "-q", ADDR)  # type: ignore[attr-defined]
    ns.run(sys.executable, "-c",  # type: ignore[attr-defined]
           "import socket,sys\ntry: socket.create_connection((sys.argv[1], 9), 2)\n"
           "except OSError: pass", ADDR)
    ns.run(sys.executable, "-c", _BAD_UDP, ADDR)  # type: ignore[attr-defined]
    # the bad datagram is fire-and-forget (no answer to wait for): the scrape may reach
    # the stack before the frame does, so scrape until it is counted (or 5 s went by)
    bad = (("protocol", "udp"), ("reason", "bad_checksum"))
    deadline = time.monotonic() + 5
    while True:
        after = scrape(sp)
        if after.get("iopkt_drops_total", {}).get(bad) or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    def delta(name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))
        return after[name].get(key, 0) - before.get(name, {}).get(key, 0)

    assert delta("iopkt_interface_receive_packets_total", interface="tap0") >= 21
    assert delta("iopkt_interface_transmit_packets_total", interface="tap0") >= 21
    assert delta("iopkt_interface_receive_bytes_total", interface="tap0") >= 20 * 98
    assert delta("iopkt_protocol_events_total", protocol="icmp", event="in_echo") == 20
    assert delta("iopkt_protocol_events_total", protocol="icmp", event="out_echo_reply") == 20
    assert delta("iopkt_protocol_events_total", protocol="tcp", event="rst_closed_port") == 1
    assert delta("iopkt_drops_total", protocol="udp", reason="bad_checksum") == 1
    assert delta("iopkt_fuse_requests_total") > 0
    assert delta("process_cpu_seconds_total") >= 0
    # the same counters as config/stats
    stats = dict(line.split() for line in open(
        f"{sp.prefix}/dev/socket/config/stats/tcp").read().splitlines())  # type: ignore[attr-defined]
    assert int(stats["rst_closed_port"]) == one_value(
        after, "iopkt_protocol_events_total", protocol="tcp", event="rst_closed_port")


def test_metrics_tcp_connection_gauges(one: tuple[object, object]) -> None:
    from rmgr import libsocket

    sp, ns = one
    with libsocket.patch(sp.prefix):  # type: ignore[attr-defined]
        ls = socket.socket()
        try:
            ls.bind(("0.0.0.0", 7000))
            ls.listen(2)
            client = ns.popen(sys.executable, "-c",  # type: ignore[attr-defined]
                              "import socket,sys,time\ns=socket.create_connection((sys.argv[1], 7000))\n"
                              "print('up', flush=True)\ntime.sleep(20)", ADDR,
                              stdout=subprocess.PIPE, text=True)
            try:
                c, _ = ls.accept()
                m = scrape(sp)
                assert one_value(m, "iopkt_tcp_connections", state="LISTEN") == 1
                assert one_value(m, "iopkt_tcp_connections", state="ESTABLISHED") == 1
                assert one_value(m, "iopkt_sockets", protocol="tcp") == 2
                c.close()
            finally:
                client.kill()
                client.communicate()
        finally:
            ls.close()


_BAD_UDP = """
import socket, struct, sys
# a UDP datagram with a wrong checksum, sent raw so the kernel leaves it as it is
dst = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
payload = b"hello"
s.sendto(struct.pack("!HHHH", 40000, 9999, 8 + len(payload), 0x1234) + payload, (dst, 0))
"""
