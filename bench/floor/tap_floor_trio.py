"""The TAP floor on trio (python -m bench, the ping row's note): tap_floor.c's work - answer
ARP and ICMP echo (IPv4) on a TAP, one read and one write per frame - written in Python
on trio's event loop, as the stack's receive task waits (``wait_readable``, then read
until EAGAIN). Between tap_floor.c and the stack it shows what Python and trio's loop
cost by themselves, before any of the stack's layers.

    python bench/floor/tap_floor_trio.py IFNAME IPV4 [MAC]

Creates the TAP IFNAME (IFF_TAP | IFF_NO_PI) in the calling namespace, prints "ready",
serves until killed. Standalone on purpose (stdlib + trio only): it is a floor, not a
part of the stack.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys

import trio

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000


def _csum(data: bytes | bytearray) -> int:
    if len(data) & 1:
        data = bytes(data) + b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def answer(f: bytearray, n: int, mac: bytes, ip: bytes) -> int:
    """The reply written over frame ``f`` (``n`` bytes); its length, or 0: no reply."""
    if n < 14:
        return 0
    etype = f[12] << 8 | f[13]
    if etype == 0x0806 and n >= 42:
        if f[14:18] != b"\x00\x01\x08\x00" or f[21] != 1 or f[38:42] != ip:
            return 0
        f[21] = 2
        f[32:42] = f[22:32]  # target := sender (MAC + IP)
        f[22:28] = mac
        f[28:32] = ip
    elif etype == 0x0800 and n >= 34:
        ihl = (f[14] & 0x0F) * 4
        tot = f[16] << 8 | f[17]
        if f[14] >> 4 != 4 or ihl < 20 or tot > n - 14 or tot < ihl + 8 or f[23] != 1 \
                or f[30:34] != ip or f[20] & 0x3F or f[21]:
            return 0
        icmp = 14 + ihl
        if f[icmp] != 8:
            return 0
        f[30:34] = f[26:30]  # swapping the addresses keeps the IP checksum
        f[26:30] = ip
        f[icmp] = 0
        f[icmp + 2:icmp + 4] = b"\0\0"
        f[icmp + 2:icmp + 4] = _csum(f[icmp:14 + tot]).to_bytes(2, "big")
        n = 14 + tot
    else:
        return 0
    f[0:6] = f[6:12]
    f[6:12] = mac
    return n


async def serve(fd: int, mac: bytes, ip: bytes) -> None:
    buf = bytearray(65536)
    while True:
        await trio.lowlevel.wait_readable(fd)
        while True:
            try:
                n = os.readv(fd, [buf])
            except BlockingIOError:
                break
            m = answer(buf, n, mac, ip)
            if m:
                os.write(fd, memoryview(buf)[:m])


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: tap_floor_trio.py IFNAME IPV4 [MAC]", file=sys.stderr)
        return 2
    ip = socket.inet_aton(argv[1])
    mac = bytes.fromhex(argv[2].replace(":", "")) if len(argv) > 2 else \
        b"\x02\x00\x00\x00\x00\xfe"
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", argv[0].encode(), IFF_TAP | IFF_NO_PI)
                .ljust(40, b"\0"))
    print("ready", flush=True)
    trio.run(serve, fd, mac, ip)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
