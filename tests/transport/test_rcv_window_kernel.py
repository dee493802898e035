"""Issue 14, item 1 with the kernel as the peer: the kernel (default sysctls, so window
scaling, SACK and timestamps on) sends 20 MB at a time to a slow-ish rmgr.libsocket
reader in the stack. The window fills and reopens all the time; when an advertisement
moved the right edge left (scaled window rounded down), input trimmed data the kernel
had sent inside the window it was offered (``beyond_window_trimmed``) and the kernel
went into SACK recovery on a lossless link. Deterministic MockClock version:
test_rcv_window.py."""

from __future__ import annotations

import hashlib
import random
import sys

import pytest
import trio

from stack.l2.iface import IFF_UP
from tests.conftest import HAVE_FUSE, REPO, NetNS, io_pkt_env, needs_tun, running_stack

pytestmark = [needs_tun, pytest.mark.root,
              pytest.mark.skipif(not HAVE_FUSE, reason="needs /dev/fuse and fusermount3")]

ME, KERNEL = "10.9.0.2", "10.9.0.1"
PORT = 5000
SIZE = 20 * 1024 * 1024
TRANSFERS = 4

#: the stack's side, through the files: accepts ``n`` connections one after the other and
#: reads each to EOF slowly enough that the window fills (a short pause every 256 KiB, a
#: longer one every 4 MiB so it closes completely and reopens); prints each one's sha256
READER = """
import hashlib, sys, time
from rmgr import libsocket
ls = libsocket.socket()
ls.bind(("0.0.0.0", int(sys.argv[1])))
ls.listen(4)
print("listening", flush=True)
for _ in range(int(sys.argv[2])):
    c, _ = ls.accept()
    h = hashlib.sha256()
    n = 0
    mark = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        h.update(b)
        n += len(b)
        if n - mark >= 256 * 1024:
            mark = n
            time.sleep(0.05 if n % (4 << 20) < 256 * 1024 else 0.002)
    c.close()
    print(n, h.hexdigest(), flush=True)
ls.close()
"""

#: the kernel's side: ``n`` connections, each sending its seeded 20 MB and closing
SENDER = """
import random, socket, sys, time
host, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    data = random.Random(i).randbytes(size)
    for _ in range(100):
        try:
            s = socket.create_connection((host, port))
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
"""


async def kernel_stats(ns: NetNS) -> dict[str, int]:
    """The kernel's retransmission and SACK-recovery counters (printed, not asserted on:
    the TAP may drop under load, which is real loss)."""
    r = await trio.run_process(["ip", "netns", "exec", ns.name, "nstat", "-asz",
                                "TcpRetransSegs", "TcpExtTCPSackRecovery"],
                               capture_stdout=True, check=False)
    out: dict[str, int] = {}
    for line in r.stdout.decode().splitlines():
        f = line.split()
        if len(f) >= 2 and f[1].isdigit():
            out[f[0]] = int(f[1])
    return out


async def test_kernel_sender_never_trimmed(netns: NetNS, tmp_path) -> None:  # noqa: ANN001
    prefix = str(tmp_path / "s")
    want = [hashlib.sha256(random.Random(i).randbytes(SIZE)).hexdigest()
            for i in range(TRANSFERS)]
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns}")], prefix=prefix,
                             mount=True) as st:
        st.interfaces["tap0"].set_flags(IFF_UP)
        st.inet.add_address("tap0", f"{ME}/24")
        for cmd in (["addr", "add", f"{KERNEL}/24", "dev", "tap0"], ["link", "set", "tap0", "up"]):
            await trio.run_process(["ip", "-n", netns.name, *cmd])
        # the kernel's defaults: window scaling on (the bug needs a scale factor)
        ws = await trio.run_process(["ip", "netns", "exec", netns.name, "sysctl", "-n",
                                     "net.ipv4.tcp_window_scaling"], capture_stdout=True)
        assert ws.stdout.strip() == b"1"
        c = st.tcp.counters
        before = {k: c[k] for k in ("beyond_window_trimmed", "drop_beyond_window",
                                    "rcv_wnd_rounded_down")}
        kbefore = await kernel_stats(netns)
        out: dict[str, bytes] = {}

        async def reader() -> None:
            r = await trio.run_process([sys.executable, "-c", READER, str(PORT), str(TRANSFERS)],
                                       env=io_pkt_env(SOCK=prefix), cwd=REPO,
                                       capture_stdout=True, capture_stderr=True, check=False)
            out["reader"] = r.stdout
            assert r.returncode == 0, r.stderr.decode()

        t0 = trio.current_time()
        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                n.start_soon(reader)
                r = await trio.run_process(
                    ["ip", "netns", "exec", netns.name, sys.executable, "-c", SENDER, ME,
                     str(PORT), str(TRANSFERS), str(SIZE)],
                    capture_stdout=True, capture_stderr=True, check=False)
                assert r.returncode == 0, r.stderr.decode()
        elapsed = trio.current_time() - t0
        delta = {k: c[k] - v for k, v in before.items()}
        kdelta = {k: v - kbefore.get(k, 0) for k, v in (await kernel_stats(netns)).items()}
        lines = out["reader"].decode().split()
        assert lines[0] == "listening"
        got = [(int(lines[i]), lines[i + 1]) for i in range(1, len(lines), 2)]
        print(f"{TRANSFERS} x {SIZE >> 20} MB in {elapsed:.2f}s; stack {delta}; kernel {kdelta}")
        assert got == [(SIZE, h) for h in want]
        # nothing the kernel sent inside the window it was offered was cut or dropped
        assert delta["beyond_window_trimmed"] == 0, delta
        assert delta["drop_beyond_window"] == 0, delta
