"""Helpers for the IPv6 tests with real peers: commands in namespaces, polling with a
deadline, radvd and capture processes that are always stopped, veth links between
namespaces. Every address lives in a namespace the test created."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import trio

from stack.addr import Prefix
from stack.core import Stack
from stack.inet6.ifaddr import eui64
from stack.l2.iface import IFF_UP
from tests.conftest import NetNS

T = TypeVar("T")


async def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(list(cmd), capture_stdout=True, capture_stderr=True,
                                  check=check)


async def nsrun(ns: NetNS, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return await run("ip", "netns", "exec", ns.name, *cmd, check=check)


async def nsout(ns: NetNS, *cmd: str) -> str:
    r = await nsrun(ns, *cmd, check=False)
    return r.stdout.decode() + r.stderr.decode()


async def kping6(ns: NetNS, dst: str, *args: str, count: int = 3) -> str:
    r = await nsrun(ns, "ping", "-6", "-n", "-c", str(count), "-i", "0.2", "-W", "2", *args,
                    dst, check=False)
    return r.stdout.decode() + r.stderr.decode()


async def until(fn: Callable[[], T | None], timeout: float, what: str,
                step: float = 0.05) -> T:
    """Poll ``fn`` until it returns something truthy (returned), or fail after
    ``timeout`` seconds saying ``what`` did not happen."""
    with trio.move_on_after(timeout):
        while True:
            v = fn()
            if v:
                return v
            await trio.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def until_async(fn: Callable[[], Awaitable[T | None]], timeout: float, what: str,
                      step: float = 0.2) -> T:
    with trio.move_on_after(timeout):
        while True:
            v = await fn()
            if v:
                return v
            await trio.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def eui64_addr(prefix: str, mac: bytes) -> str:
    """``prefix`` (``2001:db8:1::``) + the modified EUI-64 of ``mac``, as text."""
    net = int(ipaddress.IPv6Address(prefix)) >> 64 << 64
    return str(ipaddress.IPv6Address(net | eui64(mac)))


def stack_ll(st: Stack, ifname: str) -> str:
    return eui64_addr("fe80::", st.interfaces[ifname].mac)


async def kernel_ll(ns: NetNS, ifname: str) -> str:
    """The kernel's link-local address on ``ifname`` (after its DAD)."""
    async def get() -> str | None:
        out = await nsout(ns, "ip", "-6", "addr", "show", "dev", ifname, "scope", "link")
        if "inet6 " in out and "tentative" not in out:
            return out.split("inet6 ")[1].split("/")[0]
        return None
    return await until_async(get, 10, f"a link-local address on {ifname}")


async def kernel_mac(ns: NetNS, ifname: str) -> str:
    out = await nsout(ns, "cat", f"/sys/class/net/{ifname}/address")
    return out.strip()


async def link_up(st: Stack, ns: NetNS, ifname: str) -> None:
    st.interfaces[ifname].set_flags(IFF_UP)
    await run("ip", "-n", ns.name, "link", "set", ifname, "up")


async def add6(st: Stack, ifname: str, cidr: str) -> None:
    p = Prefix.parse(cidr)
    st.inet6.manage.add_address(ifname, p)
    await st.inet6.manage.wait_usable(ifname, p.addr)


async def stack_ll_usable(st: Stack, ifname: str) -> str:
    from stack.addr import parse_addr
    ll = stack_ll(st, ifname)
    await st.inet6.manage.wait_usable(ifname, parse_addr(ll), timeout=5)
    return ll


@contextlib.asynccontextmanager
async def process(ns: NetNS, *cmd: str) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A long-running command in ``ns`` (radvd, tcpdump...), stopped (TERM, then KILL)
    on every path. Its output goes to a temporary file: ``p.outfile``."""
    out = tempfile.NamedTemporaryFile(prefix="iopkt6-", suffix=".log", delete=False)
    p = subprocess.Popen(["ip", "netns", "exec", ns.name, *cmd], stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True)
    p.outfile = out.name  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        stop(p)
        out.close()
        with contextlib.suppress(OSError):
            os.unlink(out.name)


def stop(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop ``p`` (and its process group) by its id: ``sig``, then KILL after 5 s."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def output(p: subprocess.Popen[bytes]) -> str:
    with open(p.outfile) as f:  # type: ignore[attr-defined]
        return f.read()


@contextlib.asynccontextmanager
async def radvd(ns: NetNS, conf: str) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Debian's radvd in ``ns`` with ``conf`` (forwarding on there, as radvd wants),
    stopped on every path."""
    await nsrun(ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    d = tempfile.mkdtemp(prefix="iopkt-radvd-")
    path = os.path.join(d, "radvd.conf")
    with open(path, "w") as f:
        f.write(conf)
    try:
        async with process(ns, "radvd", "-n", "-m", "stderr", "-d", "1", "-C", path,
                           "-p", os.path.join(d, "radvd.pid")) as p:
            yield p
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


async def veth(ns1: NetNS, if1: str, ns2: NetNS, if2: str) -> None:
    """A veth pair between two namespaces, both ends up (deleted with the namespaces)."""
    await run("ip", "link", "add", if1, "netns", ns1.name, "type", "veth", "peer", "name", if2,
              "netns", ns2.name)
    await run("ip", "-n", ns1.name, "link", "set", if1, "up")
    await run("ip", "-n", ns2.name, "link", "set", if2, "up")
