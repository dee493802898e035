"""bpf under load (issue 14 item 5): drops are counted the way BSD reports them
(BIOCGSTATS: bs_recv = frames delivered + bs_drop), the buffer size is set by BIOCSBLEN
before BIOCSETIF (EINVAL after, as BSD) or by ``IF,blen=SIZE`` for shell readers, and a
read returns at most the buffer size."""

from __future__ import annotations

import errno
import os

import trio

from tests.pf.conftest import STACK_IP, PfNet
from tests.pf.test_bpf import Reader

#: the kernel floods the stack with UDP (to a closed port: the stack answers each with
#: an ICMP port unreachable, so both directions are captured)
FLOOD = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    try:
        s.sendto(b"f" * 1000, (sys.argv[1], 9))
    except OSError:
        pass
"""


async def flood(pfnet: PfNet, count: int = 3000) -> None:
    assert await pfnet.kping()  # ARP resolved: the flood is not queued behind it
    await pfnet.kernel("python3", "-c", FLOOD, STACK_IP, str(count), check=True)
    await trio.sleep(0.5)


def delivered(res: dict) -> int:  # type: ignore[type-arg]
    return len(res["records"])


async def test_flood_with_tiny_buffer_counts_every_drop(pfnet: PfNet) -> None:
    async with Reader(pfnet, str(pfnet.bpfdir / "clone"), "--bufsize", "4096",
                      "--read-size", str(1 << 20)) as r:
        await flood(pfnet)  # nothing is read meanwhile
        assert await pfnet.kping()  # the stack kept serving
        res = await r.finish()
    assert res["blen"] == 4096
    assert res["drop"] > 1000, res["drop"]
    # every frame the descriptor saw was either delivered or counted as dropped
    assert res["recv"] == delivered(res) + res["drop"], (res["recv"], delivered(res),
                                                         res["drop"])
    assert res["reads"] and max(res["reads"]) <= 4096
    ctl = await pfnet.read_file(pfnet.bpfdir / "ctl")
    assert "blen" in ctl.splitlines()[0]


async def test_blen_sets_the_read_size_and_is_fixed_once_attached(pfnet: PfNet) -> None:
    big = 1 << 20
    small = Reader(pfnet, str(pfnet.bpfdir / "clone"), "--bufsize", "8192",
                   "--blen-after", "65536", "--read-size", str(big))
    # the stream option of shell readers: IF,blen=SIZE
    large = Reader(pfnet, str(pfnet.bpfdir / "tap0,blen=256k"), "--blen-after", "4096",
                   "--read-size", str(big))
    plain = Reader(pfnet, str(pfnet.bpfdir / "tap0"), "--blen-after", "4096")
    async with small as a, large as b, plain as c:
        await flood(pfnet, 2000)
        ra, rb, rc = await a.finish(), await b.finish(), await c.finish()
    # BIOCSBLEN after BIOCSETIF (or on a file opened attached) is refused, as BSD
    assert ra["blen_after"] == rb["blen_after"] == rc["blen_after"] == "EINVAL"
    assert (ra["blen"], rb["blen"], rc["blen"]) == (8192, 256 << 10, 2 << 20)
    # one read returns what the buffer holds: at most blen
    assert 4096 < ra["reads"][0] <= 8192, ra["reads"]
    assert 8192 < rb["reads"][0] <= 256 << 10, rb["reads"]
    assert ra["drop"] > 0 and rb["drop"] < ra["drop"]
    for res in (ra, rb, rc):
        assert res["recv"] == delivered(res) + res["drop"]


async def test_stream_options_are_checked_and_not_listed(pfnet: PfNet) -> None:
    def try_open(name: str) -> str:
        try:
            fd = os.open(str(pfnet.bpfdir / name), os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            return errno.errorcode[exc.errno or 0]
        os.close(fd)
        return "ok"

    for name, want in (("tap0,blen=x", "EINVAL"), ("tap0,colour=red", "EINVAL"),
                       ("tap0,blen", "EINVAL"), ("nosuch,blen=64k", "ENOENT"),
                       ("tap0,blen=64k,snaplen=96", "ok")):
        assert await trio.to_thread.run_sync(try_open, name) == want, name
    names = await trio.to_thread.run_sync(os.listdir, str(pfnet.bpfdir))
    assert "tap0" in names and not any("," in n for n in names), names


async def test_bpf_device_options_unit() -> None:
    from stack.bpf.device import MAX_BUFSIZE, MIN_BUFSIZE, StreamOptions

    o = StreamOptions.parse("blen=8M,snaplen=96")
    assert (o.bufsize, o.snaplen) == (8 << 20, 96)
    assert StreamOptions.parse("bufsize=1").bufsize == MIN_BUFSIZE
    assert StreamOptions.parse("blen=1024m").bufsize == MAX_BUFSIZE
    assert StreamOptions.parse("snaplen=1").snaplen == 14
