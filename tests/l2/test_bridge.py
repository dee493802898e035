"""The bridge: two namespaces, each with its own TAP into one io-pkt, bridged; the
kernels ping (and stream TCP, offloads on) through the stack's bridge."""

from __future__ import annotations

import pytest
import trio

from stack.l2.bridge import BridgeInterface, create_bridge, destroy_bridge
from stack.l2.iface import IFF_PROMISC, IFF_UP, format_mac
from tests.conftest import needs_tun, running_stack
from tests.l2.helpers import PY, mac_of, nsrun

pytestmark = needs_tun

_SINK = ("import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
         "s.bind(('10.79.0.2',5001));s.listen();print('ready',flush=True)\nc,_=s.accept();n=0\n"
         "while True:\n d=c.recv(1<<20)\n if not d: break\n n+=len(d)\nprint(n)")
_SEND = ("import socket\ns=socket.create_connection(('10.79.0.2',5001),timeout=5)\n"
         "s.sendall(b'x'*(2<<20));s.close()")


@pytest.mark.parametrize("offload", [1, 0])
async def test_bridge_two_namespaces(netns_factory, offload: int) -> None:
    ns1, ns2 = str(netns_factory("b1")), str(netns_factory("b2"))
    for ns in (ns1, ns2):  # no IPv6 chatter (ND, MLD): the aging check wants silence
        await nsrun(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1")
    drivers = [("tap", f"name=tap0,netns={ns1},offload={offload}"),
               ("tap", f"name=tap1,netns={ns2},offload={offload}")]
    async with running_stack(drivers=drivers) as stack:
        t0, t1 = stack.interfaces["tap0"], stack.interfaces["tap1"]
        br = create_bridge(stack)
        assert br.name == "bridge0" and isinstance(br, BridgeInterface)
        br.add_member(t0)
        br.add_member(t1)
        assert t0.flags & IFF_PROMISC and t1.flags & IFF_PROMISC
        for i in (t0, t1, br):
            i.set_flags(IFF_UP)
        await nsrun(ns1, "ip", "addr", "add", "10.79.0.1/24", "dev", "tap0")
        await nsrun(ns2, "ip", "addr", "add", "10.79.0.2/24", "dev", "tap1")
        res = await nsrun(ns1, "ping", "-c", "2", "-i", "0.2", "-W", "2", "10.79.0.2", check=False)
        assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()
        k0, k1 = mac_of(ns1, "tap0"), mac_of(ns2, "tap1")
        table = {mac: port for mac, port, _left, _st in br.entries()}
        assert table[format_mac(k0)] == "tap0" and table[format_mac(k1)] == "tap1"
        assert "Address cache (max cache: 100, timeout: 1200)" in br.render()
        assert br.counters["forwarded"] >= 2 and br.counters["flooded_multicast"] >= 1

        # TCP through the bridge: with offloads on these are 64 KB super-segments with
        # partial checksums, forwarded with their virtio metadata
        sink = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", ns2, PY, "-c", _SINK], stdout=-1)
        try:
            assert sink.stdout is not None
            assert (await sink.stdout.receive_some(100)).startswith(b"ready")
            await nsrun(ns1, PY, "-c", _SEND)
            with trio.fail_after(10):
                out = b""
                while chunk := await sink.stdout.receive_some(100):
                    out += chunk
        finally:
            sink.kill()
            await sink.wait()
        assert int(out.split()[-1]) == 2 << 20
        if offload:
            assert t0.counters["rx_gso"] > 0

        # static entries, deladdr, flush, flushall, maxaddr
        br.add_static(b"\x02\x00\x00\x00\x00\x99", "tap1")
        br.flush()
        rows = br.entries()
        assert [(m, p, s) for m, p, _l, s in rows] == [("02:00:00:00:00:99", "tap1", True)]
        br.flushall()
        assert br.entries() == []
        br.set_maxaddr(1)
        await nsrun(ns1, "ping", "-c", "1", "-W", "2", "10.79.0.2", check=False)
        assert len(br.entries()) == 1 and br.counters["learn_table_full"] >= 1
        br.set_maxaddr(100)

        # aging with a short timeout: entries vanish without traffic
        await nsrun(ns1, "ping", "-c", "1", "-W", "2", "10.79.0.2")
        assert len(br.entries()) == 2
        br.set_timeout(1)
        await trio.sleep(1.3)
        assert br.entries() == [] and br.table == {}
        assert br.counters["aged"] >= 2

        destroy_bridge(stack, "bridge0")
        assert "bridge0" not in stack.interfaces
        assert not t0.flags & IFF_PROMISC and t0.l2_hook is None


async def test_bridge_local_delivery(netns) -> None:
    """Frames to the bridge's own MAC go up the bridge interface, not to a port."""
    ns = str(netns)
    async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")]) as stack:
        t0 = stack.interfaces["tap0"]
        br = create_bridge(stack, "bridge5")
        br.add_member(t0)
        t0.set_flags(IFF_UP)
        br.set_flags(IFF_UP)
        seen: list[str] = []
        stack.l2.register(0x88B5, lambda ifp, pkt: seen.append(ifp.name))
        try:
            from tests.l2.helpers import peer_exchange

            frame = br.mac + mac_of(ns, "tap0") + b"\x88\xb5" + bytes(46)
            await peer_exchange(ns, "tap0", 0x88B5, [frame], wait=0)
            with trio.fail_after(3):
                while not seen:
                    await trio.sleep(0.01)
        finally:
            stack.l2.unregister(0x88B5)
        assert seen == ["bridge5"] and br.counters["local"] == 1
        with pytest.raises(OSError):
            br.add_member(t0)  # already a member
