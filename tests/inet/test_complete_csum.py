"""Software completion of a CHECKSUM_PARTIAL transport checksum (stack/l2/gso.py
``complete_csum``), as the IPv4 layer uses it before fragmenting or toward an interface
without the "csum" offload: whatever the buffer split, the result is the checksum of the
joined datagram."""

from __future__ import annotations

import random

from stack.l2.gso import complete_csum
from stack.packet import TxMeta


def _reference(data: bytes, start: int, offset: int) -> bytes:
    """The datagram with its checksum field completed, computed on one joined buffer."""
    buf = bytearray(data)
    seg = bytes(buf[start:])
    if len(seg) & 1:
        seg += b"\0"
    s = sum(int.from_bytes(seg[i:i + 2], "big") for i in range(0, len(seg), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    csum = 0xFFFF - s if s != 0xFFFF else 0xFFFF  # a sum of 0 is written 0xFFFF
    buf[start + offset:start + offset + 2] = csum.to_bytes(2, "big")
    return bytes(buf)


def _split(data: bytes, rng: random.Random) -> list[bytes | bytearray | memoryview]:
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randrange(0, 5))))
    parts: list[bytes | bytearray | memoryview] = []
    last = 0
    for c in [*cuts, len(data)]:
        piece = data[last:c]
        parts.append(rng.choice((bytes, bytearray, memoryview))(piece))
        last = c
    return parts


def test_any_split_gives_the_joined_checksum() -> None:
    rng = random.Random(15)
    for _ in range(400):
        start = rng.choice((0, 0, 4, 7))  # csum_start: the transport header, mostly
        offset = rng.choice((6, 16))  # UDP, TCP
        n = start + offset + 2 + rng.randrange(0, 90)
        data = bytes(rng.randrange(256) for _ in range(n))
        bufs = _split(data, rng)
        out = complete_csum(bufs, TxMeta(start, offset, True))
        assert b"".join(bytes(b) for b in out) == _reference(data, start, offset)


def test_the_field_straddling_two_buffers() -> None:
    data = bytes(range(40))
    for cut in range(1, 39):
        out = complete_csum([data[:cut], data[cut:]], TxMeta(0, 16, True))
        assert b"".join(bytes(b) for b in out) == _reference(data, 0, 16)


def test_only_the_buffer_with_the_field_is_copied() -> None:
    head, body = bytes(20), memoryview(bytes(range(200)))
    out = complete_csum([head, body], TxMeta(0, 16, True))
    assert out[1] is body and isinstance(out[0], bytearray)
