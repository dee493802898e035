"""Named counters: one at every decision point, so tests and netstat can assert on them.

A typo in a counter's name would start a new counter silently, so a component declares
its names in one place (a frozenset beside the component, e.g.
``stack/transport/counters.py``) and passes them as ``declared``. They are checked twice,
never on the hot path:

* at run time, on the first use of a name only (``__missing__``): a name outside
  ``declared`` raises ``UndeclaredCounter`` when ``Counters.strict`` is on (tests turn it
  on; ``IOPKT_STRICT_COUNTERS=1`` does it for a debug run), else it is recorded in
  ``undeclared`` and counted as usual (a running stack never fails over a name);
* in the source, by a test: ``counter_keys(source)`` finds every ``c["..."]`` /
  ``counters["..."]`` subscript (literal keys, f-strings as patterns, ``a if x else b``)
  and ``undeclared_keys`` reports those no declared name matches, or whose key is not
  a literal at all (so it cannot be checked).
"""

from __future__ import annotations

import ast
import os
import re
from collections import defaultdict
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar


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

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self.items()))

    def render(self) -> Iterator[str]:
        for key, value in sorted(self.items()):
            yield f"{key} {value}"


# -- checking the source ---------------------------------------------------------------
@dataclass(frozen=True)
class CounterKey:
    """One ``counters[...]`` subscript found in the source."""

    line: int
    #: the name, or for an f-string a regular expression of the names it makes
    key: str
    kind: str  # "literal" | "pattern" | "dynamic" (not checkable: a variable...)


def _keys(node: ast.expr, line: int) -> Iterator[CounterKey]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield CounterKey(line, node.value, "literal")
    elif isinstance(node, ast.JoinedStr):
        parts = [re.escape(str(v.value)) if isinstance(v, ast.Constant) else ".+"
                 for v in node.values]
        yield CounterKey(line, "".join(parts), "pattern")
    elif isinstance(node, ast.IfExp):
        yield from _keys(node.body, line)
        yield from _keys(node.orelse, line)
    else:
        yield CounterKey(line, ast.unparse(node), "dynamic")


def counter_keys(source: str, names: Container[str] = ("c", "counters")) -> list[CounterKey]:
    """Every subscript of a variable or attribute called one of ``names`` (``c[...]``,
    ``self.c[...]``, ``self.proto.counters[...]``) in ``source``."""
    found: list[CounterKey] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Subscript):
            continue
        v = node.value
        name = v.id if isinstance(v, ast.Name) else v.attr if isinstance(v, ast.Attribute) \
            else None
        if name in names:
            found.extend(_keys(node.slice, node.lineno))
    return found


def undeclared_keys(source: str, declared: Iterable[str],
                    names: Container[str] = ("c", "counters")) -> list[CounterKey]:
    """The keys of ``counter_keys(source)`` that no name of ``declared`` matches (an
    f-string must match at least one), and every key that is not a literal at all."""
    known = frozenset(declared)
    bad = []
    for k in counter_keys(source, names):
        if k.kind == "literal":
            ok = k.key in known
        elif k.kind == "pattern":
            rx = re.compile(k.key)
            ok = any(rx.fullmatch(n) for n in known)
        else:
            ok = False
        if not ok:
            bad.append(k)
    return bad
