"""802.1Q VLANs against the kernel, destination MAC filtering, multicast join, lo0, and
the fast-forward hook."""

from __future__ import annotations

import textwrap

import pytest
import trio

from stack.core import Stack, StackConfig
from stack.l2.ether import ETHERTYPE_IPV4, ipv4_multicast_mac
from stack.l2.iface import IFF_UP, Interface
from stack.l2.vlan import VlanInterface, create_vlan, destroy_vlan
from stack.packet import Packet
from tests.conftest import needs_tun, running_stack
from tests.l2.helpers import PY, mac_of

ET = 0x88B5

# In the namespace (this kernel has no 8021q module, so no `ip link add ... type vlan`):
# send a tagged frame raw on tap0, then report frames seen with their VLAN tag, read
# from PACKET_AUXDATA (the kernel moves a received tag into metadata).
_VLAN_PEER = textwrap.dedent("""
    import socket, struct, sys, time
    frame = bytes.fromhex(sys.argv[1])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind(("tap0", 0))
    s.setsockopt(263, 8, 1)  # PACKET_AUXDATA
    s.settimeout(0.05)
    s.send(frame)
    end = time.monotonic() + 3
    while time.monotonic() < end:
        try:
            data, anc, fl, addr = s.recvmsg(4096, socket.CMSG_SPACE(20))
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        vid = None
        for lvl, typ, d in anc:
            st, _l, _s, _m, _n, tci, _tp = struct.unpack("IIIHHHH", d[:20])
            if st & 0x10:
                vid = tci & 0xFFF
        if data[12:14] == b"\\x81\\x00":
            vid, data = int.from_bytes(data[14:16], "big") & 0xFFF, data[:12] + data[16:]
        if data[12:14] == b"\\x88\\xb5":
            print(vid, data[14:24].hex())
            break
""")


@needs_tun
async def test_vlan_tagged_in_and_out(netns) -> None:
    ns = str(netns)
    async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")]) as stack:
        t0 = stack.interfaces["tap0"]
        vif = create_vlan(stack, "vlan0")  # ifconfig vlan0 create
        vif.configure(t0, 6)  # ifconfig vlan0 vlan 6 vlanif tap0
        assert isinstance(vif, VlanInterface) and vif.mac == t0.mac and t0.vlans[6] is vif
        t0.set_flags(IFF_UP)
        vif.set_flags(IFF_UP)
        seen: list[str] = []

        def echo(ifp: Interface, pkt: Packet) -> None:
            seen.append(f"{ifp.name}:{pkt.vlan}")
            stack.l2.output(ifp, pkt.src_mac, ET, [b"re:", pkt.payload()[:7]])

        stack.l2.register(ET, echo)
        try:
            frame = (t0.mac + mac_of(ns, "tap0") + b"\x81\x00\x00\x06" + b"\x88\xb5"
                     + b"tagged!" + bytes(40))
            res = await trio.run_process(["ip", "netns", "exec", ns, PY, "-c", _VLAN_PEER,
                                          frame.hex()], capture_stdout=True)
            vid, payload = res.stdout.decode().split()
            assert seen == ["vlan0:6"]
            assert vid == "6" and bytes.fromhex(payload) == b"re:tagged!"
            assert vif.counters["ipackets"] == 1 and vif.counters["opackets"] == 1
            assert stack.l2.counters["in_vlan"] == 1
            # an unknown VID is dropped and counted
            frame7 = frame[:14] + b"\x00\x07" + frame[16:]
            await trio.run_process(["ip", "netns", "exec", ns, PY, "-c",
                                    "import socket,sys;s=socket.socket(17,3);s.bind(('tap0',0));"
                                    "s.send(bytes.fromhex(sys.argv[1]))", frame7.hex()])
            with trio.fail_after(2):
                while not stack.l2.counters["drop_vlan_unknown"]:
                    await trio.sleep(0.01)
        finally:
            stack.l2.unregister(ET)
        destroy_vlan(stack, "vlan0")
        assert 6 not in t0.vlans and "vlan0" not in stack.interfaces


class Wire(Interface):
    """A test driver: remembers what it was asked to send."""

    def __init__(self, name: str, mac: bytes) -> None:
        super().__init__(name, mac=mac, driver="test")
        self.sent: list[bytes] = []

    def transmit(self, bufs, meta) -> bool:  # type: ignore[no-untyped-def]
        self.sent.append(b"".join(bytes(b) for b in bufs))
        return True


def _stack_with(*ifaces: Interface) -> Stack:
    stack = Stack(StackConfig(mount=False))
    for i in ifaces:
        stack.attach_interface(i)
        i.set_flags(IFF_UP)
    return stack


def test_destination_mac_filter_and_multicast() -> None:
    a = Wire("w0", b"\x02\x00\x00\x00\x00\x01")
    stack = _stack_with(a)
    got: list[bytes] = []
    stack.l2.register(ET, lambda ifp, pkt: got.append(bytes(pkt.data[:6])))
    src = b"\x02\x00\x00\x00\x00\x02"
    group = ipv4_multicast_mac(0xE0000001 + 250)
    assert group == bytes.fromhex("01005e0000fb")

    def rx(dst: bytes) -> None:
        a.deliver(Packet(memoryview(bytearray(dst + src + b"\x88\xb5" + bytes(46))), a))

    for dst in (a.mac, b"\xff" * 6, b"\x02\x00\x00\x00\x00\x77", group):
        rx(dst)
    assert got == [a.mac, b"\xff" * 6]
    c = stack.l2.counters
    assert c["drop_not_our_mac"] == 1 and c["drop_multicast_not_joined"] == 1
    stack.l2.join_multicast(a, group)
    stack.l2.join_multicast(a, group)
    rx(group)
    stack.l2.leave_multicast(a, group)
    rx(group)
    stack.l2.leave_multicast(a, group)
    rx(group)
    assert got[2:] == [group, group] and c["drop_multicast_not_joined"] == 2
    a.set_promisc(True)
    rx(b"\x02\x00\x00\x00\x00\x77")  # seen by taps in promiscuous mode, not dispatched
    assert c["promisc_not_ours"] == 1 and len(got) == 4
    a.deliver(Packet(memoryview(bytearray(10)), a))
    assert c["drop_runt"] == 1 and a.counters["ierrors"] == 1


def _ipv4(dst: int, ttl: int = 64) -> bytes:
    hdr = bytearray(20)
    hdr[0], hdr[8], hdr[9] = 0x45, ttl, 17
    hdr[2:4] = (20 + 8).to_bytes(2, "big")
    hdr[12:16] = bytes([10, 1, 0, 1])
    hdr[16:20] = dst.to_bytes(4, "big")
    s = sum(int.from_bytes(hdr[i:i + 2], "big") for i in range(0, 20, 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    hdr[10:12] = (~s & 0xFFFF).to_bytes(2, "big")
    return bytes(hdr) + bytes(8)


def _hdr_ok(ip: bytes) -> bool:
    s = sum(int.from_bytes(ip[i:i + 2], "big") for i in range(0, 20, 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def test_fastforward_hook_and_invalidation() -> None:
    a = Wire("w0", b"\x02\x00\x00\x00\x00\x01")
    b = Wire("w1", b"\x02\x00\x00\x00\x01\x01")
    stack = _stack_with(a, b)
    slow: list[int] = []
    stack.l2.register(ETHERTYPE_IPV4, lambda ifp, pkt: slow.append(pkt.data[22]))
    stack.sysctl.register("net.inet.ip.forwarding", 0)  # the IPv4 layer's knob
    ff = stack.l2.fastfwd
    dst = 0x0A020005  # 10.2.0.5
    nh = b"\x02\x00\x00\x00\x02\x02"
    frame = a.mac + b"\x02\x00\x00\x00\x00\x09" + b"\x08\x00" + _ipv4(dst)

    def rx() -> None:
        a.deliver(Packet(memoryview(bytearray(frame)), a))

    ff.insert(dst, b, nh)
    rx()  # forwarding off: the slow path
    assert slow == [64] and not b.sent and not ff.active
    stack.sysctl.set("net.inet.ip.forwarding", 1)
    assert ff.active and ff.lookup(dst) is not None
    rx()
    assert len(b.sent) == 1 and slow == [64]
    out = b.sent[0]
    assert out[:6] == nh and out[6:12] == b.mac and out[22] == 63 and _hdr_ok(out[14:34])
    assert ff.counters["forwarded"] == 1 and stack.l2.counters["fastforwarded"] == 1
    # TTL 1 goes to the slow path (ICMP time exceeded is the IP layer's job)
    a.deliver(Packet(memoryview(bytearray(frame[:22] + b"\x01" + frame[23:])), a))
    assert slow == [64, 1]
    # an inet pfil hook disables the fast path; removing it enables it again
    h = stack.pfil.add_hook(lambda p, i, d: None, "inet")
    assert not ff.active
    stack.pfil.remove_hook(h)
    assert ff.active
    ff.invalidate()  # a route/address/ARP change
    assert ff.lookup(dst) is None and not ff.active
    rx()
    assert slow == [64, 1, 64]
    ff.learn(dst, b, nh, 1500, 7)
    stack.detach_interface("w1")  # the out interface goes away: its flows too
    assert ff.lookup(dst) is None


async def test_loopback_delivers_in_order_with_partial_csum() -> None:
    async with running_stack() as stack:
        lo = stack.lo0
        got: list[tuple[bytes, bool]] = []
        stack.l2.register(ET, lambda ifp, pkt: got.append((bytes(pkt.payload()[:2]), pkt.csum_partial)))
        from stack.packet import TxMeta

        buf = bytearray(b"\x00\x00")
        for i in range(200):
            buf[:] = i.to_bytes(2, "big")  # the sender reuses its buffer at once
            stack.l2.output(lo, b"\x02\x00\x00\x00\x00\x05", ET, [buf, bytes(40)],
                            TxMeta(needs_csum=True) if i == 5 else None)
        assert got == []  # never delivered inside the sender's call
        with trio.fail_after(2):
            while len(got) < 200:
                await trio.sleep(0.01)
        assert [int.from_bytes(p, "big") for p, _ in got] == list(range(200))
        assert [i for i, (_, partial) in enumerate(got) if partial] == [5]
        with pytest.raises(OSError):
            stack.detach_interface("lo0")
