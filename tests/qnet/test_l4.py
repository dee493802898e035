"""Qnet's L4 in one trio run (two in-process stacks joined by devnp-vwire, lsm-qnet
loaded without FUSE): messages arrive lossless and in order over a wire that loses,
reorders and duplicates; hostile frames (bad CRC, truncated, unknown types, forged
sequence numbers, connection ids and ACKs, a resolver flood) are dropped and counted and
the stack keeps serving."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import trio

from rmgr.nodes import Caller
from stack.l2.iface import BROADCAST_MAC, IFF_UP
from stack.qnet import kif, wire
from stack.qnet.node import MAX_PEERS, QNET, Qnet
from tests.conftest import running_stack


@contextlib.asynccontextmanager
async def two(tmp_path: Any, wire_a: str = "", wire_b: str = "",
              opts: str = "auto_add=1") -> AsyncIterator[tuple[Any, Any, Qnet, Qnet]]:
    sock = str(tmp_path / "w.sock")
    async with running_stack(drivers=[("vwire", f"path={sock},name=vw0{wire_a}")],
                             protocols=[("qnet", f"host=a,{opts}")]) as a, \
            running_stack(drivers=[("vwire", f"peer={sock},name=vw0{wire_b}")],
                          protocols=[("qnet", f"host=b,{opts}")]) as b:
        ia, ib = a.interfaces["vw0"], b.interfaces["vw0"]
        ia.set_flags(IFF_UP)
        ib.set_flags(IFF_UP)
        qa, qb = a.services.get(QNET), b.services.get(QNET)
        assert qa is not None and qb is not None
        with trio.fail_after(5):
            while not (qa.knows("b") and qb.knows("a")):
                await trio.sleep(0.02)
        yield a, b, qa, qb


async def test_lossless_in_order_over_a_bad_wire(tmp_path) -> None:  # type: ignore[no-untyped-def]
    faults = ",loss=0.1,reorder=0.1,dup=0.1,seed={}"
    async with two(tmp_path, faults.format(3), faults.format(4)) as (a, b, qa, qb):
        conn = await qa.connect("b", wire.QOS_LOADBALANCE, None)
        server = [c for c in qb.conns.values() if not c.initiator]
        assert len(server) == 1
        got: list[bytes] = []
        server[0].on_message = got.append
        rnd = random.Random(5)
        msgs = [i.to_bytes(4, "big") + rnd.randbytes(rnd.choice((10, 1400, 5000, 30000)))
                for i in range(120)]  # ~1.4 MB: the 20 MB transfer is test_qnet's
        for m in msgs:
            assert conn.send_message(m)
        with trio.fail_after(60):
            while len(got) < len(msgs):
                await trio.sleep(0.05)
        assert got == msgs  # every message, whole, once, in order
        ca, cb = qa.counters, qb.counters
        assert ca["retransmits"] > 10
        assert cb["dup_in"] > 10 and cb["ooo_in"] > 10
        assert cb["messages_in"] >= len(msgs)
        # and the KIF layer over the same connection still answers
        conn2 = await qa.connect("b", wire.QOS_PREFERRED, "vw0")
        m = await qa.kif_client.call(conn2, kif.M_GETATTR, Caller(), body=b"dev/socket")
        assert kif.unpack_attr(m.body).is_dir


def _frame(**kw: int) -> list[Any]:
    payload = kw.pop("payload", b"") if "payload" in kw else b""
    return wire.Header(**kw).emit(payload)  # type: ignore[arg-type]


async def test_hostile_frames_dropped_and_counted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with two(tmp_path) as (a, b, qa, qb):
        ia, ib = a.interfaces["vw0"], b.interfaces["vw0"]
        conn = await qa.connect("b", wire.QOS_LOADBALANCE, None)
        c = qa.counters

        def send(bufs: list[Any]) -> None:
            b.l2.output(ib, ia.mac, wire.ETHERTYPE_QNET, bufs)

        good = b"".join(bytes(x) for x in wire.Header(
            type=wire.T_DATA, sconn=conn.rcid, dconn=conn.cid, seq=conn.rx_next,
            flags=wire.F_FIRST | wire.F_LAST).emit(b"x" * 40))
        bad_crc = bytearray(good)
        bad_crc[45] ^= 0xFF
        send([bytes(bad_crc)])
        send([good[:20]])                                       # truncated header
        send([good[:60]])                                       # length past the end
        unknown = bytearray(good)
        unknown[3] = 7                                          # no such type
        send([bytes(unknown)])
        # valid CRC, forged sequence numbers / ids / acks
        send(_frame(type=wire.T_DATA, sconn=conn.rcid, dconn=conn.cid,
                    seq=conn.rx_next + 100000, payload=b"y" * 10))
        send(_frame(type=wire.T_DATA, sconn=0x1234, dconn=conn.cid, seq=conn.rx_next,
                    payload=b"z"))
        send(_frame(type=wire.T_DATA, sconn=0x1234, dconn=0x7777, seq=1, payload=b"z"))
        send(_frame(type=wire.T_ACK, sconn=conn.rcid, dconn=conn.cid, seq=conn.tx_next + 999))
        send(_frame(type=wire.T_TCS_INIT, sconn=5, payload=b"\x50\x00"))  # bad names
        # a flood of resolver requests for a, and of announcements of made-up nodes
        for i in range(600):
            if i % 50 == 0:
                await trio.sleep(0.01)  # the wire's socket buffer
            msg = wire.LrMessage(wire.LR_REQUEST, "b", "", ib.mac, "a").emit()
            send(wire.Header(type=wire.T_LR, layer=wire.L_LR).emit(msg))
        for i in range(MAX_PEERS + 50):
            if i % 50 == 0:
                await trio.sleep(0.01)
            msg = wire.LrMessage(wire.LR_REPLY, f"fake{i}", "", ib.mac, "*").emit()
            b.l2.output(ib, BROADCAST_MAC, wire.ETHERTYPE_QNET,
                        wire.Header(type=wire.T_LR, layer=wire.L_LR).emit(msg))
        with trio.move_on_after(5):  # what the wire delivers (b also announces itself)
            while c["lr_in"] < 600 + MAX_PEERS + 50:
                await trio.sleep(0.05)
        assert c["lr_in"] > 600
        assert c["drop_bad_crc"] == 1
        assert c["drop_truncated"] == 2
        assert c["drop_unknown_type"] == 1
        assert c["drop_out_of_window"] == 1
        assert c["drop_bad_conn"] == 1
        assert c["drop_unknown_conn"] >= 1
        assert c["drop_bad_ack"] == 1
        assert c["drop_bad_tcs"] == 1
        assert c["lr_rate_limited"] > 400  # at most LR_REPLY_RATE replies a second
        assert c["lr_replies_out"] < 200
        assert c["lr_table_full"] > 0 and len(qa.peers) <= MAX_PEERS
        # nothing got through to the layer above, and the stack keeps serving
        m = await qa.kif_client.call(conn, kif.M_READDIR, Caller(), body=b"dev/socket")
        names = [n for n, _ in kif.unpack_listing(m.body)]
        assert "config" in names and "tcp" in names
