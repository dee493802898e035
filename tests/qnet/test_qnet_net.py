"""Qnet with the rest of the network (issue 17, "What it must show"): a Python server run
on A with ``SOCK=<A>/net/b`` serves on B's address to curl in B's namespace; a C client
(gcc, rmgr/include/io_pkt_socket.h) on A opens ``<A>/net/b/dev/socket/2/1/6`` and talks to
a kernel server only B reaches; three stacks whose TAPs are on a Linux bridge discover
each other within one auto_add period; ``bind=ip`` (IP protocol 106) carries a remote
file read; ``key=``: the same key works, a different one is refused and counted.

Every namespace (the bridge lives in one), process and mount is removed on every path
(the netns_factory and stack_process fixtures); nothing is configured in the host's
namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import HAVE_FUSE, HAVE_ROOT, HAVE_TUN, REPO, io_pkt_env
from tests.qnet.helpers import listing, qnet_stats, wait_for
from tests.qnet.test_qnet import pair, start

pytestmark = pytest.mark.skipif(not (HAVE_ROOT and HAVE_FUSE and HAVE_TUN),
                                reason="needs root, /dev/fuse and /dev/net/tun")

#: a kernel server in B's namespace: one connection, reads to EOF, answers it upper-cased
UPPER_SERVER = """
import socket, sys
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2])))
ls.listen(1)
print("up", flush=True)
c, peer = ls.accept()
data = b""
while True:
    b = c.recv(65536)
    if not b:
        break
    data += b
c.sendall(data.upper())
c.close()
print(peer[0], flush=True)
"""


def _b_with_tap(stack_process, tmp_path, netns):  # type: ignore[no-untyped-def]
    """A and B over vwire; B also has qt0, a TAP whose far end is in ``netns``
    (B 10.79.0.2, the namespace 10.79.0.1): a network only B reaches."""
    a, b = pair(stack_process, tmp_path, b_extra=["-d", "tap", f"name=qt0,netns={netns}"])
    b.tool("ifconfig", "qt0", "10.79.0.2/24", "up")
    netns.run("ip", "addr", "add", "10.79.0.1/24", "dev", "qt0")
    netns.run("ip", "link", "set", "qt0", "up")
    return a, b


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_http_server_run_on_a_serves_on_bs_address(stack_process, tmp_path,  # type: ignore[no-untyped-def]
                                                   netns) -> None:
    a, b = _b_with_tap(stack_process, tmp_path, netns)
    www = tmp_path / "www"
    www.mkdir()
    (www / "page.html").write_text("<p>served from a, on b's stack</p>\n")
    srv = subprocess.Popen([sys.executable, "-m", "rmgr.libsocket", "-m", "http.server",
                            "8080", "--directory", str(www)], cwd=REPO,
                           env=io_pkt_env(SOCK=f"{a.prefix}/net/b"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def fetch() -> str:
            r = netns.run("curl", "-s", "--max-time", "5", "http://10.79.0.2:8080/page.html",
                          check=False, timeout=15)
            return r.stdout if r.returncode == 0 else ""

        assert wait_for(fetch, 30, "curl in b's namespace to fetch the page",
                        step=0.3) == "<p>served from a, on b's stack</p>\n"
        # the listener is b's (its socket table), served to a over Qnet
        with open(f"{b.prefix}/dev/socket/config/status") as fh:
            assert "prefix" in fh.read()
        assert qnet_stats(b.prefix)["kif_served"] > 5
        assert srv.poll() is None
    finally:
        srv.terminate()
        try:
            srv.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.communicate()


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_c_client_on_a_through_bs_socket_door(stack_process, tmp_path,  # type: ignore[no-untyped-def]
                                              netns) -> None:
    exe = str(tmp_path / "tcp_client")
    subprocess.run(["gcc", "-Wall", "-Wextra", "-Werror", "-O2", "-I", f"{REPO}/rmgr/include",
                    "-o", exe, f"{REPO}/examples/tcp_client.c"], check=True,
                   capture_output=True, timeout=60)
    a, b = _b_with_tap(stack_process, tmp_path, netns)
    assert "6" in listing(f"{a.prefix}/net/b/dev/socket/2/1")  # the door it opens
    srv = netns.popen(sys.executable, "-c", UPPER_SERVER, "10.79.0.1", "7020",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "up"
        # A's own stack has no route to 10.79.0.0/24 ...
        r = subprocess.run([exe, "10.79.0.1", "7020", "x"], env=io_pkt_env(SOCK=a.prefix),
                           capture_output=True, timeout=30)
        assert r.returncode != 0
        # ... B's has: the C program opens <A>/net/b/dev/socket/2/1/6
        r = subprocess.run([exe, "10.79.0.1", "7020", "hello from c on a"],
                           env=io_pkt_env(SOCK=f"{a.prefix}/net/b"), capture_output=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"HELLO FROM C ON A"
        out, _ = srv.communicate(timeout=15)
        assert out.strip().splitlines()[-1] == "10.79.0.2"  # the peer was B's address
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.communicate()


def test_three_stacks_on_a_bridge_discover_each_other(stack_process, tmp_path,  # type: ignore[no-untyped-def]
                                                      netns) -> None:
    """Three stacks, each with one TAP; the TAPs' far ends are enslaved to a bridge in a
    namespace of the test's: discovery by the LAN resolver's broadcasts on the bridge."""
    netns.run("ip", "link", "add", "qbr0", "type", "bridge")
    netns.run("ip", "link", "set", "qbr0", "up")
    sps = {}
    for i, name in enumerate("abc"):
        sps[name] = start(stack_process, tmp_path, name, [], "auto_add=5",
                          ["-d", "tap", f"name=qb{i},netns={netns}"])
    for i, name in enumerate("abc"):
        sps[name].tool("ifconfig", f"qb{i}", "up")
        netns.run("ip", "link", "set", f"qb{i}", "master", "qbr0")
        netns.run("ip", "link", "set", f"qb{i}", "up")
    t_up = time.monotonic()
    period = 5 * 0.2
    # the bridge forwards at once (no STP); one period after the last link came up every
    # node has heard every other's announcement (slack: process scheduling on 2 cores)
    for name in "abc":
        others = [".qnet"] + [o for o in "abc" if o != name]
        wait_for(lambda n=name, o=others: listing(f"{sps[n].prefix}/net") == o,
                 period + 2, f"{name} to list {others}")
    took = time.monotonic() - t_up
    assert took < period + 0.5, took
    assert sorted(listing(f"{sps['a'].prefix}/net")) == [".qnet", "b", "c"]
    # and the names work: b's and c's files from a, over the bridge
    for o in "bc":
        with open(f"{sps['a'].prefix}/net/{o}/dev/socket/config/status") as fh:
            assert f"prefix {sps[o].prefix}" in fh.read()


def test_bind_ip_carries_a_remote_file_read(stack_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """IP protocol 106 between two stacks over IPv4 (static ``name ip ADDRESS`` entries):
    no Qnet frame on the Ethernet, the file read rides IP."""
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "f.txt").write_text("over ip protocol 106\n" * 100)
    res_a, res_b = tmp_path / "res_a", tmp_path / "res_b"
    res_a.write_text("b ip 10.81.0.2\n")
    res_b.write_text("a ip 10.81.0.1\n")
    w = str(tmp_path / "wip.sock")
    a = start(stack_process, tmp_path, "a", [f"path={w},name=vw0"],
              f"bind=ip,auto_add=0,resolve=file,resolve_file={res_a}")
    b = start(stack_process, tmp_path, "b", [f"peer={w},name=vw0"],
              f"bind=ip,auto_add=0,resolve=file,resolve_file={res_b},export={exp}")
    a.tool("ifconfig", "vw0", "10.81.0.1/24", "up")
    b.tool("ifconfig", "vw0", "10.81.0.2/24", "up")
    assert "b" in listing(f"{a.prefix}/net")
    with open(f"{a.prefix}/net/b{exp}/f.txt") as fh:
        assert fh.read() == "over ip protocol 106\n" * 100
    sa, sb = qnet_stats(a.prefix), qnet_stats(b.prefix)
    assert sa["ip_out"] > 0 and sa["ip_in"] > 0 and sb["ip_in"] > 0 and sb["ip_out"] > 0
    assert sa["kif_replies"] > 0 and sb["kif_served"] > 0
    # nothing went as Ethernet frames (ip frames are all the frames there were)
    assert sa["frames_in"] == sa["ip_in"] and sb["frames_in"] == sb["ip_in"]


def test_key_same_works_different_refused_and_counted(stack_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    k1, k2 = tmp_path / "k1", tmp_path / "k2"
    k1.write_text("a shared secret of the a-b pair\n")
    k2.write_text("another secret, not the same one\n")
    w1, w2 = str(tmp_path / "w1.sock"), str(tmp_path / "w2.sock")
    a = start(stack_process, tmp_path, "a", [f"path={w1},name=vw0", f"path={w2},name=vw1"],
              f"auto_add=2,key={k1}")
    b = start(stack_process, tmp_path, "b", [f"peer={w1},name=vw0"], f"auto_add=2,key={k1}")
    c = start(stack_process, tmp_path, "c", [f"peer={w2},name=vw0"], f"auto_add=2,key={k2}")
    # the same key: b is learned and its files read
    wait_for(lambda: "b" in listing(f"{a.prefix}/net"), 5, "a to learn b")
    with open(f"{a.prefix}/net/b/dev/socket/config/status") as fh:
        assert f"prefix {b.prefix}" in fh.read()
    # a different key: c's frames are refused (counted), never learned, never answered
    wait_for(lambda: qnet_stats(a.prefix).get("drop_bad_mac", 0) >= 2, 5,
             "a to refuse c's announcements")
    wait_for(lambda: qnet_stats(c.prefix).get("drop_bad_mac", 0) >= 2, 5,
             "c to refuse a's announcements")
    assert "c" not in listing(f"{a.prefix}/net")
    assert "a" not in listing(f"{c.prefix}/net")
    # c looking a up by name: a's answer (if any) fails c's check; the name stays unknown
    t0 = time.monotonic()
    assert not os.path.exists(f"{c.prefix}/net/a")
    assert time.monotonic() - t0 < 10
    assert qnet_stats(a.prefix)["lr_learned"] >= 1  # b only
    assert qnet_stats(a.prefix).get("drop_bad_mac", 0) >= 2
