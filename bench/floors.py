"""The floors of ``python -m bench``: the same client against the least program that can
answer it, compiled by the benchmark (gcc) from bench/floor/ and measured in the same run.

* TAP floor (the ping rows): ``bench/floor/tap_floor.c`` answers ARP and ICMP echo
  (IPv4) on a TAP with one blocking read() and one write() per frame. Kernel ``ping`` in
  the TAP's namespace, exactly as the stack's ping row. Then the same work in Python on
  trio's loop (``bench/floor/tap_floor_trio.py``, no compiling), given in the note: what
  the event loop costs before any of the stack's layers.
* FUSE floor (the FUSE rows): ``bench/floor/fuse_floor.c``, a single-threaded libfuse3
  low-level server with one file whose reads return 64 bytes and whose writes are
  dropped; the same ``bench.fuse_bench`` client loop as against the stack's session.

* Socket-file floor (the echo and the TCP bulk rows through the files):
  ``bench/floor/fuse_relay.c``, a single-threaded libfuse3 low-level server whose one file
  is a kernel TCP socket (open connects, read is one recv(), write one send()). The
  same bench/peer.py client loops run on it (``--file``, bench.filesock) against the
  same kernel peer as the kernel column, over the same veth: what serving a socket as a
  FUSE file costs, one READ or WRITE per call, with the kernel's TCP instead of the stack.

A floor that cannot be built (no gcc, no libfuse3-dev) is ``n/a`` with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import trio

from bench.common import REPO, netns, sh

if TYPE_CHECKING:  # bench.workloads imports this module to list its floors
    from bench.workloads import Params

SRC = os.path.join(REPO, "bench", "floor")
TAP_DEV = "tapf0"


def _not_available(reason: str) -> Exception:
    from bench.workloads import NotAvailable

    return NotAvailable(reason)


@contextlib.contextmanager
def built(name: str, *pkgs: str) -> Iterator[str]:
    """bench/floor/NAME.c compiled (gcc -O2, with the flags of pkg-config PKGS) into a
    temporary directory, removed on exit; NotAvailable with the reason if it cannot be."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise _not_available("gcc not found (scripts/setup installs it)")
    flags: list[str] = []
    if pkgs:
        if shutil.which("pkg-config") is None:
            raise _not_available("pkg-config not found (scripts/setup installs it)")
        r = subprocess.run(["pkg-config", "--cflags", "--libs", *pkgs], capture_output=True,
                           text=True, check=False)
        if r.returncode != 0:
            raise _not_available(f"no {' '.join(pkgs)} development files (pkg-config: "
                                 f"{r.stderr.strip()[:80]}; scripts/setup installs "
                                 "libfuse3-dev)")
        flags = r.stdout.split()
    tmp = tempfile.mkdtemp(prefix="iopkt-floor-")
    try:
        exe = os.path.join(tmp, name)
        r = subprocess.run([gcc, "-O2", "-Wall", "-o", exe, os.path.join(SRC, f"{name}.c"),
                            *flags], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            last = [ln for ln in r.stderr.splitlines() if ln.strip()]
            raise _not_available(f"gcc failed on {name}.c: {(last or ['?'])[-1][:100]}")
        yield exe
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.asynccontextmanager
async def _running(cmd: list[str], name: str) -> AsyncIterator[trio.Process]:
    """CMD started, its first stdout line "ready" awaited; SIGTERM, then SIGKILL, on exit."""
    with tempfile.TemporaryFile() as err:
        proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, stderr=err)
        try:
            assert proc.stdout is not None
            buf = b""
            with trio.fail_after(10):
                while b"\n" not in buf:
                    chunk = await proc.stdout.receive_some(256)
                    if not chunk:
                        break
                    buf += chunk
            if buf.strip() != b"ready":
                await proc.wait()
                err.seek(0)
                text = err.read().decode(errors="replace").strip().splitlines()
                raise RuntimeError(f"{name} did not start: {(text or ['?'])[-1][:100]}")
            yield proc
        finally:
            with trio.CancelScope(shield=True):
                if proc.returncode is None:
                    proc.terminate()
                    with trio.move_on_after(3):
                        await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                if proc.stdout is not None:
                    await proc.stdout.aclose()


async def floor_ping(p: Params) -> dict[str, Any]:
    """Kernel ``ping`` in a fresh namespace → tap_floor on a TAP there (198.18.1.254, the
    stack's address in the ping row; the kernel side 198.18.1.1)."""
    from bench.workloads import SIP, _ping_runs, need_root_tun

    need_root_tun()
    if p.family != 4:
        raise _not_available("the TAP floor answers IPv4 only")
    trio_floor = [sys.executable, os.path.join(SRC, "tap_floor_trio.py"), TAP_DEV, SIP]
    with built("tap_floor") as exe, netns(p.tag) as ns:
        async with _running(["ip", "netns", "exec", ns, exe, TAP_DEV, SIP], "tap_floor"):
            await _tap_up(ns)
            res = await _ping_runs(p, ns, SIP)
        # the same work on trio's loop in Python: what the loop costs before any layer
        async with _running(["ip", "netns", "exec", ns, *trio_floor], "tap_floor_trio"):
            await _tap_up(ns)
            on_trio = await _ping_runs(p, ns, SIP)
    res["metrics"].pop("cpu", None)
    m = on_trio["metrics"]
    return {"metrics": res["metrics"],
            "note": f"bench/floor/tap_floor.c; the same on trio in Python "
                    f"(tap_floor_trio.py): p50 {statistics.median(m['p50']):.0f} µs, "
                    f"p99 {statistics.median(m['p99']):.0f} µs"}


async def _tap_up(ns: str) -> None:
    """The kernel side of the floor's TAP: its address, link up."""
    from bench.workloads import KIP

    for cmd in (["addr", "add", f"{KIP}/24", "dev", TAP_DEV],
                ["link", "set", TAP_DEV, "up"]):
        await trio.run_process(["ip", "-n", ns, *cmd], capture_stderr=True)


def fuse_floor_runs(mode: str, p: Params) -> list[tuple[int, int, float]]:
    """``p.runs`` runs of bench.fuse_bench's client in MODE against fuse_floor."""
    from bench.fuse_bench import client_run
    from bench.workloads import need_fuse

    need_fuse()
    out = []
    with built("fuse_floor", "fuse3") as exe, _mount_point("iopkt-ffloor-") as mnt:
        async def serve() -> None:
            async with _running([exe, mnt], "fuse_floor"):
                for _ in range(p.runs):
                    out.append(await trio.to_thread.run_sync(
                        client_run, mode, os.path.join(mnt, "sink"), p.seconds))

        trio.run(serve)
    return out


@contextlib.contextmanager
def _mount_point(prefix: str) -> Iterator[str]:
    """A fresh directory for a floor's FUSE mount; unmounted (lazily, if the floor left
    it mounted) and removed on exit."""
    mnt = tempfile.mkdtemp(prefix=prefix)
    try:
        yield mnt
    finally:
        if os.path.ismount(mnt):
            sh("fusermount3", "-u", "-z", mnt, check=False)
        with contextlib.suppress(OSError):
            os.rmdir(mnt)


def _fuse_floor(name: str) -> Any:
    def run(p: Params) -> dict[str, Any]:
        from bench.workloads import FUSE_MODES, _fuse_figure

        mode, metric = FUSE_MODES[name]
        return {"metrics": {metric: [_fuse_figure(metric, r)
                                     for r in fuse_floor_runs(mode, p)]},
                "note": "bench/floor/fuse_floor.c (libfuse3, one thread)"}
    run.__doc__ = f"The {name} row's client loop against fuse_floor."
    return run


floor_fuse = _fuse_floor("fuse")
floor_fuse_read = _fuse_floor("fuse_read")
floor_fuse_bulk = _fuse_floor("fuse_bulk")


# -- a socket served as a FUSE file: the echo and the bulk rows through the files ------
@contextlib.asynccontextmanager
async def _relay(exe: str, ns: str, port: int) -> AsyncIterator[str]:
    """fuse_relay mounted on a fresh directory, its sockets in namespace ``ns`` connecting
    to the kernel peer KB:``port``; yields the socket file's path."""
    from bench.workloads import KB

    with _mount_point("iopkt-relay-") as mnt:
        async with _running([exe, mnt, f"/var/run/netns/{ns}", KB, str(port)], "fuse_relay"):
            yield os.path.join(mnt, "sock")


def _file_peer(path: str, *args: object) -> contextlib.AbstractAsyncContextManager[Any]:
    """bench/peer.py's client ARGS with every connect opening the relay's file PATH."""
    from bench.workloads import spawn

    return spawn("bench.peer", "--file", path, *args)


RELAY_NOTE = "bench/floor/fuse_relay.c: a kernel socket served as a libfuse3 file"


async def floor_echo(p: Params) -> dict[str, Any]:
    """The echo row's client on the relay's file → the kernel column's echo server."""
    from bench.common import veth_pair
    from bench.workloads import KB, _echo_result, need_fuse, peer

    need_fuse()
    runs = []
    with built("fuse_relay", "fuse3") as exe, veth_pair(tag=p.tag) as (a, b):
        for i in range(p.runs):
            port = 5301 + i
            async with peer("echo-server", port, ns=b) as srv, _relay(exe, a, port) as path:
                await srv.ready()
                async with _file_peer(path, "echo-client", KB, port, p.echo_count) as cl:
                    runs.append((await cl.line(timeout=120))["rtt_us"])
    res = _echo_result(runs)
    res["note"] = RELAY_NOTE
    return res


async def _floor_bulk(p: Params, rx: bool) -> dict[str, Any]:
    from bench.common import veth_pair
    from bench.workloads import KB, mbps, need_fuse, peer

    need_fuse()
    out = []
    with built("fuse_relay", "fuse3") as exe, veth_pair(tag=p.tag) as (a, b):
        for i in range(p.runs):
            port = 5101 + i
            kernel_side = ("source-server", port, p.seconds) if rx else ("sink", port)
            async with peer(*kernel_side, ns=b) as kp, _relay(exe, a, port) as path:
                await kp.ready()
                if rx:  # the reader's figure, as the files_rx row's sink
                    async with _file_peer(path, "sink-connect", KB, port) as fp:
                        res = await fp.line(timeout=p.seconds * 3 + 30)
                    await kp.line()
                else:  # the kernel sink's figure, as the files_tx row's
                    async with _file_peer(path, "source", KB, port, p.seconds) as fp:
                        await fp.line(timeout=p.seconds * 3 + 30)
                    res = await kp.line()
                out.append(mbps(res))
    return {"metrics": {"mbps": out}, "note": RELAY_NOTE}


async def floor_files_rx(p: Params) -> dict[str, Any]:
    """kernel → a reader of the relay's file, 256 KB reads (the files_rx row's sink)."""
    return await _floor_bulk(p, rx=True)


async def floor_files_tx(p: Params) -> dict[str, Any]:
    """a writer of the relay's file, 256 KB writes (the files_tx row's source) → kernel."""
    return await _floor_bulk(p, rx=False)
