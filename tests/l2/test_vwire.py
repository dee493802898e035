"""Two io-pkt Stack instances in one trio run, joined by devnp-vwire; fault injection,
counters, a pcap read back by tcpdump, and pfil hooks dropping/replacing/raising."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest
import trio

from stack.l2.iface import IFF_UP
from stack.packet import Packet
from stack.pcap import capture
from stack.pfil import PFIL_DROP, PFIL_IN, PFIL_OUT
from tests.conftest import running_stack

ET = 0x88B5


@contextlib.asynccontextmanager
async def two_stacks(tmp_path, a_opts: str = "", b_opts: str = "") -> AsyncIterator[tuple]:
    sock = str(tmp_path / "wire.sock")
    async with running_stack(drivers=[("vwire", f"path={sock},name=vw0{a_opts}")]) as a, \
            running_stack(drivers=[("vwire", f"peer={sock},name=vw0{b_opts}")]) as b:
        ia, ib = a.interfaces["vw0"], b.interfaces["vw0"]
        ia.set_flags(IFF_UP)
        ib.set_flags(IFF_UP)
        with trio.fail_after(2):  # the listener learns the peer from its hello
            while ia.peer_addr is None:
                await trio.sleep(0.005)
        yield a, b, ia, ib


def collector(stack) -> list[bytes]:
    got: list[bytes] = []
    stack.l2.register(ET, lambda ifp, pkt: got.append(bytes(pkt.payload())))
    return got


async def settle(cond, timeout: float = 3.0) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.01)


async def test_vwire_loss_is_counted_and_deterministic(tmp_path) -> None:
    async with two_stacks(tmp_path, ",loss=0.3,seed=7") as (a, b, ia, ib):
        got = collector(b)
        for i in range(200):
            a.l2.output(ia, ib.mac, ET, [i.to_bytes(2, "big"), bytes(44)])
        lost = ia.counters["fault_lost"]
        await settle(lambda: len(got) == 200 - lost)
        await trio.sleep(0.05)
        assert 30 < lost < 90
        assert len(got) == 200 - lost
        assert ia.counters["opackets"] == 200  # a lost frame left the sender
        assert ib.counters["ipackets"] == 200 - lost
        assert b.l2.counters["in_" + hex(ET)] == 200 - lost
        # same seed, same losses: the sequence numbers that arrived are reproducible
        first = [int.from_bytes(p[:2], "big") for p in got[:10]]
    async with two_stacks(tmp_path, ",loss=0.3,seed=7") as (a, b, ia, ib):
        got = collector(b)
        for i in range(200):
            a.l2.output(ia, ib.mac, ET, [i.to_bytes(2, "big"), bytes(44)])
        await settle(lambda: len(got) == 200 - ia.counters["fault_lost"])
        assert [int.from_bytes(p[:2], "big") for p in got[:10]] == first
        assert ia.counters["fault_lost"] == lost


async def test_vwire_delay_dup_reorder_corrupt(tmp_path) -> None:
    async with two_stacks(tmp_path, ",delay=80,dup=1", ",corrupt=1,seed=3") as (a, b, ia, ib):
        got_b = collector(b)
        got_a = collector(a)
        t0 = trio.current_time()
        a.l2.output(ia, ib.mac, ET, [b"delayed", bytes(40)])
        await trio.sleep(0.04)
        assert got_b == []  # still on the wire
        await settle(lambda: len(got_b) == 2)
        assert trio.current_time() - t0 >= 0.08
        assert ia.counters["fault_duplicated"] == 1
        b.l2.output(ib, ia.mac, ET, [b"\x00" * 46])
        await settle(lambda: len(got_a) == 1)
        assert got_a[0] != b"\x00" * 46 and ib.counters["fault_corrupted"] == 1
    async with two_stacks(tmp_path, ",reorder=0.5,reorder_gap=30,seed=1") as (a, b, ia, ib):
        got = collector(b)
        for i in range(20):
            a.l2.output(ia, ib.mac, ET, [i.to_bytes(2, "big"), bytes(44)])
        await settle(lambda: len(got) == 20)
        order = [int.from_bytes(p[:2], "big") for p in got]
        assert sorted(order) == list(range(20)) and order != list(range(20))
        assert ia.counters["fault_reordered"] > 0


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
async def test_pcap_read_by_tcpdump(tmp_path) -> None:
    path = str(tmp_path / "vw0.pcap")
    async with two_stacks(tmp_path) as (a, b, ia, ib):
        got = collector(b)
        w = capture(ib, path)
        for i in range(5):
            a.l2.output(ia, ib.mac, ET, [b"pcap-%d" % i, bytes(40)])
        b.l2.output(ib, ia.mac, ET, [b"reply", bytes(41)])
        await settle(lambda: len(got) == 5)
        w.close()
        assert w.count == 6
        assert not ib.taps
    res = subprocess.run(["tcpdump", "-r", path, "-nn", "-e"], capture_output=True, text=True,
                         timeout=20)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln and not ln.startswith("\t")]
    assert len(lines) == 6
    assert all("ethertype Unknown (0x88b5)" in ln and "length 60" in ln for ln in lines)
    assert "pcap-4" in res.stdout and "reply" in res.stdout


async def test_pfil_drop_replace_raise(tmp_path, caplog) -> None:
    async with two_stacks(tmp_path) as (a, b, ia, ib):
        got = collector(b)
        events: list[tuple[str, str]] = []

        def filt(pkt: Packet, iface, direction: str):
            tag = bytes(pkt.data[14:18])
            if tag == b"drop":
                return PFIL_DROP
            if tag == b"boom":
                raise RuntimeError("broken filter")
            if tag == b"swap":
                frame = bytearray(pkt.data)
                frame[14:18] = b"SWAP"
                return Packet(memoryview(frame), iface)
            return None

        def out_filter(bufs, iface, direction: str):
            data = b"".join(bytes(x) for x in bufs)
            if data[14:18] == b"mark":
                return [data[:14], b"MARK", data[18:]]
            return None

        h_in = b.pfil.add_hook(filt, "ether", PFIL_IN, name="test-in")
        h_out = a.pfil.add_hook(out_filter, "ether", PFIL_OUT)
        ev = b.pfil.add_hook(lambda e, ifp: events.append((e, ifp.name)), "ifnet")
        with caplog.at_level(logging.ERROR, logger="io-pkt.pfil"):
            for tag in (b"pass", b"drop", b"boom", b"swap", b"boom", b"mark", b"last"):
                a.l2.output(ia, ib.mac, ET, [tag, bytes(42)])
            await settle(lambda: any(p.startswith(b"last") for p in got))
        assert [p[:4] for p in got] == [b"pass", b"SWAP", b"MARK", b"last"]
        assert b.pfil.counters["hook_errors"] == 2 and h_in.errors == 2 and h_in.drops == 1
        assert b.l2.counters["drop_pfil_in"] == 3
        assert sum("test-in" in r.getMessage() for r in caplog.records) == 1  # logged once
        from stack.l2.vlan import create_vlan

        create_vlan(b, "vlan9", ib, 9)
        assert ("attach", "vlan9") in events
        b.pfil.remove_hook(h_in)
        a.pfil.remove_hook(h_out)
        b.pfil.remove_hook(ev)
        a.l2.output(ia, ib.mac, ET, [b"drop", bytes(42)])
        await settle(lambda: got[-1].startswith(b"drop"))
