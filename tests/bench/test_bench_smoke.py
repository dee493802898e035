"""The benchmark suite must not rot: ``python -m bench --smoke`` (tiny sizes, two runs
each) produces the table with a real number for every row — the stack's figure, the
kernel's where the workload has a kernel side, the floor's where it has a floor (the C
programs of bench/floor/, built by the run), and the stack's CPU per unit of work — each
the median of its runs. Only the rows that need FUSE may be "n/a" (with the reason), and
only on a machine without FUSE; the FUSE floor only where libfuse3-dev is missing; a row
without a floor says why. Figures are not checked against their targets (benchmarks are
not tests)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from bench.__main__ import ROWS, SOAK, build_rows, main, merge_run
from bench.common import table
from bench.workloads import WORKLOADS, NotAvailable, Params, run_side
from tests.conftest import HAVE_FUSE, HAVE_ROOT, HAVE_TUN, REPO, io_pkt_env

#: workloads that go through FUSE (the socket files, or the FUSE session itself)
FUSE_WORKLOADS = {"files_rx", "files_tx", "echo", "files_accept", "fuse", "fuse_read",
                  "fuse_bulk", "udp_files", "udp_rr", "idle", "load", "qnet_rt", "qnet_bulk",
                  "conns10k", "churn", "churn_files"}
SMOKE_RUNS = 2
#: the floors (bench/floors.py) and what building them needs
FLOOR_WORKLOADS = {"ping", "fuse", "fuse_read", "fuse_bulk", "echo", "files_rx", "files_tx"}
#: the floors built on libfuse3 (fuse_floor.c, fuse_relay.c); the ping floor needs gcc only
LIBFUSE_FLOORS = FLOOR_WORKLOADS - {"ping"}
HAVE_GCC = shutil.which("gcc") is not None
HAVE_LIBFUSE3 = HAVE_GCC and subprocess.run(
    ["pkg-config", "--exists", "fuse3"], check=False).returncode == 0 \
    if shutil.which("pkg-config") else False


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


def test_issue_21_has_its_rows_floors_and_cpu() -> None:
    """Issue 21: UDP through the files beside the in-stack UDP row, idle CPU, latency
    under load; a floor for the ping and FUSE rows, and for the echo and TCP bulk rows
    through the files (a kernel socket served as a FUSE file)."""
    rows = {label: (wl, unit, target) for wl, _m, label, unit, target in ROWS}
    want = {
        "UDP datagrams into a sink via files (libsocket)": ("udp_files", "dgram/s",
                                                            ">= 0.5 × in-stack"),
        "UDP request/response via files (libsocket server)": ("udp_rr", "req/s",
                                                              ">= 0.5 × in-stack"),
        "CPU holding 1,000 idle TCP connections": ("idle", "% of a core", "< 1"),
        "1-byte echo p99 via libsocket under a TCP bulk transfer, × idle p99": (
            "load", "×", "<= 5"),
    }
    for label, spec in want.items():
        assert rows.get(label) == spec, label
    for wl in FLOOR_WORKLOADS:
        assert "floor" in WORKLOADS[wl], wl


def test_issue_21_scale_rows() -> None:
    """Issue 21's scale rows: 10,000 held connections within 120 MB (a fresh worker per
    run, 200 connections in the smoke run), and the churn soaks (the echo server in-stack,
    and on rmgr.libsocket through the files), whose "met" is the workload's verdict (RSS
    and fds flat; for churn_files also the FUSE handles and the socket table), run only
    with --long or --only NAME."""
    from bench.workloads import ONE_PROCESS_PER_RUN

    rows = {wl: (label, unit, target) for wl, _m, label, unit, target in ROWS}
    assert rows["conns10k"][1:] == ("MB", "<= 120") and "10,000" in rows["conns10k"][0]
    assert rows["churn"][1] == "conn/s" and "flat" in rows["churn"][2]
    assert rows["churn_files"][1] == "conn/s" and "via files" in rows["churn_files"][0]
    assert "FUSE handles" in rows["churn_files"][2] and "flat" in rows["churn_files"][2]
    assert "conns10k" in ONE_PROCESS_PER_RUN and SOAK == {"churn", "churn_files"}
    merged: dict[str, Any] = {"metrics": {}}
    merge_run(merged, {"metrics": {"rate": [900.0]}, "met": {"rate": "no"}})
    (row,) = build_rows({"churn": merged}, {}, ["churn"])
    assert row.stack == 900.0 and row.met == "no"


def test_soak_rows_run_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    monkeypatch.setattr("bench.__main__.run_workload_side",
                        lambda name, side, p, verbose: ran.append(name) or {"na": "x"})
    monkeypatch.setattr("bench.__main__.sweep_namespaces", lambda tag: None)
    main(["--no-write", "--no-kernel", "--no-floor"])
    assert "churn" not in ran and "churn_files" not in ran and "conns10k" in ran
    ran.clear()
    main(["--long", "--no-write", "--no-kernel", "--no-floor"])
    assert "churn" in ran and "churn_files" in ran
    ran.clear()
    main(["--only", "churn", "--no-write"])
    assert ran == ["churn"]
    ran.clear()
    main(["--only", "churn_files", "--no-write"])
    assert ran == ["churn_files"]


def test_issue_17_qnet_rows() -> None:
    """Issue 17: remote 64-byte round trips and 128 KiB writes through <A>/net/b, in the
    one table; the local mount, their comparison, is measured by the same workload."""
    rows = {wl: (label, unit) for wl, _m, label, unit, _t in ROWS}
    assert rows["qnet_rt"][1] == "rounds/s" and rows["qnet_bulk"][1] == "MB/s"
    assert "Qnet" in rows["qnet_rt"][0] and "128 KiB" in rows["qnet_bulk"][0]
    assert set(WORKLOADS["qnet_rt"]) == set(WORKLOADS["qnet_bulk"]) == {"stack"}


def test_floor_and_cpu_columns() -> None:
    """The floor and CPU columns: a figure, or n/a with the reason (never a blank or 0)."""
    results: dict[str, dict[str, Any]] = {
        "ping": {"metrics": {"p50": [40.0, 50.0], "p99": [90.0, 80.0], "cpu": [0.2, 0.4]},
                 "cpu_unit": "s/1k req"},
        "fuse": {"metrics": {"rate": [40e3, 44e3], "cpu": [float("nan"), float("nan")]}},
        "udp": {"metrics": {"rate": [100.0]}},
        "udp_rr_stack": {"metrics": {"rate": [50.0]}},
        "udp_rr": {"metrics": {"rate": [20.0]}},
    }
    floor = {"ping": {"metrics": {"p50": [20.0, 30.0], "p99": [40.0, 40.0]}, "note": "F"},
             "fuse": {"na": "gcc not found"}}
    rows = {r.workload: r for r in build_rows(results, {}, ["ping", "fuse", "udp",
                                                            "udp_rr_stack", "udp_rr"], floor)}
    p50 = rows["ping RTT kernel→stack p50"]
    assert p50.floor == 25.0 and "stack/floor = 1.80" in p50.note
    assert p50.cpu == pytest.approx(0.3) and p50.cpu_unit == "s/1k req"
    fuse = rows["FUSE 64-byte writes"]
    assert fuse.floor is None and fuse.floor_na == "gcc not found"
    assert fuse.cpu is None and fuse.cpu_na == "not measured"
    udp_rr = rows["UDP request/response via files (libsocket server)"]
    assert udp_rr.floor is None and udp_rr.floor_na == "no floor program"
    # >= 0.5 × the in-stack server's row (the same work without the files); the note
    # also compares it with the sink row
    assert udp_rr.base == 50.0 and udp_rr.met == "no"
    assert "via files/in-stack = 0.40" in udp_rr.note and "sink row" in udp_rr.note
    assert "no answer) 100: 0.20" in udp_rr.note
    text = table(list(rows.values()), markdown=True)
    assert "| floor |" in text and "| CPU |" in text
    assert "| 25.0 |" in text and "n/a: gcc not found" in text and "0.3 s/1k req" in text
    assert "n/a: no floor program" in text and "n/a: not measured" in text


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
    smoke_rows = [spec for spec in ROWS if spec[0] not in SOAK]  # soaks: --long only
    assert [row["workload"] for row in rows] == [label for _w, _m, label, _u, _t in smoke_rows]
    for (wl, _m, _label, _u, target), row in zip(smoke_rows, rows, strict=True):
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
        # the floor, measured in the same run where the row has one; else why not
        if wl in FLOOR_WORKLOADS and (HAVE_LIBFUSE3 if wl in LIBFUSE_FLOORS else HAVE_GCC):
            assert row["floor"] is not None and math.isfinite(row["floor"]), row
            assert row["floor"] > 0, row
            assert "stack/floor = " in row["note"], row
        else:
            assert row["floor"] is None and row["floor_na"], row
            if wl == "ping6":
                assert "IPv4 only" in row["floor_na"], row
        # the stack process's CPU per unit of work
        assert row["cpu"] is not None and math.isfinite(row["cpu"]), row
        assert row["cpu"] > 0 and row["cpu_unit"].startswith("s/"), row
    text = md.read_text()
    assert "| workload |" in text and "Machine:" in text
    assert "| floor |" in text and "| CPU |" in text and "Columns:" in text
