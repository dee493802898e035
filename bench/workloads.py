"""The workloads of ``python -m bench``, each measured on this stack and on the kernel.

One workload side runs per process (``python -m bench.workloads NAME SIDE PARAMS``,
started by bench/__main__.py), so a crash or a hang costs one row, the stack's resident
memory is its own, and every namespace it made is deleted when it exits. The last line
of stdout is ``RESULT {json}``: ``{"metrics": {name: [one value per run]}, "note": ...}``
or ``{"na": reason}`` when the layer the workload needs is not there.

Stack side: the stack runs in this process on trio with ``devnp-tap`` (offloads on)
inside a private namespace; the stack is 198.18.1.254/24, the kernel side of the TAP
198.18.1.1. Kernel side: two namespaces over veth (bench.common.veth_pair, 198.18.0.1 →
198.18.0.2), the same peer programs (bench/peer.py) at both ends. The forwarding workload
puts the stack (or a kernel router namespace) between two namespaces: ns a 198.18.1.1 →
router 198.18.1.254 | 198.18.2.254 → ns b 198.18.2.1.

Every workload repeats its measurement ``Params.runs`` times and returns one value per
run (the runner reports the median); the RSS workload is one run per process
(``ONE_PROCESS_PER_RUN``: the runner starts it ``runs`` times and merges the values).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import trio

from bench.common import PY, REPO, kernel_router, median, netns, percentile, sh, veth_pair

SIP, KIP = "198.18.1.254", "198.18.1.1"  # stack / kernel side of the TAP
KA, KB = "198.18.0.1", "198.18.0.2"  # kernel ceiling: veth namespace a → b
#: IPv6 (the *6 rows): RFC 5180's benchmarking range 2001:2::/48; tapI is NET6:I+1::/64
NET6 = "2001:2:0"
SIP6, KIP6 = f"{NET6}:1::254", f"{NET6}:1::1"
KA6, KB6 = f"{NET6}::1", f"{NET6}::2"


def _addrs(p: Params) -> tuple[str, str]:
    """(stack side, kernel side) of tap0 in the workload's family."""
    return (SIP6, KIP6) if p.family == 6 else (SIP, KIP)
MBIT = 1e6


@dataclass
class Params:
    seconds: float = 2.0  # duration of one timed run (TCP bulk, UDP, forwarding, ...)
    runs: int = 3  # runs per workload, every workload (median reported)
    ping_count: int = 1000  # pings per run
    echo_count: int = 2000  # round trips per run
    conns: int = 1000  # idle connections for the RSS workload
    tag: str = "b"  # namespace name tag (lets the runner sweep leftovers)
    profile: str = ""  # cProfile the stack side into this file
    family: int = 4  # the IP version the family-generic workloads run over (the *6 rows)
    idle_seconds: float = 10.0  # the window of the idle-CPU workload
    scale_conns: int = 10000  # connections the conns10k workload holds
    churn_seconds: float = 60.0  # the churn soak's length


class NotAvailable(Exception):
    """The layer this workload needs is not there (yet): reported as n/a."""


# -- prerequisites --------------------------------------------------------------------
def need_root_tun() -> None:
    if os.geteuid() != 0:
        raise NotAvailable("needs root")
    if not os.path.exists("/dev/net/tun"):
        raise NotAvailable("no /dev/net/tun")


def need_module(name: str, what: str) -> None:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        raise NotAvailable(f"{what} not available ({name}: {exc})") from None


def need_fuse() -> None:
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        raise NotAvailable("needs /dev/fuse and fusermount3")
    need_module("rmgr.fuse.session", "FUSE session")


def need_files() -> None:
    need_fuse()
    need_module("stack.sockets", "socket files")
    need_module("rmgr.libsocket", "rmgr.libsocket")


def need_tap() -> None:
    need_root_tun()
    need_module("stack.transport", "transports")
    if not os.path.exists(os.path.join(REPO, "modules", "devnp-tap.py")):
        raise NotAvailable("devnp-tap not available")


# -- peers ----------------------------------------------------------------------------
class Peer:
    """A bench/peer.py process; JSON lines on its stdout."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self._buf = b""

    async def text_line(self, timeout: float = 60) -> str:
        assert self.proc.stdout is not None
        with trio.fail_after(timeout):
            while b"\n" not in self._buf:
                chunk = await self.proc.stdout.receive_some(65536)
                if not chunk:
                    await self.proc.wait()
                    raise RuntimeError(f"peer exited ({self.proc.returncode}) without output")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    async def line(self, timeout: float = 60) -> dict[str, Any]:
        return json.loads(await self.text_line(timeout))  # type: ignore[no-any-return]

    async def ready(self, timeout: float = 30) -> dict[str, Any]:
        msg = await self.line(timeout)
        if not msg.get("ready"):
            raise RuntimeError(f"peer not ready: {msg}")
        return msg

    async def close_stdin(self) -> None:
        if self.proc.stdin is not None:
            await self.proc.stdin.aclose()


def peer(*args: object, ns: str | None = None,
         lib_prefix: str | None = None) -> contextlib.AbstractAsyncContextManager[Peer]:
    """bench/peer.py ARGS, in namespace ``ns`` or (``lib_prefix``) over the stack's files."""
    return spawn("bench.peer", *(["--lib"] if lib_prefix else []), *args, ns=ns,
                 lib_prefix=lib_prefix)


@contextlib.asynccontextmanager
async def spawn(module: str, *args: object, ns: str | None = None,
                lib_prefix: str | None = None) -> AsyncIterator[Peer]:
    """``python -m MODULE ARGS`` in namespace ``ns``, with SOCK=``lib_prefix`` if given;
    waited for (2 s, then killed) on exit."""
    cmd = [PY, "-m", module, *[str(a) for a in args]]
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    env = dict(os.environ, PYTHONPATH=REPO)
    if lib_prefix:
        env["SOCK"] = lib_prefix
    proc = await trio.lowlevel.open_process(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            env=env, cwd=REPO)
    try:
        yield Peer(proc)
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                with trio.move_on_after(2):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    await stream.aclose()


# -- the stack under test -------------------------------------------------------------
@contextlib.asynccontextmanager
async def _stack(p: Params, ifaces: int, *, files: bool = False, forward: bool = False,
                 protocols: tuple[str, ...] = ()) -> AsyncIterator[tuple[Any, list[str], str]]:
    """A Stack in this process with tapI (I < ifaces) each in a fresh namespace: the stack
    is 198.18.(I+1).254/24 there, the kernel side 198.18.(I+1).1, routed through the
    stack when ``forward``. Yields (stack, namespaces, prefix)."""
    from stack.addr import Prefix
    from stack.core import Stack, StackConfig
    from stack.l2.iface import IFF_UP
    from stack.options import Options

    prefix = tempfile.mkdtemp(prefix="iopkt-bench-") if files else ""
    try:
        with contextlib.ExitStack() as spaces:
            nss = [spaces.enter_context(netns(p.tag)) for _ in range(ifaces)]
            cfg = StackConfig(mount=files, tcpip=Options.parse("forward" if forward else ""),
                              drivers=[("tap", Options.parse(f"name=tap{i},netns={ns}"))
                                       for i, ns in enumerate(nss)],
                              protocols=[(name, Options()) for name in protocols])
            if files:
                cfg.prefix = prefix
            st: Any = Stack(cfg)
            async with trio.open_nursery() as nursery:
                await nursery.start(st.run)
                try:
                    for i, ns in enumerate(nss):
                        dev, net = f"tap{i}", f"198.18.{i + 1}"
                        if dev not in st.interfaces:
                            raise NotAvailable("devnp-tap did not load")
                        st.interfaces[dev].set_flags(IFF_UP)
                        st.inet.add_address(dev, f"{net}.254/24")
                        # IPv6: RFC 5180's benchmarking range, DAD skipped on both sides
                        net6 = f"{NET6}:{i + 1}:"
                        st.inet6.manage.add_address(dev, Prefix.parse(f"{net6}:254/64"),
                                                    dad=False)
                        cmds = [["addr", "add", f"{net}.1/24", "dev", dev],
                                ["-6", "addr", "add", f"{net6}:1/64", "dev", dev, "nodad"],
                                ["link", "set", dev, "up"]]
                        if forward:
                            cmds.append(["route", "add", "default", "via", f"{net}.254"])
                        for cmd in cmds:
                            await trio.run_process(["ip", "-n", ns, *cmd], capture_stderr=True)
                    yield st, nss, prefix
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(10):
                        await st.shutdown()
                    nursery.cancel_scope.cancel()
    finally:
        if prefix:
            with contextlib.suppress(OSError):
                mnt = f"{prefix}/dev/socket"
                if os.path.ismount(mnt):
                    sh("fusermount3", "-u", "-z", mnt, check=False)
                shutil.rmtree(prefix, ignore_errors=True)


@contextlib.asynccontextmanager
async def tap_stack(p: Params, *, files: bool = False,
                    protocols: tuple[str, ...] = ()) -> AsyncIterator[tuple[Any, str, str]]:
    """A Stack in this process with tap0 in a fresh namespace; yields (stack, ns, prefix)."""
    async with _stack(p, 1, files=files, protocols=protocols) as (st, nss, prefix):
        yield st, nss[0], prefix


def mbps(res: dict[str, Any]) -> float:
    return float(res["bytes"]) * 8 / float(res["seconds"]) / MBIT


# -- CPU of the stack process (the CPU column) ----------------------------------------
#: units of work for the CPU column: CPU seconds of this process (the stack's, every
#: thread) per GB moved (10^9 bytes), or per 1,000 requests / datagrams / connections
PER_GB, PER_K = 1e9, 1e3
CPU_GB, CPU_REQ, CPU_DGRAM, CPU_PKT, CPU_CONN = ("s/GB", "s/1k req", "s/1k dgram",
                                                 "s/1k pkt", "s/1k conn")


def cpu_s() -> float:
    """User + system CPU seconds of this process so far (getrusage; peers are other
    processes and not counted)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def per_unit(cpu: float, work: float, per: float) -> float:
    """CPU seconds per ``per`` units of work (NaN when no work was done: shown n/a)."""
    return cpu * per / work if work > 0 else float("nan")


# -- TCP bulk -------------------------------------------------------------------------
async def _instack_sink(ls: Any) -> int:
    conn, _ = await ls.accept()
    total = 0
    while True:
        d = await conn.recv(1 << 20)
        if not d:
            break
        total += len(d)
    conn.close()
    return total


async def _instack_source(st: Any, addr: tuple[str, int], seconds: float,
                          family: int = 4) -> int:
    import socket

    s = st.tcp.socket(family=24) if family == 6 else st.tcp.socket()
    await s.connect(addr)
    data = b"\xa5" * (256 * 1024)
    total = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        total += await s.send(data)
    s.shutdown(socket.SHUT_WR)
    while await s.recv(65536):
        pass
    s.close()
    return total


async def stack_tcp_rx(p: Params) -> dict[str, Any]:
    """kernel → stack: a kernel sender in the namespace, an in-stack sink."""
    need_tap()
    out = []
    sip, _ = _addrs(p)
    async with tap_stack(p) as (st, ns, _):
        ls = st.tcp.socket(family=24) if p.family == 6 else st.tcp.socket()
        ls.bind((sip, 5001))
        ls.listen(8)
        cpu = []
        for _ in range(p.runs):
            c0 = cpu_s()
            async with peer("source", sip, 5001, p.seconds, ns=ns) as src:
                nbytes = await _instack_sink(ls)
                c1 = cpu_s()
                out.append(mbps(await src.line()))
            cpu.append(per_unit(c1 - c0, nbytes, PER_GB))
        ls.close()
    return {"metrics": {"mbps": out, "cpu": cpu}, "cpu_unit": CPU_GB}


async def stack_tcp_tx(p: Params) -> dict[str, Any]:
    """stack → kernel: an in-stack sender, a kernel sink in the namespace."""
    need_tap()
    out = []
    _, kip = _addrs(p)
    cpu = []
    async with tap_stack(p) as (st, ns, _):
        for i in range(p.runs):
            async with peer("sink", 5002 + i, p.family, ns=ns) as snk:
                await snk.ready()
                c0 = cpu_s()
                nbytes = await _instack_source(st, (kip, 5002 + i), p.seconds, p.family)
                cpu.append(per_unit(cpu_s() - c0, nbytes, PER_GB))
                out.append(mbps(await snk.line()))
    return {"metrics": {"mbps": out, "cpu": cpu}, "cpu_unit": CPU_GB}


async def stack_files_rx(p: Params) -> dict[str, Any]:
    """kernel → a receiver using rmgr.libsocket (through the socket files)."""
    need_tap()
    need_files()
    out = []
    sip, _ = _addrs(p)
    cpu = []
    async with tap_stack(p, files=True) as (_st, ns, prefix):
        for i in range(p.runs):
            async with peer("sink", 5101 + i, p.family, lib_prefix=prefix) as snk:
                await snk.ready()
                c0 = cpu_s()
                async with peer("source", sip, 5101 + i, p.seconds, ns=ns) as src:
                    await src.line()
                res = await snk.line()
                cpu.append(per_unit(cpu_s() - c0, res["bytes"], PER_GB))
                out.append(mbps(res))
    return {"metrics": {"mbps": out, "cpu": cpu}, "cpu_unit": CPU_GB}


async def stack_files_tx(p: Params) -> dict[str, Any]:
    """a sender using rmgr.libsocket → a kernel sink."""
    need_tap()
    need_files()
    out = []
    _, kip = _addrs(p)
    cpu = []
    async with tap_stack(p, files=True) as (_st, ns, prefix):
        for i in range(p.runs):
            async with peer("sink", 5201 + i, p.family, ns=ns) as snk:
                await snk.ready()
                c0 = cpu_s()
                async with peer("source", kip, 5201 + i, p.seconds, lib_prefix=prefix) as src:
                    await src.line()
                res = await snk.line()
                cpu.append(per_unit(cpu_s() - c0, res["bytes"], PER_GB))
                out.append(mbps(res))
    return {"metrics": {"mbps": out, "cpu": cpu}, "cpu_unit": CPU_GB}


async def kernel_tcp(p: Params) -> dict[str, Any]:
    """The kernel ceiling for every TCP bulk row: namespace a sends to namespace b."""
    out = []
    with veth_pair(tag=p.tag) as (a, b):
        for i in range(p.runs):
            async with peer("sink", 5002 + i, p.family, ns=b) as snk:
                await snk.ready()
                async with peer("source", KB6 if p.family == 6 else KB, 5002 + i, p.seconds,
                                ns=a) as src:
                    await src.line()
                out.append(mbps(await snk.line()))
    return {"metrics": {"mbps": out}}


# -- ping -----------------------------------------------------------------------------
_TIME = re.compile(r"time=([0-9.]+) ms")


def rtts(out: str) -> list[float]:
    """The round trips (µs) in ping's output."""
    return [float(x) * 1000 for x in _TIME.findall(out)]


async def ping(ns: str, dst: str, count: int, *extra: str) -> list[float]:
    r = await trio.run_process(["ip", "netns", "exec", ns, "ping", "-n", "-c", str(count),
                                *extra, dst], capture_stdout=True, capture_stderr=True,
                               check=False)
    return rtts(r.stdout.decode())


async def _ping_runs(p: Params, ns: str, dst: str) -> dict[str, Any]:
    """``runs`` sessions of ``ping_count`` pings (2 ms apart) after a warm-up (ARP);
    p50 and p99 of each session."""
    await ping(ns, dst, 5, "-i", "0.01")
    p50, p99, cpu, n = [], [], [], 0
    for _ in range(p.runs):
        c0 = cpu_s()
        lat = await ping(ns, dst, p.ping_count, "-i", "0.002")
        cpu.append(per_unit(cpu_s() - c0, len(lat), PER_K))
        if not lat:
            raise RuntimeError(f"no ping replies from {dst}")
        p50.append(percentile(lat, 50))
        p99.append(percentile(lat, 99))
        n += len(lat)
    return {"metrics": {"p50": p50, "p99": p99, "cpu": cpu}, "cpu_unit": CPU_REQ,
            "note": f"{p.ping_count} pings per run, {n} replies in all"}


async def stack_ping(p: Params) -> dict[str, Any]:
    """Kernel ``ping`` in the TAP's namespace → the stack's address."""
    need_tap()
    async with tap_stack(p) as (_st, ns, _):
        return await _ping_runs(p, ns, _addrs(p)[0])


async def kernel_ping(p: Params) -> dict[str, Any]:
    with veth_pair(tag=p.tag) as (a, _b):
        res = await _ping_runs(p, a, KB6 if p.family == 6 else KB)
    del res["note"]
    del res["metrics"]["cpu"]  # the worker's, not the kernel's
    return res


# -- 1-byte echo through rmgr.libsocket -----------------------------------------------
async def _echo_run(port: int, client_host: str, n: int, *, server_ns: str,
                    client_ns: str | None = None, lib_prefix: str | None = None
                    ) -> list[float]:
    async with peer("echo-server", port, ns=server_ns) as srv:
        await srv.ready()
        async with peer("echo-client", client_host, port, n, ns=client_ns,
                        lib_prefix=lib_prefix) as cl:
            return (await cl.line(timeout=120))["rtt_us"]  # type: ignore[no-any-return]


def _echo_result(runs: list[list[float]], cpu: list[float] | None = None) -> dict[str, Any]:
    metrics = {"p50": [percentile(r, 50) for r in runs],
               "p99": [percentile(r, 99) for r in runs]}
    res: dict[str, Any] = {"metrics": metrics, "note": f"{len(runs[0])} round trips per run"}
    if cpu is not None:
        metrics["cpu"] = cpu
        res["cpu_unit"] = CPU_REQ
    return res


async def stack_echo(p: Params) -> dict[str, Any]:
    """A client using rmgr.libsocket (the files) ↔ a kernel echo server."""
    need_tap()
    need_files()
    runs, cpu = [], []
    async with tap_stack(p, files=True) as (_st, ns, prefix):
        for i in range(p.runs):
            c0 = cpu_s()
            runs.append(await _echo_run(5301 + i, KIP, p.echo_count, server_ns=ns,
                                        lib_prefix=prefix))
            cpu.append(per_unit(cpu_s() - c0, p.echo_count + 20, PER_K))  # + the warm-up
    return _echo_result(runs, cpu)


async def kernel_echo(p: Params) -> dict[str, Any]:
    runs = []
    with veth_pair(tag=p.tag) as (a, b):
        for i in range(p.runs):
            runs.append(await _echo_run(5301 + i, KB, p.echo_count, server_ns=b,
                                        client_ns=a))
    res = _echo_result(runs)
    del res["note"]
    return res


# -- accepted connections/s -----------------------------------------------------------
def _wide_ports(ns: str) -> None:
    sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w",
       "net.ipv4.ip_local_port_range=1024 65000", check=False)
    sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1", check=False)


async def stack_accept(p: Params) -> dict[str, Any]:
    """A kernel client connecting and closing in a loop ↔ an in-stack accept loop."""
    need_tap()
    out = []
    async with tap_stack(p) as (st, ns, _):
        _wide_ports(ns)
        ls = st.tcp.socket()
        ls.bind((SIP, 5401))
        ls.listen(1024)
        accepted = 0
        cpu: list[float] = []

        async def acceptor() -> None:
            nonlocal accepted
            while True:
                conn, _ = await ls.accept()
                conn.close()
                accepted += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(acceptor)
            for _ in range(p.runs):
                a0, c0 = accepted, cpu_s()
                async with peer("connect-loop", SIP, 5401, p.seconds, ns=ns) as cl:
                    res = await cl.line(timeout=p.seconds + 60)
                cpu.append(per_unit(cpu_s() - c0, accepted - a0, PER_K))
                out.append((accepted - a0) / float(res["seconds"]))
            nursery.cancel_scope.cancel()
        ls.close()
    return {"metrics": {"rate": out, "cpu": cpu}, "cpu_unit": CPU_CONN,
            "note": "in-stack listener (stack.tcp)"}


async def kernel_accept(p: Params) -> dict[str, Any]:
    out = []
    with veth_pair(tag=p.tag) as (a, b):
        _wide_ports(a)
        async with peer("accept-server", 5401, ns=b) as srv:
            await srv.ready()
            for _ in range(p.runs):
                async with peer("connect-loop", KB, 5401, p.seconds, ns=a) as cl:
                    res = await cl.line(timeout=p.seconds + 60)
                out.append(res["count"] / float(res["seconds"]))
    return {"metrics": {"rate": out}}


# -- accepted connections/s through the socket files ---------------------------------
ACCEPT_WINDOW = 64  # connections the client holds that the acceptor has not closed yet


async def _files_accept_run(p: Params, port: int, host: str, client_ns: str, *,
                            acceptor_ns: str | None = None,
                            lib_prefix: str | None = None) -> tuple[float, int]:
    """One run: bench.sockets_bench's acceptor (rmgr.libsocket with ``lib_prefix``, else
    the stdlib in ``acceptor_ns``) accepts and closes for ``seconds`` from its first
    accept while a kernel ``connect-window`` client in ``client_ns`` connects, holding at
    most ACCEPT_WINDOW connections not yet closed by the acceptor (so the listen queue
    never overflows into dropped SYNs and 1 s retransmits); the rate is the acceptor's
    (accepts / its own clock). The client, given a margin so that it outlasts the
    acceptor's window, is killed once the acceptor has reported. Returns (rate, accepts)."""
    async with spawn("bench.sockets_bench", "acceptor", "lib" if lib_prefix else "real",
                     host, 1 << 30, p.seconds, port, ns=acceptor_ns,
                     lib_prefix=lib_prefix) as acc:
        ready = await acc.text_line(timeout=30)
        if ready.strip() != "ready":
            raise RuntimeError(f"acceptor not ready: {ready!r}")
        async with peer("connect-window", host, port, p.seconds + 5, ACCEPT_WINDOW,
                        ns=client_ns) as cl:
            res = await acc.line(timeout=p.seconds + 60)
            cl.proc.kill()
    if not res["accepts"]:
        raise RuntimeError(f"no connection accepted: {res}")
    return float(res["accepts_per_s"]), int(res["accepts"])


async def stack_files_accept(p: Params) -> dict[str, Any]:
    """A kernel client connecting (a bounded window, see _files_accept_run) ↔ an
    rmgr.libsocket listener (accept ioctl + open of the handed-over name + close), one
    acceptor process per run."""
    need_tap()
    need_files()
    out, cpu = [], []
    async with tap_stack(p, files=True) as (_st, ns, prefix):
        _wide_ports(ns)
        for i in range(p.runs):
            c0 = cpu_s()
            rate, accepts = await _files_accept_run(p, 5451 + i, SIP, ns, lib_prefix=prefix)
            cpu.append(per_unit(cpu_s() - c0, accepts, PER_K))
            out.append(rate)
    return {"metrics": {"rate": out, "cpu": cpu}, "cpu_unit": CPU_CONN,
            "note": "rmgr.libsocket listener (bench.sockets_bench acceptor)"}


async def kernel_files_accept(p: Params) -> dict[str, Any]:
    """The same acceptor with the stdlib socket module in ns b, the client in ns a."""
    out = []
    with veth_pair(tag=p.tag) as (a, b):
        _wide_ports(a)
        for i in range(p.runs):
            out.append((await _files_accept_run(p, 5451 + i, KB, a, acceptor_ns=b))[0])
    return {"metrics": {"rate": out}}


# -- UDP datagrams/s into a sink ------------------------------------------------------
UDP_SIZE = 64


async def stack_udp(p: Params) -> dict[str, Any]:
    """A kernel sender blasting 64-byte datagrams ↔ an in-stack UDP sink."""
    need_tap()
    import socket

    out, cpu = [], []
    async with tap_stack(p) as (st, ns, _):
        for i in range(p.runs):
            u = st.udp.socket()
            u.bind((SIP, 5501 + i))
            u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            count = 0
            async with peer("udp-blast", SIP, 5501 + i, p.seconds, UDP_SIZE, ns=ns) as bl:
                await u.recvfrom(2048)
                t0, c0 = time.perf_counter(), cpu_s()
                with trio.move_on_after(p.seconds):
                    while True:
                        try:
                            u.recvfrom_nowait(2048)
                            count += 1
                        except BlockingIOError:
                            await u.recvfrom(2048)
                            count += 1
                dt, c1 = time.perf_counter() - t0, cpu_s()
                sent = (await bl.line(timeout=p.seconds + 30))["count"]
            u.close()
            out.append(count / dt)
            cpu.append(per_unit(c1 - c0, count, PER_K))
        note = f"{UDP_SIZE}-byte payloads; last run: {sent} sent"
    return {"metrics": {"rate": out, "cpu": cpu}, "cpu_unit": CPU_DGRAM, "note": note}


async def kernel_udp(p: Params) -> dict[str, Any]:
    out = []
    with veth_pair(tag=p.tag) as (a, b):
        for i in range(p.runs):
            async with peer("udp-sink", 5501 + i, p.seconds, ns=b) as snk:
                await snk.ready()
                async with peer("udp-blast", KB, 5501 + i, p.seconds + 0.5, UDP_SIZE,
                                ns=a) as bl:
                    res = await snk.line(timeout=p.seconds + 30)
                    await bl.line(timeout=p.seconds + 30)
            out.append(res["count"] / float(res["seconds"]))
    return {"metrics": {"rate": out}}


# -- forwarding: UDP packets/s through the router -------------------------------------
FWD_SRC, FWD_DST, FWD_PORT = "198.18.1.1", "198.18.2.1", 5701
FWD_WARMUP = 0.3  # s of flood before the counted window (queues fill, flow cache in)


async def rx_packets(ns: str, dev: str) -> tuple[float, int]:
    """(time, packets received by DEV in NS): the far side's interface counter."""
    t0 = time.perf_counter()
    r = await trio.run_process(["ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev],
                               capture_stdout=True, capture_stderr=True)
    t = (t0 + time.perf_counter()) / 2
    return t, int(json.loads(r.stdout)[0]["stats64"]["rx"]["packets"])


async def _fwd_runs(p: Params, src: str, dst: str,
                    dst_dev: str) -> tuple[list[float], str, list[float]]:
    """A kernel sender in ``src`` floods 64-byte UDP datagrams at 198.18.2.1 in ``dst``
    through the router; the rate is what reaches ``dst_dev`` in ``dst`` (its rx packet
    counter) over ``seconds``, after FWD_WARMUP s of flood. A socket bound in ``dst``
    and never read takes the datagrams (dropped there, no ICMP back through the router).
    Also returns this process's CPU seconds per 1,000 packets counted (the stack's, when
    it is the router)."""
    if not await ping(src, FWD_DST, 3, "-i", "0.05"):
        raise RuntimeError(f"{FWD_SRC} cannot reach {FWD_DST} through the router")
    out, offered, cpu = [], [], []
    for i in range(p.runs):
        async with peer("udp-hole", FWD_PORT + i, ns=dst) as hole:
            await hole.ready()
            async with peer("udp-blast", FWD_DST, FWD_PORT + i,
                            FWD_WARMUP + p.seconds + 0.5, UDP_SIZE, ns=src) as bl:
                await trio.sleep(FWD_WARMUP)
                t0, c0 = await rx_packets(dst, dst_dev)
                u0 = cpu_s()
                await trio.sleep(p.seconds)
                u1 = cpu_s()
                t1, c1 = await rx_packets(dst, dst_dev)
                res = await bl.line(timeout=p.seconds + 30)
            await hole.close_stdin()
        out.append((c1 - c0) / (t1 - t0))
        cpu.append(per_unit(u1 - u0, c1 - c0, PER_K))
        offered.append(res["count"] / float(res["seconds"]))
    note = (f"{UDP_SIZE}-byte UDP payloads, ns a → router → ns b, counted on arrival in "
            f"ns b; offered by the sender {median(offered):,.0f}/s")
    return out, note, cpu


async def stack_fwd(p: Params) -> dict[str, Any]:
    """The stack routes between tap0 (ns a) and tap1 (ns b), forwarding on."""
    need_tap()
    async with _stack(p, 2, forward=True) as (st, (a, b), _):
        f0 = st.inet.counters["forwarded"]
        ff0 = st.l2.fastfwd.counters["forwarded"]
        rates, note, cpu = await _fwd_runs(p, a, b, "tap1")
        slow = st.inet.counters["forwarded"] - f0
        fast = st.l2.fastfwd.counters["forwarded"] - ff0
    if fast + slow:
        note += f"; {100 * fast / (fast + slow):.0f}% by the fast-forward cache"
    return {"metrics": {"pps": rates, "cpu": cpu}, "cpu_unit": CPU_PKT, "note": note}


async def kernel_fwd(p: Params) -> dict[str, Any]:
    """The same sender and topology, a kernel namespace (ip_forward=1) as the router."""
    with kernel_router(tag=p.tag) as (a, b):
        rates, note, _cpu = await _fwd_runs(p, a, b, "fwd0")
    return {"metrics": {"pps": rates}, "note": note.split("; ")[-1]}


# -- pf: TCP bulk with 100 rules vs without -------------------------------------------
async def stack_pf(p: Params) -> dict[str, Any]:
    """TCP bulk kernel → in-stack sink (as tcp_rx) with lsm-pf loaded: pf off, on with 100
    stateful rules, on with 100 stateless rules (every packet walks them), per run; then
    off once more. Each run's figures are % of the mean of the pf-off runs around it."""
    need_tap()
    need_module("stack.pf", "pf")
    from bench.pf_bench import ruleset

    async with tap_stack(p, protocols=("pf",)) as (st, ns, _):
        pf = getattr(st, "pf", None)
        if pf is None:
            raise NotAvailable("lsm-pf did not load")
        ls = st.tcp.socket()
        ls.bind((SIP, 5801))
        ls.listen(8)

        cpu: dict[str, list[float]] = {"keep": [], "nostate": []}

        async def bulk(cpu_of: str = "") -> float:
            c0 = cpu_s()
            async with peer("source", SIP, 5801, p.seconds, ns=ns) as src:
                nbytes = await _instack_sink(ls)
                if cpu_of:
                    cpu[cpu_of].append(per_unit(cpu_s() - c0, nbytes, PER_GB))
                return mbps(await src.line())

        off, keep, nostate = [await bulk()], [], []
        for _ in range(p.runs):
            pf.load(ruleset(stateful=True))
            pf.enable()
            keep.append(await bulk("keep"))
            pf.load(ruleset(stateful=False))
            nostate.append(await bulk("nostate"))
            pf.disable()
            off.append(await bulk())
        ls.close()
        nrules = len(pf.ruleset.rules)
        stats = dict(pf.stats)
    base = [(off[i] + off[i + 1]) / 2 for i in range(p.runs)]
    if not stats.get("state-match") or not stats.get("evaluations"):
        raise RuntimeError(f"pf saw no traffic: {stats}")
    return {"metrics": {"keep_pct": [k / b * 100 for k, b in zip(keep, base, strict=True)],
                        "nostate_pct": [n / b * 100 for n, b in zip(nostate, base, strict=True)],
                        "off": off, "keep": keep, "nostate": nostate,
                        "cpu_keep_pct": cpu["keep"], "cpu_nostate_pct": cpu["nostate"]},
            "cpu_unit": CPU_GB,
            "notes": {"keep_pct": f"pf off {median(off):,.0f} → on {median(keep):,.0f} "
                                  f"Mbit/s (medians); {stats['state-match']} state matches",
                      "nostate_pct": f"pf off {median(off):,.0f} → on {median(nostate):,.0f}"
                                     f" Mbit/s (medians); {stats['evaluations']} rule-set "
                                     "evaluations"},
            "note": f"{nrules} rules"}


# -- FUSE: 64-byte writes and reads, 128 KiB writes ----------------------------------
#: workload → (bench.fuse_bench client mode, metric): calls/s, or GB/s for "gb_s"
FUSE_MODES = {"fuse": ("w64", "rate"), "fuse_read": ("r64", "rate"),
              "fuse_bulk": ("w128k", "gb_s")}
GB = 1e9


def _fuse_figure(metric: str, run: tuple[int, int, float]) -> float:
    ops, nbytes, dt = run
    return nbytes / dt / GB if metric == "gb_s" else ops / dt


def _fuse_stack(name: str, p: Params, note: str) -> dict[str, Any]:
    need_fuse()
    from bench.fuse_bench import fuse_runs

    mode, metric = FUSE_MODES[name]
    out, cpu = [], []
    for _ in range(p.runs):
        used: dict[str, float] = {}
        run = fuse_runs([mode], p.seconds, None, used)[mode]
        out.append(_fuse_figure(metric, run))
        cpu.append(per_unit(used[mode], run[1], PER_GB) if metric == "gb_s"
                   else per_unit(used[mode], run[0], PER_K))
    return {"metrics": {metric: out, "cpu": cpu},
            "cpu_unit": CPU_GB if metric == "gb_s" else CPU_REQ, "note": note}


def _fuse_pipe(name: str, p: Params) -> dict[str, Any]:
    from bench.fuse_bench import pipe_run

    mode, metric = FUSE_MODES[name]
    return {"metrics": {metric: [_fuse_figure(metric, pipe_run(mode, p.seconds))
                                 for _ in range(p.runs)]}}


def stack_fuse(p: Params) -> dict[str, Any]:
    return _fuse_stack("fuse", p, "bench.fuse_bench; kernel column: a pipe")


def kernel_fuse(p: Params) -> dict[str, Any]:
    return _fuse_pipe("fuse", p)


def stack_fuse_read(p: Params) -> dict[str, Any]:
    """64-byte os.read calls on a FUSE file, each one FUSE READ."""
    return _fuse_stack("fuse_read", p, "bench.fuse_bench; kernel column: a pipe")


def kernel_fuse_read(p: Params) -> dict[str, Any]:
    return _fuse_pipe("fuse_read", p)


def stack_fuse_bulk(p: Params) -> dict[str, Any]:
    """128 KiB os.write calls on a FUSE file, each one FUSE WRITE; GB = 10^9 bytes."""
    return _fuse_stack("fuse_bulk", p, "bench.fuse_bench; 1 GB = 10^9 bytes; "
                       "kernel column: a pipe")


def kernel_fuse_bulk(p: Params) -> dict[str, Any]:
    return _fuse_pipe("fuse_bulk", p)


# -- RSS with N idle connections ------------------------------------------------------
async def hold_accepted(ls: Any, conns: list[Any]) -> None:
    """Accept on the in-stack listener ``ls`` for ever, keeping every connection in
    ``conns`` (the rows that hold N connections run it in their nursery)."""
    while True:
        conn, _ = await ls.accept()
        conns.append(conn)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def stack_rss(p: Params) -> dict[str, Any]:
    """The kernel side opens N connections to an in-stack listener and holds them."""
    need_tap()
    async with tap_stack(p) as (st, ns, _):
        ls = st.tcp.socket()
        ls.bind((SIP, 5601))
        ls.listen(1024)
        conns: list[Any] = []
        gc.collect()
        base = rss_mb()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold_accepted, ls, conns)
            c0 = cpu_s()
            async with peer("hold", SIP, 5601, p.conns, ns=ns) as h:
                await h.ready(timeout=120)
                with trio.move_on_after(30):
                    while len(conns) < p.conns:
                        await trio.sleep(0.05)
                cpu = per_unit(cpu_s() - c0, len(conns), PER_K)
                await trio.sleep(0.5)
                gc.collect()
                rss = rss_mb()
                n = len(conns)
                await h.close_stdin()
            nursery.cancel_scope.cancel()
        for c in conns:
            c.abort()
        ls.close()
    return {"metrics": {"mb": [rss], "cpu": [cpu]}, "cpu_unit": CPU_CONN,
            "note": f"{n} connections held; {rss - base:.1f} MB over the idle stack; "
                    "CPU: setting them up"}


def _v6(fn: Callable[[Params], Any]) -> Callable[[Params], Any]:
    """The same workload over IPv6 (the *6 rows: compared with their IPv4 row)."""
    async def run(p: Params) -> Any:
        return await fn(replace(p, family=6))
    run.__doc__ = fn.__doc__
    return run


WORKLOADS: dict[str, dict[str, Callable[[Params], Any]]] = {
    "ping": {"stack": stack_ping, "kernel": kernel_ping},
    "tcp_rx": {"stack": stack_tcp_rx, "kernel": kernel_tcp},
    "tcp_tx": {"stack": stack_tcp_tx, "kernel": kernel_tcp},
    "files_rx": {"stack": stack_files_rx, "kernel": kernel_tcp},
    "files_tx": {"stack": stack_files_tx, "kernel": kernel_tcp},
    "echo": {"stack": stack_echo, "kernel": kernel_echo},
    "accept": {"stack": stack_accept, "kernel": kernel_accept},
    "files_accept": {"stack": stack_files_accept, "kernel": kernel_files_accept},
    "udp": {"stack": stack_udp, "kernel": kernel_udp},
    "fwd": {"stack": stack_fwd, "kernel": kernel_fwd},
    "pf": {"stack": stack_pf},
    "fuse": {"stack": stack_fuse, "kernel": kernel_fuse},
    "fuse_read": {"stack": stack_fuse_read, "kernel": kernel_fuse_read},
    "fuse_bulk": {"stack": stack_fuse_bulk, "kernel": kernel_fuse_bulk},
    "rss": {"stack": stack_rss},
    "ping6": {"stack": _v6(stack_ping), "kernel": _v6(kernel_ping)},
    "tcp6_rx": {"stack": _v6(stack_tcp_rx), "kernel": _v6(kernel_tcp)},
    "tcp6_tx": {"stack": _v6(stack_tcp_tx), "kernel": _v6(kernel_tcp)},
    "files6_rx": {"stack": _v6(stack_files_rx), "kernel": _v6(kernel_tcp)},
    "files6_tx": {"stack": _v6(stack_files_tx), "kernel": _v6(kernel_tcp)},
}


def _crypto_workloads() -> None:
    """The crypto rows (bench/crypto_bench.py, which imports this module for Params)."""
    from bench import crypto_bench as cb

    WORKLOADS["crypto_sw"] = {"stack": cb.stack_crypto_sw, "kernel": cb.library_crypto}
    WORKLOADS["crypto_sim"] = {"stack": cb.stack_crypto_sim, "kernel": cb.library_crypto}
    from bench import esp_bench  # TCP bulk through ESP vs plain (two stacks, devnp-vwire)

    WORKLOADS["esp"] = {"stack": esp_bench.stack_esp}
    from bench import qnet_bench  # Qnet: B's stack through <A>/net/b, beside A's own mount

    WORKLOADS["qnet_rt"] = {"stack": qnet_bench.stack_qnet_rt}
    WORKLOADS["qnet_bulk"] = {"stack": qnet_bench.stack_qnet_bulk}


_crypto_workloads()


def _floor_and_server_workloads() -> None:
    """The floors (bench/floors.py: the "floor" side of the ping and FUSE rows) and the
    server rows (bench/server_bench.py: UDP through the files, idle CPU, latency under
    load); both modules import this one."""
    from bench import floors
    from bench import server_bench as sb

    WORKLOADS["ping"]["floor"] = floors.floor_ping
    WORKLOADS["ping6"]["floor"] = _v6(floors.floor_ping)  # n/a: the floor is IPv4 only
    WORKLOADS["echo"]["floor"] = floors.floor_echo
    WORKLOADS["files_rx"]["floor"] = floors.floor_files_rx
    WORKLOADS["files_tx"]["floor"] = floors.floor_files_tx
    WORKLOADS["fuse"]["floor"] = floors.floor_fuse
    WORKLOADS["fuse_read"]["floor"] = floors.floor_fuse_read
    WORKLOADS["fuse_bulk"]["floor"] = floors.floor_fuse_bulk
    WORKLOADS["udp_files"] = {"stack": sb.stack_udp_files, "kernel": kernel_udp}
    WORKLOADS["udp_rr"] = {"stack": sb.stack_udp_rr, "kernel": sb.kernel_udp_rr}
    WORKLOADS["udp_rr_stack"] = {"stack": sb.stack_udp_rr_in_stack, "kernel": sb.kernel_udp_rr}
    WORKLOADS["idle"] = {"stack": sb.stack_idle}
    WORKLOADS["load"] = {"stack": sb.stack_load, "kernel": sb.kernel_load}
    from bench import scale_bench  # 10,000 held connections; connection churn (soaks)

    WORKLOADS["conns10k"] = {"stack": scale_bench.stack_conns10k}
    WORKLOADS["churn"] = {"stack": scale_bench.stack_churn}
    WORKLOADS["churn_files"] = {"stack": scale_bench.stack_churn_files}


_floor_and_server_workloads()

#: workloads whose every run needs a fresh process (the RSS of an idle stack): the runner
#: starts the worker ``runs`` times with runs=1 and merges the values
ONE_PROCESS_PER_RUN = {"rss", "conns10k"}


def run_side(name: str, side: str, p: Params) -> dict[str, Any]:
    fn = WORKLOADS[name][side]
    try:
        if not trio_fn(fn):
            return fn(p)  # type: ignore[no-any-return]
        if p.profile:
            import cProfile

            prof = cProfile.Profile()
            res = prof.runcall(trio.run, fn, p)
            prof.dump_stats(p.profile)
            return res  # type: ignore[no-any-return]
        return trio.run(fn, p)  # type: ignore[no-any-return]
    except Exception as exc:  # trio's nurseries wrap what a workload raises in groups
        leaves = list(_leaves(exc))
        for leaf in leaves:
            if isinstance(leaf, NotAvailable):
                return {"na": str(leaf)}
        traceback.print_exception(exc)
        leaf = leaves[0] if leaves else exc
        return {"na": f"failed: {type(leaf).__name__}: {leaf}"[:160]}


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            yield from _leaves(sub)
    else:
        yield exc


def trio_fn(fn: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    name, side = args[0], args[1]
    p = Params(**json.loads(args[2])) if len(args) > 2 else Params()
    res = run_side(name, side, p)
    print("RESULT " + json.dumps(res), flush=True)
    return 0


def params_json(p: Params) -> str:
    return json.dumps(asdict(p))


if __name__ == "__main__":
    # run as the one bench.workloads module (not this __main__ copy), which the modules
    # imported above (floors, server_bench) use: one NotAvailable, one WORKLOADS
    from bench.workloads import main as _main

    sys.exit(_main())
