"""getsockopt(IPPROTO_TCP, TCP_INFO) through the socket door: Linux's struct tcp_info,
byte for byte, filled from the TCB, checked against the stack's own counters during a
transfer that loses segments (nftables drops 3 % of them in the kernel peer's namespace)."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import time

import pytest

from rmgr import libsocket
from stack.tools.cfgparse import keyvalues
from stack.transport.tcp import info as tcpinfo
from tests.conftest import REPO, needs_fuse, needs_tun

from .conftest import PEER, drop_incoming, needs_nft

pytestmark = [needs_fuse, needs_tun]


def tcp_stats(sp: object) -> dict[str, int]:
    text = open(f"{sp.prefix}/dev/socket/config/stats/tcp").read()  # type: ignore[attr-defined]
    return {k: int(v) for k, v in keyvalues(text).items()}


@needs_nft
def test_tcp_info_during_a_lossy_transfer(one: tuple[object, object], sink: object) -> None:
    sp, ns = one
    port = 5201
    drop_incoming(ns, port, 3)
    k = sink(port)  # type: ignore[operator]
    total = 24 << 20
    chunk = b"x" * (64 << 10)
    samples: list[dict[str, int]] = []
    with libsocket.patch(sp.prefix):  # type: ignore[attr-defined]
        s = socket.socket()
        try:
            s.connect((PEER, port))
            first = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
            assert len(first) == tcpinfo.SIZE == 232
            short = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            assert len(short) == 104 and short[:8] == first[:8]  # Linux: min(optlen, size)
            sent = 0
            last = 0.0
            while sent < total:
                sent += s.send(chunk)
                if time.monotonic() - last > 0.01:
                    samples.append(tcpinfo.unpack(
                        s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)))
                    last = time.monotonic()
            # everything acknowledged: the counters stop moving
            deadline = time.monotonic() + 30
            while True:
                end = tcpinfo.unpack(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232))
                if end["bytes_acked"] > total or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            stats = tcp_stats(sp)
        finally:
            s.close()
    out, _ = k.communicate(timeout=60)  # type: ignore[attr-defined]
    assert int(out.split()[-1]) == total

    # the state and what the handshake negotiated with Linux (TS, SACK, window scaling)
    assert end["state"] == 1  # TCP_ESTABLISHED
    assert end["options"] & 7 == 7, end["options"]
    assert end["snd_mss"] == 1448 and end["advmss"] > 0 and end["pmtu"] == 1500
    assert end["snd_wscale"] > 0 and end["rcv_wscale"] > 0
    assert end["rtt"] > 0 and end["rto"] >= 200_000 and end["min_rtt"] <= end["rtt"] * 4
    # one connection: its counters are the protocol's
    assert end["bytes_acked"] == total + 1  # as Linux: the SYN counts
    assert end["bytes_sent"] == stats["data_bytes_out"] + stats["rexmt_bytes"]
    assert end["bytes_retrans"] == stats["rexmt_bytes"] > 0
    assert end["total_retrans"] >= stats["rexmt_segs"] > 0
    assert end["segs_in"] == stats["segs_in"]
    assert end["data_segs_out"] * 1448 >= total
    assert end["segs_out"] >= end["data_segs_out"]
    assert end["bytes_received"] == 0 and end["unacked"] == 0
    assert end["delivered"] >= total // 1448
    # loss was seen and the window came down for it
    assert any(x["total_retrans"] for x in samples), "no retransmission seen"
    assert any(x["ca_state"] in (tcpinfo.CA_RECOVERY, tcpinfo.CA_LOSS) for x in samples) \
        or end["total_retrans"]
    assert any(x["snd_ssthresh"] < tcpinfo.INFINITE_SSTHRESH for x in samples)
    shrank = False
    peak = 0
    for x in samples:
        if x["snd_cwnd"] < peak and x["total_retrans"] > 0:
            shrank = True
        peak = max(peak, x["snd_cwnd"])
    assert shrank, [x["snd_cwnd"] for x in samples]
    assert max(x["delivery_rate"] for x in samples) > 0
    assert max(x["pacing_rate"] for x in samples) > 0
    # monotonic counters
    for a, b in zip(samples, samples[1:], strict=False):
        for f in ("bytes_acked", "bytes_sent", "segs_out", "total_retrans"):
            assert b[f] >= a[f], f


def test_tcp_info_receiver_and_short_reads(one: tuple[object, object]) -> None:
    """The receiving side counts bytes_received and data_segs_in; a buffer shorter than
    the struct gets its first bytes (as Linux); the 32-byte getsockopt path cuts it."""
    sp, ns = one
    with libsocket.patch(sp.prefix):  # type: ignore[attr-defined]
        ls = socket.socket()
        try:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("0.0.0.0", 5202))
            ls.listen(4)
            li = tcpinfo.unpack(ls.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232))
            assert li["state"] == 10 and li["sacked"] == 4  # LISTEN, backlog
            client = ns.popen(  # type: ignore[attr-defined]
                "python3", "-c",
                "import socket,sys; s=socket.create_connection((sys.argv[1], 5202));"
                "s.sendall(b'y' * 300000); s.close()", "10.78.0.2",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            c, _ = ls.accept()
            got = 0
            while True:
                b = c.recv(65536)
                if not b:
                    break
                got += len(b)
            client.communicate(timeout=30)
            assert got == 300000
            raw = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
            i = tcpinfo.unpack(raw)
            assert i["bytes_received"] == 300000 + 1  # as Linux: RCV.NXT's advance, FIN included
            assert i["data_segs_in"] >= 1 and i["segs_in"] >= i["data_segs_in"]
            assert i["state"] == 8  # CLOSE_WAIT: the peer closed
            assert i["last_data_recv"] < 60_000
            # Linux's unpacking, the first 104 bytes (the historic size)
            fmt = "=7B B 24I"
            head = struct.unpack(fmt, c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO,
                                                   struct.calcsize(fmt)))
            assert head[0] == 8 and head[10] == i["snd_mss"]
            assert len(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 16)) == 16
            c.close()
        finally:
            ls.close()


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_c_header_layout_is_linux(tmp_path: object) -> None:
    """struct iop_tcp_info has <linux/tcp.h>'s size and every field at Linux's offset, and
    LAYOUT here agrees with both."""
    fields = [f for f in tcpinfo.FIELDS if f not in ("wscale", "flags")]
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <linux/tcp.h>',
             '#include "io_pkt_socket.h"', "int main(void) {",
             'printf("size %zu %zu\\n", sizeof(struct iop_tcp_info), sizeof(struct tcp_info));']
    for f in fields:
        lines.append(f'printf("{f} %zu %zu\\n", offsetof(struct iop_tcp_info, tcpi_{f}), '
                     f'offsetof(struct tcp_info, tcpi_{f}));')
    lines.append('printf("IOP_GETSOCKOPT_LARGE %lu\\n", (unsigned long)IOP_GETSOCKOPT_LARGE);')
    lines.append('printf("iop_sockopt_large %zu\\n", sizeof(struct iop_sockopt_large));')
    lines.append("return 0; }")
    src = os.path.join(str(tmp_path), "ti.c")
    exe = os.path.join(str(tmp_path), "ti")
    with open(src, "w") as f:
        f.write("\n".join(lines))
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", f"{REPO}/rmgr/include", "-o", exe, src],
                   check=True, capture_output=True)
    out = {ln.split()[0]: ln.split()[1:]
           for ln in subprocess.run([exe], check=True, capture_output=True,
                                    text=True).stdout.splitlines()}
    assert out["size"] == [str(tcpinfo.SIZE)] * 2
    off = 0
    for name, code in tcpinfo.LAYOUT:
        if name in out:
            assert out[name] == [str(off)] * 2, name
        off += struct.calcsize("<" + code)
    from rmgr.libsocket import abi

    assert int(out["IOP_GETSOCKOPT_LARGE"][0]) == abi.IOP_GETSOCKOPT_LARGE
    assert int(out["iop_sockopt_large"][0]) == abi.SOCKOPT_LARGE.size


def test_pack_unpack_round_trip() -> None:
    info = {name: i + 1 for i, name in enumerate(tcpinfo.FIELDS)}
    info["wscale"] = 7 | (9 << 4)
    out = tcpinfo.unpack(tcpinfo.pack(info))
    assert out["snd_wscale"] == 7 and out["rcv_wscale"] == 9
    assert all(out[f] == info[f] for f in tcpinfo.FIELDS)
    assert set(tcpinfo.unpack(tcpinfo.pack(info)[:12])) == {
        "state", "ca_state", "retransmits", "probes", "backoff", "options", "wscale",
        "flags", "rto", "snd_wscale", "rcv_wscale"}
