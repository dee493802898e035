"""The hostile peer: runs *inside* a test's network namespace (``ip netns exec NS python
nspeer.py CMD ...``) and writes raw frames on the namespace's tap0 with an AF_PACKET
socket. Frames are precomputed (bytes templates, no scapy in the send loop) so a flood of
50,000 SYNs takes about a second. Prints one JSON line with what it did/saw.

Commands::

    send FILE                    frames as hex lines in FILE, sent in order
    synflood N DST_MAC DST PORT  N SYNs from random sources in 10.9.128.0/17, random ports
    udpflood N DST_MAC DST PORT  N 64-byte UDP datagrams
    arpflood N DST_MAC           N ARP requests/replies from random senders
    rawtcp DST_MAC DST PORT      a TCP peer at 10.9.0.77 doing RFC 5961 / window tricks
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import sys
import time

IFACE = "tap0"
SRC_MAC_PREFIX = b"\x02\x00\x5e\x10"


def _sum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    return s


def csum(data: bytes, initial: int = 0) -> int:
    s = (_sum(data) + initial) % 0xFFFF
    return 0xFFFF - s if s else 0xFFFF


def ip_hdr(src: bytes, dst: bytes, proto: int, plen: int, ident: int = 0) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + plen, ident, 0x4000, 64, proto, 0, src, dst)
    return h[:10] + struct.pack("!H", csum(h)) + h[12:]


def l4_pseudo(src: bytes, dst: bytes, proto: int, length: int) -> int:
    return _sum(src + dst) + proto + length


def tcp_seg(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
            wnd: int = 65535, opts: bytes = b"", payload: bytes = b"") -> bytes:
    hlen = 20 + len(opts)
    h = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                    (hlen // 4) << 4, flags, wnd, 0, 0) + opts
    c = csum(h + payload, l4_pseudo(src, dst, 6, hlen + len(payload)))
    return h[:16] + struct.pack("!H", c) + h[18:] + payload


def open_sock() -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((IFACE, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return s


def my_mac() -> bytes:
    with open(f"/sys/class/net/{IFACE}/address") as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


def blast(s: socket.socket, frames: list[bytes]) -> tuple[int, float]:
    t0 = time.monotonic()
    sent = 0
    for f in frames:
        while True:
            try:
                s.send(f)
                sent += 1
                break
            except BlockingIOError:
                time.sleep(0.0005)
            except OSError as e:  # ENOBUFS: the tap queue is full; let the stack read
                if e.errno in (105, 11):
                    time.sleep(0.001)
                    continue
                raise
    return sent, time.monotonic() - t0


def cmd_send(path: str) -> dict[str, object]:
    with open(path) as f:
        frames = [bytes.fromhex(line.strip()) for line in f if line.strip()]
    s = open_sock()
    n, dt = blast(s, frames)
    return {"sent": n, "seconds": dt}


def cmd_synflood(n: int, dst_mac: str, dst: str, port: int) -> dict[str, object]:
    dmac = bytes.fromhex(dst_mac.replace(":", ""))
    d = socket.inet_aton(dst)
    rnd = random.Random(5)
    frames = []
    mss = b"\x02\x04\x05\xb4"
    for i in range(n):
        src = bytes((10, 9, 128 + rnd.randrange(127), rnd.randrange(1, 255)))
        smac = SRC_MAC_PREFIX + (i & 0xFFFF).to_bytes(2, "big")
        seg = tcp_seg(src, d, rnd.randrange(1024, 65535), port, rnd.getrandbits(32), 0, 0x02,
                      opts=mss)
        frames.append(dmac + smac + b"\x08\x00" + ip_hdr(src, d, 6, len(seg), i & 0xFFFF) + seg)
    s = open_sock()
    sent, dt = blast(s, frames)
    return {"sent": sent, "seconds": dt}


def cmd_udpflood(n: int, dst_mac: str, dst: str, port: int) -> dict[str, object]:
    dmac = bytes.fromhex(dst_mac.replace(":", ""))
    d = socket.inet_aton(dst)
    src = socket.inet_aton("10.9.0.1")
    me = my_mac()
    frames = []
    payload = b"u" * 64
    for i in range(n):
        sport = 1024 + i % 60000
        h = struct.pack("!HHHH", sport, port, 8 + len(payload), 0)
        c = csum(h + payload, l4_pseudo(src, d, 17, 8 + len(payload)))
        udp = h[:6] + struct.pack("!H", c) + payload
        frames.append(dmac + me + b"\x08\x00" + ip_hdr(src, d, 17, len(udp), i & 0xFFFF) + udp)
    s = open_sock()
    sent, dt = blast(s, frames)
    return {"sent": sent, "seconds": dt}


def cmd_arpflood(n: int, dst_mac: str) -> dict[str, object]:
    dmac = bytes.fromhex(dst_mac.replace(":", ""))
    rnd = random.Random(7)
    frames = []
    for i in range(n):
        smac = SRC_MAC_PREFIX + (i & 0xFFFF).to_bytes(2, "big")
        spa = bytes((10, 9, rnd.randrange(256), rnd.randrange(1, 255)))
        op = 1 if i % 2 else 2
        tpa = socket.inet_aton("10.9.0.2") if op == 1 else bytes((10, 9, 0, rnd.randrange(3, 255)))
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, smac, spa,
                          b"\0" * 6 if op == 1 else dmac, tpa)
        frames.append((b"\xff" * 6 if op == 1 else dmac) + smac + b"\x08\x06" + arp)
    s = open_sock()
    sent, dt = blast(s, frames)
    return {"sent": sent, "seconds": dt}


class RawTCP:
    """A TCP endpoint written by hand, so the test knows every sequence number."""

    def __init__(self, dst_mac: str, dst: str, port: int) -> None:
        self.dmac = bytes.fromhex(dst_mac.replace(":", ""))
        self.smac = my_mac()
        self.src = socket.inet_aton("10.9.0.77")
        self.dst = socket.inet_aton(dst)
        self.sport = 33333
        self.dport = port
        self.s = open_sock()
        self.s.settimeout(0.05)
        self.iss = 1_000_000
        self.snd_nxt = self.iss
        self.rcv_nxt = 0
        self.got = b""

    def send(self, flags: int, seq: int | None = None, ack: int | None = None, payload: bytes = b"",
             wnd: int = 65535, opts: bytes = b"") -> None:
        seg = tcp_seg(self.src, self.dst, self.sport, self.dport,
                      self.snd_nxt if seq is None else seq, self.rcv_nxt if ack is None else ack,
                      flags, wnd, opts, payload)
        self.s.send(self.dmac + self.smac + b"\x08\x00" + ip_hdr(self.src, self.dst, 6, len(seg)) + seg)

    def recv(self, wait: float = 0.5) -> list[dict[str, int]]:
        """Segments from the stack to us within ``wait`` seconds (parsed minimal)."""
        out = []
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                f = self.s.recv(70000)
            except TimeoutError:
                continue
            if len(f) < 54 or f[12:14] != b"\x08\x00" or f[23] != 6 or f[30:34] != self.src:
                continue
            ihl = (f[14] & 15) * 4
            t = f[14 + ihl:]
            sport, dport, seq, ack, off, flags, wnd = struct.unpack("!HHIIBBH", t[:16])
            if dport != self.sport:
                continue
            data = t[(off >> 4) * 4:]
            if data and seq == self.rcv_nxt:
                self.got += data
                self.rcv_nxt = (self.rcv_nxt + len(data)) & 0xFFFFFFFF
            out.append({"seq": seq, "ack": ack, "flags": flags, "wnd": wnd, "len": len(data)})
        return out


def cmd_rawtcp(dst_mac: str, dst: str, port: int) -> dict[str, object]:
    """Handshake, then each trick; report what the stack answered to each."""
    p = RawTCP(dst_mac, dst, port)
    res: dict[str, object] = {}
    p.send(0x02, opts=b"\x02\x04\x05\xb4")
    synack = [x for x in p.recv(1.0) if x["flags"] & 0x12 == 0x12]
    if not synack:
        return {"error": "no SYN-ACK"}
    p.snd_nxt = p.iss + 1
    p.rcv_nxt = (synack[0]["seq"] + 1) & 0xFFFFFFFF
    p.send(0x10)
    p.send(0x18, payload=b"A" * 100)
    p.snd_nxt += 100
    res["established_ack"] = [x["ack"] - p.iss for x in p.recv(0.4)]
    rcv = p.rcv_nxt
    # RFC 5961 3: RST outside the window - silently dropped
    p.send(0x04, seq=p.snd_nxt + 10_000_000, ack=0)
    res["rst_out_of_window"] = p.recv(0.3)
    # RFC 5961 3.2: RST in the window but not exactly RCV.NXT - challenge ACK
    p.send(0x04, seq=p.snd_nxt + 10, ack=0)
    res["rst_in_window"] = p.recv(0.3)
    # RFC 5961 4: SYN on an established connection - challenge ACK
    p.send(0x02, seq=p.snd_nxt + 5)
    res["syn_established"] = p.recv(0.3)
    # RFC 5961 5: an ACK for data never sent - dropped (and ACKed)
    p.send(0x10, ack=rcv + 5_000_000)
    res["ack_beyond_snd_nxt"] = p.recv(0.3)
    # data far outside the receive window - dropped, ACK with the right numbers
    p.send(0x18, seq=p.snd_nxt + 50_000_000, payload=b"X" * 50)
    res["data_out_of_window"] = p.recv(0.3)
    # SYN+FIN, null and Xmas on the connection
    for name, fl in (("synfin", 0x03), ("null", 0x00), ("xmas", 0x29)):
        p.send(fl, seq=p.snd_nxt + 1000)
        res[name] = p.recv(0.2)
    # more good data: the connection must be intact
    p.send(0x18, payload=b"B" * 100)
    p.snd_nxt += 100
    res["after_ack"] = [x["ack"] - p.iss for x in p.recv(0.4)]
    # zero window: advertise 0, the test's server writes; expect persist probes, no data
    p.send(0x10, wnd=0)
    print(json.dumps({"phase": "zero_window"}), flush=True)
    sys.stdin.readline()  # the test wrote data on its side
    res["zero_window"] = p.recv(1.5)
    # window shrink: open 1000 bytes then shrink to 10 (RFC 9293 says don't shrink; a
    # peer might): the stack must cope, then reopen fully and receive everything
    p.send(0x10, wnd=1000)
    res["window_1000"] = p.recv(0.5)
    p.send(0x10, wnd=10)
    res["window_shrunk"] = p.recv(0.5)
    for _ in range(40):
        p.send(0x10, wnd=65535)
        if not p.recv(0.1) and len(p.got) >= 5000:
            break
    res["received"] = len(p.got)
    res["received_ok"] = p.got == b"Z" * len(p.got)
    p.send(0x04, seq=p.snd_nxt)  # exact RST: closes
    res["rst_exact"] = p.recv(0.3)
    return res


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "send":
        out = cmd_send(args[0])
    elif cmd == "synflood":
        out = cmd_synflood(int(args[0]), args[1], args[2], int(args[3]))
    elif cmd == "udpflood":
        out = cmd_udpflood(int(args[0]), args[1], args[2], int(args[3]))
    elif cmd == "arpflood":
        out = cmd_arpflood(int(args[0]), args[1])
    elif cmd == "rawtcp":
        out = cmd_rawtcp(args[0], args[1], int(args[2]))
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
