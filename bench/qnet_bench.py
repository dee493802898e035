"""Qnet rows: the same socket operations through ``<A>/net/b`` (B's stack over Qnet over
devnp-vwire) and through A's local mount, in one run.

    sudo .venv/bin/python -m bench --only qnet_rt --only qnet_bulk --no-write
    sudo .venv/bin/python -m bench.qnet_bench [--seconds S] [--markdown]   # alone

In ``python -m bench`` these are the workloads ``qnet_rt`` and ``qnet_bulk`` (stack side
only: the comparison, A's local mount, is measured in the same worker and given in the
note); the CPU column is both io-pkt processes' user + system CPU over the remote runs.

* remote 64-byte round trip: a UDP socket connected to itself on 127.0.0.1, one 64-byte
  write and one read per round (calls/s);
* 128 KiB writes: a TCP connection to a sink on 127.0.0.1, 128 KiB per write (MB/s).

The second column is the same operation on the local mount (not the kernel)."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bench.common import Row, machine, median, table

if TYPE_CHECKING:  # bench.workloads imports this module to list its workloads
    from bench.workloads import Params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLIENT = r"""
import socket, sys, time
mode, secs = sys.argv[1], float(sys.argv[2])
n = nbytes = 0
if mode == "rt64":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.connect(s.getsockname())
    msg = b"x" * 64
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:
        s.send(msg)
        s.recv(64)
        n += 1
else:
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    c = socket.create_connection(ls.getsockname())
    a, _ = ls.accept()
    a.setblocking(False)
    buf = b"y" * (128 * 1024)
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:
        c.sendall(buf)
        n += 1
        nbytes += len(buf)
        try:
            while a.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
print(n, nbytes, time.monotonic() - t0)
"""


def _env(sock: str) -> dict[str, str]:
    env = dict(os.environ, SOCK=sock)
    env["PYTHONPATH"] = REPO + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_client(sock: str, mode: str, secs: float) -> tuple[int, int, float]:
    out = subprocess.run([sys.executable, "-m", "rmgr.libsocket", "-c", CLIENT, mode,
                          str(secs)], env=_env(sock), capture_output=True, text=True,
                         timeout=secs + 60, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"client {mode} on {sock}: {out.stderr[-500:]}")
    n, nb, t = out.stdout.split()
    return int(n), int(nb), float(t)


def _start(args: list[str], prefix: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-m", "stack.main", *args, "-p", "tcpip",
                          f"prefix={prefix},auto_linklocal=0"], env=_env(prefix), cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(f"{prefix}/dev/socket/config/status"):
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"io-pkt at {prefix} did not start")
        time.sleep(0.05)
    subprocess.run([sys.executable, "-m", "stack.main", "ifconfig", "vw0", "up"],
                   env=_env(prefix), cwd=REPO, check=True, capture_output=True)
    return p


def proc_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (/proc/PID/stat)."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tck
    return total


@contextlib.contextmanager
def qnet_pair() -> Iterator[tuple[str, str, list[int]]]:
    """io-pkt A and B joined by devnp-vwire, each with lsm-qnet; yields (A's prefix,
    <A>/net/b, the two processes' pids). Both are stopped (SIGTERM: they unmount their
    own mounts) and the directory removed on every path."""
    with tempfile.TemporaryDirectory(prefix="qnet-bench-") as tmp:
        w = f"{tmp}/w.sock"
        procs: list[subprocess.Popen[str]] = []
        try:
            procs.append(_start(["-d", "vwire", f"path={w},name=vw0", "-p", "qnet",
                                 "host=a,auto_add=2"], f"{tmp}/a"))
            procs.append(_start(["-d", "vwire", f"peer={w},name=vw0", "-p", "qnet",
                                 "host=b,auto_add=2"], f"{tmp}/b"))
            deadline = time.monotonic() + 10
            while "b" not in os.listdir(f"{tmp}/a/net"):
                if time.monotonic() > deadline:
                    raise RuntimeError("a never learned b")
                time.sleep(0.05)
            yield f"{tmp}/a", f"{tmp}/a/net/b", [p.pid for p in procs]
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            with open("/proc/mounts") as fh:
                left = [ln.split()[1] for ln in fh if ln.split()[1].startswith(tmp + "/")]
            for m in sorted(left, key=len, reverse=True):
                subprocess.run(["fusermount3", "-u", "-z", m], capture_output=True)


def _rate(r: tuple[int, int, float]) -> float:
    return r[0] / r[2]


def _mbps(r: tuple[int, int, float]) -> float:
    return r[1] / r[2] / 1e6


#: workload → (client mode, metric)
MODES = {"qnet_rt": ("rt64", "rate"), "qnet_bulk": ("w128k", "mbs")}


def _qnet_workload(name: str, p: Params) -> dict[str, Any]:
    from bench.workloads import (
        CPU_GB,
        CPU_REQ,
        PER_GB,
        PER_K,
        need_files,
        need_module,
        per_unit,
    )

    need_files()
    need_module("stack.qnet", "lsm-qnet")
    mode, metric = MODES[name]
    fig = _rate if mode == "rt64" else _mbps
    remote: list[float] = []
    local: list[float] = []
    cpu: list[float] = []
    with qnet_pair() as (a, b, pids):
        for _ in range(p.runs):
            c0 = proc_cpu(pids)
            r = run_client(b, mode, p.seconds)
            used = proc_cpu(pids) - c0
            remote.append(fig(r))
            cpu.append(per_unit(used, r[0], PER_K) if mode == "rt64"
                       else per_unit(used, r[1], PER_GB))
            local.append(fig(run_client(a, mode, p.seconds)))
    lm = median(local)
    return {"metrics": {metric: remote, "cpu": cpu},
            "cpu_unit": CPU_REQ if mode == "rt64" else CPU_GB,
            "note": f"A's local mount: {lm:,.0f} (remote/local = {median(remote) / lm:.2f}); "
                    "SOCK=<A>/net/b over devnp-vwire; CPU: io-pkt A + B"}


def stack_qnet_rt(p: Params) -> dict[str, Any]:
    """64-byte write + read round trips on a UDP socket of B's stack through <A>/net/b."""
    return _qnet_workload("qnet_rt", p)


def stack_qnet_bulk(p: Params) -> dict[str, Any]:
    """128 KiB writes on a TCP connection of B's stack through <A>/net/b; MB = 10^6."""
    return _qnet_workload("qnet_bulk", p)


def qnet_rows(seconds: float) -> list[Row]:
    with qnet_pair() as (local, remote, _pids):
        res = {(where, mode): run_client(sock, mode, seconds)
               for where, sock in (("remote", remote), ("local", local))
               for mode in ("rt64", "w128k")}
    return [
        Row("Qnet remote 64-byte write+read", "rounds/s", _rate(res["remote", "rt64"]),
            _rate(res["local", "rt64"]), ">= 500",
            "SOCK=<A>/net/b over vwire; second column: A's local mount"),
        Row("Qnet remote 128 KiB writes", "MB/s", _mbps(res["remote", "w128k"]),
            _mbps(res["local", "w128k"]), ">= 10",
            "TCP to 127.0.0.1 on B through Qnet; second column: A's local mount"),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    rows = qnet_rows(args.seconds)
    print(machine())
    print(table(rows, markdown=args.markdown), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
