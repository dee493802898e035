"""The benchmark suite must not rot: ``python -m bench --smoke`` (tiny sizes, two runs
each) produces the table with a real number for every row — the stack's figure, and the
kernel's where the workload has a kernel side — each the median of its runs. Only the
rows that need FUSE may be "n/a" (with the reason), and only on a machine without FUSE.
Figures are not checked against their targets (benchmarks are not tests)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from bench.__main__ import ROWS, build_rows, merge_run
from bench.workloads import WORKLOADS, NotAvailable, Params, run_side
from tests.conftest import HAVE_FUSE, HAVE_ROOT, HAVE_TUN, REPO, io_pkt_env

#: workloads that go through FUSE (the socket files, or the FUSE session itself)
FUSE_WORKLOADS = {"files_rx", "files_tx", "echo", "files_accept", "fuse", "fuse_read",
                  "fuse_bulk"}
SMOKE_RUNS = 2


def test_every_workload_has_a_row_and_every_row_a_workload() -> None:
    assert {wl for wl, *_ in ROWS} == set(WORKLOADS)
    labels = [label for _w, _m, label, _u, _t in ROWS]
    assert len(labels) == len(set(labels))


def test_the_issues_benchmark_targets_have_rows() -> None:
    """Issue 3 (FUSE: 64-byte writes and reads, 128 KiB write throughput) and issue 7
    (sockets through the files: echo, bulk each way, accepted connections/s): a row each,
    with the issue's target, and a kernel column."""
    rows = {label: (wl, unit, target) for wl, _m, label, unit, target in ROWS}
    want = {
        "FUSE 64-byte writes": ("fuse", "writes/s", ">= 18000"),
        "FUSE 64-byte reads": ("fuse_read", "reads/s", ">= 18000"),
        "FUSE 128 KiB writes": ("fuse_bulk", "GB/s", ">= 1"),
        "1-byte echo RTT via libsocket p50": ("echo", "µs", "<= 200"),
        "TCP bulk kernel→stack, via files (libsocket)": ("files_rx", "Mbit/s", ">= 800"),
        "TCP bulk stack→kernel, via files (libsocket)": ("files_tx", "Mbit/s", ">= 800"),
        "accepted TCP connections via files (libsocket)": ("files_accept", "conn/s",
                                                           ">= 1000"),
    }
    for label, spec in want.items():
        assert rows.get(label) == spec, label
        assert "kernel" in WORKLOADS[spec[0]], label


def test_rows_report_na_instead_of_crashing() -> None:
    results: dict[str, dict[str, Any]] = {
        "ping": {"na": "no IPv4"}, "udp": {"metrics": {"rate": [1.0, 3.0, 2.0]}}}
    rows = build_rows(results, {"udp": {"metrics": {"rate": [4.0]}}}, ["ping", "udp"])
    assert [r.workload for r in rows] == [label for wl, _m, label, _u, _t in ROWS
                                          if wl in ("ping", "udp")]
    ping = rows[0]
    assert ping.stack is None and ping.met == "n/a" and "no IPv4" in ping.note
    udp = rows[-1]
    assert udp.stack == 2.0 and udp.kernel == 4.0 and udp.ratio == "0.500"
    assert udp.note.startswith("median of 3: ")


def test_per_metric_notes_and_merged_runs() -> None:
    merged: dict[str, Any] = {"metrics": {}}
    for v in (30.0, 10.0, 20.0):  # one worker process per run (the RSS workload)
        merge_run(merged, {"metrics": {"keep_pct": [v], "nostate_pct": [v + 1]},
                           "notes": {"keep_pct": "K", "nostate_pct": "N"}, "note": "x"})
    rows = build_rows({"pf": merged}, {}, ["pf"])
    assert [r.stack for r in rows] == [20.0, 21.0]
    assert rows[0].note == "median of 3: 30, 10, 20; K; x"
    assert rows[1].note.endswith("; N; x") and rows[1].kernel is None


def test_a_failing_workload_gives_na_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    async def missing(_p: Params) -> dict[str, Any]:
        async with trio.open_nursery():  # raised inside a nursery: an exception group
            raise NotAvailable("no such layer")

    async def broken(_p: Params) -> dict[str, Any]:
        async with trio.open_nursery():
            raise RuntimeError("boom")

    monkeypatch.setitem(WORKLOADS, "x", {"stack": missing, "kernel": broken})
    assert run_side("x", "stack", Params()) == {"na": "no such layer"}
    assert run_side("x", "kernel", Params()) == {"na": "failed: RuntimeError: boom"}


@pytest.mark.skipif(not (HAVE_ROOT and HAVE_TUN), reason="needs root and /dev/net/tun")
def test_smoke_run_gives_a_number_for_every_row(tmp_path: Path) -> None:
    js, md = tmp_path / "rows.json", tmp_path / "perf.md"
    r = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--json", str(js),
                        "--out", str(md)], cwd=REPO, env=io_pkt_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads(js.read_text())
    assert [row["workload"] for row in rows] == [label for _w, _m, label, _u, _t in ROWS]
    for (wl, _m, _label, _u, target), row in zip(ROWS, rows, strict=True):
        assert row["workload"] in r.stdout
        if wl in FUSE_WORKLOADS and not HAVE_FUSE:
            assert row["stack"] is None and row["note"].startswith("n/a:"), row
            assert "fuse" in row["note"].lower(), row
            continue
        # the stack's figure: a real, positive number, the median of the smoke runs
        assert row["stack"] is not None and math.isfinite(row["stack"]), row
        assert row["stack"] > 0, row
        assert "n/a" not in row["note"], row
        assert row["note"].startswith(f"median of {SMOKE_RUNS}: "), row
        assert row["met"] in (("-",) if target == "-" else ("yes", "no")), row
        # the kernel's figure, measured in the same run, where the workload has one
        if "kernel" in WORKLOADS[wl]:
            assert row["kernel"] is not None and math.isfinite(row["kernel"]), row
            assert row["kernel"] > 0, row
        else:
            assert row["kernel"] is None, row
    text = md.read_text()
    assert "| workload |" in text and "Machine:" in text
