"""``config/stats/<proto>``, ``config/sockets`` and ``config/nicinfo/<IF>``.

Statistics are the stack's ``Counters`` groups, found by walking the components
(``stack.l2``, ``stack.pfil`` and every registered service: the IP layer and its parts,
the transports, modules' services...) for ``Counters`` objects and merging them by group
name. The walk reads each object's instance attributes (``vars``), two levels below the
service, whatever they are called: no attribute names are guessed, so a part that holds
a ``Counters`` (the IP layer's route table, ARP, reassembly; a module service's own) is
found however it names it. A component may also register a source explicitly with
``stack.control.stats.register(group, fn)``. The standard groups are always present
(empty when their layer is not loaded): ip, icmp, arp, udp, tcp, ether, stack.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from rmgr.nodes import Directory, Node, TextFile
from stack.control import backend
from stack.counters import Counters

if TYPE_CHECKING:  # cycle: the Control object owns these file groups, each holds it; types only
    from stack.control import Control

STANDARD_GROUPS = ("ip", "icmp", "arp", "udp", "tcp", "ether", "stack")
#: how many levels the walk reads: a service's attributes (1) and its parts' (2)
WALK_DEPTH = 2


def _parts(obj: object) -> Iterator[object]:
    """The instance attributes of ``obj`` that may hold counters: Counters themselves,
    the Counters values of a dict, and objects with attributes of their own (not
    functions, bound methods, classes or modules)."""
    try:
        attrs = vars(obj)
    except TypeError:  # no instance dict (slots, builtins): nothing to walk
        return
    for sub in list(attrs.values()):
        if isinstance(sub, Counters):
            yield sub
        elif isinstance(sub, dict):
            yield from (v for v in list(sub.values()) if isinstance(v, Counters))
        elif not (callable(sub) or isinstance(sub, type | types.ModuleType)):
            yield sub


class StatsFiles:
    def __init__(self, control: Control) -> None:
        self.control = control
        self.stack = control.stack
        self.sources: dict[str, list[Callable[[], Mapping[str, int]]]] = {}

    def register(self, group: str, fn: Callable[[], Mapping[str, int]]) -> None:
        self.sources.setdefault(group, []).append(fn)

    def publish(self, cfg: Directory) -> None:
        cfg.add("stats", Directory(dynamic=self._stat_entries))
        cfg.add("sockets", TextFile(lambda: backend.render_sockets(self.stack)))
        cfg.add("nicinfo", self.control.interfaces.nicinfo_dir())

    def _stat_entries(self) -> dict[str, Node]:
        return {g: TextFile(functools.partial(self.render, g)) for g in self.groups()}

    # -- collection ------------------------------------------------------------------
    def collect(self) -> dict[str, dict[str, int]]:
        groups: dict[str, dict[str, int]] = {g: {} for g in STANDARD_GROUPS}
        seen: set[int] = set()

        def add(c: Counters) -> None:
            if id(c) in seen or not c.group:
                return
            seen.add(id(c))
            dst = groups.setdefault(c.group, {})
            for k, v in c.items():
                dst[k] = dst.get(k, 0) + v

        def walk(obj: object, depth: int) -> None:
            if id(obj) in seen:
                return
            if isinstance(obj, Counters):
                add(obj)
                return
            seen.add(id(obj))
            for sub in _parts(obj):
                if isinstance(sub, Counters):
                    add(sub)
                elif depth < WALK_DEPTH:
                    walk(sub, depth + 1)

        stack = self.stack
        add(stack.counters)
        add(stack.fuse_counters)
        add(stack.rx_batch.counters)
        # the stack's own parts, then every registered service (built-in layers and
        # what modules provide), each with the components it holds
        for part in (stack.l2, stack.pfil, *(v for _, v in stack.services.items())):
            walk(part, 1)
        for group, fns in self.sources.items():
            dst = groups.setdefault(group, {})
            for fn in fns:
                try:
                    for k, v in fn().items():
                        dst[k] = dst.get(k, 0) + int(v)
                except Exception:  # a broken source shows as a counter, not an error
                    dst["stats_source_errors"] = dst.get("stats_source_errors", 0) + 1
        return groups

    def groups(self) -> list[str]:
        return sorted(self.collect())

    def render(self, group: str) -> str:
        values = self.collect().get(group, {})
        return "".join(f"{k} {v}\n" for k, v in sorted(values.items()))
