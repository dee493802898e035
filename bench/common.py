"""Shared pieces of the benchmark suite: private namespaces, a veth pair for the kernel
ceiling, percentiles, medians, and the result table."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def sh(*cmd: str, check: bool = True, timeout: float = 120) -> str:
    r = subprocess.run(cmd, check=False, text=True, capture_output=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


@contextlib.contextmanager
def netns(tag: str = "b") -> Iterator[str]:
    name = f"iopkt-bench-{tag}-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


@contextlib.contextmanager
def veth_pair(addr_a: str = "198.18.0.1", addr_b: str = "198.18.0.2",
              tag: str = "k") -> Iterator[tuple[str, str]]:
    """Two kernel namespaces joined by veth (the physical ceiling on this machine).
    198.18.0.0/15 is the benchmarking range (RFC 2544), used only inside them. ``tag``
    goes into the namespaces' names (the runner sweeps its own tag's leftovers)."""
    with netns(tag) as a, netns(tag) as b:
        sh("ip", "link", "add", "bva", "netns", a, "type", "veth", "peer", "name", "bvb",
           "netns", b)
        for ns, dev, addr, addr6 in ((a, "bva", addr_a, "2001:2::1"),
                                     (b, "bvb", addr_b, "2001:2::2")):
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{addr}/24", "dev", dev)
            # the *6 rows' kernel column (RFC 5180's benchmarking range), no DAD wait
            sh("ip", "netns", "exec", ns, "ip", "-6", "addr", "add", f"{addr6}/64", "dev", dev,
               "nodad")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
        yield a, b



@contextlib.contextmanager
def kernel_router(tag: str = "k") -> Iterator[tuple[str, str]]:
    """The forwarding topology with the kernel as the router: namespace a (198.18.1.1,
    device fwd0) — router namespace (198.18.1.254 | 198.18.2.254, ip_forward=1) — namespace
    b (198.18.2.1, device fwd0), over two veth pairs. Yields (a, b)."""
    with netns(tag) as a, netns(tag) as r, netns(tag) as b:
        for i, ns in enumerate((a, b)):
            net, rdev = f"198.18.{i + 1}", f"rt{i}"
            sh("ip", "link", "add", "fwd0", "netns", ns, "type", "veth", "peer", "name", rdev,
               "netns", r)
            for where, dev, addr in ((ns, "fwd0", f"{net}.1"), (r, rdev, f"{net}.254")):
                sh("ip", "-n", where, "addr", "add", f"{addr}/24", "dev", dev)
                sh("ip", "-n", where, "link", "set", dev, "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"{net}.254")
        sh("ip", "netns", "exec", r, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        yield a, b

def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Row:
    workload: str
    unit: str
    stack: float | None
    kernel: float | None
    target: str  # e.g. ">= 1.0" or "<= 60", or ">= 0.9 × IPv4" (with ``base``)
    note: str = ""
    #: what a relative target multiplies (an IPv6 row: its IPv4 row's value)
    base: float | None = None
    #: the floor: the same client against a minimal C program (bench/floor/), this run
    floor: float | None = None
    floor_na: str = ""  # why there is no floor figure ("" outside the suite: "-")
    #: CPU seconds of the stack process per unit of work (``cpu_unit``: "s/GB", ...)
    cpu: float | None = None
    cpu_unit: str = ""
    cpu_na: str = ""  # why there is no CPU figure
    #: "yes"/"no" decided by the workload, for a target that is not a bound on the
    #: figure (the churn soak: RSS and fds flat while the figure is its rate)
    verdict: str = ""

    @property
    def met(self) -> str:
        if self.stack is None:
            return "n/a"
        if self.verdict:
            return self.verdict
        op, _, num = self.target.partition(" ")
        if " × " in num:
            if self.base is None:
                return "-"
            num = str(float(num.split(" × ")[0]) * self.base)
        try:
            goal = float(num)
        except ValueError:
            return "-"
        ok = {">=": self.stack >= goal, ">": self.stack > goal,
              "<": self.stack < goal}.get(op, self.stack <= goal)
        return "yes" if ok else "no"

    @property
    def ratio(self) -> str:
        if not self.stack or not self.kernel:
            return "-"
        return f"{self.stack / self.kernel:.3f}"


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def floor_cell(r: Row) -> str:
    if r.floor is not None:
        return fmt(r.floor)
    return f"n/a: {r.floor_na}" if r.floor_na else "-"


def cpu_cell(r: Row) -> str:
    if r.cpu is not None:
        return f"{r.cpu:.3g} {r.cpu_unit}".rstrip()
    return f"n/a: {r.cpu_na}" if r.cpu_na else "-"


#: the table's columns (docs/performance.md, "How each figure is made")
HEAD = ["workload", "this stack", "kernel", "floor", "ratio", "target", "met", "CPU",
        "note"]


def table(rows: list[Row], markdown: bool = False) -> str:
    head = HEAD
    data = [[f"{r.workload} ({r.unit})", fmt(r.stack), fmt(r.kernel), floor_cell(r),
             r.ratio, r.target, r.met, cpu_cell(r), r.note] for r in rows]
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(d) + " |" for d in data]
        return "\n".join(out) + "\n"
    widths = [max(len(x) for x in col) for col in zip(head, *data, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(d, widths, strict=False)) for d in data]
    return "\n".join(lines) + "\n"


def machine() -> str:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
            f"Python {platform.python_version()}")
