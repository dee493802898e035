"""Every counter the transports count is declared (stack/counters.py): the source of
stack/transport is scanned for ``c["..."]`` / ``counters["..."]`` keys (literals,
f-strings as patterns, both arms of ``a if x else b``) and each must be a declared name
of the component the file counts into; a key that is not a literal cannot be checked
and fails too. At run time the tests' strict mode (conftest.py) catches the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack.counters import Counters, UndeclaredCounter, counter_keys, undeclared_keys
from stack.transport.counters import PORTS, RAW_COUNTERS, SOCKETS, UDP_COUNTERS
from stack.transport.tcp.counters import TCP_COUNTERS

ROOT = Path(__file__).resolve().parents[2] / "stack" / "transport"

#: which declared names each file of stack/transport counts into (first match wins)
BY_FILE: list[tuple[str, frozenset[str]]] = [
    ("tcp/", TCP_COUNTERS),
    ("udp.py", UDP_COUNTERS),
    ("raw.py", RAW_COUNTERS),
    ("ports.py", PORTS),     # TCP's and UDP's counters (both declare these)
    ("sockopt.py", SOCKETS),  # every transport's (all declare these)
]


def _declared_for(rel: str) -> frozenset[str]:
    for prefix, names in BY_FILE:
        if rel.startswith(prefix):
            return names
    return frozenset()


def test_every_counter_key_in_the_transports_is_declared() -> None:
    problems = []
    files = sorted(ROOT.rglob("*.py"))
    assert len(files) > 15
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for k in undeclared_keys(path.read_text(), _declared_for(rel)):
            problems.append(f"stack/transport/{rel}:{k.line}: {k.kind} counter key {k.key!r}")
    assert not problems, "undeclared counters (declare them in stack/transport/counters.py " \
        "or tcp/counters.py):\n" + "\n".join(problems)


def test_shared_names_are_declared_by_their_users() -> None:
    assert SOCKETS <= TCP_COUNTERS and SOCKETS <= UDP_COUNTERS and SOCKETS <= RAW_COUNTERS
    assert PORTS <= TCP_COUNTERS and PORTS <= UDP_COUNTERS


def test_the_scan_finds_typos_patterns_and_unknowable_keys() -> None:
    src = '''
def f(self, c, err, state):
    c["drop_bad_chksum"] += 1
    self.c[f"state_{state}_to_CLOSED"] += 1
    self.proto.counters["syn_out" if err else "synack_oot"] += 1
    c[err] += 1
    other["not_a_counter"] += 1
'''
    declared = {"drop_bad_checksum", "state_LISTEN_to_CLOSED", "syn_out", "synack_out"}
    assert [(k.kind, k.key) for k in counter_keys(src)] == [
        ("literal", "drop_bad_chksum"), ("pattern", "state_.+_to_CLOSED"),
        ("literal", "syn_out"), ("literal", "synack_oot"), ("dynamic", "err")]
    bad = [(k.line, k.key) for k in undeclared_keys(src, declared)]
    assert bad == [(3, "drop_bad_chksum"), (5, "synack_oot"), (6, "err")]


def test_strict_mode_raises_on_an_undeclared_name() -> None:
    c = Counters("demo", {"known"})
    c["known"] += 1
    with pytest.raises(UndeclaredCounter):
        c["unknown"] += 1
    Counters.strict = False  # the conftest fixture restores it
    c["unknown"] += 1  # a running stack counts it and remembers the name
    assert c["unknown"] == 1 and c.undeclared == {"unknown"}
    assert Counters("free")["anything"] == 0  # no declaration: no check
