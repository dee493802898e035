"""``python -m bench --plot DIR``: the table of docs/performance.md and the saved runs as
PNG charts, nothing measured."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import plot
from tests.conftest import REPO

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_documented_table_parses() -> None:
    run = plot.parse_block(open(plot.DOC).read())
    assert run is not None and run.when
    labels = [r.label for r in run.rows]
    assert "ping RTT kernel→stack p50" in labels
    ping = run.rows[labels.index("ping RTT kernel→stack p50")]
    assert ping.unit == "µs" and ping.stack and ping.stack > 0 and ping.target == "<= 60"
    assert plot.floor_of(ping.label) == (50.0, "C responder on a TAP")
    assert all(r.stack is None or r.stack > 0 for r in run.rows)


def test_plot_writes_both_charts(tmp_path: object) -> None:
    hist = os.path.join(str(tmp_path), "history")
    rows = [plot.PlotRow("ping RTT kernel→stack p50", "µs", 40.0 + i, 5.0, "<= 60")
            for i in range(1)]
    plot.save_run(rows, "2030-01-01 10:00", hist)
    plot.save_run([plot.PlotRow("ping RTT kernel→stack p50", "µs", 45.0, 6.0, "<= 60")],
                  "2030-01-02 10:00", hist)
    runs = plot.history(None, hist)
    assert [r.when for r in runs][-2:] == ["2030-01-01 10:00", "2030-01-02 10:00"]
    out = os.path.join(str(tmp_path), "img")
    # the command line, as documented
    r = subprocess.run([sys.executable, "-m", "bench", "--plot", out], cwd=REPO,
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 0, r.stderr
    for name in ("bench-rows.png", "bench-history.png"):
        path = os.path.join(out, name)
        with open(path, "rb") as f:
            head = f.read(8)
        assert head == PNG and os.path.getsize(path) > 20_000, name
    # a --json table as the source
    src = os.path.join(str(tmp_path), "rows.json")
    with open(src, "w") as f:
        f.write('[{"workload": "FUSE 64-byte writes", "unit": "writes/s", "stack": 40000,'
                ' "kernel": 1400000, "target": ">= 18000"}]')
    files = plot.plot(os.path.join(str(tmp_path), "img2"), src)
    assert all(open(p, "rb").read(8) == PNG for p in files)
