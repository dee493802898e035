"""Named counters: one at every decision point, so tests and netstat can assert on them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator


class Counters(defaultdict[str, int]):
    """A group of named integer counters that start at zero.

    Hot paths do ``c["drop_bad_checksum"] += 1``; a plain dict subclass keeps that one
    dictionary operation.
    """

    def __init__(self, group: str = "") -> None:
        super().__init__(int)
        self.group = group

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self.items()))

    def render(self) -> Iterator[str]:
        for key, value in sorted(self.items()):
            yield f"{key} {value}"
