"""The benchmark suite must not rot: ``python -m bench --smoke`` (tiny sizes, one run
each) produces the table with every workload row, numbers where the layer exists and
"n/a" with a reason where it does not. Figures are not checked (benchmarks are not
tests)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import ROWS, build_rows
from tests.conftest import HAVE_FUSE, HAVE_ROOT, HAVE_TUN, REPO, io_pkt_env


def test_rows_report_na_instead_of_crashing() -> None:
    results = {"ping": {"na": "no IPv4"}, "udp": {"metrics": {"rate": [1.0, 3.0, 2.0]}}}
    rows = build_rows(results, {"udp": {"metrics": {"rate": [4.0]}}}, ["ping", "udp"])
    assert [r.workload for r in rows] == [label for wl, _m, label, _u, _t in ROWS
                                          if wl in ("ping", "udp")]
    ping = rows[0]
    assert ping.stack is None and ping.met == "n/a" and "no IPv4" in ping.note
    udp = rows[-1]
    assert udp.stack == 2.0 and udp.kernel == 4.0 and udp.ratio == "0.500"


@pytest.mark.skipif(not (HAVE_ROOT and HAVE_TUN), reason="needs root and /dev/net/tun")
def test_smoke_run_produces_every_row(tmp_path: Path) -> None:
    js, md = tmp_path / "rows.json", tmp_path / "perf.md"
    r = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--json", str(js),
                        "--out", str(md)], cwd=REPO, env=io_pkt_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads(js.read_text())
    assert [row["workload"] for row in rows] == [label for _w, _m, label, _u, _t in ROWS]
    for row in rows:
        assert row["workload"] in r.stdout
        if row["stack"] is None:
            assert row["note"].startswith("n/a:"), row
        else:
            assert math.isfinite(row["stack"]), row
    by_name = {row["workload"]: row for row in rows}
    # the layers that have landed must give numbers, not n/a
    core = [label for wl, _m, label, _u, _t in ROWS
            if wl in ("ping", "tcp_rx", "tcp_tx", "accept", "udp", "rss")]
    if HAVE_FUSE:
        core += [label for wl, _m, label, _u, _t in ROWS if wl == "fuse"]
    for label in core:
        assert by_name[label]["stack"] is not None, by_name[label]
        assert by_name[label]["met"] in ("yes", "no", "-")
    text = md.read_text()
    assert "| workload |" in text and "Machine:" in text
