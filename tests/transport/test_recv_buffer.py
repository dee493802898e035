"""The TCP receive buffer (stack/transport/tcp/buffers.py RecvBuffer): a queue of chunks
read out with one copy (or as pieces with none), checked against a bytearray on random
appends and reads."""

from __future__ import annotations

import random

from stack.transport.tcp.buffers import HOLD_VIEW, RecvBuffer


def test_matches_a_bytearray_on_random_appends_and_reads() -> None:
    rnd = random.Random(1)
    for _trial in range(200):
        rb, ref = RecvBuffer(), bytearray()
        held: list[tuple[list[bytes | bytearray | memoryview], bytes]] = []
        for _step in range(150):
            if rnd.random() < 0.6:
                n = rnd.choice([1, 5, 100, 1000, 1024, 1448, 3000, 65000])
                backing = bytearray(rnd.randbytes(n + rnd.choice([0, 10, 5000])))
                off = rnd.randrange(0, len(backing) - n + 1)
                view = memoryview(backing)[off:off + n]
                kind = rnd.random()
                data = view if kind < 0.7 else bytes(view) if kind < 0.85 else bytearray(view)
                ref += data
                rb.append(data)
            elif rnd.random() < 0.5:
                n = rnd.choice([0, 1, 10, 1000, 4096, 70000, 300000])
                peek = rnd.random() < 0.2
                assert rb.take(n, peek) == ref[:n]
                if not peek:
                    del ref[:n]
            else:  # the gathered read: pieces that stay as they were when handed out
                n = rnd.choice([1, 10, 1000, 4096, 70000, 300000])
                parts = rb.take_views(n)
                want = bytes(ref[:n])
                del ref[:n]
                assert b"".join(parts) == want
                held.append((parts, want))
            assert len(rb) == len(ref)
            assert bool(rb) == bool(ref)
        # later appends (a coalescing tail growing) changed no piece handed out
        assert all(b"".join(parts) == want for parts, want in held)


def test_large_payloads_are_queued_without_a_copy_small_ones_are_copied() -> None:
    rb = RecvBuffer()
    frame = bytearray(2048)
    big = memoryview(frame)[54:54 + 1448]
    rb.append(big)
    assert rb.chunks[-1] is big  # a view of the frame: no copy
    tiny = memoryview(bytearray(2048))[54:55]
    rb.append(tiny)
    rb.append(tiny)
    assert type(rb.chunks[-1]) is bytearray and len(rb.chunks[-1]) == 2  # coalesced copies
    # a large slice of a much larger buffer (a trimmed super-segment) is copied too
    sliver = memoryview(bytearray(65536))[:HOLD_VIEW]
    rb.append(sliver)
    assert rb.chunks[-1] is not sliver
    assert len(rb) == 1448 + 2 + HOLD_VIEW


def test_clear_and_reads_leave_no_chunks_behind() -> None:
    rb = RecvBuffer()
    rb.append(memoryview(bytearray(3000)))
    assert rb.take(1000) == bytes(1000)
    assert rb.head == 1000
    assert rb.take(5000) == bytes(2000)
    assert not rb.chunks and rb.head == 0
    rb.append(b"x")
    rb.clear()
    assert len(rb) == 0 and rb.take(10) == b""
