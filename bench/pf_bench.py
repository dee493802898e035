"""pf benchmark: the ``pf`` workload of ``python -m bench`` (bench/workloads.py) alone,
with every phase printed. TCP bulk (the kernel sends, the stack receives) through a TAP
with lsm-pf loaded: pf disabled, then per run enabled with 100 rules (stateful: the
connection's packets match its state), enabled with 100 stateless rules (every packet
walks the whole compiled rule set), disabled again.

    .venv/bin/python -m bench.pf_bench [--seconds 3] [--runs 1]

Needs root and /dev/net/tun; everything runs in a private network namespace. Target
(issue 11): pf enabled with 100 rules ≥ 80% of the unfiltered throughput (each run is
compared with the mean of the disabled runs around it; the suite reports the median).
Exit status 0 if met, 1 if not, 2 if the workload could not run.
"""

from __future__ import annotations

import argparse
import sys

from bench.common import median


def ruleset(stateful: bool) -> str:
    """100 rules: 98 that never match this traffic, a block, and the pass."""
    lines = ["table <bad> { 192.0.2.0/24, 198.51.100.7 }"]
    for i in range(49):
        lines.append(f"block in quick proto tcp from 172.16.{i}.0/24 to any port {1000 + i}")
        lines.append(f"pass in proto udp from any to 198.18.1.254 port {2000 + i}")
    lines.append("block in quick from <bad>")
    st = "keep state" if stateful else "no state"
    lines.append(f"pass proto tcp from any to any {'flags S/SA ' if stateful else ''}{st}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from bench.workloads import Params, run_side

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="length of one phase")
    ap.add_argument("--runs", type=int, default=1, help="enabled/disabled rounds")
    a = ap.parse_args(argv)
    res = run_side("pf", "stack", Params(seconds=a.seconds, runs=a.runs, tag="pfb"))
    if "na" in res:
        print(f"n/a: {res['na']}")
        return 2
    m = res["metrics"]
    phases = [("pf disabled", m["off"][0], None)]
    for i in range(a.runs):
        phases += [("pf enabled, 100 rules, keep state", m["keep"][i], m["keep_pct"][i]),
                   ("pf enabled, 100 rules, no state", m["nostate"][i], m["nostate_pct"][i]),
                   ("pf disabled again", m["off"][i + 1], None)]
    for name, mbit, pct in phases:
        print(f"{name:40} {mbit:10.1f} Mbit/s" + (f"  {pct:6.1f}%" if pct is not None else ""))
    print("; ".join(res["notes"].values()))
    worst = min(median(m["keep_pct"]), median(m["nostate_pct"]))
    ok = worst >= 80
    print(f"target >= 80% of unfiltered: {'met' if ok else 'NOT met'} (worst median {worst:.1f}%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
