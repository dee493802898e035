"""Parsers for the control files' text formats (docs/control.md), shared by the tools."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stanza:
    """``NAME:`` then tab-indented ``key value...`` lines (keys may repeat)."""

    name: str
    items: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str, default: str = "") -> str:
        for k, v in self.items:
            if k == key:
                return v
        return default

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.items if k == key]

    def counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.all("counter"):
            name, _, value = v.partition(" ")
            out[name] = int(value) if value.lstrip("-").isdigit() else 0
        return out


def stanzas(text: str) -> list[Stanza]:
    out: list[Stanza] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace() and line.rstrip().endswith(":"):
            out.append(Stanza(line.rstrip()[:-1]))
        elif out:
            key, _, rest = line.strip().partition(" ")
            out[-1].items.append((key, rest))
    return out


def table(text: str) -> list[dict[str, str]]:
    """A header row of column names, then whitespace-separated rows (``-`` = empty)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    cols = lines[0].split()
    rows = []
    for ln in lines[1:]:
        vals = ln.split(None, len(cols) - 1)
        vals += [""] * (len(cols) - len(vals))
        rows.append({c: ("" if v == "-" else v) for c, v in zip(cols, vals, strict=True)})
    return rows


def keyvalues(text: str) -> dict[str, str]:
    """``key value`` lines."""
    out = {}
    for ln in text.splitlines():
        k, _, v = ln.strip().partition(" ")
        if k:
            out[k] = v
    return out
