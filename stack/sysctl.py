"""The sysctl tree: named, typed knobs that protocols register (net.inet.ip.forwarding...)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Knob:
    name: str
    value: int | str
    description: str = ""
    lo: int | None = None
    hi: int | None = None
    readonly: bool = False
    on_change: list[Callable[[int | str], None]] = field(default_factory=list)


class Sysctl:
    def __init__(self) -> None:
        self.knobs: dict[str, Knob] = {}

    def register(self, name: str, default: int | str, description: str = "", *,
                 lo: int | None = None, hi: int | None = None, readonly: bool = False,
                 on_change: Callable[[int | str], None] | None = None) -> Knob:
        knob = self.knobs.get(name)
        if knob is None:
            knob = Knob(name, default, description, lo, hi, readonly)
            self.knobs[name] = knob
        if on_change is not None:
            knob.on_change.append(on_change)
        return knob

    def get(self, name: str) -> int | str:
        knob = self.knobs.get(name)
        if knob is None:
            raise OSError(errno.ENOENT, f"unknown sysctl {name!r}")
        return knob.value

    def __getitem__(self, name: str) -> int | str:
        return self.knobs[name].value

    def set(self, name: str, text: str | int) -> int | str:
        knob = self.knobs.get(name)
        if knob is None:
            raise OSError(errno.ENOENT, f"unknown sysctl {name!r}")
        if knob.readonly:
            raise OSError(errno.EPERM, f"sysctl {name} is read-only")
        value: int | str
        if isinstance(knob.value, int):
            try:
                value = int(text, 0) if isinstance(text, str) else int(text)
            except ValueError:
                raise OSError(errno.EINVAL, f"sysctl {name} takes an integer, not {text!r}") from None
            if (knob.lo is not None and value < knob.lo) or (knob.hi is not None and value > knob.hi):
                raise OSError(errno.EINVAL, f"sysctl {name}={value} out of range [{knob.lo}, {knob.hi}]")
        else:
            value = str(text)
        knob.value = value
        for fn in knob.on_change:
            fn(value)
        return value

    def render(self) -> str:
        return "".join(f"{k.name}={k.value}\n" for k in sorted(self.knobs.values(), key=lambda k: k.name))
