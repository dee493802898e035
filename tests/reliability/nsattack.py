"""More of the hostile peer (see nspeer.py): runs *inside* a test's namespace and writes
raw frames on tap0 with an AF_PACKET socket. Prints one JSON line with what it did.

Commands::

    fragflood SECONDS DST_MAC SRC DST     first fragments (MF set, offset 0, 1,480 bytes
                                          of UDP) with ever-new IP ids, never completed,
                                          as fast as the tap takes them
    arpspoof SECONDS RATE DST_MAC VICTIM TARGET
                                          forged ARP claiming VICTIM from random MACs at
                                          RATE frames/s: replies to TARGET, requests for
                                          TARGET, gratuitous requests and replies
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from nspeer import csum, my_mac, open_sock  # noqa: E402

BCAST = b"\xff" * 6


def send_one(s: socket.socket, frame: bytes) -> None:
    while True:
        try:
            s.send(frame)
            return
        except BlockingIOError:
            time.sleep(0.0005)
        except OSError as e:  # ENOBUFS: the tap queue is full; let the stack read
            if e.errno in (105, 11):
                time.sleep(0.0005)
                continue
            raise


def cmd_fragflood(seconds: float, dst_mac: str, src: str, dst: str) -> dict[str, object]:
    dmac = bytes.fromhex(dst_mac.replace(":", ""))
    eth = dmac + my_mac() + b"\x08\x00"
    s_ip, d_ip = socket.inet_aton(src), socket.inet_aton(dst)
    payload = struct.pack("!HHHH", 40000, 9, 8 + 65000, 0) + b"F" * 1472
    total = 20 + len(payload)
    ids = list(range(65536))
    random.Random(11).shuffle(ids)
    s = open_sock()
    sent = 0
    t0 = time.monotonic()
    end = t0 + seconds
    proto_cycle = (17, 6, 1, 47)  # the key is (src, dst, proto, id): 4 x 65,536 keys
    while time.monotonic() < end:
        for _ in range(256):
            i = sent % (65536 * len(proto_cycle))
            ident = ids[i & 0xFFFF]
            proto = proto_cycle[i >> 16]
            h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, 0x2000, 64, proto, 0,
                            s_ip, d_ip)
            h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
            send_one(s, eth + h + payload)
            sent += 1
    return {"sent": sent, "seconds": time.monotonic() - t0}


def cmd_arpspoof(seconds: float, rate: float, dst_mac: str, victim: str,
                 target: str) -> dict[str, object]:
    dmac = bytes.fromhex(dst_mac.replace(":", ""))
    v, t = socket.inet_aton(victim), socket.inet_aton(target)
    rnd = random.Random(13)
    s = open_sock()
    kinds = {"reply": 0, "request": 0, "gratuitous_request": 0, "gratuitous_reply": 0}
    names = list(kinds)
    sent = 0
    t0 = time.monotonic()
    while True:
        now = time.monotonic()
        if now - t0 >= seconds:
            break
        due = t0 + sent / rate
        if due > now:
            time.sleep(due - now)
        mac = bytes([0x02, 0x66]) + rnd.getrandbits(32).to_bytes(4, "big")
        kind = names[sent % 4]
        if kind == "reply":  # "VICTIM is at mac", to TARGET
            eth_dst, op, tha, tpa = dmac, 2, dmac, t
        elif kind == "request":  # "who has TARGET? tell VICTIM (at mac)"
            eth_dst, op, tha, tpa = BCAST, 1, b"\0" * 6, t
        elif kind == "gratuitous_request":
            eth_dst, op, tha, tpa = BCAST, 1, b"\0" * 6, v
        else:
            eth_dst, op, tha, tpa = BCAST, 2, BCAST, v
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, v, tha, tpa)
        send_one(s, eth_dst + mac + b"\x08\x06" + arp)
        kinds[kind] += 1
        sent += 1
    return {"sent": sent, "seconds": time.monotonic() - t0, **kinds}


def main() -> None:
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "fragflood":
        out = cmd_fragflood(float(args[0]), args[1], args[2], args[3])
    elif cmd == "arpspoof":
        out = cmd_arpspoof(float(args[0]), float(args[1]), args[2], args[3], args[4])
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
