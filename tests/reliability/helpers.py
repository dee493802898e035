"""Shared pieces of the reliability tests: a real io-pkt process whose devnp-tap endpoint
sits in the test's namespace (kernel peer 10.9.0.1, stack 10.9.0.2), its counters read
from the control files, an in-flight TCP transfer, RSS and socket counts."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import HAVE_FUSE, HAVE_TUN, REPO

HERE = os.path.dirname(os.path.abspath(__file__))
NSPEER = os.path.join(HERE, "nspeer.py")
STACK_IP = "10.9.0.2"
KERNEL_IP = "10.9.0.1"

needs_tap_stack = pytest.mark.skipif(not (HAVE_FUSE and HAVE_TUN),
                                     reason="needs root, /dev/fuse, fusermount3, /dev/net/tun")


class TapStack:
    """io-pkt -d tap name=tap0,netns=NS, configured; ``ns`` is the kernel side."""

    def __init__(self, sp: Any, ns: Any) -> None:
        self.sp = sp
        self.ns = ns
        self.sock = sp.path

    # -- setup -------------------------------------------------------------------------
    @classmethod
    def start(cls, stack_process: Any, ns: Any, *extra: str) -> TapStack:
        sp = stack_process("-d", "tap", f"name=tap0,netns={ns}", *extra)
        t = cls(sp, ns)
        t.configure()
        return t

    def configure(self) -> None:
        self.sp.tool("ifconfig", "tap0", f"{STACK_IP}/24", "up")
        self.ns.run("ip", "addr", "replace", f"{KERNEL_IP}/24", "dev", "tap0")
        self.ns.run("ip", "link", "set", "tap0", "up")

    @property
    def pid(self) -> int:
        return int(self.sp.proc.pid)

    def alive(self) -> bool:
        return self.sp.proc.poll() is None

    def mac(self) -> str:
        text = self.read("config/interfaces")
        block = text.split("tap0:", 1)[1]
        for line in block.splitlines():
            if line.strip().startswith("mac "):
                return line.split()[1]
        raise AssertionError("no mac for tap0")

    # -- files -------------------------------------------------------------------------
    def read(self, rel: str) -> str:
        with open(os.path.join(self.sock, rel)) as f:
            return f.read()

    def stats(self, group: str) -> dict[str, int]:
        out: dict[str, int] = {}
        try:
            text = self.read(f"config/stats/{group}")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if v.strip().lstrip("-").isdigit():
                out[k] = int(v)
        return out

    def all_stats(self) -> dict[str, int]:
        out = {}
        for g in os.listdir(os.path.join(self.sock, "config/stats")):
            for k, v in self.stats(g).items():
                out[f"{g}.{k}"] = v
        return out

    def sockets(self) -> list[str]:
        lines = self.read("config/sockets").splitlines()
        return [ln for ln in lines[1:] if ln.strip()]

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def ping(self, count: int = 3, interval: float = 0.2, timeout: float = 15) -> bool:
        r = self.ns.run("ping", "-c", str(count), "-i", str(interval), "-W", "1", STACK_IP,
                        check=False, timeout=timeout)
        return r.returncode == 0

    # -- the hostile peer --------------------------------------------------------------
    def peer(self, *args: str, timeout: float = 120) -> dict[str, Any]:
        r = self.ns.run(sys.executable, NSPEER, *args, timeout=timeout)
        return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def send_frames(self, frames: list[bytes]) -> dict[str, Any]:
        with tempfile.NamedTemporaryFile("w", suffix=".hex", delete=False) as f:
            f.write("\n".join(fr.hex() for fr in frames))
            path = f.name
        try:
            return self.peer("send", path)
        finally:
            os.unlink(path)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


#: the kernel-side client of a transfer: sends ``total`` bytes at about ``rate`` B/s
_CLIENT = r"""
import hashlib, socket, sys, time
host, port, total, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
c = socket.create_connection((host, port), timeout=20)
h = hashlib.sha256(); sent = 0; t0 = time.monotonic(); i = 7
while sent < total:
    chunk = bytes([(sent // 4096 + i) & 0xFF]) * min(4096, total - sent)
    c.sendall(chunk); h.update(chunk); sent += len(chunk)
    ahead = sent / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
c.shutdown(socket.SHUT_WR)
c.recv(1)
print(h.hexdigest(), sent, flush=True)
"""


class Transfer:
    """A TCP transfer kernel → stack in flight while a test attacks: the stack side is a
    listener opened through the socket files (rmgr.libsocket), the kernel side a client
    in the namespace. ``finish`` checks that every byte arrived intact."""

    def __init__(self, ts: TapStack, port: int = 5001, total: int = 2_000_000,
                 rate: float = 1_000_000, start: bool = True) -> None:
        from rmgr import libsocket

        self.ts = ts
        self.port = port
        self.total = total
        libsocket.setsockprefix(ts.sp.prefix)
        self.lsock = libsocket.socket()
        self.lsock.setsockopt(libsocket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("0.0.0.0", port))
        self.lsock.listen(4)
        self.lsock.settimeout(20)
        self.hash = hashlib.sha256()
        self.received = 0
        self.error: BaseException | None = None
        self.rate = rate
        self.client: subprocess.Popen[bytes] | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        if start:
            self.start_client()

    def start_client(self) -> None:
        """Start the kernel-side client (the listener exists from the constructor on)."""
        self.client = self.ts.ns.popen(sys.executable, "-c", _CLIENT, STACK_IP, str(self.port),
                                       str(self.total), str(self.rate),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.thread.start()

    def _serve(self) -> None:
        try:
            c, _ = self.lsock.accept()
            c.settimeout(30)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                self.hash.update(d)
                self.received += len(d)
            c.close()
        except BaseException as e:  # reported by finish()
            self.error = e

    def finish(self, timeout: float = 60) -> None:
        if self.client is None:
            self.start_client()
        assert self.client is not None
        self.thread.join(timeout)
        try:
            out, err = self.client.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.client.kill()
            out, err = self.client.communicate()
        self.lsock.close()
        assert self.error is None, f"stack side: {self.error!r}"
        assert self.client.returncode == 0, err.decode()[-2000:]
        digest, sent = out.decode().split()
        assert int(sent) == self.total
        assert self.received == self.total, (self.received, self.total)
        assert self.hash.hexdigest() == digest

    def abort(self) -> None:
        if self.client is not None and self.client.poll() is None:
            self.client.kill()
            self.client.communicate()
        self.lsock.close()


@contextmanager
def transfer(ts: TapStack, **kw: Any) -> Iterator[Transfer]:
    t = Transfer(ts, **kw)
    try:
        yield t
    except BaseException:
        t.abort()
        raise
    t.finish()


def settled(read: Any, quiet: float = 0.5, timeout: float = 20, step: float = 0.1) -> int:
    """Poll ``read()`` until it stops changing for ``quiet`` seconds; return the value."""
    end = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < end:
        time.sleep(step)
        v = read()
        if v != last:
            last, since = v, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return int(last)


def wait_for(pred: Any, timeout: float = 10, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


__all__ = ["TapStack", "Transfer", "transfer", "delta", "rss_kb", "wait_for", "needs_tap_stack",
           "STACK_IP", "KERNEL_IP", "REPO"]
