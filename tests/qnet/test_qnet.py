"""Qnet between io-pkt processes joined by devnp-vwire (issue 17): discovery, B's files
from A (ls/cat/stat/echo, permissions, maproot), a remote socket (``SOCK=<A>/net/b``)
talking to a kernel server only B reaches, 20 MB under loss/reorder/duplication with a
capture decoded by tshark, two links (loadbalance, preferred failover, exclusive), a
node killed and restarted, a blocked remote read interrupted by a signal."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import HAVE_FUSE, HAVE_ROOT, HAVE_TUN, REPO, io_pkt_env
from tests.qnet.helpers import (
    SHA_CLIENT,
    SHA_SERVER,
    libsocket,
    link_frames,
    listing,
    qnet_state,
    qnet_stats,
    wait_for,
)
from tests.qnet.test_wire import tshark_check

pytestmark = pytest.mark.skipif(not (HAVE_ROOT and HAVE_FUSE),
                                reason="needs root and /dev/fuse")

TCPIP = "auto_linklocal=0"


def start(stack_process, tmp_path, name: str, drivers: list[str], qnet: str,  # type: ignore[no-untyped-def]
          extra: list[str] = ()):  # type: ignore[assignment]
    prefix = str(tmp_path / name)
    args: list[str] = []
    for d in drivers:
        args += ["-d", "vwire", d]
    args += list(extra)
    args += ["-p", "qnet", f"host={name},{qnet}", "-p", "tcpip", f"prefix={prefix},{TCPIP}"]
    sp = stack_process(*args)
    for d in drivers:
        ifname = [kv.split("=")[1] for kv in d.split(",") if kv.startswith("name=")][0]
        sp.tool("ifconfig", ifname, "up")
    return sp


def pair(stack_process, tmp_path, a_wire: str = "", b_wire: str = "",  # type: ignore[no-untyped-def]
         a_opts: str = "auto_add=2", b_opts: str = "auto_add=2", b_extra=(), a_extra=()):
    w = str(tmp_path / "w0.sock")
    a = start(stack_process, tmp_path, "a", [f"path={w},name=vw0{a_wire}"], a_opts,
              list(a_extra))
    b = start(stack_process, tmp_path, "b", [f"peer={w},name=vw0{b_wire}"], b_opts,
              list(b_extra))
    wait_for(lambda: "b" in listing(f"{a.prefix}/net"), 10, "a to learn b")
    return a, b


def test_three_nodes_discover_each_other_and_files(stack_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    exp = tmp_path / "exp"
    (exp / "sub").mkdir(parents=True)
    (exp / "hello.txt").write_text("hello from b\n")
    (exp / "open.txt").write_text("anyone\n")
    (exp / "secret.txt").write_text("root only\n")
    os.chmod(exp / "open.txt", 0o666)
    os.chmod(exp / "secret.txt", 0o600)
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "fixed.txt").write_text("fixed\n")
    w1, w2 = str(tmp_path / "w1.sock"), str(tmp_path / "w2.sock")
    t0 = time.monotonic()
    a = start(stack_process, tmp_path, "a", [f"path={w1},name=vw0", f"path={w2},name=vw1"],
              "auto_add=3")
    b = start(stack_process, tmp_path, "b", [f"peer={w1},name=vw0"],
              f"auto_add=3,export={exp}+{ro}:ro,maproot=65534")
    c = start(stack_process, tmp_path, "c", [f"peer={w2},name=vw0"], "auto_add=3")
    # each learns the others within one period (0.6 s) of the last one coming up
    wait_for(lambda: listing(f"{a.prefix}/net") == [".qnet", "b", "c"], 3, "a to list b, c")
    wait_for(lambda: "a" in listing(f"{b.prefix}/net"), 3, "b to list a")
    wait_for(lambda: "a" in listing(f"{c.prefix}/net"), 3, "c to list a")
    assert time.monotonic() - t0 < 60
    nb = f"{a.prefix}/net/b"
    # B's stack files: its socket door and config, as B serves them
    assert "dev" in os.listdir(nb)
    assert {"config", "tcp", "udp"} <= set(os.listdir(f"{nb}/dev/socket"))
    with open(f"{nb}/dev/socket/config/status") as fh:
        status = fh.read()
    assert f"prefix {b.prefix}" in status
    # the exported host directories: ls, cat, stat, echo >
    bexp = f"{nb}{exp}"
    assert sorted(os.listdir(bexp)) == ["hello.txt", "open.txt", "secret.txt", "sub"]
    with open(f"{bexp}/hello.txt") as fh:
        assert fh.read() == "hello from b\n"
    st = os.stat(f"{bexp}/hello.txt")
    assert st.st_size == len("hello from b\n") and (st.st_mode & 0o777) == 0o644
    assert os.path.isdir(f"{bexp}/sub")
    r = subprocess.run(["sh", "-c", f"echo changed > {bexp}/open.txt"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert (exp / "open.txt").read_text() == "changed\n"
    # maproot=65534 on b: a's root is nobody there: 0600 root-owned files refuse
    with pytest.raises(PermissionError):
        open(f"{bexp}/secret.txt").read()
    with pytest.raises(PermissionError):
        open(f"{bexp}/hello.txt", "w").write("x")
    assert (exp / "hello.txt").read_text() == "hello from b\n"
    # read-only export
    with open(f"{nb}{ro}/fixed.txt") as fh:
        assert fh.read() == "fixed\n"
    with pytest.raises(OSError) as exc:
        open(f"{nb}{ro}/fixed.txt", "w").write("x")
    assert exc.value.errno in (errno.EROFS, errno.EACCES)
    # nothing outside the export and B's stack files
    assert not os.path.exists(f"{nb}/etc/passwd")
    assert not os.path.exists(f"{nb}{exp}/../../etc")
    # an unknown node is not there
    assert not os.path.exists(f"{a.prefix}/net/nosuchnode")
    # io-pkt qnet
    out = a.tool("qnet").stdout
    assert "node b" in out and "node c" in out and "link vw0" in out and "conn " in out
    # c leaves: silent for three periods, it leaves a's /net
    c.stop()
    wait_for(lambda: "c" not in listing(f"{a.prefix}/net"), 6, "c to leave a's /net")
    assert qnet_stats(a.prefix)["lr_expired"] >= 1


@pytest.mark.skipif(not HAVE_TUN, reason="needs /dev/net/tun")
def test_remote_socket_to_a_kernel_server_only_b_reaches(stack_process, tmp_path,  # type: ignore[no-untyped-def]
                                                         netns) -> None:
    a, b = pair(stack_process, tmp_path, b_extra=["-d", "tap", f"name=qt0,netns={netns}"])
    b.tool("ifconfig", "qt0", "10.79.0.2/24", "up")
    netns.run("ip", "addr", "add", "10.79.0.1/24", "dev", "qt0")
    netns.run("ip", "link", "set", "qt0", "up")
    srv = netns.popen(sys.executable, "-c", SHA_SERVER, "10.79.0.1", "7001",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "up"
        # a itself has no route there: only through b's stack
        r = libsocket(a.prefix, SHA_CLIENT, "10.79.0.1", "7001", "1000")
        assert r.returncode != 0  # type: ignore[union-attr]
        r = libsocket(f"{a.prefix}/net/b", SHA_CLIENT, "10.79.0.1", "7001", "3000000")
        assert r.returncode == 0, r.stderr  # type: ignore[union-attr]
        assert r.stdout.strip() == "equal"  # type: ignore[union-attr]
        out, _ = srv.communicate(timeout=30)
        assert out.strip().splitlines()[-1] == "3000000"
        # the connection was b's: b's socket table saw it, a's never did
        assert qnet_stats(b.prefix)["kif_served"] > 10
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.communicate()


def _capture(path: str, out: str, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            with open(out, "wb") as fh:
                while not stop.is_set():
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        time.sleep(0.01)
                        continue
                    if not chunk:
                        break
                    fh.write(chunk)
        finally:
            os.close(fd)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_20mb_under_loss_reorder_dup_and_tshark(stack_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    faults = os.environ.get("QNET_FAULTS", ",loss=0.05,reorder=0.05,dup=0.05") + ",seed={}"
    a, b = pair(stack_process, tmp_path, faults.format(1), faults.format(2),
                a_extra=["-p", "bpf"])
    port = "7002"
    srv = libsocket(b.prefix, SHA_SERVER, "127.0.0.1", port, wait=False)
    assert isinstance(srv, subprocess.Popen) and srv.stdout is not None
    pcap = str(tmp_path / "qnet.pcap")
    stop = threading.Event()
    try:
        assert srv.stdout.readline().strip() == "up"
        cap = _capture(f"{a.prefix}/dev/bpf/vw0", pcap, stop)
        n = int(os.environ.get("QNET_BYTES", 20 * 1000 * 1000))
        t0 = time.monotonic()
        r = libsocket(f"{a.prefix}/net/b", SHA_CLIENT, "127.0.0.1", port, str(n), timeout=300)
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stderr  # type: ignore[union-attr]
        assert r.stdout.strip() == "equal"  # type: ignore[union-attr]
        out, _ = srv.communicate(timeout=60)
        assert out.strip().splitlines()[-1] == str(n)
        stop.set()
        cap.join(10)
    finally:
        stop.set()
        if srv.poll() is None:
            srv.kill()
            srv.communicate()
    sa, sb = qnet_stats(a.prefix), qnet_stats(b.prefix)
    # the wire really was lossy, reordering and duplicating, and the L4 repaired it
    assert sa["retransmits"] > 100 and sa["nacks_in"] > 10
    assert sb["dup_in"] > 10 and sb["ooo_in"] > 10
    print(f"20 MB in {took:.1f}s; a: {sa['retransmits']} retransmits")
    text = tshark_check(pcap)
    assert text.count("QNX6 QNET LWL4 protocol") > 1000


def test_two_links_loadbalance_preferred_exclusive(stack_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    w0, w1 = str(tmp_path / "w0.sock"), str(tmp_path / "w1.sock")
    # a names its links as QNX does (bind= repeated), b takes every interface
    a = start(stack_process, tmp_path, "a", [f"path={w0},name=vw0", f"path={w1},name=vw1"],
              "bind=vw0,bind=vw1,auto_add=2,tx_retries=3")
    b = start(stack_process, tmp_path, "b", [f"peer={w0},name=vw0", f"peer={w1},name=vw1"],
              "auto_add=2,tx_retries=3")
    wait_for(lambda: set(link_frames(a.prefix, "b")) == {"vw0", "vw1"}, 10, "both links")
    port = "7003"

    def transfer(node: str, n: int, during=None) -> None:  # type: ignore[no-untyped-def]
        srv = libsocket(b.prefix, SHA_SERVER, "127.0.0.1", port, wait=False)
        assert isinstance(srv, subprocess.Popen) and srv.stdout is not None
        try:
            assert srv.stdout.readline().strip() == "up"
            cli = libsocket(f"{a.prefix}/net/{node}", SHA_CLIENT, "127.0.0.1", port, str(n),
                            wait=False)
            assert isinstance(cli, subprocess.Popen)
            if during is not None:
                during()
            out, err = cli.communicate(timeout=120)
            assert cli.returncode == 0, err
            assert out.strip() == "equal"
        finally:
            if srv.poll() is None:
                srv.kill()
            srv.communicate()

    # loadbalance: both links carry frames
    before = link_frames(a.prefix, "b")
    transfer("b", 4_000_000)
    after = link_frames(a.prefix, "b")
    for ln in ("vw0", "vw1"):
        assert after[ln][1] - before[ln][1] > 200, (before, after)

    # preferred:vw1; vw1 goes down mid-transfer (on b's side: frames vanish): nothing is
    # lost, vw0 carries the rest; when vw1 is back the traffic returns to it
    def cut() -> None:
        wait_for(lambda: link_frames(a.prefix, "b")["vw1"][1] > after["vw1"][1] + 100, 20,
                 "traffic on vw1")
        b.tool("ifconfig", "vw1", "down")

    mid = link_frames(a.prefix, "b")
    transfer("b~preferred:vw1", 30_000_000, cut)
    end = link_frames(a.prefix, "b")
    assert end["vw0"][1] - mid["vw0"][1] > 100  # fell over
    assert not end["vw1"][0]
    b.tool("ifconfig", "vw1", "up")
    wait_for(lambda: link_frames(a.prefix, "b")["vw1"][0], 10, "vw1 to come back (probes)")
    back = link_frames(a.prefix, "b")
    transfer("b~preferred:vw1", 2_000_000)
    again = link_frames(a.prefix, "b")
    assert again["vw1"][1] - back["vw1"][1] > 500
    assert again["vw0"][1] - back["vw0"][1] < 100
    assert qnet_stats(a.prefix)["probes_out"] >= 1

    # exclusive:vw1 with vw1 down: fails (EHOSTDOWN), never falls over
    b.tool("ifconfig", "vw1", "down")
    t0 = time.monotonic()
    r = subprocess.run(["ls", f"{a.prefix}/net/b~exclusive:vw1/dev"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0
    assert "down" in r.stderr.lower() or "no such" in r.stderr.lower(), r.stderr
    assert time.monotonic() - t0 < 15
    # while the loadbalanced name still works over vw0
    assert "socket" in os.listdir(f"{a.prefix}/net/b/dev")


def test_node_killed_ehostdown_then_usable_again(stack_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b = pair(stack_process, tmp_path, a_opts="auto_add=2,tx_retries=3",
                b_opts="auto_add=2")
    nb = f"{a.prefix}/net/b/dev/socket/config/status"
    with open(nb) as fh:
        assert "pid" in fh.read()
    fd = os.open(nb, os.O_RDONLY)  # an fd open across the failure
    b.proc.kill()
    b.proc.wait()
    t0 = time.monotonic()
    with pytest.raises(OSError) as exc:
        os.stat(f"{a.prefix}/net/b/dev/socket/tcp")
    took = time.monotonic() - t0
    assert exc.value.errno in (errno.EHOSTDOWN, errno.ENOENT), exc.value
    assert took < 10, took  # the documented budget: (tx_retries + 1) x 1 s at most
    with pytest.raises(OSError) as exc2:
        os.read(fd, 100)
    assert exc2.value.errno in (errno.EHOSTDOWN, errno.EBADF, errno.EIO)
    os.close(fd)
    # b again (a new incarnation, same name, same wire): usable without restarting a
    b.cleanup()
    b2 = start(stack_process, tmp_path, "b", [f"peer={tmp_path / 'w0.sock'},name=vw0"],
               "auto_add=2")

    def works() -> bool:
        try:
            with open(nb) as fh:
                return f"pid {b2.proc.pid}" in fh.read()
        except OSError:
            return False

    wait_for(works, 20, "b restarted to be usable from a", step=0.3)


INTERRUPTED_READ = """
import os, signal, socket, sys, time
class Interrupted(Exception):
    pass
def handler(sig, frame):
    raise Interrupted()
signal.signal(signal.SIGUSR1, handler)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 7004))
print("blocking", flush=True)
t = time.monotonic()
try:
    s.recv(100)
    print("returned", flush=True)
except Interrupted:
    print("interrupted %.2f" % (time.monotonic() - t), flush=True)
"""


def test_blocked_remote_read_interrupted_by_a_signal(stack_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b = pair(stack_process, tmp_path)
    p = libsocket(f"{a.prefix}/net/b", INTERRUPTED_READ, wait=False)
    assert isinstance(p, subprocess.Popen) and p.stdout is not None
    try:
        assert p.stdout.readline().strip() == "blocking"
        time.sleep(0.5)
        before = qnet_stats(b.prefix).get("kif_interrupts", 0)
        p.send_signal(signal.SIGUSR1)
        out, err = p.communicate(timeout=20)
        assert out.startswith("interrupted"), (out, err)
        # the interrupt crossed the network: b cancelled the blocked read
        wait_for(lambda: qnet_stats(b.prefix).get("kif_interrupts", 0) > before, 5,
                 "b to see the interrupt")
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_io_pkt_qnet_tool_without_qnet(stack_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sp = stack_process("-p", "tcpip", f"prefix={tmp_path}/plain,{TCPIP}")
    r = sp.tool("qnet", check=False)
    assert r.returncode == 1 and "lsm-qnet" in r.stderr


def _unused() -> None:  # keep imports used by type checkers of helper modules honest
    _ = (REPO, io_pkt_env, qnet_state)
