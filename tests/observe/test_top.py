"""``io-pkt top`` driven in a terminal: tmux runs it at 80x24, the test reads the screen
while the kernel sends to the stack at a steady rate, presses keys, and quits it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import IO_PKT, REPO, io_pkt_env, needs_fuse, needs_tun

from .conftest import ADDR

pytestmark = [needs_fuse, needs_tun,
              pytest.mark.skipif(shutil.which("tmux") is None,
                                 reason="needs tmux (Debian package tmux; scripts/setup)")]

#: the stack-side receiver, over the files: prints the bytes and the seconds between the
#: first and the last byte, once the sender is done
RECEIVER = """
import socket, sys, time
from rmgr import libsocket
with libsocket.patch():
    ls = socket.socket()
    ls.bind(("0.0.0.0", int(sys.argv[1])))
    ls.listen(1)
    print("up", flush=True)
    c, _ = ls.accept()
    n, first, last = 0, None, None
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        now = time.monotonic()
        first = first or now
        last = now
        n += len(b)
    print(n, last - first, flush=True)
"""

#: the kernel-side sender: ``chunk`` bytes every ``period`` s for ``seconds`` s, paced on
#: an absolute schedule (no drift)
SENDER = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
chunk, period, seconds = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
buf = b"z" * chunk
t0 = time.monotonic()
k = 0
while k * period < seconds:
    s.sendall(buf)
    k += 1
    time.sleep(max(0.0, t0 + k * period - time.monotonic()))
s.close()
"""


class Tmux:
    def __init__(self) -> None:
        self.sock = f"iopkt-top-{uuid.uuid4().hex[:6]}"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.sock, *args], text=True, capture_output=True,
                              timeout=30, check=check)

    def screen(self) -> list[str]:
        return self("capture-pane", "-p", "-t", "top").stdout.splitlines()

    def alive(self) -> bool:
        return self("has-session", "-t", "top", check=False).returncode == 0


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux()
    yield t
    t("kill-server", check=False)


def parse_si(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)([kMG]?)", text)
    assert m, text
    return float(m.group(1)) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]


def wait_screen(t: Tmux, cond: object, timeout: float = 10) -> list[str]:
    """The first screen that matches ``cond`` and is whole: curses draws a frame in
    pieces, and a capture taken in the middle of one shows half of it (a CI run once read
    the keys line with only its last character drawn), so a screen counts only when a
    second capture right after it is the same."""
    def capture() -> list[str]:
        return t.screen() if t.alive() else []

    deadline = time.monotonic() + timeout
    while True:
        lines = capture()
        if cond(lines) and capture() == lines:  # type: ignore[operator]
            return lines
        if time.monotonic() > deadline:
            raise AssertionError("screen never matched:\n" + "\n".join(lines))
        time.sleep(0.2)


def test_top_in_tmux_shows_a_transfer_rate(one: tuple[object, object], tmux: Tmux) -> None:
    sp, ns = one
    port = 5301
    env = io_pkt_env(SOCK=sp.prefix)  # type: ignore[attr-defined]
    recv = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    send = None
    try:
        assert recv.stdout is not None and recv.stdout.readline().strip() == "up"
        cmd = " ".join(f"'{a}'" for a in [*IO_PKT, "top"])
        tmux("new-session", "-d", "-s", "top", "-x", "80", "-y", "24", "-c", REPO,
             "-e", f"SOCK={sp.prefix}", "-e", f"PYTHONPATH={REPO}", cmd)  # type: ignore[attr-defined]
        lines = wait_screen(tmux, lambda s: any(ln.startswith("io-pkt top") for ln in s))
        assert len(lines) <= 24 and all(len(ln) <= 80 for ln in lines)
        assert any(ln.startswith("INTERFACE") for ln in lines)
        assert lines[-1].startswith("q quit")

        # 40 kB every 50 ms for 8 s: 6.4 Mbit/s
        send = ns.popen("python3", "-c", SENDER, ADDR, str(port), "40000", "0.05", "8",  # type: ignore[attr-defined]
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(3.5)
        shown: list[float] = []
        tap: list[float] = []
        for _ in range(3):
            screen = wait_screen(tmux, lambda s: any(f":{port} " in ln for ln in s))
            row = next(ln for ln in screen if ln.startswith(f"{ADDR}:{port} "))
            cols = row.split()
            assert cols[2] == "ESTAB", row
            shown.append(parse_si(cols[3]))  # RX BIT/S
            assert int(cols[5]) > 0  # cwnd
            tif = next(ln for ln in screen if ln.startswith("tap0 "))
            tap.append(parse_si(tif.split()[2]))  # the interface's RX BIT/S
            time.sleep(1.0)
        out, _ = send.communicate(timeout=30)
        assert send.returncode == 0
        got, _ = recv.communicate(timeout=30)
        nbytes, secs = got.split()
        measured = int(nbytes) * 8 / float(secs)
        assert int(nbytes) == 40000 * 160
        for v in shown:
            assert abs(v - measured) <= 0.2 * measured, (shown, measured)
        for v in tap:  # the interface carries the payload and its headers
            assert measured * 0.8 <= v <= measured * 1.5, (tap, measured)

        # keys: sort, filter, clear, quit
        tmux("send-keys", "-t", "top", "s")
        wait_screen(tmux, lambda s: any("sort cwnd" in ln for ln in s))
        tmux("send-keys", "-t", "top", "f")
        wait_screen(tmux, lambda s: bool(s) and s[-1].startswith("filter:"))
        tmux("send-keys", "-t", "top", "no-such-peer", "Enter")
        wait_screen(tmux, lambda s: any("filter 'no-such-peer'" in ln for ln in s))
        tmux("send-keys", "-t", "top", "c")
        wait_screen(tmux, lambda s: any(ln.startswith("CONNECTIONS") and "filter" not in ln
                                        for ln in s))
        tmux("send-keys", "-t", "top", "q")
        deadline = time.monotonic() + 10
        while tmux.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not tmux.alive(), "q did not quit"
    finally:
        for p in (recv, send):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()


def test_top_batch_and_errors(one: tuple[object, object]) -> None:
    sp, _ = one
    r = sp.tool("top", "-b", "-n", "2", "-d", "0.3")  # type: ignore[attr-defined]
    frames = r.stdout.split("io-pkt top")[1:]
    assert len(frames) == 2, r.stdout
    assert all("tap0" in f and "CONNECTIONS" in f for f in frames)
    bad = sp.tool("top", "-o", "nosuch", check=False)  # type: ignore[attr-defined]
    assert bad.returncode == 1 and bad.stderr.startswith("top: -o takes one of")
    # not a terminal and no -b: one line, not a curses traceback
    nt = subprocess.run(IO_PKT + ["top"], cwd=REPO, env=io_pkt_env(SOCK=sp.prefix),  # type: ignore[attr-defined]
                        text=True, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert nt.returncode == 1 and nt.stderr.strip() == "top: not a terminal (use -b for text output)"
