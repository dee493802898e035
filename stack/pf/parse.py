"""The pf.conf subset: a line-oriented parser with one error per bad line.

Grammar (see docs/pf-bpf.md for the whole list)::

    NAME = "value"                                  macro; used as $NAME
    set skip on IF | { IF, ... }
    set block-policy drop|return
    set limit states N
    set timeout NAME SECONDS                        tcp.established, udp.first, ...
    table <name> [persist] [const] [counters] [{ addr, ... }]
    pass|block [drop|return|return-rst|return-icmp|return-icmp6] [in|out] [log] [quick]
        [on IF | on { IF, ... }] [inet | inet6] [proto P | proto { P, ... }]
        (all | [from SRC [port PORTS]] [to DST [port PORTS]])
        [flags F/M | flags any] [icmp-type T [code C]] [icmp6-type T [code C]]
        [keep state | no state] [label "text"]

SRC/DST: ``any``, ``A.B.C.D``, ``A.B.C.D/N``, ``2001:db8::1``, ``2001:db8::/32``,
``<table>``, each may be negated with ``!``, or a ``{ ... }`` list of those. Addresses
become stack.addr Prefixes; a rule is of the family it says (``inet``/``inet6``) or, if
it says none, of the family its addresses name (or both, with none named), and never
matches a packet of the other family. PORTS: ``22``, ``ssh``, ``= 22``, ``!= 22``,
``< 1024`` (also ``<= > >=``), ``1000:2000`` (inclusive), ``1000 >< 2000``
(exclusive), ``1000 <> 2000`` (outside), or a ``{ ... }`` list. ``icmp-type`` (with
``proto icmp``) and ``icmp6-type`` (with ``proto icmp6``, which makes the rule inet6)
take a name, a number or a ``{ ... }`` list, which becomes one rule per type (as pfctl).

As in OpenBSD pf, ``pass`` rules keep state unless they say ``no state``, and a
stateful TCP rule without ``flags`` matches ``flags S/SA`` (connection starts only).
Comments start with ``#``; a line ending in ``\\`` continues on the next one.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from dataclasses import dataclass

from stack.addr import AF_INET, AF_INET6, Prefix, is_v4, parse_addr
from stack.pf.rules import (
    AF_WORDS,
    ICMP6_TYPE_NAMES,
    ICMP_TYPE_NAMES,
    PROTO_NUMBERS,
    TCP_FLAG_LETTERS,
    AddrItem,
    PortOp,
    Rule,
    Ruleset,
    Table,
)

TIMEOUT_NAMES = ("tcp.first", "tcp.opening", "tcp.established", "tcp.closing",
                 "tcp.finwait", "tcp.closed", "udp.first", "udp.single", "udp.multiple",
                 "icmp.first", "icmp.error", "other.first", "other.single",
                 "other.multiple", "interval")

_TOKEN = re.compile(r"""
    "(?P<str>[^"]*)"
  | (?P<table><[A-Za-z0-9_\-]+>)
  | (?P<op>!=|<=|>=|><|<>|[{}(),!<>=])
  | (?P<word>[^\s{}(),!<>="#]+)
""", re.VERBOSE)
_IFNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,14}$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ParseError(ValueError):
    """Every bad line of a rule set: ``errors`` is a list of (line number, message)."""

    def __init__(self, errors: list[tuple[int, str]], filename: str = "pf.conf") -> None:
        self.errors = errors
        self.filename = filename
        super().__init__(self.format())

    def format(self) -> str:
        return "\n".join(f"{self.filename}:{n}: {msg}" for n, msg in self.errors)


class _LineError(Exception):
    pass


@dataclass
class _Tok:
    kind: str  # "str" | "table" | "op" | "word"
    text: str


class _Cursor:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self, ahead: int = 0) -> str | None:
        j = self.i + ahead
        return self.toks[j].text if j < len(self.toks) else None

    def peek_tok(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self, what: str = "more") -> str:
        if self.i >= len(self.toks):
            raise _LineError(f"unexpected end of line, expected {what}")
        t = self.toks[self.i]
        self.i += 1
        return t.text

    def accept(self, *words: str) -> str | None:
        t = self.peek()
        if t is not None and t in words:
            self.i += 1
            return t
        return None

    def expect(self, word: str) -> None:
        got = self.peek()
        if got != word:
            raise _LineError(f"expected {word!r}, got {got!r}" if got is not None
                             else f"expected {word!r} at end of line")
        self.i += 1

    def done(self) -> bool:
        return self.i >= len(self.toks)


def _tokenize(line: str) -> list[_Tok]:
    toks = []
    pos = 0
    while pos < len(line):
        if line[pos].isspace():
            pos += 1
            continue
        m = _TOKEN.match(line, pos)
        if m is None:
            raise _LineError(f"unexpected character {line[pos]!r}")
        kind = m.lastgroup or "word"
        text = m.group(kind)
        if kind == "table":
            text = text
        toks.append(_Tok(kind, text))
        pos = m.end()
    return toks


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Strip comments, join continuations: (first line number, text)."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw
        # a '#' outside quotes starts a comment
        q = False
        for i, ch in enumerate(line):
            if ch == '"':
                q = not q
            elif ch == "#" and not q:
                line = line[:i]
                break
        if not pending:
            start = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        pending += line
        if pending.strip():
            out.append((start, pending.strip()))
        pending = ""
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def parse(text: str, filename: str = "pf.conf") -> Ruleset:
    """Parse a whole rule set; raises ParseError listing every bad line."""
    errors: list[tuple[int, str]] = []
    rs = Ruleset(source=text)
    macros: dict[str, str] = {}
    table_refs: list[tuple[int, str]] = []
    for lineno, line in _logical_lines(text):
        try:
            line = _expand(line, macros)
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", line)
            if m:
                value = m.group(2).strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                macros[m.group(1)] = value
                continue
            cur = _Cursor(_tokenize(line))
            head = cur.peek()
            if head == "set":
                _parse_set(cur, rs)
            elif head == "table":
                _parse_table(cur, rs)
            elif head in ("pass", "block"):
                rules = _parse_rule(cur, lineno)
                for a in rules[0].src + rules[0].dst:
                    if a.kind == "table":
                        table_refs.append((lineno, a.table))
                rs.rules += rules
            elif head in ("match", "antispoof", "anchor", "nat", "rdr", "binat", "scrub",
                          "load", "altq", "queue"):
                raise _LineError(f"'{head}' rules are not supported")
            else:
                raise _LineError(f"syntax error: unknown keyword {head!r}")
            if not cur.done():
                raise _LineError(f"syntax error near {cur.peek()!r}")
        except _LineError as exc:
            errors.append((lineno, str(exc)))
    for lineno, name in table_refs:
        if name not in rs.tables:
            errors.append((lineno, f"table <{name}> is not defined"))
    if errors:
        raise ParseError(errors, filename)
    for i, r in enumerate(rs.rules):
        r.nr = i
    return rs


def _expand(line: str, macros: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in macros:
            raise _LineError(f"macro ${name} is not defined")
        return macros[name]

    return re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)", sub, line)


def _parse_set(cur: _Cursor, rs: Ruleset) -> None:
    cur.expect("set")
    opt = cur.next("an option")
    if opt == "skip":
        cur.expect("on")
        for name in _list_or_one(cur, "an interface"):
            rs.skip.add(_ifname(name))
    elif opt == "block-policy":
        v = cur.next("drop or return")
        if v not in ("drop", "return"):
            raise _LineError(f"block-policy is drop or return, not {v!r}")
        rs.options["block-policy"] = v
    elif opt == "limit":
        what = cur.next("states")
        if what != "states":
            raise _LineError(f"only 'set limit states' is supported, not {what!r}")
        rs.options["limit-states"] = str(_number(cur.next("a number"), 1, 10_000_000))
    elif opt == "timeout":
        name = cur.next("a timeout name")
        if name not in TIMEOUT_NAMES:
            raise _LineError(f"unknown timeout {name!r} (one of {', '.join(TIMEOUT_NAMES)})")
        rs.timeouts[name] = _number(cur.next("seconds"), 0, 10_000_000)
    else:
        raise _LineError(f"unknown option 'set {opt}'")


def _parse_table(cur: _Cursor, rs: Ruleset) -> None:
    cur.expect("table")
    tok = cur.peek_tok()
    if tok is None or tok.kind != "table":
        raise _LineError("expected a table name like <name>")
    cur.next()
    name = tok.text[1:-1]
    if name in rs.tables:
        raise _LineError(f"table <{name}> is defined twice")
    flags = []
    while cur.peek() in ("persist", "const", "counters"):
        flags.append(cur.next())
    t = Table(name, flags)
    if cur.peek() == "{":
        for item in _braced(cur, "an address"):
            a = _address(item)
            if a.prefix is None or a.neg:
                raise _LineError(f"table <{name}>: {item!r} is not an address or network")
            t.add(a.prefix)
    rs.tables[name] = t


def _braced(cur: _Cursor, what: str) -> list[str]:
    cur.expect("{")
    items = []
    while True:
        t = cur.next(f"{what} or '}}'")
        if t == "}":
            break
        if t == ",":
            continue
        if t == "!":
            t = "!" + cur.next(what)
        items.append(t)
    if not items:
        raise _LineError(f"empty list, expected {what}")
    return items


def _list_or_one(cur: _Cursor, what: str) -> list[str]:
    if cur.peek() == "{":
        return _braced(cur, what)
    return [cur.next(what)]


def _ifname(name: str) -> str:
    if not _IFNAME.match(name):
        raise _LineError(f"bad interface name {name!r}")
    return name


def _number(text: str, lo: int, hi: int, what: str = "number") -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise _LineError(f"expected a {what}, got {text!r}") from None
    if not lo <= v <= hi:
        raise _LineError(f"{what} {v} out of range {lo}..{hi}")
    return v


def _address(text: str) -> AddrItem:
    neg = False
    if text.startswith("!"):
        neg, text = True, text[1:]
    if text == "any":
        return AddrItem("any", neg=neg)
    if text.startswith("<") and text.endswith(">"):
        name = text[1:-1]
        if not _NAME.match(name.replace("-", "_")):
            raise _LineError(f"bad table name {text!r}")
        return AddrItem("table", table=name, neg=neg)
    if text in ("self", "(self)") or text.startswith("("):
        raise _LineError(f"{text!r}: only addresses, networks, tables and 'any' are supported")
    return AddrItem("net", prefix=_prefix(text), neg=neg)


def _prefix(text: str) -> Prefix:
    """``A.B.C.D``, ``A.B.C.D/N``, ``2001:db8::1``, ``2001:db8::/32``: a stack.addr
    Prefix with the host bits cleared (pfctl shows the network)."""
    addr_text, sep, plen_s = text.partition("/")
    if ":" in addr_text:
        try:
            a = parse_addr(addr_text)
        except ValueError:
            raise _LineError(f"bad address {text!r}") from None
    elif re.match(r"^\d{1,3}(\.\d{1,3}){3}$", addr_text):
        # strict dotted quad (parse_addr would take 0-prefixed or short forms too)
        parts = [int(x) for x in addr_text.split(".")]
        if any(p > 255 for p in parts):
            raise _LineError(f"bad address {text!r}")
        a = parse_addr(addr_text)
    else:
        raise _LineError(f"bad address {text!r}")
    top = 32 if is_v4(a) else 128
    plen = _number(plen_s, 0, top, "prefix length") if sep else top
    p = Prefix(a, plen)
    return Prefix(p.network, plen)


def _addr_spec(cur: _Cursor) -> list[AddrItem]:
    if cur.peek() == "{":
        return [_address(t) for t in _braced(cur, "an address")]
    neg = cur.accept("!") is not None
    tok = cur.peek_tok()
    if tok is None:
        raise _LineError("expected an address")
    cur.next()
    a = _address(tok.text)
    if neg:
        a.neg = not a.neg
    if a.kind == "any" and not a.neg:
        return []
    return [a]


def _rule_family(r: Rule) -> int:
    """The rule's family: ``inet``/``inet6`` as written, else the one its addresses
    name (as pfctl: ``from 2001:db8::/32`` makes an inet6 rule) or its protocol
    (``proto icmp6`` is IPv6's), else 0 (both). A rule whose addresses cannot meet in
    one family is refused."""
    fams = [{a.family for a in items} - {0} for items in (r.src, r.dst)]
    if r.protos and all(p == 58 for p in r.protos):
        if r.af == "inet":
            raise _LineError("proto icmp6 is IPv6's (inet6)")
        fams.append({AF_INET6})
    if r.af:
        fam = AF_WORDS[r.af]
        for items in (r.src, r.dst):
            for a in items:
                if a.family not in (0, fam):
                    raise _LineError(f"{a}: not an {r.af} address")
        return fam
    common = {AF_INET, AF_INET6}
    for f in fams:
        if f:
            common &= f
    if not common:
        raise _LineError("from and to name addresses of different families")
    return common.pop() if len(common) == 1 else 0


def _port(text: str, protos: list[int]) -> int:
    if text.isdigit():
        return _number(text, 0, 65535, "port")
    for p in protos or [6, 17]:
        try:
            return socket.getservbyname(text, "tcp" if p == 6 else "udp")
        except OSError:
            continue
    raise _LineError(f"unknown port {text!r}")


def _port_item(cur: _Cursor, first: str | None, protos: list[int]) -> PortOp:
    t = first if first is not None else cur.next("a port")
    if t in ("=", "!=", "<", "<=", ">", ">="):
        return PortOp(t, _port(cur.next("a port"), protos))
    if ":" in t:
        lo_s, _, hi_s = t.partition(":")
        lo, hi = _port(lo_s, protos), _port(hi_s, protos)
        if lo > hi:
            raise _LineError(f"port range {t}: start is above end")
        return PortOp(":", lo, hi)
    a = _port(t, protos)
    if cur.peek() in ("><", "<>"):
        op = cur.next()
        b = _port(cur.next("a port"), protos)
        return PortOp(op, a, b)
    return PortOp("=", a)


def _port_spec(cur: _Cursor, protos: list[int]) -> list[PortOp]:
    if cur.peek() == "{":
        cur.expect("{")
        ops = []
        while True:
            t = cur.next("a port or '}'")
            if t == "}":
                break
            if t == ",":
                continue
            ops.append(_port_item(cur, t, protos))
        if not ops:
            raise _LineError("empty port list")
        return ops
    return [_port_item(cur, None, protos)]


def _tcp_flags(text: str) -> int:
    bits = 0
    for ch in text:
        i = TCP_FLAG_LETTERS.find(ch)
        if i < 0:
            raise _LineError(f"unknown TCP flag {ch!r} (flags are {TCP_FLAG_LETTERS})")
        bits |= 1 << i
    return bits


def _icmp_types(cur: _Cursor, names: dict[str, int], what: str) -> list[int]:
    out = []
    for t in _list_or_one(cur, what):
        out.append(names[t] if t in names else _number(t, 0, 255, what))
    return out


def _parse_rule(cur: _Cursor, lineno: int) -> list[Rule]:
    """One rule, or one per type of an ``icmp-type``/``icmp6-type`` list (pfctl expands
    such lists into rules the same way)."""
    r = Rule(cur.next(), lineno=lineno)
    types: list[int] = []
    type_word = ""
    if r.action == "block":
        mode = cur.accept("drop", "return", "return-rst", "return-icmp", "return-icmp6")
        if mode is not None and mode != "drop":
            r.return_mode = mode
    d = cur.accept("in", "out")
    if d is not None:
        r.direction = d
    while True:  # log and quick, either order
        if cur.accept("log"):
            r.log = True
        elif cur.accept("quick"):
            r.quick = True
        else:
            break
    if cur.accept("on"):
        r.ifnames = [_ifname(n) for n in _list_or_one(cur, "an interface")]
    af = cur.accept("inet", "inet6")
    if af:
        r.af = af
    if cur.accept("proto"):
        for name in _list_or_one(cur, "a protocol"):
            if name in PROTO_NUMBERS:
                r.protos.append(PROTO_NUMBERS[name])
            elif name.isdigit():
                r.protos.append(_number(name, 0, 255, "protocol"))
            else:
                try:
                    r.protos.append(socket.getprotobyname(name))
                except OSError:
                    raise _LineError(f"unknown protocol {name!r}") from None
    if cur.accept("all"):
        pass
    else:
        if cur.accept("from"):
            r.src = _addr_spec(cur) if cur.peek() != "port" else []
            if cur.accept("port"):
                r.src_ports = _port_spec(cur, r.protos)
        if cur.accept("to"):
            r.dst = _addr_spec(cur) if cur.peek() != "port" else []
            if cur.accept("port"):
                r.dst_ports = _port_spec(cur, r.protos)
    state = ""
    while not cur.done():
        w = cur.next()
        if w == "flags":
            v = cur.next("flags like S/SA or any")
            if v == "any":
                r.flags = (0, 0)
                continue
            set_s, sep, mask_s = v.partition("/")
            bits, mask = _tcp_flags(set_s), _tcp_flags(mask_s) if sep else 0xFF
            if bits & ~mask:
                raise _LineError(f"flags {v}: set flags must be inside the mask")
            r.flags = (bits, mask)
        elif w in ("icmp-type", "icmp6-type"):
            if type_word:
                raise _LineError(f"{w} given twice")
            type_word = w
            v6 = w == "icmp6-type"
            types = _icmp_types(cur, ICMP6_TYPE_NAMES if v6 else ICMP_TYPE_NAMES,
                                "an ICMPv6 type" if v6 else "an ICMP type")
            r.icmp_type = types[0]
            if cur.accept("code"):
                r.icmp_code = _number(cur.next("an ICMP code"), 0, 255, "ICMP code")
        elif w in ("keep", "no", "modulate", "synproxy"):
            cur.expect("state")
            if w in ("modulate", "synproxy"):
                raise _LineError(f"'{w} state' is not supported; use 'keep state'")
            state = f"{w} state"
        elif w == "label":
            tok = cur.peek_tok()
            if tok is None or tok.kind != "str":
                raise _LineError('label needs a quoted string: label "text"')
            r.label = cur.next()
        else:
            raise _LineError(f"syntax error near {w!r}")
    r.state_word = state
    if r.action == "pass":
        r.keep_state = state != "no state"
    elif state == "keep state":
        raise _LineError("'keep state' applies to pass rules")
    # checks pf makes
    if (r.src_ports or r.dst_ports) and (not r.protos or any(p not in (6, 17) for p in r.protos)):
        raise _LineError("port only applies to tcp or udp (add proto tcp or proto udp)")
    if r.flags is not None and r.protos and 6 not in r.protos:
        raise _LineError("flags only apply to tcp")
    if type_word == "icmp-type" and r.protos != [1]:
        raise _LineError("icmp-type only applies to proto icmp")
    if type_word == "icmp6-type" and r.protos != [58]:
        raise _LineError("icmp6-type only applies to proto icmp6")
    r.family = _rule_family(r)
    if r.family == AF_INET6 and 1 in r.protos:
        raise _LineError("proto icmp is IPv4's; for IPv6 say proto icmp6")
    if r.flags == (0, 0):
        r.flags = None  # flags any
    elif r.flags is None and r.keep_state and (not r.protos or 6 in r.protos):
        r.flags = (_tcp_flags("S"), _tcp_flags("SA"))
    if len(types) > 1:
        return [dataclasses.replace(r, icmp_type=t) for t in types]
    return [r]
