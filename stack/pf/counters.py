"""The names of pf's counters, declared in one place (stack/counters.py); ``pfctl -s info``
shows them in the order given here. pf keeps them in plain dicts made from these names
(``Pf.counters``, ``Pf.stats``): a name not declared is a KeyError, and
tests/arch/test_counter_names.py reports it from the source."""

from __future__ import annotations

#: ``Pf.counters``: OpenBSD's pf_status counters, the "Counters" section of ``pfctl -s
#: info``, all shown (from 0). pf counts match, fragment, short and state-limit; the
#: others are what OpenBSD's pf counts and this one has no such check for.
COUNTER_NAMES = ("match", "bad-offset", "fragment", "short", "normalize", "memory",
                 "bad-timestamp", "congestion", "ip-option", "proto-cksum",
                 "state-mismatch", "state-insert", "state-limit", "src-limit", "synproxy",
                 "translate", "no-route")
PF_COUNTERS: frozenset[str] = frozenset(COUNTER_NAMES)

#: what a pass / block counts, by direction
PASS_BY_DIR = {"in": "pass-in", "out": "pass-out"}
BLOCK_BY_DIR = {"in": "block-in", "out": "block-out"}

#: ``Pf.stats``: the "Filter" section of ``pfctl -s info``, in its order
FILTER_NAMES = ("evaluations", "pass-in", "pass-out", "block-in", "block-out", "state-match",
                "return-rst", "return-icmp", "logged", "errors")
#: ... and ``return-failed`` (a return-rst/return-icmp that could not be sent), counted
#: but not shown there
PF_FILTER_COUNTERS: frozenset[str] = frozenset(FILTER_NAMES) | {"return-failed"}
