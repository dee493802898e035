"""``python -m bench --plot DIR``: the benchmark table as pictures (matplotlib PNGs).

* ``DIR/bench-rows.png``: one panel per row of the latest table - this stack, the
  kernel and the floor (measured in the run: the table's floor column; for older tables
  without one, the figure DESIGN.md gives) - a bar each, a log scale when they span more
  than 30x - and the target as a dashed line;
* ``DIR/bench-history.png``: one panel per row, its figure over every saved run (this
  stack solid, the kernel dashed, the target dotted).

The latest table is the results block of docs/performance.md (``--from FILE``: a JSON
file written by ``--json``). Saved runs are the JSON files in ``bench/history/`` (a full
run writes one) and every version of docs/performance.md's results block in git's
history, one point per run date. Nothing is measured here.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import textwrap
from dataclasses import dataclass

from bench.common import REPO

DOC = os.path.join(REPO, "docs", "performance.md")
HISTORY = os.path.join(REPO, "bench", "history")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

#: measured floors (DESIGN.md "Measured floors"): what the best possible program gets on
#: this kind of machine, by the start of the row's label; used for tables from before
#: the run measured its own floors (the "floor" column)
FLOORS: dict[str, tuple[float, str]] = {
    "ping RTT kernel→stack p50": (50.0, "C responder on a TAP"),
    "FUSE 64-byte writes": (20_000.0, "libfuse3 C server"),
}


@dataclass
class PlotRow:
    label: str
    unit: str
    stack: float | None
    kernel: float | None
    target: str
    floor: float | None = None  # measured in the run (bench/floors.py)


@dataclass
class Run:
    when: str  # "YYYY-MM-DD HH:MM"
    rows: list[PlotRow]


def _num(text: str) -> float | None:
    text = text.strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def parse_block(md: str) -> Run | None:
    """The results block of a performance.md text (None when it has none)."""
    if BEGIN not in md or END not in md:
        return None
    block = md.split(BEGIN, 1)[1].split(END, 1)[0]
    m = re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", block)
    rows = []
    # the columns by their header (older tables have no floor or CPU column)
    col = {"this stack": 1, "kernel": 2, "target": 4}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "workload":
            col = {name: i for i, name in enumerate(cells)}
            continue
        if len(cells) < 5 or cells[0] == "" or set(cells[0]) <= set("-"):
            continue
        lm = re.fullmatch(r"(.*) \(([^()]*)\)", cells[0])
        label, unit = (lm.group(1), lm.group(2)) if lm else (cells[0], "")
        fl = _num(cells[col["floor"]]) if "floor" in col else None
        rows.append(PlotRow(label, unit, _num(cells[col["this stack"]]),
                            _num(cells[col["kernel"]]), cells[col["target"]], fl))
    return Run(m.group(0) if m else "", rows) if rows else None


def parse_json(path: str, when: str = "") -> Run:
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):
        when, data = data.get("when", when), data.get("rows", [])
    rows = [PlotRow(r.get("label") or r["workload"], r.get("unit", ""), r.get("stack"),
                    r.get("kernel"), r.get("target", "-"), r.get("floor")) for r in data]
    return Run(when or os.path.basename(path).split(".")[0], rows)


def save_run(rows: list[PlotRow], when: str, directory: str = HISTORY) -> str:
    """Write one run's rows for the history chart; returns the file."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, when.replace(" ", "_").replace(":", "") + ".json")
    with open(path, "w") as f:
        json.dump({"when": when, "rows": [r.__dict__ for r in rows]}, f, indent=1)
    return path


def git_runs(path: str = DOC) -> list[Run]:
    """Every results block docs/performance.md had in git's history."""
    rel = os.path.relpath(path, REPO)
    try:
        log = subprocess.run(["git", "-C", REPO, "log", "--format=%H", "--", rel],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    runs = []
    for commit in log.split():
        r = subprocess.run(["git", "-C", REPO, "show", f"{commit}:{rel}"],
                           capture_output=True, text=True, timeout=30)
        run = parse_block(r.stdout) if r.returncode == 0 else None
        if run is not None:
            runs.append(run)
    return runs


def history(latest: Run | None, directory: str = HISTORY) -> list[Run]:
    """Saved runs and git's, one per run date, oldest first."""
    runs: dict[str, Run] = {}
    for run in git_runs():
        runs.setdefault(run.when, run)
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            if name.endswith(".json"):
                run = parse_json(os.path.join(directory, name))
                runs[run.when] = run
    if latest is not None and latest.when:
        runs.setdefault(latest.when, latest)
    return [runs[k] for k in sorted(runs)]


def floor_of(label: str) -> tuple[float, str] | None:
    for start, floor in FLOORS.items():
        if label.startswith(start):
            return floor
    return None


def _target_value(target: str) -> float | None:
    _op, _, num = target.partition(" ")
    return _num(num)


def _grid(n: int) -> tuple[int, int]:
    cols = 3 if n > 4 else max(n, 1)
    return math.ceil(n / cols), cols


def plot_rows(run: Run, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in run.rows if r.stack is not None or r.kernel is not None]
    nr, nc = _grid(len(rows))
    fig, axes = plt.subplots(nr, nc, figsize=(4.2 * nc, 1.9 * nr), squeeze=False)
    for ax in axes.flat[len(rows):]:
        ax.axis("off")
    for ax, r in zip(axes.flat, rows, strict=False):
        names, vals, colors = [], [], []
        for name, v, color in (("stack", r.stack, "tab:blue"), ("kernel", r.kernel, "tab:gray")):
            if v is not None:
                names.append(name)
                vals.append(v)
                colors.append(color)
        fl = (r.floor, "measured") if r.floor is not None else floor_of(r.label)
        if fl is not None:
            names.append("floor")
            vals.append(fl[0])
            colors.append("tab:green")
        ax.barh(names, vals, color=colors)
        ax.invert_yaxis()
        target = _target_value(r.target)
        shown = [v for v in vals if v > 0] + ([target] if target else [])
        if shown and max(shown) / max(min(shown), 1e-9) > 30:
            ax.set_xscale("log")
        if target:
            ax.axvline(target, color="tab:red", linestyle="--", linewidth=1)
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:,.0f}" if v >= 100 else f" {v:.3g}", va="center", fontsize=7)
        ax.set_title("\n".join(textwrap.wrap(f"{r.label} ({r.unit})", 48)), fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Benchmarks {run.when}: this stack, the kernel, the measured floor "
                 "(red dashes: the target)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_history(runs: list[Run], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels: list[str] = []
    for run in runs:
        for r in run.rows:
            if r.label not in labels:
                labels.append(r.label)
    nr, nc = _grid(len(labels))
    fig, axes = plt.subplots(nr, nc, figsize=(4.2 * nc, 2.0 * nr), squeeze=False)
    for ax in axes.flat[len(labels):]:
        ax.axis("off")
    for ax, label in zip(axes.flat, labels, strict=False):
        xs, ys, ks = [], [], []
        unit, target = "", None
        for i, run in enumerate(runs):
            row = next((r for r in run.rows if r.label == label), None)
            if row is None:
                continue
            unit, target = row.unit, _target_value(row.target) or target
            if row.stack is not None:
                xs.append(i)
                ys.append(row.stack)
            if row.kernel is not None:
                ks.append((i, row.kernel))
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, color="tab:blue", label="stack")
        if ks:
            ax.plot([k[0] for k in ks], [k[1] for k in ks], linestyle="--", color="tab:gray",
                    label="kernel")
        if target:
            ax.axhline(target, color="tab:red", linestyle=":", linewidth=1)
        ax.set_title("\n".join(textwrap.wrap(f"{label} ({unit})", 48)), fontsize=8)
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels([f"{r.when[5:10]}\n{r.when[11:16]}" for r in runs], fontsize=6)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Benchmark history, {len(runs)} saved runs (stack solid, kernel dashed, "
                 "target dotted)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot(directory: str, source: str | None = None) -> list[str]:
    """Draw both charts into ``directory``; returns the files written."""
    if source:
        latest: Run | None = parse_json(source) if source.endswith(".json") \
            else parse_block(open(source).read())
    else:
        latest = parse_block(open(DOC).read()) if os.path.exists(DOC) else None
    if latest is None:
        raise SystemExit("bench --plot: no results table to draw (run python -m bench first)")
    os.makedirs(directory, exist_ok=True)
    rows_png = os.path.join(directory, "bench-rows.png")
    hist_png = os.path.join(directory, "bench-history.png")
    plot_rows(latest, rows_png)
    plot_history(history(latest), hist_png)
    return [rows_png, hist_png]
