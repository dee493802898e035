"""Named counters: one at every decision point, so tests and netstat can assert on them.

A typo in a counter's name would start a new counter silently, so every component
declares its names in one place and passes them as ``declared``
(``Counters("udp", UDP_COUNTERS)``): a package's ``counters.py`` (stack/inet, stack/l2,
stack/transport, stack/transport/tcp, stack/bpf, rmgr/fuse; stack/pf's fill plain
dicts, the hot path's cheapest, where an undeclared name is a KeyError), a single-module
component at its top (stack/core.py's ``STACK_COUNTERS``, stack/pfil.py,
stack/neighbour.py), a loadable module in its own file (``COUNTERS`` in
modules/devnp-tap.py...). ``names()`` and ``ERRNO_NAMES`` below help write them. The
names are checked twice, never on the hot path:

* at run time, on the first use of a name only (``__missing__``): a name outside
  ``declared`` raises ``UndeclaredCounter`` when ``Counters.strict`` is on (the whole
  test suite turns it on, tests/conftest.py; ``IOPKT_STRICT_COUNTERS=1`` does it for a
  debug run and for the stacks the tests start), else it is recorded in ``undeclared``
  and counted as usual (a running stack never fails over a name). Names that come with
  a registration made at run time (an EtherType, a pfil head) are added by ``declare``;
* in the source, by a test (tests/arch/test_counter_names.py, over stack/, rmgr/,
  modules/): ``counter_keys(source)`` finds every ``c["..."]`` / ``counters["..."]``
  subscript (literal keys, f-strings and ``"prefix_" + x`` as patterns, both arms of
  ``a if x else b``) with what it counts into, and ``undeclared_keys`` reports those no
  declared name matches, or whose key is not a literal at all (so it cannot be checked).
"""

from __future__ import annotations

import ast
import errno
import os
import re
from collections import defaultdict
from collections.abc import Collection, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar


def names(text: str) -> frozenset[str]:
    """A declaration written as words: ``names("in_packets drop_own")``."""
    return frozenset(text.split())


#: every errno name, for the families of counters named after an error
#: (``drop_ECONNRESET``, ``tx_errno_ENOBUFS``...)
ERRNO_NAMES: tuple[str, ...] = tuple(sorted(errno.errorcode.values()))


class UndeclaredCounter(KeyError):
    """A counter name its group does not declare (strict mode)."""


class Counters(defaultdict[str, int]):
    """A group of named integer counters that start at zero.

    Hot paths do ``c["drop_bad_checksum"] += 1``; a plain dict subclass keeps that one
    dictionary operation (a declared group costs nothing more: its names are checked when
    first used only).
    """

    #: raise on a name outside ``declared`` (tests; ``IOPKT_STRICT_COUNTERS=1``)
    strict: ClassVar[bool] = os.environ.get("IOPKT_STRICT_COUNTERS", "") not in ("", "0")

    def __init__(self, group: str = "", declared: Iterable[str] | None = None) -> None:
        super().__init__(int)
        self.group = group
        self.declared: frozenset[str] | None = \
            frozenset(declared) if declared is not None else None
        #: names used that ``declared`` lacks (when not strict)
        self.undeclared: set[str] = set()

    def __missing__(self, key: str) -> int:
        declared = self.declared
        if declared is not None and key not in declared:
            if Counters.strict:
                raise UndeclaredCounter(f"counter {key!r} is not declared for group "
                                        f"{self.group!r}")
            self.undeclared.add(key)
        self[key] = 0
        return 0

    def declare(self, more: Iterable[str]) -> None:
        """Declare more names: those that come with a registration made at run time (an
        EtherType's ``in_0x...``, a pfil head's ``<head>_in_dropped``...). Nothing to do
        for a group that declares nothing."""
        if self.declared is not None:
            self.declared = self.declared | frozenset(more)

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self.items()))

    def render(self) -> Iterator[str]:
        for key, value in sorted(self.items()):
            yield f"{key} {value}"


# -- checking the source ---------------------------------------------------------------
@dataclass(frozen=True)
class CounterKey:
    """One ``counters[...]`` subscript (or counting call) found in the source."""

    line: int
    #: the name, or for an f-string or a concatenation a regular expression of the names
    #: it makes
    key: str
    kind: str  # "literal" | "pattern" | "dynamic" (not checkable: a variable...)
    #: what is counted into, as written, a local alias resolved (``c = self.counters``
    #: then ``c["x"]``: "self.counters"); for a counting call, the function called
    where: str = ""


def _pieces(node: ast.expr) -> list[str | None]:
    """The text of a string expression: literal pieces, None for each unknown one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [str(v.value) if isinstance(v, ast.Constant) else None for v in node.values]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _pieces(node.left) + _pieces(node.right)
    return [None]


def _keys(node: ast.expr, line: int, where: str, prefix: str = "") -> Iterator[CounterKey]:
    if isinstance(node, ast.IfExp):
        yield from _keys(node.body, line, where, prefix)
        yield from _keys(node.orelse, line, where, prefix)
        return
    pieces = ([prefix] if prefix else []) + _pieces(node)
    if all(p is not None for p in pieces):
        yield CounterKey(line, "".join(p for p in pieces if p is not None), "literal", where)
    elif any(pieces):
        rx = ""
        for p in pieces:
            rx += re.escape(p) if p is not None else "" if rx.endswith(".+") else ".+"
        yield CounterKey(line, rx, "pattern", where)
    else:
        yield CounterKey(line, ast.unparse(node), "dynamic", where)


def _name(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr \
        if isinstance(node, ast.Attribute) else None


def counter_keys(source: str, names: Container[str] = ("c", "counters"),
                 calls: Mapping[str, str] | None = None) -> list[CounterKey]:
    """Every subscript of a variable or attribute called one of ``names`` (``c[...]``,
    ``self.c[...]``, ``self.proto.counters[...]``) in ``source``; a function's local
    ``c = <expr>`` makes its ``c[...]`` count into ``<expr>`` (``where``). ``calls``
    names functions whose first argument is a counter name, with the prefix they put
    before it (``{"_refuse": "update_refused_"}``: ``self._refuse("static")`` counts
    ``update_refused_static``)."""
    found: list[CounterKey] = []
    calls = calls or {}

    def visit(node: ast.AST, aliases: dict[str, str]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            aliases = dict(aliases)
            for n in ast.walk(node):
                if isinstance(n, ast.Assign) and len(n.targets) == 1 \
                        and isinstance(n.targets[0], ast.Name) and n.targets[0].id in names:
                    aliases[n.targets[0].id] = ast.unparse(n.value)
        elif isinstance(node, ast.Subscript) and _name(node.value) in names:
            v = ast.unparse(node.value)
            found.extend(_keys(node.slice, node.lineno, aliases.get(v, v)))
        elif isinstance(node, ast.Call) and node.args and _name(node.func) in calls:
            fn = _name(node.func)
            assert fn is not None
            found.extend(_keys(node.args[0], node.lineno, ast.unparse(node.func), calls[fn]))
        for child in ast.iter_child_nodes(node):
            visit(child, aliases)

    visit(ast.parse(source), {})
    return sorted(found, key=lambda k: k.line)


def key_matches(k: CounterKey, declared: Collection[str]) -> bool:
    """A literal key is declared; a pattern matches at least one declared name; a
    dynamic key never matches (it cannot be checked)."""
    if k.kind == "literal":
        return k.key in declared
    if k.kind == "pattern":
        rx = re.compile(k.key)
        return any(rx.fullmatch(n) for n in declared)
    return False


def undeclared_keys(source: str, declared: Iterable[str],
                    names: Container[str] = ("c", "counters"),
                    calls: Mapping[str, str] | None = None) -> list[CounterKey]:
    """The keys of ``counter_keys(source)`` that no name of ``declared`` matches (an
    f-string must match at least one), and every key that is not a literal at all."""
    known = frozenset(declared)
    return [k for k in counter_keys(source, names, calls) if not key_matches(k, known)]
