"""The whole receive path as one function: an arbitrary frame goes in through a driver's
``Interface.deliver`` (exactly where devnp-tap hands frames over) and nothing may come
out of it but counted drops, deliveries and replies.

Shared by the hypothesis test (tests/reliability/test_rx_path.py) and the coverage-guided
atheris target (fuzz/fuzz_rx.py). The stack is an in-process ``Stack`` (no FUSE mount)
with two fake Ethernet interfaces, a VLAN, forwarding on, a UDP socket, a TCP listener
and an established-looking TCP peer, so that most of layer 2, IPv4 (options, fragments,
forwarding, ICMP), ARP, UDP and TCP is reachable from a frame.

Fuzz input encoding (``frames_from_fuzz``): byte 0 is a control byte, the rest frames:

* bit 0 (0x01): recompute the IPv4 header checksum (get past the first check),
* bit 1 (0x02): recompute the TCP/UDP/ICMP checksum,
* bit 2 (0x04): write our MAC as the destination,
* bit 3 (0x08): several frames, each ``u16 length`` + bytes (at most 16),
* bit 4 (0x10): deliver on the second interface (fuzz1) instead of fuzz0.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import trio

from stack.core import Stack, StackConfig
from stack.l2.iface import IFF_UP, Interface
from stack.options import Options
from stack.packet import Buffer, Packet, TxMeta

MAC0 = bytes.fromhex("02000000f001")
MAC1 = bytes.fromhex("02000000f101")
PEER_MAC = bytes.fromhex("02000000f0aa")
ADDR0 = "10.77.0.1"
PEER0 = "10.77.0.2"
ADDR1 = "10.78.0.1"
VLAN_ADDR = "10.79.0.1"
UDP_PORT = 7
TCP_PORT = 80
SENT_KEEP = 64

#: counters that mean "an exception was swallowed": each must stay at zero
INTERNAL_ERRORS = ("iface_listener_errors", "fail_callback_errors", "on_change_errors",
                   "hook_errors", "tap_errors", "stats_source_errors")


class FuzzIface(Interface):
    """A fake Ethernet interface: frames sent are counted and the last few kept."""

    kind = "fuzz"

    def __init__(self, name: str, mac: bytes) -> None:
        super().__init__(name, mac=mac, mtu=1500, driver="fuzz")
        self.sent: list[bytes] = []
        self.nsent = 0

    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        self.nsent += 1
        self.sent.append(b"".join(bytes(b) for b in bufs))
        if len(self.sent) > SENT_KEEP:
            del self.sent[: SENT_KEEP // 2]
        return True

    def inject(self, frame: bytes) -> None:
        self.deliver(Packet(memoryview(bytearray(frame)), self))


@dataclass
class RxTarget:
    stack: Stack
    ifaces: list[FuzzIface]
    sockets: list[object] = field(default_factory=list)
    frames: int = 0

    # -- feeding ---------------------------------------------------------------------
    def feed(self, frame: bytes, iface: int = 0) -> None:
        """One frame in, synchronously. Any exception escaping is a bug."""
        self.frames += 1
        self.ifaces[iface].inject(frame)

    def feed_fuzz(self, data: bytes) -> None:
        for idx, frame in frames_from_fuzz(data):
            self.feed(frame, idx)

    async def settle(self, rounds: int = 3) -> None:
        """Let lo0, timer and socket tasks run (replies through lo0, ICMP errors...)."""
        for _ in range(rounds):
            await trio.sleep(0)

    def drain_sockets(self) -> None:
        """Read what the sockets queued so receive queues stay bounded across runs."""
        for s in self.sockets:
            for _ in range(64):
                try:
                    s.recv_nowait(65536)  # type: ignore[attr-defined]
                except Exception:
                    break

    # -- checks ----------------------------------------------------------------------
    def counter_groups(self) -> dict[str, dict[str, int]]:
        st = self.stack
        groups: dict[str, dict[str, int]] = {"stack": dict(st.counters), "ether": dict(st.l2.counters)}
        for iface in st.interfaces.values():
            groups["if." + iface.name] = dict(iface.counters)
        inet = getattr(st, "inet", None)
        if inet is not None:
            groups["ip"] = dict(inet.counters)
            for part in ("arp", "icmp", "reass"):
                obj = getattr(inet, part, None)
                if obj is not None:
                    groups[part] = dict(obj.counters)
            groups["ip.routes"] = dict(inet.routes.counters) if hasattr(inet.routes, "counters") else {}
        for part in ("tcp", "udp", "raw"):
            obj = getattr(st, part, None)
            if obj is not None:
                groups[part] = dict(obj.counters)
        groups["pfil"] = dict(st.pfil.counters) if hasattr(st.pfil, "counters") else {}
        return groups

    def internal_errors(self) -> dict[str, int]:
        """Swallowed exceptions (timer callbacks, listeners, hooks): all must be zero."""
        out: dict[str, int] = {}
        for g, cs in self.counter_groups().items():
            for k, v in cs.items():
                if k in INTERNAL_ERRORS and v:
                    out[f"{g}.{k}"] = v
        inet = getattr(self.stack, "inet", None)
        if inet is not None and inet.timers.errors:
            out["ip.timers.errors"] = inet.timers.errors
        return out

    def check(self) -> None:
        errs = self.internal_errors()
        if errs:
            raise AssertionError(f"exceptions swallowed on the receive path: {errs}")


def _fix_ipv4(frame: bytearray, l3: int, fix_ip: bool, fix_l4: bool) -> None:
    if len(frame) < l3 + 20 or frame[l3] >> 4 != 4:
        return
    ihl = (frame[l3] & 15) * 4
    if ihl < 20 or len(frame) < l3 + ihl:
        return
    from stack.inet.wire import checksum1
    from stack.transport.wire.checksum import checksum

    if fix_l4:
        total = int.from_bytes(frame[l3 + 2:l3 + 4], "big")
        end = min(l3 + total, len(frame))
        frag = int.from_bytes(frame[l3 + 6:l3 + 8], "big") & 0x3FFF
        proto = frame[l3 + 9]
        start = l3 + ihl
        if end > start and not frag:
            plen = end - start
            src = int.from_bytes(frame[l3 + 12:l3 + 16], "big")
            dst = int.from_bytes(frame[l3 + 16:l3 + 20], "big")
            pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + plen
            off = {1: 2, 6: 16, 17: 6}.get(proto)
            if off is not None and plen >= off + 2:
                frame[start + off:start + off + 2] = b"\0\0"
                seg = bytes(frame[start:end])
                c = checksum([seg]) if proto == 1 else checksum([seg], pseudo)
                if proto == 17 and c == 0:
                    c = 0xFFFF
                frame[start + off:start + off + 2] = c.to_bytes(2, "big")
    if fix_ip:
        frame[l3 + 10:l3 + 12] = b"\0\0"
        c = checksum1(bytes(frame[l3:l3 + ihl]))
        frame[l3 + 10:l3 + 12] = c.to_bytes(2, "big")


def frames_from_fuzz(data: bytes) -> list[tuple[int, bytes]]:
    """Decode a fuzz input (see the module doc) into (interface index, frame) pairs."""
    if not data:
        return []
    ctl, rest = data[0], data[1:]
    raw: list[bytes] = []
    if ctl & 0x08:
        i = 0
        while i + 2 <= len(rest) and len(raw) < 16:
            n = int.from_bytes(rest[i:i + 2], "big")
            raw.append(rest[i + 2:i + 2 + n])
            i += 2 + n
    else:
        raw.append(rest)
    idx = 1 if ctl & 0x10 else 0
    out = []
    for r in raw:
        f = bytearray(r)
        if ctl & 0x04 and len(f) >= 6:
            f[0:6] = MAC1 if idx else MAC0
        if ctl & 0x03 and len(f) >= 14:
            etype = int.from_bytes(f[12:14], "big")
            l3 = 14
            if etype == 0x8100 and len(f) >= 18:
                etype, l3 = int.from_bytes(f[16:18], "big"), 18
            if etype == 0x0800:
                _fix_ipv4(f, l3, bool(ctl & 0x01), bool(ctl & 0x02))
        out.append((idx, bytes(f)))
    return out


def ip(text: str) -> int:
    from stack.inet.wire.ipv4 import ip_to_int

    return ip_to_int(text)


def setup_target(st: Stack) -> RxTarget:
    """Give a running stack the interfaces, addresses and sockets of the fuzz target."""
    f0, f1 = FuzzIface("fuzz0", MAC0), FuzzIface("fuzz1", MAC1)
    for f in (f0, f1):
        st.attach_interface(f)
        f.set_flags(IFF_UP)
    inet = st.inet  # type: ignore[attr-defined]
    inet.add_address("fuzz0", f"{ADDR0}/24")
    inet.add_address("fuzz1", f"{ADDR1}/24")
    st.sysctl.set("net.inet.ip.forwarding", 1)
    inet.arp.set_static("fuzz0", ip(PEER0), PEER_MAC)
    target = RxTarget(st, [f0, f1])
    with contextlib.suppress(Exception):
        from stack.l2.vlan import create_vlan

        create_vlan(st, "vlan5", f0, 5).set_flags(IFF_UP)
        inet.add_address("vlan5", f"{VLAN_ADDR}/24")
    udp = getattr(st, "udp", None)
    if udp is not None:
        s = udp.socket()
        s.bind(("0.0.0.0", UDP_PORT))
        target.sockets.append(s)
    tcp = getattr(st, "tcp", None)
    if tcp is not None:
        s = tcp.socket()
        s.bind(("0.0.0.0", TCP_PORT))
        s.listen(8)
        target.sockets.append(s)
    return target


@contextlib.asynccontextmanager
async def rx_target() -> AsyncIterator[RxTarget]:
    """A running in-process stack set up as the fuzz target; shut down on exit."""
    cfg = StackConfig(tcpip=Options.parse(""), mount=False)
    st = Stack(cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(st.run)
        try:
            yield setup_target(st)
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(10):
                    await st.shutdown()
            nursery.cancel_scope.cancel()


# -- seed frames (also the fuzz corpus, see fuzz/make_corpus.py) ---------------------------
def ether(dst: bytes, etype: int, payload: bytes, src: bytes = PEER_MAC) -> bytes:
    return dst + src + struct.pack("!H", etype) + payload
