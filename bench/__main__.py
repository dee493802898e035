"""``python -m bench``: every workload on this stack and, in the same run, between two
kernel namespaces over veth; one table (workload, this stack, kernel, ratio, target,
met), also written as markdown to docs/performance.md with the machine it ran on.

    sudo .venv/bin/python -m bench                 # short: the suite in a few minutes
    sudo .venv/bin/python -m bench --long          # longer runs, more of them
    sudo .venv/bin/python -m bench --only tcp_rx   # one workload (repeatable)
    sudo .venv/bin/python -m bench --smoke         # seconds: tiny sizes, two runs each
    ... --out FILE | --no-write                    # where the markdown goes (or nowhere)
    ... --profile DIR                              # cProfile each stack side into DIR
    python -m bench --plot DIR [--from FILE]       # the table and its history as PNGs

Each workload side runs in its own process (bench/workloads.py) with a timeout; a
workload whose layer is missing, or that fails, prints "n/a" with the reason. Every
figure is the median of ``--runs`` runs. Every namespace a run made is deleted on exit,
whatever happened.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from typing import Any

from bench.common import PY, REPO, Row, machine, median, sh, table
from bench.workloads import ONE_PROCESS_PER_RUN, WORKLOADS, Params, params_json

# (workload, metric, row label, unit, target) — the table, in order
ROWS: list[tuple[str, str, str, str, str]] = [
    ("ping", "p50", "ping RTT kernel→stack p50", "µs", "<= 60"),
    ("ping", "p99", "ping RTT kernel→stack p99", "µs", "-"),
    ("tcp_rx", "mbps", "TCP bulk kernel→stack, in-stack sink", "Mbit/s", ">= 1000"),
    ("tcp_tx", "mbps", "TCP bulk stack→kernel, in-stack source", "Mbit/s", ">= 1000"),
    ("files_rx", "mbps", "TCP bulk kernel→stack, via files (libsocket)", "Mbit/s", ">= 800"),
    ("files_tx", "mbps", "TCP bulk stack→kernel, via files (libsocket)", "Mbit/s", ">= 800"),
    ("echo", "p50", "1-byte echo RTT via libsocket p50", "µs", "<= 200"),
    ("echo", "p99", "1-byte echo RTT via libsocket p99", "µs", "-"),
    ("load", "x", "1-byte echo p99 via libsocket under a TCP bulk transfer, × idle p99", "×",
     "<= 5"),
    ("accept", "rate", "accepted TCP connections", "conn/s", ">= 1000"),
    ("files_accept", "rate", "accepted TCP connections via files (libsocket)", "conn/s",
     ">= 1000"),
    ("udp", "rate", "UDP datagrams into an in-stack sink", "dgram/s", ">= 50000"),
    ("udp_files", "rate", "UDP datagrams into a sink via files (libsocket)", "dgram/s",
     ">= 0.5 × in-stack"),
    ("udp_rr_stack", "rate", "UDP request/response, in-stack server", "req/s", "-"),
    ("udp_rr", "rate", "UDP request/response via files (libsocket server)", "req/s",
     ">= 0.5 × in-stack"),
    ("fwd", "pps", "UDP packets forwarded by the stack, ns a → ns b", "pkt/s", "-"),
    ("pf", "keep_pct", "TCP bulk kernel→stack, pf on (100 rules, keep state) vs off", "%",
     ">= 80"),
    ("pf", "nostate_pct", "TCP bulk kernel→stack, pf on (100 rules, no state) vs off", "%",
     ">= 80"),
    ("fuse", "rate", "FUSE 64-byte writes", "writes/s", ">= 18000"),
    ("fuse_read", "rate", "FUSE 64-byte reads", "reads/s", ">= 18000"),
    ("fuse_bulk", "gb_s", "FUSE 128 KiB writes", "GB/s", ">= 1"),
    ("rss", "mb", "RSS holding 1,000 idle TCP connections", "MB", "<= 100"),
    ("idle", "pct", "CPU holding 1,000 idle TCP connections", "% of a core", "< 1"),
    # scale (issue 21): 10,000 held connections; the churns are soaks (--long / --only)
    ("conns10k", "mb", "RSS holding 10,000 TCP connections, files mounted", "MB", "<= 120"),
    ("churn", "rate", "TCP connection churn (connect, 1 KB each way, close), soak", "conn/s",
     "RSS ≤ +5 %, fds flat after 10 s"),
    ("churn_files", "rate", "TCP connection churn, echo server via files (libsocket), soak",
     "conn/s", "RSS ≤ +5 %, fds, FUSE handles, socket table flat after 10 s"),
    # IPv6: each within 10 % of its IPv4 row in the same run (the note gives the ratio)
    ("ping6", "p50", "ping6 RTT kernel→stack p50", "µs", "<= 1.1 × IPv4"),
    ("tcp6_rx", "mbps", "TCPv6 bulk kernel→stack, in-stack sink", "Mbit/s", ">= 0.9 × IPv4"),
    ("tcp6_tx", "mbps", "TCPv6 bulk stack→kernel, in-stack source", "Mbit/s", ">= 0.9 × IPv4"),
    ("files6_rx", "mbps", "TCPv6 bulk kernel→stack, via files (libsocket)", "Mbit/s",
     ">= 0.9 × IPv4"),
    ("files6_tx", "mbps", "TCPv6 bulk stack→kernel, via files (libsocket)", "Mbit/s",
     ">= 0.9 × IPv4"),
    ("crypto_sw", "rate", "AES-GCM-128 1400-byte requests, swcrypto", "ops/s", "-"),
    ("crypto_sim", "rate", "AES-GCM-128 1400-byte requests, -d cryptosim", "ops/s", "-"),
    ("esp", "pct", "TCP bulk through ESP tunnel (AES-GCM-128) vs plain, in-stack", "%", "-"),
    # Qnet (docs/qnet.md): B's stack through <A>/net/b over vwire; the note: A's own mount
    ("qnet_rt", "rate", "Qnet remote 64-byte write+read round trips (<A>/net/b)", "rounds/s",
     ">= 500"),
    ("qnet_bulk", "mbs", "Qnet remote 128 KiB writes (<A>/net/b)", "MB/s", ">= 10"),
]
#: an IPv6 row's IPv4 row (same metric): the note says the ratio
V4_ROW = {"ping6": "ping", "tcp6_rx": "tcp_rx", "tcp6_tx": "tcp_tx", "files6_rx": "files_rx",
          "files6_tx": "files_tx"}
#: a row measured against the in-stack row of the same kind (target "× in-stack")
IN_STACK_ROW = {"udp_files": "udp", "udp_rr": "udp_rr_stack"}
#: ... and a second figure the note compares it with (row, what to call it)
ALSO_AGAINST = {"udp_rr": ("udp", "in-stack UDP sink row (one datagram each, no answer)")}
#: why a row has no floor (default: NO_FLOOR); the floors: bench/floors.py
NO_FLOOR = "no floor program"
NAMES = list(WORKLOADS)
#: soak workloads: run with --long or --only NAME, never in the short or smoke run
SOAK = {"churn", "churn_files"}
#: the kernel ceiling of these workloads is the same measurement: run it once
SHARED_KERNEL = {"tcp_rx": "tcp", "tcp_tx": "tcp", "files_rx": "tcp", "files_tx": "tcp",
                 "tcp6_rx": "tcp6", "tcp6_tx": "tcp6", "files6_rx": "tcp6", "files6_tx": "tcp6",
                 "udp_files": "udp", "udp_rr_stack": "udp_rr"}

DOC = os.path.join(REPO, "docs", "performance.md")
#: the columns, explained under the table's header
COLUMNS = ("Columns: *kernel*, the same workload between two kernel namespaces over veth; "
           "*floor*, the same client against a minimal C program built by the run "
           "(bench/floor/: tap_floor.c answers ARP and ICMP echo on a TAP with one read and "
           "one write per frame; fuse_floor.c, a single-threaded libfuse3 low-level server; "
           "fuse_relay.c, the same serving a kernel TCP socket as a file, for the echo and "
           "the TCP rows through the files), "
           "n/a with the reason where a row has none; *ratio*, this stack / kernel; *CPU*, "
           "user + system CPU seconds of the stack's process over the timed part "
           "(getrusage), per GB moved or per 1,000 requests, datagrams, packets or "
           "connections.")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def sweep_namespaces(tag: str) -> None:
    """Delete any namespace this run made that a killed worker left behind."""
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if f"-{tag}-" in name or name.startswith(f"iopkt-bench-{tag}"):
            sh("ip", "netns", "del", name, check=False)


def run_worker(name: str, side: str, p: Params, timeout: float,
               verbose: bool) -> dict[str, Any]:
    """One workload side in a child process; n/a on failure, timeout or missing layer."""
    cmd = [PY, "-m", "bench.workloads", name, side, params_json(p)]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGINT first: trio unwinds, the worker's namespaces and mounts are removed
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return {"na": f"timed out after {timeout:.0f}s"}
    if verbose and err.strip():
        print(err, file=sys.stderr, end="")
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])  # type: ignore[no-any-return]
    last = [ln for ln in err.strip().splitlines() if ln.strip()]
    reason = last[-1].strip() if last else f"exit {proc.returncode}"
    return {"na": f"failed: {reason[:120]}"}


def run_workload_side(name: str, side: str, p: Params, verbose: bool) -> dict[str, Any]:
    """All ``p.runs`` runs of one side: one worker, or (ONE_PROCESS_PER_RUN) one worker
    per run, their values merged in order (the last run's note)."""
    if name not in ONE_PROCESS_PER_RUN or p.runs <= 1:
        return run_worker(name, side, p, worker_timeout(name, p), verbose)
    one = replace(p, runs=1)
    merged: dict[str, Any] = {"metrics": {}}
    for _ in range(p.runs):
        res = run_worker(name, side, one, worker_timeout(name, one), verbose)
        if "na" in res:
            return res
        merge_run(merged, res)
    return merged


def merge_run(merged: dict[str, Any], res: dict[str, Any]) -> None:
    for metric, vals in res.get("metrics", {}).items():
        merged["metrics"].setdefault(metric, []).extend(vals)
    for key in ("note", "notes", "cpu_unit", "met"):
        if key in res:
            merged[key] = res[key]


def worker_timeout(name: str, p: Params) -> float:
    per_run = p.seconds * 3 + 20
    if name in ("ping", "ping6"):
        return 60 + p.runs * p.ping_count * 0.02
    if name == "echo":
        return 60 + p.runs * (p.echo_count * 0.01 * 2 + 10)
    if name == "rss":
        return 60 + p.runs * (60 + p.conns * 0.05)
    if name == "conns10k":
        return 90 + p.scale_conns * 0.02
    if name in ("churn", "churn_files"):  # one soak run, whatever ``runs`` says
        return 90 + p.churn_seconds * 1.5
    if name == "idle":
        return 90 + p.conns * 0.05 + p.runs * (p.idle_seconds + 5)
    if name == "load":
        return 60 + p.runs * (p.echo_count * 0.01 * 4 + 20)
    if name in ("qnet_rt", "qnet_bulk"):  # two io-pkt processes, remote + local per run
        return 60 + p.runs * (2 * p.seconds + 40)
    if name == "pf":  # a pf-off run, then three runs per run
        return 30 + (3 * p.runs + 1) * per_run
    return 30 + p.runs * per_run


def _figure(res: dict[str, Any], metric: str) -> float | None:
    """The median of a side's finite values of METRIC (None when it has none)."""
    vals = [v for v in res.get("metrics", {}).get(metric, []) if math.isfinite(v)]
    return median(vals) if vals else None


def build_rows(results: dict[str, dict[str, Any]], kernel: dict[str, dict[str, Any]],
               names: list[str], floor: dict[str, dict[str, Any]] | None = None,
               no_floor: str = "") -> list[Row]:
    """The table's rows: each side's figure (median of its runs), the floor's where the
    workload has one (``floor``; ``no_floor``: why none was measured), and the stack's
    CPU per unit of work (its metric "cpu_METRIC" or "cpu", unit "cpu_unit")."""
    rows = []
    for wl, metric, label, unit, target in ROWS:
        if wl not in names:
            continue
        res, kres = results.get(wl, {}), kernel.get(wl, {})
        notes = []
        if "na" in res:
            stack_v = None
            notes.append(f"n/a: {res['na']}")
        else:
            vals = res.get("metrics", {}).get(metric, [])
            stack_v = median(vals) if vals else None
            if len(vals) > 1:
                notes.append(f"median of {len(vals)}: " + ", ".join(f"{v:,.0f}" if v >= 100
                                                                  else f"{v:.3g}" for v in vals))
            if res.get("notes", {}).get(metric):
                notes.append(str(res["notes"][metric]))
            if res.get("note"):
                notes.append(str(res["note"]))
        v4 = V4_ROW.get(wl)
        base = None
        if v4 is not None and stack_v is not None:
            v4vals = results.get(v4, {}).get("metrics", {}).get(metric, [])
            if v4vals and median(v4vals):
                base = median(v4vals)
                notes.append(f"IPv4 row {base:,.0f}: IPv6/IPv4 = {stack_v / base:.2f}")
        inrow = IN_STACK_ROW.get(wl)
        if inrow is not None and stack_v is not None:
            base = _figure(results.get(inrow, {}), metric) or None
            if base is not None:
                notes.append(f"in-stack row {base:,.0f}: via files/in-stack = "
                             f"{stack_v / base:.2f}")
            also = ALSO_AGAINST.get(wl)
            other = _figure(results.get(also[0], {}), metric) if also else None
            if also and other:
                notes.append(f"{also[1]} {other:,.0f}: {stack_v / other:.2f}")
        floor_v, floor_na = None, NO_FLOOR
        if "floor" in WORKLOADS.get(wl, {}):
            fres = (floor or {}).get(wl, {})
            if "na" in fres:
                floor_na = str(fres["na"])
            elif fres:
                floor_v = _figure(fres, metric)
                floor_na = "" if floor_v is not None else "no figure"
                if floor_v is not None and stack_v is not None:
                    notes.append(f"stack/floor = {stack_v / floor_v:.2f} (floor: "
                                 f"{fres.get('note', 'bench/floor')})")
            else:
                floor_na = no_floor or "not measured"
        cpu_v, cpu_na = None, ""
        if "na" in res:
            cpu_na = "no figure"
        else:
            cpu_v = _figure(res, f"cpu_{metric}")
            if cpu_v is None:
                cpu_v = _figure(res, "cpu")
            cpu_na = "" if cpu_v is not None else "not measured"
        kvals = kres.get("metrics", {}).get(metric, []) if kres else []
        kernel_v = median(kvals) if kvals else None
        if kres and "na" in kres:
            notes.append(f"kernel n/a: {kres['na']}")
        elif kres.get("note"):
            notes.append("kernel: " + str(kres["note"]))
        rows.append(Row(label, unit, stack_v, kernel_v, target, "; ".join(notes), base,
                        floor_v, floor_na, cpu_v, str(res.get("cpu_unit", "")), cpu_na,
                        str(res.get("met", {}).get(metric, ""))))
    return rows


def write_doc(path: str, md: str, header: str) -> None:
    block = f"{BEGIN}\n{header}\n\n{md}{END}"
    if os.path.exists(path):
        text = open(path).read()
        if BEGIN in text and END in text:
            text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _m: block, text,
                          flags=re.S)
        else:
            text = text.rstrip("\n") + "\n\n## Latest results\n\n" + block + "\n"
    else:
        text = "# Performance\n\n## Latest results\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench",
                                 description=(__doc__ or "").split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--long", action="store_true", help="longer runs, more of them")
    mode.add_argument("--smoke", action="store_true", help="seconds: tiny sizes, one run")
    ap.add_argument("--only", action="append", choices=NAMES, metavar="NAME",
                    help=f"run only this workload (repeatable): {', '.join(NAMES)}")
    ap.add_argument("--runs", type=int, help="timed runs per workload (median reported)")
    ap.add_argument("--seconds", type=float, help="length of one timed run")
    ap.add_argument("--pings", type=int, help="pings per run of the ping workload")
    ap.add_argument("--echoes", type=int, help="round trips per run of the echo workload")
    ap.add_argument("--no-kernel", action="store_true", help="skip the kernel column")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the floors (bench/floor/: built and run by default)")
    ap.add_argument("--out", help=f"write the markdown here (default {DOC} on full runs)")
    ap.add_argument("--no-write", action="store_true", help="write no markdown")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON here")
    ap.add_argument("--profile", metavar="DIR", help="cProfile each stack side into DIR")
    ap.add_argument("-v", "--verbose", action="store_true", help="show workers' stderr")
    ap.add_argument("--plot", metavar="DIR",
                    help="draw the table (and its history) as PNGs into DIR; runs nothing")
    ap.add_argument("--from", dest="plot_from", metavar="FILE",
                    help="with --plot: the table to draw (a --json file; default "
                         "docs/performance.md)")
    args = ap.parse_args(argv)
    if args.plot:
        from bench.plot import plot

        for path in plot(args.plot, args.plot_from):
            print(f"wrote {os.path.relpath(path)}")
        return 0

    if args.smoke:
        p = Params(seconds=0.3, runs=2, ping_count=50, echo_count=100, conns=100,
                   idle_seconds=2.0, scale_conns=200, churn_seconds=3.0)
    elif args.long:
        p = Params(seconds=5.0, runs=5, ping_count=5000, echo_count=10000, conns=1000)
    else:
        p = Params()
    if args.runs:
        p.runs = args.runs
    if args.seconds:
        p.seconds = p.churn_seconds = args.seconds
    if args.pings:
        p.ping_count = args.pings
    if args.echoes:
        p.echo_count = args.echoes
    tag = "r" + uuid.uuid4().hex[:5]
    p.tag = tag
    names = args.only or [n for n in NAMES if args.long or n not in SOAK]
    mode_name = "smoke" if args.smoke else "long" if args.long else "short"

    results: dict[str, dict[str, Any]] = {}
    kernel: dict[str, dict[str, Any]] = {}
    kernel_cache: dict[str, dict[str, Any]] = {}
    floor: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    load0 = os.getloadavg()[0]
    try:
        for name in names:
            sp = p
            if args.profile:
                os.makedirs(args.profile, exist_ok=True)
                sp = replace(p, profile=os.path.join(args.profile, f"{name}.prof"))
            t = time.monotonic()
            results[name] = run_workload_side(name, "stack", sp, args.verbose)
            if not args.no_kernel and "kernel" in WORKLOADS[name]:
                key = SHARED_KERNEL.get(name, name)
                if key not in kernel_cache:
                    kernel_cache[key] = run_workload_side(name, "kernel", p, args.verbose)
                kernel[name] = kernel_cache[key]
            if not args.no_floor and "floor" in WORKLOADS[name]:
                floor[name] = run_workload_side(name, "floor", p, args.verbose)
            print(f"  {name}: {time.monotonic() - t:.1f}s", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        sweep_namespaces(tag)

    rows = build_rows(results, kernel, names, floor,
                      "not measured (--no-floor)" if args.no_floor else "")
    elapsed = time.monotonic() - t0
    load1 = os.getloadavg()[0]
    header = (f"Machine: {machine()}  \n"
              f"Run: `python -m bench{' --' + mode_name if mode_name != 'short' else ''}` "
              f"({mode_name}: medians of {p.runs} run(s) of {p.seconds:g} s, "
              f"{p.ping_count} pings, {p.echo_count} echoes, {p.conns} idle connections), "
              f"{time.strftime('%Y-%m-%d %H:%M')}, {elapsed:.0f} s, "
              f"load average before/after {load0:.1f}/{load1:.1f}  \n"
              f"{COLUMNS}")
    print(header.replace("  \n", "\n"))
    print(table(rows), end="")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"workload": r.workload, "unit": r.unit, "stack": r.stack,
                        "kernel": r.kernel, "floor": r.floor, "floor_na": r.floor_na,
                        "target": r.target, "met": r.met, "cpu": r.cpu,
                        "cpu_unit": r.cpu_unit, "cpu_na": r.cpu_na, "note": r.note}
                       for r in rows], f, indent=1)
    out = args.out or (DOC if not (args.only or args.smoke or args.runs or args.seconds
                                   or args.pings or args.echoes) else None)
    if out and not args.no_write:
        write_doc(out, table(rows, markdown=True), header)
        print(f"(markdown written to {os.path.relpath(out)})")
    if out == DOC and not args.no_write:
        # a full run of the table (not a test's --out file): kept for --plot's history
        from bench.plot import PlotRow, save_run

        save_run([PlotRow(r.workload, r.unit, r.stack, r.kernel, r.target, r.floor)
                  for r in rows],
                 time.strftime("%Y-%m-%d %H:%M"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
