"""pf rules: the data model, ``pfctl -s rules`` rendering, and the rule compiler.

Addresses are stack.addr's: an ``Addr`` is an int in one 128-bit space (IPv4 mapped
to ``::ffff:a.b.c.d``), a rule's address is a ``Prefix`` of either family, a table, or
``any``, and a rule applies to one family or both (``Rule.family``: from ``inet`` /
``inet6``, else from its addresses).

A loaded rule set is compiled into plain Python functions, one per family, direction
and protocol (tcp, udp, icmp, other), each a straight chain of ``if`` tests on integers
(``s & <mask> == <network>`` with the 128-bit mask of the prefix, ``dp == 22``,
``s in T0_2``) generated from the rules that can match that family, direction and
protocol: a rule of the other family is not in the function at all, so it costs
nothing and can never match. Last match wins; a ``quick`` rule returns at once.
Evaluating 100 non-matching rules is about 100 integer comparisons, with no per-rule
call. Generated code only ever embeds integers, validated interface names (``repr``)
and references to rule/table objects by index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from stack.addr import AF_INET, AF_INET6, Addr, Prefix, family, format_addr, is_v4, mask128

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6"}
PROTO_NUMBERS = {v: k for k, v in PROTO_NAMES.items()}
TCP_FLAG_LETTERS = "FSRPAUEW"  # bit 0 = F ... bit 7 = W (CWR), as pfctl prints them

ICMP_TYPE_NAMES = {
    "echorep": 0, "unreach": 3, "squench": 4, "redir": 5, "althost": 6, "echoreq": 8,
    "routeradv": 9, "routersol": 10, "timex": 11, "paramprob": 12, "timereq": 13,
    "timerep": 14, "inforeq": 15, "inforep": 16, "maskreq": 17, "maskrep": 18,
}
ICMP_TYPE_BY_NUMBER = {v: k for k, v in ICMP_TYPE_NAMES.items()}

#: ``icmp6-type`` names (OpenBSD pfctl's icmp6_type table); several names share a number
#: (MLD's old and new names, the node-information aliases): the first one renders
ICMP6_TYPE_NAMES = {
    "unreach": 1, "toobig": 2, "timex": 3, "paramprob": 4, "echoreq": 128, "echorep": 129,
    "groupqry": 130, "listqry": 130, "grouprep": 131, "listenrep": 131, "groupterm": 132,
    "listendone": 132, "routersol": 133, "routeradv": 134, "neighbrsol": 135,
    "neighbradv": 136, "redir": 137, "routrrenum": 138, "wrureq": 139, "fqdnreq": 139,
    "niqry": 139, "wrurep": 140, "fqdnrep": 140, "nirep": 140, "listenrepv2": 143,
    "mtraceresp": 200, "mtrace": 201,
}
ICMP6_TYPE_BY_NUMBER: dict[int, str] = {}
for _name, _num in ICMP6_TYPE_NAMES.items():
    ICMP6_TYPE_BY_NUMBER.setdefault(_num, _name)


def flags_str(bits: int) -> str:
    return "".join(ch for i, ch in enumerate(TCP_FLAG_LETTERS) if bits >> i & 1)


#: the address families a rule set is compiled for, and their pf.conf words
FAMILIES = (AF_INET, AF_INET6)
AF_WORDS = {"inet": AF_INET, "inet6": AF_INET6}


def prefix_str(p: Prefix) -> str:
    """pfctl's form: a host without its length, a network with it."""
    return format_addr(p.addr) if p.is_host else str(p)


class AddrSet:
    """The addresses of one family in a table: hosts in a set, networks in one set per
    prefix length. Lengths and masks are in the 128-bit space of stack.addr, so a
    lookup is ``a & mask in nets`` whatever the family."""

    __slots__ = ("hosts", "nets", "_masks")

    def __init__(self) -> None:
        self.hosts: set[int] = set()
        self.nets: dict[int, set[int]] = {}  # wide prefix length → network numbers
        self._masks: tuple[tuple[int, set[int]], ...] = ()

    def _rebuild(self) -> None:
        self._masks = tuple((mask128(w), s) for w, s in sorted(self.nets.items(), reverse=True))

    def __contains__(self, a: int) -> bool:
        if a in self.hosts:
            return True
        for mask, nets in self._masks:
            if a & mask in nets:
                return True
        return False

    def __len__(self) -> int:
        return len(self.hosts) + sum(len(s) for s in self.nets.values())


class Table:
    """An address table (``table <name> { ... }``) of either or both families. The
    compiled rules test an address against the set of its own family (``fam[AF_INET]``),
    so a network of one family never matches an address of the other; both sets are
    kept for the table's life (compiled code holds them), changed in place."""

    def __init__(self, name: str, flags: Iterable[str] = ()) -> None:
        self.name = name
        self.flags = set(flags)
        self.fam: dict[int, AddrSet] = {f: AddrSet() for f in FAMILIES}
        self.matches = 0

    def add(self, p: Prefix) -> bool:
        s = self.fam[p.family]
        net = p.network
        if p.is_host:
            if net in s.hosts:
                return False
            s.hosts.add(net)
            return True
        nets = s.nets.setdefault(p.wide, set())
        if net in nets:
            return False
        nets.add(net)
        s._rebuild()
        return True

    def delete(self, p: Prefix) -> bool:
        s = self.fam[p.family]
        net = p.network
        if p.is_host:
            if net not in s.hosts:
                return False
            s.hosts.discard(net)
            return True
        nets = s.nets.get(p.wide)
        if nets is None or net not in nets:
            return False
        nets.discard(net)
        if not nets:
            del s.nets[p.wide]
        s._rebuild()
        return True

    def flush(self) -> int:
        n = len(self)
        for s in self.fam.values():
            s.hosts.clear()
            s.nets.clear()
            s._rebuild()
        return n

    def __contains__(self, a: int) -> bool:
        return a in self.fam[family(a)]

    def __len__(self) -> int:
        return sum(len(s) for s in self.fam.values())

    def prefixes(self) -> list[Prefix]:
        """Every entry, in address order (IPv4 among themselves as pfctl sorts them)."""
        out: list[tuple[int, int]] = []
        for s in self.fam.values():
            out += [(n, 128) for n in s.hosts]
            out += [(n, w) for w, nets in s.nets.items() for n in nets]
        out.sort()
        return [Prefix(Addr(n), w - 96 if is_v4(n) else w) for n, w in out]

    def entries(self) -> list[str]:
        return [prefix_str(p) for p in self.prefixes()]

    def copy(self) -> Table:
        t = Table(self.name, self.flags)
        for f, s in self.fam.items():
            c = t.fam[f]
            c.hosts = set(s.hosts)
            c.nets = {w: set(n) for w, n in s.nets.items()}
            c._rebuild()
        return t


@dataclass
class AddrItem:
    """One address of a rule (pf's ``pf_addr_wrap``): ``any``, a host or network
    (``prefix``, a stack.addr Prefix of either family), or a table; maybe negated."""

    kind: str  # "any" | "net" | "table"
    prefix: Prefix | None = None
    table: str = ""
    neg: bool = False

    @property
    def family(self) -> int:
        """The family the item names, or 0 (any, a table: both)."""
        return self.prefix.family if self.prefix is not None else 0

    def __str__(self) -> str:
        if self.kind == "any":
            body = "any"
        elif self.kind == "table":
            body = f"<{self.table}>"
        else:
            assert self.prefix is not None
            body = prefix_str(self.prefix)
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
    af: str = ""  # "inet" | "inet6" as written ("" if not): what ``render`` shows
    #: the family the rule applies to: AF_INET, AF_INET6, or 0 for both (from ``af``,
    #: else from its addresses); a rule never matches a packet of another family
    family: int = 0
    protos: list[int] = field(default_factory=list)
    src: list[AddrItem] = field(default_factory=list)
    src_ports: list[PortOp] = field(default_factory=list)
    dst: list[AddrItem] = field(default_factory=list)
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

    def applies_to(self, fam: int) -> bool:
        """Can the rule match a packet of family ``fam``? Not when it is of the other
        family, or when an address list names only addresses of the other family."""
        if self.family and self.family != fam:
            return False
        return all(not items or any(a.family in (0, fam) for a in items)
                   for items in (self.src, self.dst))

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
            if self.protos == [58]:
                w.append("icmp6-type "
                         f"{ICMP6_TYPE_BY_NUMBER.get(self.icmp_type, self.icmp_type)}")
            else:
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
#: match(ifname, proto, src, dst, sport, dport, tcpflags, icmptype, icmpcode) -> Rule|None;
#: src and dst are stack.addr Addr values of the function's family
MatchFn = Callable[[str, int, int, int, int, int, int, int, int], "Rule | None"]
#: family → direction ("in"/"out") → protocol (or None: the others) → its function
Matchers = dict[int, dict[str, dict["int | None", MatchFn]]]

#: the protocols with a dedicated function, per family (TCP, UDP and the family's ICMP);
#: "other" covers the rest
FAST_PROTOS = {AF_INET: (6, 17, 1), AF_INET6: (6, 17, 58)}


def _addr_expr(items: list[AddrItem], fam: int, var: str, tables: dict[str, str]) -> str:
    """The test of ``var`` (an Addr of family ``fam``) against an address list; items
    of the other family are left out (they cannot match)."""
    parts = []
    for a in items:
        if a.family not in (0, fam):
            continue
        p = a.prefix
        if a.kind == "any":
            e = "True"
        elif a.kind == "table":
            e = f"{var} in {tables[a.table]}_{fam}"
        elif p is None or p.plen == 0:
            e = "True"  # the family's whole space: the function's family is the test
        elif p.is_host:
            e = f"{var} == {p.addr}"
        else:
            e = f"{var} & {p.mask} == {p.network}"
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


def _rule_expr(r: Rule, fam: int, proto: int | None, tables: dict[str, str]) -> str:
    conds = []
    if r.ifnames:
        conds.append(f"ifn == {r.ifnames[0]!r}" if len(r.ifnames) == 1
                     else f"ifn in {tuple(r.ifnames)!r}")
    if proto is None and r.protos:
        conds.append(f"p in {tuple(r.protos)!r}")
    for e in (_addr_expr(r.src, fam, "s", tables), _addr_expr(r.dst, fam, "d", tables)):
        if e:
            conds.append(e)
    if proto in (6, 17):
        for e in (_ports_expr(r.src_ports, "sp"), _ports_expr(r.dst_ports, "dp")):
            if e:
                conds.append(e)
    if proto == 6 and r.flags is not None:
        conds.append(f"fl & {r.flags[1]} == {r.flags[0]}")
    if proto in (1, 58) and r.icmp_type is not None:
        conds.append(f"it == {r.icmp_type}")
        if r.icmp_code is not None:
            conds.append(f"ic == {r.icmp_code}")
    return " and ".join(conds) if conds else "True"


def _applies(r: Rule, fam: int, direction: str, proto: int | None) -> bool:
    if r.direction and r.direction != direction:
        return False
    if not r.applies_to(fam):
        return False
    if proto is None:
        return not r.protos or any(p not in FAST_PROTOS[fam] for p in r.protos)
    return not r.protos or proto in r.protos


def _fname(fam: int, direction: str, proto: int | None) -> str:
    return f"match{fam}_{direction}_{proto if proto is not None else 'other'}"


def compile_ruleset(rs: Ruleset) -> Matchers:
    """{AF_INET/AF_INET6: {"in"/"out": {6: fn, 17: fn, 1 or 58: fn, None: fn_other}}}: each
    function holds only the rules that can match its family, direction and protocol."""
    ns: dict[str, object] = {}
    tables: dict[str, str] = {}
    for i, (name, t) in enumerate(rs.tables.items()):
        tables[name] = f"T{i}"
        for fam, addrs in t.fam.items():
            ns[f"T{i}_{fam}"] = addrs
    for i, r in enumerate(rs.rules):
        ns[f"R{i}"] = r
    src = []
    for fam in FAMILIES:
        for direction in ("in", "out"):
            for proto in (*FAST_PROTOS[fam], None):
                body = []
                for i, r in enumerate(rs.rules):
                    if not _applies(r, fam, direction, proto):
                        continue
                    body.append(f"    if {_rule_expr(r, fam, proto, tables)}:")
                    body.append(f"        {'return' if r.quick else 'r ='} R{i}")
                src.append(f"def {_fname(fam, direction, proto)}(ifn, p, s, d, sp, dp, fl, it, ic):")
                src.append("    r = None")
                src += body
                src.append("    return r")
                src.append("")
    code = "\n".join(src)
    exec(compile(code, "<pf ruleset>", "exec"), ns)  # noqa: S102 - generated from parsed ints
    return {fam: {direction: {proto: ns[_fname(fam, direction, proto)]  # type: ignore[misc]
                              for proto in (*FAST_PROTOS[fam], None)}
                  for direction in ("in", "out")}
            for fam in FAMILIES}
