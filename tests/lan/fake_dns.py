"""A hostile DNS server for the resolver tests, run in the kernel's namespace:
``fake_dns.py ADDR SPOOF_ADDR LOGFILE``.

Every query for ``good.lan`` (A) is answered first by a series of bad datagrams - from
SPOOF_ADDR (a spoofed server), with a wrong id, a compression loop, cut short, an
oversized record count, another question - then by a truncated answer (TC), so the
resolver retries over TCP, where the real answer (192.0.2.77) is served. Anything
else gets NXDOMAIN. Each query received is logged (``udp NAME`` / ``tcp NAME``)."""

from __future__ import annotations

import socket
import struct
import sys
import threading

sys.path.insert(0, __file__.rsplit("/tests/", 1)[0])

from stack.dns import wire  # noqa: E402

ADDR, SPOOF, LOG = sys.argv[1], sys.argv[2], sys.argv[3]
GOOD = "192.0.2.77"


def log(line: str) -> None:
    with open(LOG, "a") as f:
        f.write(line + "\n")


def answer(q: wire.Message, *, tc: bool = False) -> bytes:
    name = q.questions[0].name
    if wire.normalize(name) != "good.lan" or q.questions[0].qtype != wire.TYPE_A:
        return wire.build(wire.response(q, [], rcode=wire.RCODE_NXDOMAIN))
    recs = [] if tc else [wire.Record(name, wire.TYPE_A, wire.CLASS_IN, 60, GOOD)]
    return wire.build(wire.response(q, recs, flags=wire.FLAG_RA | (wire.FLAG_TC if tc else 0)))


def bad_ones(q: wire.Message, data: bytes) -> list[bytes]:
    good = answer(q)
    loop = bytearray(wire.build(wire.response(q, [])))
    # an answer whose name is a pointer to itself
    here = len(loop)
    loop[6:8] = b"\x00\x01"
    loop += struct.pack("!H", 0xC000 | here) + struct.pack("!HHIH", 1, 1, 60, 4) + bytes(4)
    other = wire.Message(q.id, q.flags, [wire.Question("evil.lan", wire.TYPE_A)])
    return [
        struct.pack("!H", (q.id + 1) & 0xFFFF) + good[2:],           # wrong id
        bytes(loop),                                                 # compression loop
        good[:len(good) - 3],                                        # cut short
        good[:6] + b"\x7f\xff" + good[8:],                           # 32767 answers claimed
        wire.build(wire.response(other, [wire.Record("evil.lan", wire.TYPE_A, 1, 60,
                                                     "203.0.113.66")])),  # another question
    ]


def udp() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ADDR, 53))
    spoof = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spoof.bind((SPOOF, 53))
    while True:
        data, peer = s.recvfrom(4096)
        q = wire.parse(data)
        log(f"udp {q.questions[0].name}")
        if wire.normalize(q.questions[0].name) == "good.lan":
            spoof.sendto(wire.build(wire.response(q, [wire.Record(
                q.questions[0].name, wire.TYPE_A, 1, 60, "203.0.113.66")])), peer)
            for bad in bad_ones(q, data):
                s.sendto(bad, peer)
            s.sendto(answer(q, tc=True), peer)
        else:
            s.sendto(answer(q), peer)


def tcp() -> None:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ADDR, 53))
    ls.listen(8)
    while True:
        c, _ = ls.accept()
        with c:
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
                chunk = c.recv(4096)
                if not chunk:
                    break
                buf += chunk
            q = wire.parse(buf[2:])
            log(f"tcp {q.questions[0].name}")
            out = answer(q)
            c.sendall(len(out).to_bytes(2, "big") + out)


threading.Thread(target=tcp, daemon=True).start()
log("ready")
udp()
