"""pf rules: the data model, ``pfctl -s rules`` rendering, and the rule compiler.

A loaded rule set is compiled into plain Python functions, one per direction and
protocol (tcp, udp, icmp, other), each a straight chain of ``if`` tests on integers
(``(s & 0xffffff00) == 0x0a000000``, ``dp == 22``, ``s in T0``) generated from the
rules that can match that direction and protocol. Last match wins; a ``quick`` rule
returns at once. Evaluating 100 non-matching rules is about 100 integer comparisons,
with no per-rule call. Generated code only ever embeds integers, validated interface
names (``repr``) and references to rule/table objects by index.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}
PROTO_NUMBERS = {v: k for k, v in PROTO_NAMES.items()}
TCP_FLAG_LETTERS = "FSRPAUEW"  # bit 0 = F ... bit 7 = W (CWR), as pfctl prints them

ICMP_TYPE_NAMES = {
    "echorep": 0, "unreach": 3, "squench": 4, "redir": 5, "althost": 6, "echoreq": 8,
    "routeradv": 9, "routersol": 10, "timex": 11, "paramprob": 12, "timereq": 13,
    "timerep": 14, "inforeq": 15, "inforep": 16, "maskreq": 17, "maskrep": 18,
}
ICMP_TYPE_BY_NUMBER = {v: k for k, v in ICMP_TYPE_NAMES.items()}


def flags_str(bits: int) -> str:
    return "".join(ch for i, ch in enumerate(TCP_FLAG_LETTERS) if bits >> i & 1)


def ip_str(a: int) -> str:
    return str(ipaddress.IPv4Address(a))


class Table:
    """An address table: hosts in a set, networks in one set per prefix length."""

    def __init__(self, name: str, flags: Iterable[str] = ()) -> None:
        self.name = name
        self.flags = set(flags)
        self.hosts: set[int] = set()
        self.nets: dict[int, set[int]] = {}  # plen → network numbers
        self._masks: tuple[tuple[int, set[int]], ...] = ()
        self.matches = 0

    def add(self, net: int, plen: int) -> bool:
        if plen == 32:
            if net in self.hosts:
                return False
            self.hosts.add(net)
            return True
        s = self.nets.setdefault(plen, set())
        if net in s:
            return False
        s.add(net)
        self._rebuild()
        return True

    def delete(self, net: int, plen: int) -> bool:
        if plen == 32:
            if net not in self.hosts:
                return False
            self.hosts.discard(net)
            return True
        s = self.nets.get(plen)
        if s is None or net not in s:
            return False
        s.discard(net)
        if not s:
            del self.nets[plen]
        self._rebuild()
        return True

    def flush(self) -> int:
        n = len(self)
        self.hosts.clear()
        self.nets.clear()
        self._rebuild()
        return n

    def _rebuild(self) -> None:
        self._masks = tuple(((0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF, s)
                            for p, s in sorted(self.nets.items(), reverse=True))

    def __contains__(self, a: int) -> bool:
        if a in self.hosts:
            return True
        for mask, nets in self._masks:
            if a & mask in nets:
                return True
        return False

    def __len__(self) -> int:
        return len(self.hosts) + sum(len(s) for s in self.nets.values())

    def entries(self) -> list[str]:
        out = [(n, 32) for n in self.hosts]
        out += [(n, p) for p, s in self.nets.items() for n in s]
        out.sort()
        return [ip_str(n) if p == 32 else f"{ip_str(n)}/{p}" for n, p in out]

    def copy(self) -> Table:
        t = Table(self.name, self.flags)
        t.hosts = set(self.hosts)
        t.nets = {p: set(s) for p, s in self.nets.items()}
        t._rebuild()
        return t


@dataclass
class Addr:
    """One address item: ``any``, a host or network, or a table; maybe negated."""

    kind: str  # "any" | "net" | "table"
    net: int = 0
    plen: int = 0
    table: str = ""
    neg: bool = False

    def __str__(self) -> str:
        if self.kind == "any":
            body = "any"
        elif self.kind == "table":
            body = f"<{self.table}>"
        else:
            body = ip_str(self.net) if self.plen == 32 else f"{ip_str(self.net)}/{self.plen}"
        return f"! {body}" if self.neg else body


@dataclass
class PortOp:
    """``= 22``, ``!= 22``, ``< 1024``, ``1000:2000`` (inclusive), ``1000 >< 2000``
    (exclusive), ``1000 <> 2000`` (outside)."""

    op: str
    a: int
    b: int = 0

    def __str__(self) -> str:
        if self.op == ":":
            return f"{self.a}:{self.b}"
        if self.op in ("><", "<>"):
            return f"{self.a} {self.op} {self.b}"
        return f"{self.op} {self.a}"

    def expr(self, var: str) -> str:
        a, b = self.a, self.b
        return {
            "=": f"{var} == {a}", "!=": f"({var} != {a} and {var} >= 0)",
            "<": f"0 <= {var} < {a}", "<=": f"0 <= {var} <= {a}",
            ">": f"{var} > {a}", ">=": f"{var} >= {a}",
            ":": f"{a} <= {var} <= {b}", "><": f"{a} < {var} < {b}",
            "<>": f"({var} >= 0 and ({var} < {a} or {var} > {b}))",
        }[self.op]


@dataclass(eq=False)
class Rule:
    action: str  # "pass" | "block"
    lineno: int = 0
    return_mode: str = ""  # "" (drop) | "return" | "return-rst" | "return-icmp"
    direction: str = ""  # "" (both) | "in" | "out"
    log: bool = False
    quick: bool = False
    ifnames: list[str] = field(default_factory=list)
    af: str = ""
    protos: list[int] = field(default_factory=list)
    src: list[Addr] = field(default_factory=list)
    src_ports: list[PortOp] = field(default_factory=list)
    dst: list[Addr] = field(default_factory=list)
    dst_ports: list[PortOp] = field(default_factory=list)
    flags: tuple[int, int] | None = None  # (set, mask)
    icmp_type: int | None = None
    icmp_code: int | None = None
    keep_state: bool = False
    state_word: str = ""  # "", "keep state", "no state" as written
    label: str = ""
    # counters
    nr: int = 0
    packets: int = 0
    bytes: int = 0
    states_cur: int = 0
    states_tot: int = 0

    @property
    def blocks(self) -> bool:
        return self.action == "block"

    def render(self) -> str:
        w = [self.action]
        if self.action == "block":
            w.append(self.return_mode or "drop")
        if self.direction:
            w.append(self.direction)
        if self.log:
            w.append("log")
        if self.quick:
            w.append("quick")
        if self.ifnames:
            w.append("on " + _list(self.ifnames))
        if self.af:
            w.append(self.af)
        if self.protos:
            w.append("proto " + _list([PROTO_NAMES.get(p, str(p)) for p in self.protos]))
        if not (self.src or self.src_ports or self.dst or self.dst_ports):
            w.append("all")
        else:
            w.append("from " + (_list([str(a) for a in self.src]) if self.src else "any"))
            if self.src_ports:
                w.append("port " + _ports(self.src_ports))
            w.append("to " + (_list([str(a) for a in self.dst]) if self.dst else "any"))
            if self.dst_ports:
                w.append("port " + _ports(self.dst_ports))
        if self.icmp_type is not None:
            w.append(f"icmp-type {ICMP_TYPE_BY_NUMBER.get(self.icmp_type, self.icmp_type)}")
            if self.icmp_code is not None:
                w.append(f"code {self.icmp_code}")
        if self.flags is not None:
            w.append(f"flags {flags_str(self.flags[0])}/{flags_str(self.flags[1])}")
        if self.keep_state:
            w.append("keep state")
        elif self.action == "pass" and self.state_word == "no state":
            w.append("no state")
        if self.label:
            w.append(f'label "{self.label}"')
        return " ".join(w)


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _ports(ops: list[PortOp]) -> str:
    if len(ops) == 1:
        return str(ops[0])
    return "{ " + ", ".join(str(o.a) if o.op == "=" else str(o) for o in ops) + " }"


@dataclass
class Ruleset:
    rules: list[Rule] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)
    skip: set[str] = field(default_factory=set)
    options: dict[str, str] = field(default_factory=dict)
    timeouts: dict[str, int] = field(default_factory=dict)
    source: str = ""

    def render(self, verbose: bool = False) -> str:
        out = []
        for r in self.rules:
            out.append((f"@{r.nr} " if verbose else "") + r.render() + "\n")
            if verbose:
                out.append(f"  [ Packets: {r.packets:<8} Bytes: {r.bytes:<10} "
                           f"States: {r.states_cur:<6} State Creations: {r.states_tot:<6}]\n")
        return "".join(out)


# -- the compiler ----------------------------------------------------------------------
#: match(ifname, proto, src, dst, sport, dport, tcpflags, icmptype, icmpcode) -> Rule|None
MatchFn = Callable[[str, int, int, int, int, int, int, int, int], "Rule | None"]

#: the protocols with a dedicated function; "other" covers the rest
FAST_PROTOS = (6, 17, 1)


def _addr_expr(items: list[Addr], var: str, tables: dict[str, str]) -> str:
    parts = []
    for a in items:
        if a.kind == "any":
            e = "True"
        elif a.kind == "table":
            e = f"{var} in {tables[a.table]}"
        elif a.plen == 32:
            e = f"{var} == {a.net}"
        elif a.plen == 0:
            e = "True"
        else:
            mask = (0xFFFFFFFF << (32 - a.plen)) & 0xFFFFFFFF
            e = f"{var} & {mask} == {a.net & mask}"
        parts.append(f"not ({e})" if a.neg else f"({e})")
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"


def _ports_expr(ops: list[PortOp], var: str) -> str:
    if not ops:
        return ""
    eqs = [o.a for o in ops if o.op == "="]
    rest = [o for o in ops if o.op != "="]
    parts = []
    if len(eqs) == 1:
        parts.append(f"{var} == {eqs[0]}")
    elif eqs:
        parts.append(f"{var} in {frozenset(eqs)!r}")
    parts += [o.expr(var) for o in rest]
    return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"


def _rule_expr(r: Rule, proto: int | None, tables: dict[str, str]) -> str:
    conds = []
    if r.ifnames:
        conds.append(f"ifn == {r.ifnames[0]!r}" if len(r.ifnames) == 1
                     else f"ifn in {tuple(r.ifnames)!r}")
    if proto is None and r.protos:
        conds.append(f"p in {tuple(r.protos)!r}")
    for e in (_addr_expr(r.src, "s", tables), _addr_expr(r.dst, "d", tables)):
        if e:
            conds.append(e)
    if proto in (6, 17):
        for e in (_ports_expr(r.src_ports, "sp"), _ports_expr(r.dst_ports, "dp")):
            if e:
                conds.append(e)
    if proto == 6 and r.flags is not None:
        conds.append(f"fl & {r.flags[1]} == {r.flags[0]}")
    if proto == 1 and r.icmp_type is not None:
        conds.append(f"it == {r.icmp_type}")
        if r.icmp_code is not None:
            conds.append(f"ic == {r.icmp_code}")
    return " and ".join(conds) if conds else "True"


def _applies(r: Rule, direction: str, proto: int | None) -> bool:
    if r.direction and r.direction != direction:
        return False
    if proto is None:
        return not r.protos or any(p not in FAST_PROTOS for p in r.protos)
    return not r.protos or proto in r.protos


def compile_ruleset(rs: Ruleset) -> dict[str, dict[int | None, MatchFn]]:
    """{"in"/"out": {6: fn, 17: fn, 1: fn, None: fn_other}}."""
    ns: dict[str, object] = {}
    tables: dict[str, str] = {}
    for i, (name, t) in enumerate(rs.tables.items()):
        tables[name] = f"T{i}"
        ns[f"T{i}"] = t
    for i, r in enumerate(rs.rules):
        ns[f"R{i}"] = r
    src = []
    for direction in ("in", "out"):
        for proto in (*FAST_PROTOS, None):
            fname = f"match_{direction}_{proto if proto is not None else 'other'}"
            body = []
            for i, r in enumerate(rs.rules):
                if not _applies(r, direction, proto):
                    continue
                body.append(f"    if {_rule_expr(r, proto, tables)}:")
                body.append(f"        {'return' if r.quick else 'r ='} R{i}")
            src.append(f"def {fname}(ifn, p, s, d, sp, dp, fl, it, ic):")
            src.append("    r = None")
            src += body
            src.append("    return r")
            src.append("")
    code = "\n".join(src)
    exec(compile(code, "<pf ruleset>", "exec"), ns)  # noqa: S102 - generated from parsed ints
    return {direction: {proto: ns[f"match_{direction}_{proto if proto is not None else 'other'}"]  # type: ignore[misc]
                        for proto in (*FAST_PROTOS, None)}
            for direction in ("in", "out")}
