"""The names of the bpf device's counters (the ``bpf`` group), declared in one place
(stack/counters.py); each reader's own ``recv``/``drop``/``capt`` are BSD's bpf_stat
fields, not counters of this group. Reported by tests/arch/test_counter_names.py."""

from __future__ import annotations

from stack.counters import names

#: opens of a bpf file, frames dropped for a full reader buffer, frames written (injected)
BPF_COUNTERS: frozenset[str] = names("opens drops injected")
