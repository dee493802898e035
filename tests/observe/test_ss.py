"""``io-pkt ss`` prints what iproute2's ss prints, so what parses ``ss`` parses it: the
same parser reads the stack's output and the kernel's own ``ss`` for the two ends of one
connection, and the figures agree (the bytes one side acknowledged are the bytes the
other received)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

from rmgr import libsocket
from tests.conftest import needs_fuse, needs_tun

from .conftest import ADDR, PEER

pytestmark = [needs_fuse, needs_tun]

HEADER = ["State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port", "Process"]

#: ss -i: ``key:value`` words, ``send|pacing_rate|delivery_rate N{,K,M,G}bps`` pairs, flags
_PAIR = re.compile(r"^(send|pacing_rate|delivery_rate)$")


def parse_ss(text: str) -> list[dict[str, object]]:
    """iproute2 ss output → one dict per socket, as scripts parse it: the header names the
    columns (``Netid`` only when more than one kind is listed; ``Local Address:Port`` and
    ``Peer Address:Port`` are one column each), the last address is split at its last
    colon, a tab-indented line after a socket holds its TCP internals."""
    lines = text.splitlines()
    out: list[dict[str, object]] = []
    cols: list[str] | None = None
    for ln in lines:
        if ln.startswith("\t"):
            info: dict[str, object] = {}
            words = ln.split()
            i = 0
            while i < len(words):
                w = words[i]
                if _PAIR.match(w) and i + 1 < len(words):
                    info[w] = words[i + 1]
                    i += 2
                    continue
                k, sep, v = w.partition(":")
                info[k] = v if sep else True
                i += 1
            out[-1]["info"] = info
            continue
        if ln.startswith(("State", "Netid")):
            cols = (["Netid"] if ln.startswith("Netid") else []) + HEADER
            continue
        parts = ln.split(None, 6 if cols and cols[0] == "Netid" else 5)
        names = cols or HEADER
        row: dict[str, object] = dict(zip(names, parts, strict=False))
        for side in ("Local", "Peer"):
            addr, _, port = str(row[f"{side} Address:Port"]).rpartition(":")
            row[f"{side}Addr"], row[f"{side}Port"] = addr.strip("[]"), port
        out.append(row)
    return out


def io_pkt_ss(sp: object, *args: str) -> str:
    return sp.tool("ss", *args).stdout  # type: ignore[attr-defined,no-any-return]


def _ms(x: object) -> float:
    return float(str(x).split("/")[0])


CLIENT = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"k" * 50000)
n = 0
while n < int(sys.argv[3]):
    b = s.recv(1 << 16)
    if not b:
        break
    n += len(b)
print(n, flush=True)
time.sleep(30)
"""


def test_ss_formats_and_agrees_with_the_kernel(one: tuple[object, object]) -> None:
    sp, ns = one
    size = 3_000_000
    with libsocket.patch(sp.prefix):  # type: ignore[attr-defined]
        ls = socket.socket()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client = None
        try:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("0.0.0.0", 8080))
            ls.listen(7)
            u.bind(("0.0.0.0", 5353))
            client = ns.popen(sys.executable, "-c", CLIENT, ADDR, "8080",  # type: ignore[attr-defined]
                              str(size), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
            c, peer = ls.accept()
            got = 0
            while got < 50000:
                got += len(c.recv(65536))
            c.sendall(b"s" * size)
            assert client.stdout is not None
            assert int(client.stdout.readline()) == size
            time.sleep(0.3)  # the last ACKs

            # default: connected sockets only, iproute2's header
            out = io_pkt_ss(sp, "-tn")
            assert out.splitlines()[0].split() == "State Recv-Q Send-Q Local Address:Port Peer Address:Port Process".split()
            rows = parse_ss(out)
            assert [(r["State"], r["LocalAddr"], r["LocalPort"], r["PeerAddr"], r["PeerPort"])
                    for r in rows] == [("ESTAB", ADDR, "8080", PEER, str(peer[1]))]

            # -l: the listener, its backlog as Send-Q (as Linux's ss)
            rows = parse_ss(io_pkt_ss(sp, "-tln"))
            assert [(r["State"], r["Recv-Q"], r["Send-Q"], r["LocalAddr"], r["LocalPort"],
                     r["PeerAddr"], r["PeerPort"]) for r in rows] == \
                [("LISTEN", "0", "7", "0.0.0.0", "8080", "0.0.0.0", "*")]
            # service names without -n
            assert parse_ss(io_pkt_ss(sp, "-tl"))[0]["LocalPort"] == "http-alt"

            # -tua: a Netid column; UDP unconnected
            out = io_pkt_ss(sp, "-tuan")
            assert out.splitlines()[0].split()[:2] == ["Netid", "State"]
            rows = parse_ss(out)
            assert {(r["Netid"], r["State"], r["LocalPort"]) for r in rows} >= {
                ("tcp", "LISTEN", "8080"), ("tcp", "ESTAB", "8080"), ("udp", "UNCONN", "5353")}

            # -p: this process and the fd of each socket
            rows = parse_ss(io_pkt_ss(sp, "-tuanp"))
            me = os.getpid()
            fds = {("tcp", "LISTEN"): ls.fileno(), ("tcp", "ESTAB"): c.fileno(),
                   ("udp", "UNCONN"): u.fileno()}
            for r in rows:
                key = (r["Netid"], r["State"])
                if key in fds and r["LocalPort"] in ("8080", "5353"):
                    m = re.fullmatch(r'users:\(\("([^"]+)",pid=(\d+),fd=(\d+)\)\)', str(r["Process"]))
                    assert m, r
                    assert int(m.group(2)) == me and int(m.group(3)) == fds[key], (r, fds)

            # -i: the internals, read by the same parser from both ends
            mine = parse_ss(io_pkt_ss(sp, "-tino"))
            assert len(mine) == 1 and "info" in mine[0]
            info = mine[0]["info"]
            assert isinstance(info, dict)
            kern = parse_ss(ns.run("ss", "-tino", "dst", f"{ADDR}:8080").stdout)  # type: ignore[attr-defined]
            assert len(kern) == 1 and isinstance(kern[0]["info"], dict)
            kinfo = kern[0]["info"]
            for key in ("ts", "sack", "wscale", "rto", "rtt", "mss", "cwnd", "bytes_acked",
                        "bytes_received", "segs_out", "segs_in", "send", "rcv_space"):
                assert key in info, (key, info)
                assert key in kinfo, (key, kinfo)
            # as Linux, bytes_acked counts the SYN: the peer received one byte less
            assert int(str(info["bytes_acked"])) - 1 == int(str(kinfo["bytes_received"])) == size
            assert int(str(info["bytes_received"])) == int(str(kinfo["bytes_acked"])) - 1 == 50000
            assert int(str(info["cwnd"])) > 0 and _ms(info["rtt"]) > 0 and _ms(info["rto"]) >= 200
            snd, rcv = str(info["wscale"]).split(",")
            ksnd, krcv = str(kinfo["wscale"]).split(",")
            assert (snd, rcv) == (krcv, ksnd)  # each side's send scale is the other's receive
            assert str(info["send"]).endswith("bps")
            # the same figure through TCP_INFO on the socket
            from stack.transport.tcp import info as tcpinfo

            ti = tcpinfo.unpack(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232))
            assert int(str(info["mss"])) == ti["snd_mss"]
            assert int(str(info["bytes_acked"])) == ti["bytes_acked"]

            # -H, filters
            assert io_pkt_ss(sp, "-tnH").splitlines()[0].startswith("ESTAB")
            assert parse_ss(io_pkt_ss(sp, "-tan", "state", "listening"))[0]["State"] == "LISTEN"
            assert len(parse_ss(io_pkt_ss(sp, "-tan", "sport", "=", ":8080"))) == 2
            assert parse_ss(io_pkt_ss(sp, "-tan", "dport", "=", ":1")) == []
            assert len(parse_ss(io_pkt_ss(sp, "-tan", "dst", PEER))) == 1
            # -x: the stack has no Unix sockets, only the header
            assert io_pkt_ss(sp, "-x").splitlines() == [
                "State Recv-Q Send-Q Local Address:Port Peer Address:Port Process"]
            c.close()
        finally:
            ls.close()
            u.close()
            if client is not None:
                client.kill()
                client.communicate()
    # TIME-WAIT only with -a
    time.sleep(0.2)
    assert all(r["State"] != "TIME-WAIT" for r in parse_ss(io_pkt_ss(sp, "-tn")))


def test_ss_usage_errors(one: tuple[object, object]) -> None:
    sp, _ = one
    r = sp.tool("ss", "-Z", check=False)  # type: ignore[attr-defined]
    assert r.returncode == 1 and r.stderr.startswith("ss: unknown option -Z")
    assert len(r.stderr.strip().splitlines()) == 1
    r = sp.tool("ss", "state", "nosuch", check=False)  # type: ignore[attr-defined]
    assert r.returncode == 1 and r.stderr.startswith("ss: state needs a state name")
    assert sp.tool("ss", "--help").stdout.startswith("usage: ss")  # type: ignore[attr-defined]
