"""Per-packet CPU cost of the hot paths, without a kernel peer: a fake NIC feeds frames
straight into layer 2 and captures what the stack sends, so the figures (µs per packet,
best of several repeats) are steady even on a busy machine. Used to measure the
optimisations in docs/performance.md before and after.

    python -m bench.micro [--n 20000] [--profile FILE]

Paths: ICMP echo request → reply; TCP 1-byte segment in (+ its ACK out) → recv; TCP
1-byte send (segment out, NODELAY); TCP 64 KB GRO super-segment in (csum vouched) →
ACK out → recv; TCP 64 KB TSO send + its ACK in.
"""

from __future__ import annotations

import argparse
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from stack.l2.iface import IFF_UP, Interface
from stack.packet import GSO_TCPV4, Buffer, Packet, TxMeta

SMAC, PMAC = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
SIP, PIP = "198.18.9.1", "198.18.9.2"


class FakeNic(Interface):
    """Frames out are kept (joined) in ``sent``; nothing else."""

    kind = "ether"

    def __init__(self) -> None:
        super().__init__("fake0", mac=SMAC, mtu=1500, driver="fake")
        self.offloads = {"csum", "tso4"}
        self.capabilities = {"csum", "tso4"}
        self.sent: list[bytes] = []
        self.keep = True

    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        if self.keep:
            self.sent.append(b"".join(bytes(b) for b in bufs))
        return True


def _csum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    return (~s) & 0xFFFF


def ip_frame(proto: int, payload: bytes, src: str = PIP, dst: str = SIP) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + _csum(hdr).to_bytes(2, "big") + hdr[12:]
    return SMAC + PMAC + b"\x08\x00" + hdr + payload


def tcp_seg(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"",
            wnd: int = 65535, opts: bytes = b"") -> bytes:
    off = (20 + len(opts)) // 4
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      off << 4, flags, wnd, 0, 0) + opts
    pseudo = socket.inet_aton(PIP) + socket.inet_aton(SIP) + struct.pack(
        "!BBH", 0, 6, len(hdr) + len(payload))
    c = _csum(pseudo + hdr + payload)
    return hdr[:16] + c.to_bytes(2, "big") + hdr[18:] + payload


class Template:
    """A TCP frame built once; each use patches seq/ack into a fresh copy (csum_valid:
    the checksum is vouched, as by the virtio header, so it is left unset)."""

    OFF = 14 + 20 + 4  # seq field in the frame

    def __init__(self, flags: int, payload: bytes = b"", gso: int = 0) -> None:
        self.frame = bytearray(ip_frame(6, tcp_seg(40000, 80, 0, 0, flags, payload)))
        self.gso = gso

    def packet(self, nic: Interface, seq: int, ack: int) -> Packet:
        buf = bytearray(self.frame)
        struct.pack_into("!II", buf, self.OFF, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF)
        pkt = Packet(memoryview(buf), nic)
        pkt.csum_valid = True
        if self.gso:
            pkt.gso_type, pkt.gso_size = GSO_TCPV4, self.gso
        return pkt


def timeit(fn: Callable[[], None], n: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


async def run(n: int) -> dict[str, float]:
    from stack.core import Stack, StackConfig

    st: Any = Stack(StackConfig(mount=False))
    out: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(st.run)
        nic = FakeNic()
        st.attach_interface(nic)
        nic.set_flags(IFF_UP)
        st.inet.add_address("fake0", f"{SIP}/24")
        st.inet.arp.set_static("fake0", int.from_bytes(socket.inet_aton(PIP), "big"), PMAC)
        deliver = nic.deliver

        # ICMP echo request → reply
        icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"x" * 56)
        icmp[2:4] = _csum(bytes(icmp)).to_bytes(2, "big")
        echo = ip_frame(1, bytes(icmp))

        def ping() -> None:
            deliver(Packet(memoryview(bytearray(echo)), nic))
        nic.sent.clear()
        ping()
        assert nic.sent and nic.sent[-1][34] == 0, "no echo reply"
        nic.keep = False
        out["icmp echo in→reply out"] = timeit(ping, n)

        # a TCP connection: in-stack listener, handshake fed by hand (no timestamps)
        ls = st.tcp.socket()
        ls.bind((SIP, 80))
        ls.listen(8)
        nic.keep = True
        nic.sent.clear()
        iss = 1000
        deliver(Packet(memoryview(bytearray(ip_frame(6, tcp_seg(
            40000, 80, iss, 0, 0x02, opts=b"\x02\x04\x05\xb4\x01\x03\x03\x07")))), nic))
        synack = nic.sent[-1][34:]
        s_iss = struct.unpack_from("!I", synack, 4)[0]
        deliver(Packet(memoryview(bytearray(ip_frame(6, tcp_seg(
            40000, 80, iss + 1, s_iss + 1, 0x10, wnd=65535)))), nic))
        conn, _ = ls.accept_nowait()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tcb = conn.tcb
        seq = iss + 1
        nic.keep = False

        t_small, t_ack = Template(0x18, b"x"), Template(0x10)

        def small_in() -> None:
            nonlocal seq
            deliver(t_small.packet(nic, seq, tcb.snd_nxt))
            seq += 1
            conn.recv_nowait(65536)
        out["tcp 1-byte segment in + recv"] = timeit(small_in, n)

        def small_out() -> None:
            conn.send_nowait(b"y")
            deliver(t_ack.packet(nic, seq, tcb.snd_nxt))  # its ACK, so the window never fills
        out["tcp 1-byte send + ACK in"] = timeit(small_out, n)

        big = b"z" * (44 * 1448)
        t_big = Template(0x10, big, gso=1448)

        def bulk_in() -> None:
            nonlocal seq
            deliver(t_big.packet(nic, seq, tcb.snd_nxt))
            seq += len(big)
            conn.recv_nowait(1 << 20)
        out["tcp 64 KB GRO segment in + recv"] = timeit(bulk_in, max(n // 10, 100))

        def bulk_in4() -> None:  # a receive burst, then one read (the reader woke later)
            nonlocal seq
            for _ in range(4):
                deliver(t_big.packet(nic, seq, tcb.snd_nxt))
                seq += len(big)
            conn.recv_nowait(1 << 20)
        out["tcp 4x64 KB GRO in + one recv (per 64 KB)"] = timeit(bulk_in4, max(n // 40, 50)) / 4

        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        tcb.snd_wnd = 1 << 30
        tcb.cc.cwnd = 1 << 30
        blob = b"w" * len(big)

        def bulk_out() -> None:
            conn.send_nowait(blob)
            deliver(t_ack.packet(nic, seq, tcb.snd_nxt))
            tcb.snd_wnd = 1 << 30
        out["tcp 64 KB TSO send + ACK in"] = timeit(bulk_out, max(n // 10, 100))
        conn.abort()
        ls.close()
        await st.shutdown()
        nursery.cancel_scope.cancel()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--profile", metavar="FILE")
    ap.add_argument("--no-malloc-tune", action="store_true",
                    help="keep glibc's malloc defaults (fd drivers tune them at start)")
    args = ap.parse_args(argv)
    if not args.no_malloc_tune:
        from stack.l2.fdio import tune_malloc

        tune_malloc()
    res: dict[str, Any]
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        res = prof.runcall(trio.run, run, args.n)
        prof.dump_stats(args.profile)
    else:
        res = trio.run(run, args.n)
    for k, v in res.items():
        print(f"{k:44s} {v:8.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
