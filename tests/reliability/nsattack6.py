"""The IPv6 hostile peer (see nspeer.py): runs *inside* a test's namespace and writes raw
frames on tap0 with an AF_PACKET socket. Prints one JSON line with what it did.

Commands::

    exchange FILE SECONDS             send the frames (hex lines in FILE) and return the
                                      IPv6 frames that came in within SECONDS (hex)
    fragflood SECONDS DST_MAC SRC DST first fragments (M set, offset 0, 1,232 bytes of
                                      UDP) with ever-new identifications, never
                                      completed, as fast as the tap takes them
    ndflood N DST_MAC SRC_PREFIX TARGET
                                      N neighbor solicitations for TARGET (hop limit
                                      255, a source link-layer address option) from N
                                      spoofed sources SRC_PREFIX::<n> and MACs
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nsattack import send_one  # noqa: E402
from nspeer import IFACE, csum, my_mac, open_sock  # noqa: E402

ETH_P_IPV6 = b"\x86\xdd"
PACKET_OUTGOING = 4


def ip6_hdr(src: bytes, dst: bytes, nh: int, plen: int, hlim: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, plen, nh, hlim, src, dst)


def pseudo6(src: bytes, dst: bytes, nh: int, length: int) -> int:
    return (int.from_bytes(src + dst, "big") % 0xFFFF + length + nh) % 0xFFFF


def a6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def cmd_exchange(path: str, seconds: float) -> dict[str, object]:
    with open(path) as f:
        frames = [bytes.fromhex(line.strip()) for line in f if line.strip()]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
    s.bind((IFACE, 0))
    s.settimeout(0.05)
    for fr in frames:
        send_one(s, fr)
    got = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data, addr = s.recvfrom(70000)
        except TimeoutError:
            continue
        if addr[2] == PACKET_OUTGOING:
            continue
        got.append(data.hex())
    return {"sent": len(frames), "received": got}


def cmd_fragflood(seconds: float, dst_mac: str, src: str, dst: str) -> dict[str, object]:
    eth = bytes.fromhex(dst_mac.replace(":", "")) + my_mac() + ETH_P_IPV6
    s6, d6 = a6(src), a6(dst)
    body = struct.pack("!HHHH", 40000, 9, 8 + 60000, 0) + b"F" * 1224
    head = eth + ip6_hdr(s6, d6, 44, 8 + len(body))
    sock = open_sock()
    sent = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        for _ in range(256):
            ident = (sent * 2654435761) & 0xFFFFFFFF  # odd factor: never repeats
            send_one(sock, head + struct.pack("!BBHI", 17, 0, 1, ident) + body)
            sent += 1
    return {"sent": sent, "seconds": time.monotonic() - t0}


def cmd_ndflood(n: int, dst_mac: str, src_prefix: str, target: str) -> dict[str, object]:
    dmac = bytes.fromhex(dst_mac.replace(":", ""))
    t6 = a6(target)
    base = int.from_bytes(a6(src_prefix), "big")
    rnd = random.Random(17)
    frames = []
    for i in range(n):
        src = (base | rnd.getrandbits(48) << 16 | i & 0xFFFF).to_bytes(16, "big")
        smac = b"\x02\x00\x5e\x20" + (i & 0xFFFF).to_bytes(2, "big")
        msg = struct.pack("!BBHI16s", 135, 0, 0, 0, t6) + b"\x01\x01" + smac
        c = csum(msg, pseudo6(src, t6, 58, len(msg)))
        msg = msg[:2] + struct.pack("!H", c) + msg[4:]
        frames.append(dmac + smac + ETH_P_IPV6 + ip6_hdr(src, t6, 58, len(msg), 255) + msg)
    sock = open_sock()
    t0 = time.monotonic()
    for fr in frames:
        send_one(sock, fr)
    return {"sent": n, "seconds": time.monotonic() - t0}


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "exchange":
        out = cmd_exchange(args[0], float(args[1]))
    elif cmd == "fragflood":
        out = cmd_fragflood(float(args[0]), args[1], args[2], args[3])
    elif cmd == "ndflood":
        out = cmd_ndflood(int(args[0]), args[1], args[2], args[3])
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
