"""``io-pkt ss``: iproute2's ss(8) over ``config/sockinfo``, in ss's own output format.

    ss [-t] [-u] [-w] [-x] [-l | -a] [-n] [-i] [-o] [-p] [-e] [-H] [-4 | -6] [FILTER]

-t TCP, -u UDP, -w raw, -x Unix (the stack has none: nothing is listed); none of them:
all. Without -l or -a the listening and unconnected sockets, TIME-WAIT and SYN-RECV are
left out, as in ss. -n numeric ports (else service names from /etc/services), -i TCP
internals on a second line (``ss -ti``'s: cwnd, rtt, retrans, send/pacing/delivery
rates...), -o timers (``timer:(on,204ms,0)``) and, with -i, the options negotiated
(ts, sack), -p the processes that opened the socket through the files
(``users:(("name",pid=N,fd=N))``), -e the uid and the socket's text-door name, -H no
header. FILTER: ``state NAME`` (ss's state names: established, listening, time-wait...,
``all``, ``connected``) and ``sport|dport OP :PORT`` / ``src|dst ADDR[:PORT]`` with OP
one of ``= == != < > <= >= eq neq lt gt le ge``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Callable

from stack.tools.common import (
    ToolError,
    bad_usage,
    fail,
    pop_prefix,
    read_file,
    socket_dir,
    unknown_option,
    wants_help,
)

TOOL = "ss"
USAGE = "usage: ss [-tuwxlanioepH46] [state NAME] [sport|dport OP :PORT] [src|dst ADDR[:PORT]]"

#: the stack's TCP state names → ss's
SS_STATE = {
    "ESTABLISHED": "ESTAB", "SYN_SENT": "SYN-SENT", "SYN_RECEIVED": "SYN-RECV",
    "FIN_WAIT_1": "FIN-WAIT-1", "FIN_WAIT_2": "FIN-WAIT-2", "TIME_WAIT": "TIME-WAIT",
    "CLOSED": "UNCONN", "CLOSE_WAIT": "CLOSE-WAIT", "LAST_ACK": "LAST-ACK",
    "LISTEN": "LISTEN", "CLOSING": "CLOSING",
}
#: ss's ``state`` filter words → ss state names
STATE_WORDS = {
    "established": {"ESTAB"}, "syn-sent": {"SYN-SENT"}, "syn-recv": {"SYN-RECV"},
    "fin-wait-1": {"FIN-WAIT-1"}, "fin-wait-2": {"FIN-WAIT-2"}, "time-wait": {"TIME-WAIT"},
    "closed": {"UNCONN"}, "close-wait": {"CLOSE-WAIT"}, "last-ack": {"LAST-ACK"},
    "listening": {"LISTEN"}, "listen": {"LISTEN"}, "closing": {"CLOSING"},
    "all": set(SS_STATE.values()),
    "connected": set(SS_STATE.values()) - {"LISTEN", "UNCONN"},
    "synchronized": set(SS_STATE.values()) - {"LISTEN", "UNCONN", "SYN-SENT"},
    "bucket": {"SYN-RECV", "TIME-WAIT"}, "big": set(SS_STATE.values()) - {"SYN-RECV", "TIME-WAIT"},
}
#: ss's default: every state but these (without -a / -l)
HIDDEN_BY_DEFAULT = {"LISTEN", "UNCONN", "TIME-WAIT", "SYN-RECV"}


def parse_sockinfo(text: str) -> list[dict[str, str]]:
    """The rows of ``config/sockinfo`` (``key=value`` words, ``-`` = empty)."""
    rows = []
    for line in text.splitlines():
        row = {k: ("" if v == "-" else v)
               for k, _, v in (w.partition("=") for w in line.split() if "=" in w)}
        if row:
            rows.append(row)
    return rows


def ss_state(row: dict[str, str]) -> str:
    if row.get("proto") == "tcp":
        return SS_STATE.get(row.get("state", ""), row.get("state", "?"))
    return "ESTAB" if row.get("rport") not in ("", "0") else "UNCONN"


def netid(row: dict[str, str]) -> str:
    proto = row.get("proto", "")
    return "raw" if proto.startswith("raw") else proto


def _port(port: str, proto: str, numeric: bool) -> str:
    if port in ("", "0"):
        return "*"
    if not numeric and proto in ("tcp", "udp"):
        try:
            return socket.getservbyport(int(port), proto)
        except (OSError, ValueError):
            pass
    return port


def endpoint(addr: str, port: str, proto: str, numeric: bool) -> str:
    """ss's ``ADDR:PORT``: ``0.0.0.0``/``[::]`` for a wildcard, brackets around IPv6."""
    v6 = ":" in addr
    if addr in ("", "*"):
        addr = "[::]" if v6 else "0.0.0.0"
    elif v6:
        addr = f"[{addr}]"
    if proto.startswith("raw"):  # a raw socket's "port" is its protocol number
        return f"{addr}:{proto[3:] or '*'}"
    return f"{addr}:{_port(port, proto, numeric)}"


# -- the -i line ----------------------------------------------------------------------
def _g(v: float) -> str:
    return f"{v:g}"


def sprint_bw(bps: float, numeric: bool) -> str:
    """iproute2's sprint_bw: ``%.0f`` with -n, else K/M/G with one decimal."""
    if numeric:
        return f"{bps:.0f}"
    if bps > 1e9:
        return f"{bps / 1e9:.1f}G"
    if bps > 1e6:
        return f"{bps / 1e6:.1f}M"
    if bps > 1e3:
        return f"{bps / 1e3:.1f}K"
    return f"{bps:g}"


def print_ms_timer(ms: int) -> str:
    """iproute2's print_ms_timer: ``1min``, ``12sec``, ``1.500ms``, ``204ms``..."""
    secs, msecs = divmod(ms, 1000)
    minutes, secs = divmod(secs, 60)
    out = ""
    if minutes:
        msecs = 0
        out += f"{minutes}min"
        if minutes > 9:
            secs = 0
    if secs:
        if secs > 9:
            msecs = 0
        out += f"{secs}{'.' if msecs else 'sec'}"
    if msecs:
        out += f"{msecs:03d}ms"
    return out


def timer_text(r: dict[str, str]) -> str:
    """``timer:(on,204ms,0)`` (ss -o) from the row's ``timer`` field; '' when off."""
    name, _, rest = (r.get("timer") or "off").partition(",")
    if name == "off" or not rest:
        return ""
    ms, _, count = rest.partition(",")
    return f"timer:({name},{print_ms_timer(int(ms or 0))},{count or 0})"


def tcp_info_line(r: dict[str, str], numeric: bool, show_options: bool = False) -> str:
    """``ss -ti``'s second line for one TCP socket, field by field in iproute2's order
    (tcp_stats_print), each shown only when set, as ss does."""
    def n(key: str) -> int:
        try:
            return int(r.get(key) or 0)
        except ValueError:
            return 0

    out: list[str] = []
    opts = n("options")
    if show_options:  # ss prints the negotiated options with -o only
        if opts & 1:
            out.append("ts")
        if opts & 2:
            out.append("sack")
        if opts & 8:
            out.append("ecn")
    if r.get("cc"):
        out.append(r["cc"])
    if opts & 4:
        out.append(f"wscale:{n('snd_wscale')},{n('rcv_wscale')}")
    if n("rto"):
        out.append(f"rto:{_g(n('rto') / 1000)}")
    if n("backoff"):
        out.append(f"backoff:{n('backoff')}")
    if n("rtt"):
        out.append(f"rtt:{_g(n('rtt') / 1000)}/{_g(n('rttvar') / 1000)}")
    if n("ato"):
        out.append(f"ato:{_g(n('ato') / 1000)}")
    for key, label in (("snd_mss", "mss"), ("pmtu", "pmtu"), ("rcv_mss", "rcvmss"),
                       ("advmss", "advmss"), ("snd_cwnd", "cwnd")):
        if n(key):
            out.append(f"{label}:{n(key)}")
    if 0 < n("snd_ssthresh") < 0xFFFF:
        out.append(f"ssthresh:{n('snd_ssthresh')}")
    for key in ("bytes_sent", "bytes_retrans", "bytes_acked", "bytes_received", "segs_out",
                "segs_in", "data_segs_out", "data_segs_in"):
        if n(key):
            out.append(f"{key}:{n(key)}")
    if n("rtt") and n("snd_cwnd"):
        send_bps = n("snd_cwnd") * n("snd_mss") * 8_000_000 / n("rtt")
        out.append(f"send {sprint_bw(send_bps, numeric)}bps")
    for key, label in (("last_data_sent", "lastsnd"), ("last_data_recv", "lastrcv"),
                       ("last_ack_recv", "lastack")):
        if n(key):
            out.append(f"{label}:{n(key)}")
    pacing = n("pacing_rate")
    if pacing and pacing != 0xFFFFFFFFFFFFFFFF:
        text = f"pacing_rate {sprint_bw(pacing * 8, numeric)}bps"
        top = n("max_pacing_rate")
        if top and top != 0xFFFFFFFFFFFFFFFF:
            text += f"/{sprint_bw(top * 8, numeric)}bps"
        out.append(text)
    if n("delivery_rate"):
        out.append(f"delivery_rate {sprint_bw(n('delivery_rate') * 8, numeric)}bps")
    if n("delivered"):
        out.append(f"delivered:{n('delivered')}")
    if n("unacked"):
        out.append(f"unacked:{n('unacked')}")
    if n("retrans") or n("total_retrans"):
        out.append(f"retrans:{n('retrans')}/{n('total_retrans')}")
    if n("lost"):
        out.append(f"lost:{n('lost')}")
    if n("sacked") and r.get("state") != "LISTEN":
        out.append(f"sacked:{n('sacked')}")
    if r.get("reordering") and n("reordering") != 3:
        out.append(f"reordering:{n('reordering')}")
    if n("rcv_rtt"):
        out.append(f"rcv_rtt:{_g(n('rcv_rtt') / 1000)}")
    if n("rcv_space"):
        out.append(f"rcv_space:{n('rcv_space')}")
    if n("rcv_ssthresh"):
        out.append(f"rcv_ssthresh:{n('rcv_ssthresh')}")
    if n("notsent_bytes"):
        out.append(f"notsent:{n('notsent_bytes')}")
    if n("min_rtt") and n("min_rtt") != 0xFFFFFFFF:
        out.append(f"minrtt:{_g(n('min_rtt') / 1000)}")
    if n("rcv_ooopack"):
        out.append(f"rcv_ooopack:{n('rcv_ooopack')}")
    if n("snd_wnd"):
        out.append(f"snd_wnd:{n('snd_wnd')}")
    return "\t" + "".join(" " + item for item in out)


# -- -p: who holds the socket -------------------------------------------------------------
def _door_fds(pid: int, sockdir: str) -> list[tuple[int, str]]:
    """(fd, path) of the process's open files in the socket tree (not config/)."""
    out: list[tuple[int, str]] = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith(sockdir + "/") and "/config/" not in link:
            out.append((int(name), link))
    return sorted(out)


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _door_kind(link: str) -> str:
    """Which socket a door path makes: ``.../2/1/0`` (family/type/protocol: type 1 is a
    stream), ``.../inet/tcp``, ``.../inet/raw/1``... → tcp, udp or raw. An accepted
    connection opened by its handover slot (``.../accepted/K``, a name reused by the
    next accept) is a TCP one: only TCP accepts."""
    parts = link.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "accepted":
        return "tcp"
    for p in reversed(parts[-3:]):
        if p in ("tcp", "udp", "raw"):
            return p
    if len(parts) >= 3 and parts[-3].isdigit() and parts[-2].isdigit():
        return {"1": "tcp", "2": "udp"}.get(parts[-2], "raw")
    return "raw"


def users(rows: list[dict[str, str]], sockdir: str) -> dict[int, str]:
    """index of a row → ``users:((...))``: each opener still alive, with the fd that holds
    the socket when it can be told (a text-door socket's ``.../N/data`` path; else a
    process's door fds of that kind matched to its sockets of that kind in the order
    both were made, when their numbers agree: accepted connections, opened by a reused
    ``accepted/K``, too). ``rows``: every socket."""
    by_pid: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        for p in (r.get("pids") or "").split(","):
            if p.isdigit():
                by_pid.setdefault(int(p), []).append(i)
    found: dict[int, list[str]] = {}
    for pid, idxs in by_pid.items():
        comm = _comm(pid)
        if comm is None:
            continue
        fds = _door_fds(pid, sockdir)
        exact = {i: fd for i in idxs for fd, link in fds
                 if rows[i].get("sock") and link.endswith(f"/{rows[i]['sock']}/data")}
        used = set(exact.values())
        for kind in ("tcp", "udp", "raw"):
            rest_fds = [fd for fd, link in fds if fd not in used
                        and not link.endswith("/data") and _door_kind(link) == kind]
            rest_rows = sorted((i for i in idxs if i not in exact and netid(rows[i]) == kind),
                               key=lambda i: int((rows[i].get("sock") or "x/0").split("/")[-1]))
            if len(rest_fds) == len(rest_rows):
                exact.update(zip(rest_rows, rest_fds, strict=True))
        for i in idxs:
            fd = f",fd={exact[i]}" if i in exact else ""
            found.setdefault(i, []).append(f'("{comm}",pid={pid}{fd})')
    return {i: "users:(" + ",".join(v) + ")" for i, v in found.items()}


# -- filters ------------------------------------------------------------------------------
_OPS: dict[str, Callable[[int, int], bool]] = {
    "=": lambda a, b: a == b, "==": lambda a, b: a == b, "eq": lambda a, b: a == b,
    "!=": lambda a, b: a != b, "neq": lambda a, b: a != b, "ne": lambda a, b: a != b,
    "<": lambda a, b: a < b, "lt": lambda a, b: a < b, ">": lambda a, b: a > b,
    "gt": lambda a, b: a > b, "<=": lambda a, b: a <= b, "le": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b, "ge": lambda a, b: a >= b,
}

Filter = Callable[[dict[str, str]], bool]


def _port_number(text: str) -> int:
    text = text.lstrip(":")
    if text.isdigit():
        return int(text)
    try:
        return socket.getservbyname(text)
    except OSError:
        raise ToolError(f"unknown port: {text}") from None


def _addr_filter(side: str, text: str) -> Filter:
    host, sep, port = text.rpartition(":") if text.count(":") == 1 or text.startswith("[") \
        else (text, "", "")
    host = host.strip("[]") if sep else text.strip("[]")
    try:
        net = ipaddress.ip_network(host, strict=False) if host not in ("", "*") else None
    except ValueError:
        raise ToolError(f"bad address in filter: {text}") from None
    want = _port_number(port) if sep and port not in ("", "*") else None
    a, p = ("laddr", "lport") if side == "src" else ("raddr", "rport")

    def match(r: dict[str, str]) -> bool:
        if net is not None:
            try:
                if r.get(a, "*") in ("", "*") or ipaddress.ip_address(r[a]) not in net:
                    return False
            except ValueError:
                return False
        return want is None or int(r.get(p) or 0) == want
    return match


def _port_filter(key: str, op: Callable[[int, int], bool], value: int) -> Filter:
    return lambda r: op(int(r.get(key) or 0), value)


def parse_filter(words: list[str]) -> tuple[set[str] | None, list[Filter]]:
    """(states wanted or None, the other conditions, all to hold)."""
    states: set[str] | None = None
    conds: list[Filter] = []
    words = [w for w in words if w not in ("(", ")", "and", "&&")]
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("state", "exclude"):
            if i + 1 >= len(words) or words[i + 1] not in STATE_WORDS:
                raise ToolError(f"{w} needs a state name ({', '.join(sorted(STATE_WORDS))})")
            chosen = STATE_WORDS[words[i + 1]]
            if w == "state":
                states = (states or set()) | chosen
            else:
                states = (states if states is not None else set(SS_STATE.values())) - chosen
            i += 2
        elif w in ("sport", "dport"):
            if i + 2 < len(words) and words[i + 1] in _OPS:
                op, val = _OPS[words[i + 1]], _port_number(words[i + 2])
                i += 3
            elif i + 1 < len(words):
                op, val = _OPS["="], _port_number(words[i + 1])
                i += 2
            else:
                raise ToolError(f"{w} needs a port")
            key = "lport" if w == "sport" else "rport"
            conds.append(_port_filter(key, op, val))
        elif w in ("src", "dst"):
            if i + 1 >= len(words):
                raise ToolError(f"{w} needs an address")
            conds.append(_addr_filter(w, words[i + 1]))
            i += 2
        else:
            raise bad_usage(f"unexpected argument: {w}", USAGE)
    return states, conds


# -- the table ----------------------------------------------------------------------------
def render(rows: list[dict[str, str]], flags: set[str], words: list[str], sockdir: str) -> str:
    kinds = {k for k, f in (("tcp", "t"), ("udp", "u"), ("raw", "w"), ("unix", "x"))
             if f in flags}
    if not kinds:
        kinds = {"tcp", "udp", "raw", "unix"}
    numeric = "n" in flags
    states, conds = parse_filter(words)
    sel = []
    for r in rows:
        st = ss_state(r)
        if netid(r) not in kinds:
            continue
        if "4" in flags and ":" in r.get("laddr", ""):
            continue
        if "6" in flags and ":" not in r.get("laddr", ""):
            continue
        if states is not None:
            if st not in states:
                continue
        elif "a" not in flags:
            if "l" in flags:
                if st not in ("LISTEN", "UNCONN"):
                    continue
            elif st in HIDDEN_BY_DEFAULT:
                continue
        if not all(c(r) for c in conds):
            continue
        sel.append(r)
    if "p" in flags:
        every = users(rows, sockdir)
        index = {id(r): i for i, r in enumerate(rows)}
        who = {k: every[index[id(r)]] for k, r in enumerate(sel) if index[id(r)] in every}
    else:
        who = {}
    show_netid = len(kinds) > 1
    table: list[list[str]] = []
    for i, r in enumerate(sel):
        proto = r.get("proto", "")
        row = [netid(r)] if show_netid else []
        row += [ss_state(r), r.get("recvq") or "0", r.get("sendq") or "0",
                endpoint(r.get("laddr", ""), r.get("lport", ""), proto, numeric),
                endpoint(r.get("raddr", ""), r.get("rport", ""), proto, numeric)]
        extra = []
        if "o" in flags and proto == "tcp" and timer_text(r):
            extra.append(timer_text(r))
        if i in who:
            extra.append(who[i])
        if "e" in flags and r.get("uid"):
            extra.append(f"uid:{r['uid']}")
        if "e" in flags and r.get("sock"):
            extra.append(f"sk:{r['sock']}")
        row.append(" ".join(extra))
        table.append(row)
    head = (["Netid"] if show_netid else []) + ["State", "Recv-Q", "Send-Q",
                                                "Local Address:Port", "Peer Address:Port",
                                                "Process"]
    all_rows = ([head] if "H" not in flags else []) + table
    ncol = len(head)
    widths = [max((len(x[c]) for x in all_rows), default=0) for c in range(ncol)]
    # as ss: names and queues left-aligned, the local address right-aligned, the peer's
    # address left-aligned
    lad = ncol - 3
    lines = []
    for x in all_rows:
        cells = []
        for c in range(ncol - 1):
            cells.append(x[c].rjust(widths[c]) if c == lad else x[c].ljust(widths[c]))
        line = " ".join(cells) + " " + x[-1]
        lines.append(line.rstrip())
    out = []
    for k, line in enumerate(lines):
        out.append(line)
        i = k - (0 if "H" in flags else 1)
        if "i" in flags and i >= 0 and sel[i].get("proto") == "tcp":
            out.append(tcp_info_line(sel[i], numeric, "o" in flags))
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    if wants_help(args):
        print(USAGE)
        return 0
    flags: set[str] = set()
    words: list[str] = []
    try:
        for a in args:
            if a.startswith("--"):
                long = {"--tcp": "t", "--udp": "u", "--raw": "w", "--unix": "x",
                        "--listening": "l", "--all": "a", "--numeric": "n", "--info": "i",
                        "--processes": "p", "--extended": "e", "--no-header": "H",
                        "--options": "o"}
                if a not in long:
                    raise unknown_option(a, USAGE)
                flags.add(long[a])
            elif a.startswith("-") and len(a) > 1 and not words:
                for ch in a[1:]:
                    if ch not in "tuwxlanioepH46":
                        raise unknown_option(f"-{ch}", USAGE)
                    flags.add(ch)
            else:
                words.append(a)
        rows = parse_sockinfo(read_file(prefix, "config/sockinfo"))
        sockdir = os.path.realpath(str(socket_dir(prefix)))
        sys.stdout.write(render(rows, flags, words, sockdir))
        return 0
    except ToolError as exc:
        return fail(TOOL, exc)
