"""The whole receive path cannot be crashed: arbitrary frames go into a running in-process
stack through ``Interface.deliver`` (as a driver hands them over) and only counted drops,
deliveries and replies come out. The harness is fuzz/rxpath.py (shared with the atheris
target fuzz/fuzz_rx.py, whose bounded CI run is at the bottom of this file)."""

from __future__ import annotations

import functools
import os
import shutil
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.rxpath import MAC0, PEER0, PEER_MAC, RxTarget, frames_from_fuzz, rx_target
from fuzz.seeds import CORPUS, seed_inputs
from tests.conftest import REPO

SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
#: counters that move for every frame and so prove nothing about its fate
PASSIVE = ("ipackets", "ibytes", "obytes", "lookups")


def trace(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, int]:
    """Counters that moved, minus the ones every frame moves."""
    out = {}
    for g, cs in after.items():
        for k, v in cs.items():
            if v != before.get(g, {}).get(k, 0) and not k.endswith(PASSIVE):
                out[f"{g}.{k}"] = v - before.get(g, {}).get(k, 0)
    return out


async def feed_and_account(t: RxTarget, data: bytes) -> dict[str, int]:
    """Feed one fuzz input; every frame must leave a counted trace and raise nothing."""
    before = t.counter_groups()
    t.feed_fuzz(data)
    await t.settle()
    t.check()
    t.drain_sockets()
    moved = trace(before, t.counter_groups())
    if frames_from_fuzz(data):
        assert moved, f"frame(s) {data.hex()} vanished without a counter moving"
    return moved


# ----------------------------------------------------------------------------- corpus
@functools.cache
def corpus_inputs() -> list[bytes]:
    out = []
    for name in sorted(os.listdir(CORPUS)):
        with open(os.path.join(CORPUS, name), "rb") as f:
            out.append(f.read())
    return out


def test_corpus_in_repo_matches_seeds() -> None:
    """fuzz/corpus/rx holds the seeds (regenerate with ``python -m fuzz.seeds``)."""
    seeds = seed_inputs()
    have = set(os.listdir(CORPUS))
    assert set(seeds) <= have
    assert len(seeds) >= 40
    for name, data in seeds.items():
        with open(os.path.join(CORPUS, name), "rb") as f:
            assert f.read() == data, name


async def test_every_seed_is_counted() -> None:
    async with rx_target() as t:
        for data in corpus_inputs():
            moved = await feed_and_account(t, data)
            assert moved, data.hex()


async def test_seed_fates() -> None:
    """A few seeds whose fate is known: the named counter moves."""
    want = {
        "runt": "ether.drop_runt", "unknown_ethertype": "ether.drop_unknown_ethertype",
        "not_our_mac": "ether.drop_not_our_mac", "icmp_echo": "icmp.out_echo_reply",
        "icmp_echo_vlan": "icmp.out_echo_reply", "icmp_echo_vlan_unknown": "ether.drop_vlan_unknown",
        "arp_claim_our_address": "arp.dup_address", "arp_bad_hwlen": "arp.drop_bad_hwtype",
        "frag_overlap": "reass.frag_overlap", "frag_in_order": "reass.reassembled",
        "udp_length_lies": "udp.drop_malformed", "tcp_null": "tcp.drop_listen_no_syn",
        "tcp_xmas": "tcp.drop_listen_no_syn", "tcp_rst": "tcp.drop_rst_listen",
        "tcp_bad_opts": "tcp.drop_malformed", "ip_total_lies": "ip.drop_truncated",
        "fwd_ttl1": "ip.drop_ttl_exceeded", "ip_unknown_proto": "ip.drop_unknown_protocol",
    }
    seeds = seed_inputs()
    async with rx_target() as t:
        for name, counter in want.items():
            moved = await feed_and_account(t, seeds[name])
            assert counter in moved, (name, moved)


# ----------------------------------------------------------------------------- hypothesis
def _eth(dst: bytes, etype: int, payload: bytes) -> bytes:
    return dst + PEER_MAC + struct.pack("!H", etype) + payload


def _ipv4(payload: bytes, proto: int, ihl: int, total: int | None, flags: int, ttl: int,
          dst: str) -> bytes:
    from stack.inet.wire.ipv4 import ip_to_int

    opts = bytes(4 * (ihl - 5)) if ihl > 5 else b""
    tot = total if total is not None else 20 + len(opts) + len(payload)
    return struct.pack("!BBHHHBBHII", 0x40 | ihl, 0, tot & 0xFFFF, 7, flags, ttl, proto, 0,
                       ip_to_int(PEER0), ip_to_int(dst)) + opts + payload


# Frames of increasing plausibility: pure noise; our MAC + any EtherType + noise; IPv4
# with any IHL/length/flags/protocol and a noise payload (checksums fixed by the ctl byte).
noise = st.binary(max_size=200)
frames = st.one_of(
    st.binary(max_size=120).map(lambda b: b"\x00" + b),
    st.tuples(st.sampled_from([0x0800, 0x0806, 0x8100, 0x86DD, 0x88B5]), noise).map(
        lambda a: b"\x00" + _eth(MAC0, a[0], a[1])),
    st.tuples(noise, st.sampled_from([1, 6, 17, 2, 255]), st.integers(0, 15),
              st.none() | st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 3),
              st.sampled_from(["10.77.0.1", "10.77.0.255", "10.78.0.9", "127.0.0.1",
                               "224.0.0.1", "255.255.255.255"]),
              st.sampled_from([0x00, 0x01, 0x03])).map(
        lambda a: bytes([a[7]]) + _eth(MAC0, 0x0800, _ipv4(*a[:6], a[6]))),  # type: ignore[misc]
)


@given(data=frames)
@SETTINGS
async def test_arbitrary_frames_only_counted_drops(data: bytes) -> None:
    async with rx_target() as t:
        await feed_and_account(t, data)


@given(ctl=st.integers(0, 0x1F), body=st.binary(max_size=300))
@SETTINGS
async def test_arbitrary_fuzz_inputs(ctl: int, body: bytes) -> None:
    """The fuzz encoding itself (multi-frame, checksum fixing, either interface)."""
    async with rx_target() as t:
        await feed_and_account(t, bytes([ctl]) + body)


@given(idx=st.integers(0, 200), mutations=st.lists(st.tuples(st.integers(0, 2000),
                                                              st.integers(0, 255)), max_size=6))
@SETTINGS
async def test_mutated_seeds(idx: int, mutations: list[tuple[int, int]]) -> None:
    """Seeds with bytes overwritten (checksums refixed for the FIX seeds)."""
    seeds = corpus_inputs()
    data = bytearray(seeds[idx % len(seeds)])
    for at, val in mutations:
        if len(data) > 1:
            data[1 + at % (len(data) - 1)] = val
    async with rx_target() as t:
        await feed_and_account(t, bytes(data))


# ----------------------------------------------------------------------------- Ethernet / VLAN
EXP_ETHERTYPE = 0x88B5  # IEEE 802 local experimental


@given(etype=st.sampled_from([EXP_ETHERTYPE, 0x88B6]), payload=st.binary(max_size=1500),
       dst=st.sampled_from([MAC0, b"\xff" * 6]))
@SETTINGS
async def test_ethernet_round_trip_through_layer2(etype: int, payload: bytes, dst: bytes) -> None:
    """Layer2.output emits a frame that Layer2.input dispatches back unchanged."""
    async with rx_target() as t:
        got: list[tuple[int, bytes, bytes]] = []
        t.stack.l2.register(etype, lambda iface, pkt: got.append(
            (pkt.ethertype, bytes(pkt.src_mac), bytes(pkt.payload()))))
        f0 = t.ifaces[0]
        assert t.stack.l2.output(f0, dst, etype, [payload])
        frame = f0.sent[-1]
        assert frame[:6] == dst and frame[6:12] == f0.mac
        assert int.from_bytes(frame[12:14], "big") == etype and frame[14:] == payload
        back = MAC0 + PEER_MAC + frame[12:]
        t.feed(back)
        assert got == [(etype, PEER_MAC, payload)]


@given(payload=st.binary(max_size=1400))
@SETTINGS
async def test_vlan_round_trip(payload: bytes) -> None:
    """A frame sent on vlan5 leaves fuzz0 tagged with VID 5; fed back, vlan5 gets it."""
    async with rx_target() as t:
        vif = t.stack.interfaces["vlan5"]
        got: list[tuple[str, int | None, bytes]] = []
        t.stack.l2.register(EXP_ETHERTYPE, lambda iface, pkt: got.append(
            (iface.name, pkt.vlan, bytes(pkt.payload()))))
        assert t.stack.l2.output(vif, PEER_MAC, EXP_ETHERTYPE, [payload])
        frame = t.ifaces[0].sent[-1]
        assert frame[12:14] == b"\x81\x00" and int.from_bytes(frame[14:16], "big") & 0xFFF == 5
        assert frame[16:18] == EXP_ETHERTYPE.to_bytes(2, "big") and frame[18:] == payload
        t.feed(MAC0 + PEER_MAC + frame[12:])
        assert got == [("vlan5", 5, payload)]


@given(tci=st.integers(0, 0xFFFF), inner=st.binary(max_size=100))
@SETTINGS
async def test_vlan_any_tag_counted(tci: int, inner: bytes) -> None:
    async with rx_target() as t:
        moved = await feed_and_account(t, b"\x00" + MAC0 + PEER_MAC + b"\x81\x00"
                                       + tci.to_bytes(2, "big") + inner)
        if tci & 0xFFF != 5:
            assert moved.get("ether.drop_vlan_unknown") == 1 or "ether.drop_vlan_runt" in moved


# ----------------------------------------------------------------------------- atheris
FUZZ_RUNS = int(os.environ.get("IOPKT_FUZZ_RUNS", "20000"))


@pytest.mark.skipif(shutil.which("true") is None, reason="no shell tools")
def test_atheris_bounded_run(tmp_path: object) -> None:
    """The coverage-guided target, bounded (CI): ~20k executions or 10 s, no crash.
    Longer: ``.venv/bin/python -m fuzz.fuzz_rx fuzz/corpus/rx -max_total_time=600``."""
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")
    scratch = str(tmp_path) + "/new"  # type: ignore[operator]
    os.makedirs(scratch)
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-m", "fuzz.fuzz_rx", scratch, CORPUS,
                        f"-runs={FUZZ_RUNS}", "-max_total_time=10", "-print_final_stats=1",
                        f"-artifact_prefix={tmp_path}/"],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    tail = r.stderr[-3000:]
    assert r.returncode == 0, tail
    assert "stat::number_of_executed_units" in r.stderr, tail
    execs = int(r.stderr.split("stat::number_of_executed_units:")[1].split()[0])
    assert execs >= min(FUZZ_RUNS, 2000), tail
