"""devnp-tap against the kernel: frames both ways, offloads on and off, cleanup."""

from __future__ import annotations

import struct

import pytest
import trio

from stack.l2.iface import IFF_UP
from stack.netns import link_exists
from stack.packet import Packet
from tests.conftest import needs_tun, running_stack
from tests.l2.helpers import Recorder, mac_of, nsrun, peer_exchange

pytestmark = needs_tun

ETYPE_TEST = 0x88B5  # IEEE local experimental


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@pytest.mark.parametrize("offload", [1, 0])
async def test_tap_frames_both_ways(netns, offload: int) -> None:
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns},offload={offload}")]) as stack:
        iface = stack.interfaces["tap0"]
        assert iface.driver == "tap"
        # "uso" (UDP segmentation) too where the kernel has it (6.2+)
        assert iface.offloads - {"uso"} == ({"csum", "tso4", "tso6"} if offload else set())
        iface.set_flags(IFF_UP)
        rec = Recorder(iface)
        kmac = mac_of(str(netns), "tap0")
        # a protocol of our own on the dispatch table echoes frames back to the sender
        echoed: list[bytes] = []

        def handler(ifp, pkt: Packet) -> None:
            payload = bytes(pkt.payload())
            echoed.append(payload)
            stack.l2.output(ifp, pkt.src_mac, ETYPE_TEST, [b"echo:", payload])

        stack.l2.register(ETYPE_TEST, handler)
        try:
            frame = iface.mac + kmac + ETYPE_TEST.to_bytes(2, "big") + b"hello" + bytes(50)
            got = await peer_exchange(str(netns), "tap0", ETYPE_TEST, [frame])
            assert echoed and echoed[0].startswith(b"hello")
            assert got, "the echo did not reach the kernel side"
            assert got[0][:6] == kmac and got[0][6:12] == iface.mac
            assert got[0][14:24] == b"echo:hello"
        finally:
            stack.l2.unregister(ETYPE_TEST)
        assert iface.counters["ipackets"] >= 1 and iface.counters["opackets"] >= 1
        assert stack.l2.counters["in_" + hex(ETYPE_TEST)] >= 1

        # the kernel as a real peer: address + static neighbour in the namespace, then a
        # TCP SYN to the stack's address arrives with (offload on) a partial checksum
        await nsrun(str(netns), "ip", "addr", "add", "10.77.0.1/24", "dev", "tap0")
        mac_s = ":".join(f"{b:02x}" for b in iface.mac)
        await nsrun(str(netns), "ip", "neigh", "replace", "10.77.0.2", "lladdr", mac_s,
                    "nud", "permanent", "dev", "tap0")
        proc = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", str(netns), "timeout", "3", "bash", "-c",
             "exec 3<>/dev/tcp/10.77.0.2/9 || true"])
        try:
            syn = await rec.wait_for(lambda p: len(p.data) >= 54 and p.data[12:14] == b"\x08\x00"
                                     and p.data[23] == 6)
        finally:
            proc.kill()
            await proc.wait()
        assert syn.csum_partial is bool(offload)
        assert syn.csum_valid is bool(offload)
        if not offload:  # the kernel filled the checksum in: verify it
            d = bytes(syn.data)
            ihl = (d[14] & 0xF) * 4
            tcp = d[14 + ihl:]
            pseudo = d[26:34] + b"\x00\x06" + len(tcp).to_bytes(2, "big")
            assert _csum(pseudo + tcp) == 0xFFFF


async def test_tap_link_and_cleanup(netns) -> None:
    async with running_stack(drivers=[("tap", f"netns={netns},mtu=9000,mac=02:00:00:00:00:07")]) as stack:
        iface = stack.interfaces["tap0"]  # default name: the first free tapN
        assert iface.mac == bytes.fromhex("020000000007") and iface.mtu == 9000
        out = (await nsrun(str(netns), "ip", "-o", "link", "show", "tap0")).stdout.decode()
        assert "mtu 9000" in out and "state DOWN" in out
        iface.set_flags(IFF_UP)
        out = (await nsrun(str(netns), "ip", "-o", "link", "show", "tap0")).stdout.decode()
        assert ",UP" in out
        # a second tap takes the next name
        await stack.modules.load("tap", "driver", __import__("stack.options").options.Options.parse(f"netns={netns}"))
        assert "tap1" in stack.interfaces
        assert link_exists("tap1", str(netns))
        stack.detach_interface("tap1")
        await trio.sleep(0.05)
        assert not link_exists("tap1", str(netns))
        assert "tap1" not in stack.interfaces
    assert not link_exists("tap0", str(netns))  # cleanup deleted the device


async def test_tap_bad_netns_fails_load() -> None:
    async with running_stack() as stack:
        from stack.loader import LoadError
        from stack.options import Options
        with pytest.raises(LoadError, match="network namespace"):
            await stack.modules.load("tap", "driver", Options.parse("netns=iopkt-does-not-exist"))
        assert not any(n.startswith("tap") for n in stack.interfaces)
