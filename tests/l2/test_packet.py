"""devnp-packet: an AF_PACKET socket on one end of a veth pair inside a test namespace;
the kernel on the other end is the peer."""

from __future__ import annotations

import pytest
import trio

from stack.l2.iface import IFF_PROMISC, IFF_UP
from stack.options import Options
from stack.packet import Packet
from tests.conftest import needs_root, running_stack
from tests.l2.helpers import Recorder, mac_of, nsrun, peer_exchange

pytestmark = needs_root

ETYPE_TEST = 0x88B5


async def _veth(ns: str) -> None:
    await nsrun(ns, "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb")
    await nsrun(ns, "ip", "link", "set", "va", "up")
    await nsrun(ns, "ip", "link", "set", "vb", "up")
    await nsrun(ns, "ip", "addr", "add", "10.78.0.1/24", "dev", "va")


@pytest.mark.parametrize("offload", [1, 0])
async def test_packet_frames_both_ways(netns, offload: int) -> None:
    ns = str(netns)
    await _veth(ns)
    async with running_stack(drivers=[("packet", f"if=vb,netns={ns},offload={offload}")]) as stack:
        iface = stack.interfaces["pkt0"]
        assert iface.mac == mac_of(ns, "vb")
        iface.set_flags(IFF_UP)
        rec = Recorder(iface)
        kmac = mac_of(ns, "va")

        def handler(ifp, pkt: Packet) -> None:
            stack.l2.output(ifp, pkt.src_mac, ETYPE_TEST, [b"echo:", pkt.payload()])

        stack.l2.register(ETYPE_TEST, handler)
        try:
            frame = iface.mac + kmac + ETYPE_TEST.to_bytes(2, "big") + b"ping" + bytes(50)
            got = await peer_exchange(ns, "va", ETYPE_TEST, [frame])
        finally:
            stack.l2.unregister(ETYPE_TEST)
        assert got and got[0][14:23] == b"echo:ping"
        assert iface.counters["ipackets"] >= 1 and iface.counters["opackets"] == 1

        # a TCP SYN from the kernel: never checksummed on a veth (CHECKSUM_PARTIAL), and
        # the driver says so through the virtio header (offload=1) or auxdata (offload=0)
        mac_s = ":".join(f"{b:02x}" for b in iface.mac)
        await nsrun(ns, "ip", "neigh", "replace", "10.78.0.2", "lladdr", mac_s, "nud",
                    "permanent", "dev", "va")
        proc = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", ns, "timeout", "3", "bash", "-c",
             "exec 3<>/dev/tcp/10.78.0.2/9 || true"])
        try:
            syn = await rec.wait_for(lambda p: len(p.data) >= 54 and p.data[12:14] == b"\x08\x00"
                                     and p.data[23] == 6)
        finally:
            proc.kill()
            await proc.wait()
        assert syn.csum_partial and syn.csum_valid


async def test_packet_promisc_and_vlan_tag(netns) -> None:
    ns = str(netns)
    await _veth(ns)
    async with running_stack(drivers=[("packet", f"if=vb,netns={ns},promisc,name=en0")]) as stack:
        iface = stack.interfaces["en0"]
        assert iface.flags & IFF_PROMISC
        out = (await nsrun(ns, "ip", "-d", "link", "show", "vb")).stdout.decode()
        assert "promiscuity 1" in out
        iface.set_flags(IFF_UP)
        rec = Recorder(iface)
        # a tagged frame to some other MAC: seen (promiscuous), with its tag in place
        # (this kernel has no 8021q module: the tagged frame is written raw on va; vb's
        # receive path strips the tag into metadata, the driver puts it back)
        frame = (b"\x02\x11\x22\x33\x44\x55" + mac_of(ns, "va") + b"\x81\x00\x00\x06"
                 + b"\x88\xb5" + bytes(50))
        await peer_exchange(ns, "va", ETYPE_TEST, [frame], wait=0)
        pkt = await rec.wait_for(lambda p: p.data[:6] == frame[:6])
        assert bytes(pkt.data[12:16]) == b"\x81\x00\x00\x06"
        assert bytes(pkt.data[16:18]) == b"\x88\xb5"
        assert iface.counters["rx_vlan_reinserted"] >= 1
        iface.set_promisc(False)  # the module's own reference
        out = (await nsrun(ns, "ip", "-d", "link", "show", "vb")).stdout.decode()
        assert "promiscuity 0" in out


async def test_packet_needs_if() -> None:
    from stack.loader import LoadError

    async with running_stack() as stack:
        with pytest.raises(LoadError, match="if="):
            await stack.modules.load("packet", "driver", Options.parse(""))
