"""A LAN for the DHCP and DNS tests: an io-pkt process whose tap0 lies in a namespace the
test creates, with dnsmasq there as the DHCP and DNS server (192.0.2.1 on the kernel
side). Everything is removed on every path: dnsmasq, the stack, the namespace."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import HAVE_FUSE, HAVE_TUN, NetNS, StackProcess

needs_lan = pytest.mark.skipif(
    not (HAVE_FUSE and HAVE_TUN and shutil.which("dnsmasq")),
    reason="needs root, /dev/fuse, /dev/net/tun and dnsmasq (scripts/setup installs it)")

SERVER = "192.0.2.1"
MAC = "02:00:00:00:20:01"


class Lan:
    """The namespace, the stack and dnsmasq of one test."""

    def __init__(self, ns: NetNS, stack: StackProcess, tmp: Path) -> None:
        self.ns = ns
        self.stack = stack
        self.tmp = tmp
        self.dnsmasq: subprocess.Popen[bytes] | None = None
        self.log = tmp / "dnsmasq.log"
        self.leases = tmp / "dnsmasq.leases"

    def start_dnsmasq(self, *extra: str, hosts: str = "") -> None:
        """dnsmasq on the kernel's tap0: DHCP 192.0.2.50-.60 (2 minute leases) and DNS for
        the ``lan`` domain from ``hosts`` (an addn-hosts file), queries logged."""
        self.stop_dnsmasq()
        hostfile = self.tmp / "lan.hosts"
        hostfile.write_text(hosts)
        args = ["dnsmasq", "--keep-in-foreground", "--no-daemon", "--conf-file=/dev/null",
                "--no-resolv", "--no-hosts", f"--addn-hosts={hostfile}", "--domain=lan",
                "--local=/lan/", "--expand-hosts", "--interface=tap0", "--bind-interfaces",
                "--except-interface=lo", "--dhcp-range=192.0.2.50,192.0.2.60,2m",
                "--dhcp-option=option:router,192.0.2.1", "--no-ping", "--log-queries",
                "--log-dhcp", f"--log-facility={self.log}", f"--dhcp-leasefile={self.leases}",
                "--pid-file=", "--user=root", "--group=root", *extra]
        self.dnsmasq = self.ns.popen(*args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.dnsmasq.poll() is not None:
                raise AssertionError(f"dnsmasq exited: {self.dnsmasq.stderr.read().decode()}")  # type: ignore[union-attr]
            if self.log.exists() and "started" in self.log.read_text():
                return
            time.sleep(0.05)
        raise AssertionError("dnsmasq did not start")

    def stop_dnsmasq(self) -> None:
        if self.dnsmasq is not None and self.dnsmasq.poll() is None:
            self.dnsmasq.send_signal(signal.SIGTERM)
            try:
                self.dnsmasq.wait(5)
            except subprocess.TimeoutExpired:
                self.dnsmasq.kill()
                self.dnsmasq.wait()
        self.dnsmasq = None

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_log(self, needle: str, timeout: float = 20, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if text.count(needle) >= count:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} x{count} not in the dnsmasq log:\n{self.log_text()}")

    def tool(self, *args: str, check: bool = True, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
        return self.stack.tool(*args, check=check, timeout=timeout)

    def file(self, rel: str) -> str:
        return Path(self.stack.path, rel).read_text()

    def stat(self, group: str) -> dict[str, int]:
        out = {}
        for line in self.file(f"config/stats/{group}").splitlines():
            k, _, v = line.partition(" ")
            if v.strip().lstrip("-").isdigit():
                out[k] = int(v)
        return out


@pytest.fixture
def lan(netns: NetNS, stack_process: Callable[..., StackProcess], tmp_path: Path
        ) -> Iterator[Callable[..., Lan]]:
    """``lan(*driver_opts)``: start the stack (tap0 in the namespace, kernel side
    192.0.2.1/24 up); dnsmasq is started by the test (``start_dnsmasq``)."""
    made: list[Lan] = []

    def make(*opts: str, dnsmasq: bool = True, hosts: str = "", extra: tuple[str, ...] = ()
             ) -> Lan:
        word = ",".join(["name=tap0", f"netns={netns}", f"mac={MAC}", *opts])
        sp = stack_process("-d", "tap", word)
        ln = Lan(netns, sp, tmp_path)
        made.append(ln)
        deadline = time.monotonic() + 10
        while netns.run("ip", "link", "show", "tap0", check=False).returncode:
            if time.monotonic() > deadline:
                raise AssertionError("tap0 did not appear in the namespace")
            time.sleep(0.05)
        netns.run("ip", "addr", "add", f"{SERVER}/24", "dev", "tap0")
        netns.run("ip", "link", "set", "tap0", "up")
        if dnsmasq:
            ln.start_dnsmasq(*extra, hosts=hosts)
        return ln

    yield make
    for ln in made:
        ln.stop_dnsmasq()
        ln.stack.stop()
    os.environ.pop("SOCK", None)
