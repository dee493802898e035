"""``io-pkt top``: a live view of a running stack, refreshed every second (curses).

    top [-d SECONDS] [-b] [-n FRAMES] [-o rate|cwnd|rtt|retrans|port] [-f TEXT]

What moves now: per interface packets/s, bits/s and drops/s; the busiest connections
with their receive and send rates, cwnd, RTT and retransmissions; the protocol drop
counters that moved in the last few seconds; the FUSE request rate; the stack's CPU and
RSS. Everything comes from two files, ``config/metrics`` and ``config/sockinfo``, read
once a frame (the rates are differences between two reads), and ``/proc`` for nothing
(the process figures are in the metrics).

Keys: ``q`` quits; ``s`` cycles the connection sort (rate, cwnd, rtt, retrans, port);
``r`` reverses it; ``f`` (or ``/``) asks for a filter (a substring of the connection's
addresses, ports or state; empty clears it); ``c`` clears the filter; ``i`` shows or
hides idle interfaces; ``space`` pauses; ``+``/``-`` change the interval. Fits 80x24 (over
ssh too); a bigger terminal shows more rows. ``-b`` prints frames as plain text instead
(``-n`` of them), for scripts and logs.
"""

from __future__ import annotations

import curses
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stack.tools.common import (
    ToolError,
    bad_usage,
    fail,
    pop_prefix,
    read_file,
    unknown_option,
    wants_help,
)
from stack.tools.ss import SS_STATE, endpoint, parse_sockinfo

TOOL = "top"
USAGE = "usage: top [-d SECONDS] [-b] [-n FRAMES] [-o rate|cwnd|rtt|retrans|port] [-f TEXT]"
SORTS = ("rate", "cwnd", "rtt", "retrans", "port")
#: drop counters stay listed this long after they last moved
DROP_HOLD = 5.0

Labels = tuple[tuple[str, str], ...]
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[str, dict[Labels, float]]:
    """Prometheus text → {sample name: {labels: value}} (comments skipped)."""
    out: dict[str, dict[Labels, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted((k, v.replace('\\"', '"').replace("\\n", "\n")
                                      .replace("\\\\", "\\"))
                              for k, v in _LABEL.findall(m.group(2) or "")))
        try:
            out.setdefault(m.group(1), {})[labels] = float(m.group(3))
        except ValueError:
            continue
    return out


def si(value: float, unit: str = "") -> str:
    """1234567 → ``1.2M``; small numbers as integers."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.1f}{suffix}{unit}"
    return f"{value:.0f}{unit}"


@dataclass
class Snapshot:
    t: float
    metrics: dict[str, dict[Labels, float]]
    socks: list[dict[str, str]]


@dataclass
class IfRow:
    name: str
    rx_pps: float
    rx_bps: float
    tx_pps: float
    tx_bps: float
    drops: float


@dataclass
class ConnRow:
    key: str
    local: str
    peer: str
    state: str
    rx_bps: float
    tx_bps: float
    cwnd: int
    rtt_ms: float
    retrans: int
    lport: int

    @property
    def rate(self) -> float:
        return self.rx_bps + self.tx_bps


@dataclass
class Frame:
    """What one refresh shows."""

    interval: float
    cpu_pct: float
    rss: float
    fuse_rate: float
    pid: str
    ifaces: list[IfRow]
    conns: list[ConnRow]
    drops: list[tuple[str, float, float]]  # (name, per second, total)
    counts: dict[str, int] = field(default_factory=dict)


def _conn_key(r: dict[str, str]) -> str:
    return f"{r.get('laddr')}:{r.get('lport')}>{r.get('raddr')}:{r.get('rport')}"


def _num(r: dict[str, str], key: str) -> int:
    try:
        return int(r.get(key) or 0)
    except ValueError:
        return 0


class Model:
    """Two snapshots → rates; drop counters that moved are remembered DROP_HOLD s."""

    def __init__(self, read: Callable[[str], str]) -> None:
        self.read = read
        self.prev: Snapshot | None = None
        self.moved: dict[str, tuple[float, float, float]] = {}  # name → (when, rate, total)
        self.pid = ""

    def snapshot(self) -> Snapshot:
        metrics = parse_metrics(self.read("config/metrics"))
        socks = parse_sockinfo(self.read("config/sockinfo"))
        if not self.pid:
            for line in self.read("config/status").splitlines():
                if line.startswith("pid "):
                    self.pid = line.split()[1]
        return Snapshot(time.monotonic(), metrics, socks)

    def frame(self) -> Frame:
        cur = self.snapshot()
        prev = self.prev or cur
        self.prev = cur
        dt = max(cur.t - prev.t, 1e-9)
        first = cur is prev

        def rate(name: str, labels: Labels = ()) -> float:
            if first:
                return 0.0
            now = cur.metrics.get(name, {}).get(labels, 0.0)
            was = prev.metrics.get(name, {}).get(labels, now)
            return max(now - was, 0.0) / dt

        def total(name: str, labels: Labels = ()) -> float:
            return cur.metrics.get(name, {}).get(labels, 0.0)

        ifaces = []
        for labels in cur.metrics.get("iopkt_interface_receive_packets_total", {}):
            name = dict(labels).get("interface", "?")
            idrops = sum(rate("iopkt_interface_drops_total", lb)
                        for lb in cur.metrics.get("iopkt_interface_drops_total", {})
                        if dict(lb).get("interface") == name)
            ifaces.append(IfRow(name, rate("iopkt_interface_receive_packets_total", labels),
                                8 * rate("iopkt_interface_receive_bytes_total", labels),
                                rate("iopkt_interface_transmit_packets_total", labels),
                                8 * rate("iopkt_interface_transmit_bytes_total", labels),
                                idrops))
        before = {_conn_key(r): r for r in prev.socks if r.get("proto") == "tcp"}
        conns = []
        for r in cur.socks:
            if r.get("proto") != "tcp" or r.get("state") == "LISTEN":
                continue
            key = _conn_key(r)
            old = before.get(key)
            rx = tx = 0.0
            if old is not None and not first:
                rx = 8 * max(_num(r, "bytes_received") - _num(old, "bytes_received"), 0) / dt
                tx = 8 * max(_num(r, "bytes_acked") - _num(old, "bytes_acked"), 0) / dt
            conns.append(ConnRow(
                key, endpoint(r.get("laddr", ""), r.get("lport", ""), "tcp", True),
                endpoint(r.get("raddr", ""), r.get("rport", ""), "tcp", True),
                SS_STATE.get(r.get("state", ""), r.get("state", "")), rx, tx,
                _num(r, "snd_cwnd"), _num(r, "rtt") / 1000, _num(r, "total_retrans"),
                _num(r, "lport")))
        now = cur.t
        for fam, label in (("iopkt_drops_total", "protocol"),
                           ("iopkt_interface_drops_total", "interface")):
            for labels in cur.metrics.get(fam, {}):
                d = dict(labels)
                per_s = rate(fam, labels)
                name = f"{d.get(label, '?')} {d.get('reason', '?')}"
                if per_s > 0:
                    self.moved[name] = (now, per_s, total(fam, labels))
                elif name in self.moved:
                    when, _, _ = self.moved[name]
                    self.moved[name] = (when, 0.0, total(fam, labels))
        self.moved = {k: v for k, v in self.moved.items() if now - v[0] <= DROP_HOLD}
        drops = sorted(((k, v[1], v[2]) for k, v in self.moved.items()),
                       key=lambda x: (-x[1], x[0]))
        counts: dict[str, int] = {}
        for r in cur.socks:
            p = r.get("proto", "")
            p = "raw" if p.startswith("raw") else p
            counts[p] = counts.get(p, 0) + 1
        return Frame(dt, 100 * rate("process_cpu_seconds_total"),
                     total("process_resident_memory_bytes"), rate("iopkt_fuse_requests_total"),
                     self.pid, ifaces, conns, drops, counts)


@dataclass
class View:
    """What the keys change."""

    sort: str = "rate"
    reverse: bool = False
    filter: str = ""
    show_idle: bool = True
    paused: bool = False
    interval: float = 1.0

    def connections(self, f: Frame) -> list[ConnRow]:
        rows = f.conns
        if self.filter:
            rows = [c for c in rows if self.filter in f"{c.local} {c.peer} {c.state}"]
        keyf: Callable[[ConnRow], float] = {
            "rate": lambda c: c.rate, "cwnd": lambda c: c.cwnd, "rtt": lambda c: c.rtt_ms,
            "retrans": lambda c: c.retrans, "port": lambda c: -c.lport,
        }[self.sort]
        return sorted(rows, key=keyf, reverse=not self.reverse)


def render_lines(f: Frame, v: View, width: int, height: int, prefix: str) -> list[str]:
    """The frame as at most ``height`` lines of at most ``width`` columns."""
    head = (f"io-pkt top  {prefix or '/'}  pid {f.pid}  cpu {f.cpu_pct:5.1f}%  "
            f"rss {f.rss / 1e6:.1f}MB  fuse {si(f.fuse_rate)} req/s")
    state = f"every {v.interval:g}s" + ("  PAUSED" if v.paused else "")
    lines = [head, state + "  " + "  ".join(f"{k} {n}" for k, n in sorted(f.counts.items()))]
    lines.append("")
    lines.append(f"{'INTERFACE':<12}{'RX PKT/S':>10}{'RX BIT/S':>10}{'TX PKT/S':>10}"
                 f"{'TX BIT/S':>10}{'DROPS/S':>9}")
    ifs = [i for i in f.ifaces if v.show_idle or i.rx_pps or i.tx_pps or i.drops]
    for i in ifs:
        lines.append(f"{i.name:<12}{si(i.rx_pps):>10}{si(i.rx_bps):>10}{si(i.tx_pps):>10}"
                     f"{si(i.tx_bps):>10}{si(i.drops):>9}")
    lines.append("")
    arrow = "^" if v.reverse else "v"
    flt = f"  filter '{v.filter}'" if v.filter else ""
    lines.append(f"CONNECTIONS  sort {v.sort}{arrow}{flt}")
    aw = max(18, (width - 43) // 2)  # the address columns take what the others leave
    lines.append(f"{'LOCAL':<{aw}} {'PEER':<{aw}} {'STATE':<7}{'RX BIT/S':>8}{'TX BIT/S':>9}"
                 f"{'CWND':>5}{'RTT MS':>7}{'RETR':>5}")
    conns = v.connections(f)
    drop_lines = [f"{'DROPS (moved)':<36}{'PER S':>9}{'TOTAL':>12}"] + [
        f"{name[:35]:<36}{si(per):>9}{total:>12.0f}" for name, per, total in f.drops]
    keys = "q quit  s sort  r reverse  f filter  c clear  i idle  space pause  +/- interval"
    room = height - len(lines) - 1 - (len(drop_lines) + 1 if f.drops else 0)
    shown = conns[:max(room, 0)]
    for c in shown:
        rtt = f"{c.rtt_ms:.2f}" if c.rtt_ms < 100 else f"{c.rtt_ms:.0f}"
        lines.append(f"{c.local[:aw]:<{aw}} {c.peer[:aw]:<{aw}} {c.state[:7]:<7}"
                     f"{si(c.rx_bps):>8}{si(c.tx_bps):>9}{c.cwnd:>5}{rtt:>7}{c.retrans:>5}")
    if len(conns) > len(shown) and shown:
        lines[-1] = f"... {len(conns) - len(shown) + 1} more connections"
    if f.drops:
        lines.append("")
        lines += drop_lines
    lines = lines[:height - 1]
    lines += [""] * (height - 1 - len(lines))
    lines.append(keys)
    return [ln[:width] for ln in lines]


def _prompt(scr: curses.window, text: str) -> str:
    h, w = scr.getmaxyx()
    curses.echo()
    try:
        curses.curs_set(1)
    except curses.error:
        pass
    scr.nodelay(False)
    scr.timeout(-1)
    scr.move(h - 1, 0)
    scr.clrtoeol()
    scr.addstr(h - 1, 0, text[:w - 1])
    try:
        raw = scr.getstr(h - 1, min(len(text), w - 2), max(w - len(text) - 1, 1))
    finally:
        curses.noecho()
        try:
            curses.curs_set(0)
        except curses.error:
            pass
    return raw.decode(errors="replace").strip() if isinstance(raw, bytes) else ""


def run_curses(model: Model, view: View, prefix: str) -> None:
    def loop(scr: curses.window) -> None:
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        frame = model.frame()  # counts only: the rates need a second read
        next_at = time.monotonic() + min(view.interval, 0.5)
        while True:
            now = time.monotonic()
            if now >= next_at:
                if not view.paused:
                    frame = model.frame()
                next_at = now + view.interval
            h, w = scr.getmaxyx()
            scr.erase()
            for y, line in enumerate(render_lines(frame, view, w, h, prefix)):
                try:
                    scr.addstr(y, 0, line[:max(w - 1, 0)] if y == h - 1 else line)
                except curses.error:  # the bottom-right cell, a shrinking terminal
                    pass
            scr.refresh()
            scr.timeout(max(int((next_at - time.monotonic()) * 1000), 10))
            ch = scr.getch()
            if ch in (ord("q"), ord("Q")):
                return
            if ch == ord("s"):
                view.sort = SORTS[(SORTS.index(view.sort) + 1) % len(SORTS)]
            elif ch == ord("r"):
                view.reverse = not view.reverse
            elif ch in (ord("f"), ord("/")):
                view.filter = _prompt(scr, "filter: ")
            elif ch == ord("c"):
                view.filter = ""
            elif ch == ord("i"):
                view.show_idle = not view.show_idle
            elif ch == ord(" "):
                view.paused = not view.paused
            elif ch == ord("+"):
                view.interval = min(view.interval * 2, 60.0)
            elif ch == ord("-"):
                view.interval = max(view.interval / 2, 0.25)

    curses.wrapper(loop)


def run_batch(model: Model, view: View, prefix: str, frames: int) -> None:
    model.frame()
    for n in range(frames):
        time.sleep(view.interval)
        f = model.frame()
        sys.stdout.write("\n".join(ln.rstrip() for ln in render_lines(f, view, 200, 10_000,
                                                                     prefix)[:-1]).rstrip())
        sys.stdout.write("\n\n" if n + 1 < frames else "\n")
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    if wants_help(args):
        print(USAGE)
        return 0
    view = View()
    batch = False
    frames = 1
    try:
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("-d", "-n", "-o", "-f"):
                if i + 1 >= len(args):
                    raise ToolError(f"{a} needs a value ({USAGE})")
                val = args[i + 1]
                i += 2
                try:
                    if a == "-d":
                        view.interval = float(val)
                        if not 0.1 <= view.interval <= 3600:
                            raise ValueError
                    elif a == "-n":
                        frames = int(val)
                        if frames < 1:
                            raise ValueError
                except ValueError:
                    raise ToolError(f"bad value for {a}: {val}") from None
                if a == "-o":
                    if val not in SORTS:
                        raise ToolError(f"-o takes one of {', '.join(SORTS)}")
                    view.sort = val
                elif a == "-f":
                    view.filter = val
                continue
            if a == "-b":
                batch = True
            elif a.startswith("-"):
                raise unknown_option(a, USAGE)
            else:
                raise bad_usage(f"unexpected argument: {a}", USAGE)
            i += 1
        model = Model(lambda rel: read_file(prefix, rel))
        model.snapshot()  # fail now, with one line, if there is no stack
        if batch:
            run_batch(model, view, prefix, frames)
        else:
            if not sys.stdout.isatty():
                raise ToolError("not a terminal (use -b for text output)")
            run_curses(model, view, prefix)
        return 0
    except ToolError as exc:
        return fail(TOOL, exc)
