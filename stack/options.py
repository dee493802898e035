"""The io-pkt option grammar: one comma-separated word per module.

``name=tap0,netns=demo,promisc`` gives ``{"name": "tap0", "netns": "demo", "promisc": ""}``.
A value may not contain a comma (as in QNX); a key without ``=`` is a flag. A key given
more than once (``bind=tap0,bind=tap1``, as lsm-qnet takes it) keeps its last value as
the dict's, and every value in order for ``get_all``.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger("io-pkt")

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class OptionError(ValueError):
    pass


class Options(dict[str, str]):
    """Parsed options of one module; remembers which keys the module used."""

    def __init__(self, *args: object, **kw: str) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.used: set[str] = set()
        #: every value of each key, in order (a repeated key has several)
        self.values_of: dict[str, list[str]] = {}

    @classmethod
    def parse(cls, word: str | None) -> Options:
        opts = cls()
        if not word:
            return opts
        for item in word.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip()
            if not _KEY.match(key):
                raise OptionError(f"bad option {item!r}: a key is letters, digits, '_', '.', '-'")
            opts[key] = value if sep else ""
            opts.values_of.setdefault(key, []).append(opts[key])
        return opts

    def get_all(self, key: str) -> list[str]:
        """Every value given for ``key``, in order (``[]`` when absent)."""
        self.used.add(key)
        if key in self.values_of:
            return list(self.values_of[key])
        return [self[key]] if key in self else []

    def get_str(self, key: str, default: str | None = None) -> str | None:
        self.used.add(key)
        return self.get(key, default)

    def flag(self, key: str) -> bool:
        """A flag is on when given bare (``promisc``) or as 1/yes/on/true."""
        self.used.add(key)
        if key not in self:
            return False
        return self[key].lower() in ("", "1", "yes", "on", "true")

    def get_int(self, key: str, default: int | None = None, *, lo: int | None = None,
                hi: int | None = None) -> int | None:
        self.used.add(key)
        if key not in self:
            return default
        try:
            value = int(self[key], 0)
        except ValueError:
            raise OptionError(f"option {key}={self[key]!r}: not an integer") from None
        if lo is not None and value < lo or hi is not None and value > hi:
            raise OptionError(f"option {key}={value}: out of range [{lo}, {hi}]")
        return value

    def get_float(self, key: str, default: float | None = None) -> float | None:
        self.used.add(key)
        if key not in self:
            return default
        try:
            return float(self[key])
        except ValueError:
            raise OptionError(f"option {key}={self[key]!r}: not a number") from None

    def warn_unknown(self, owner: str, known: set[str] | None = None) -> list[str]:
        """Log (never fail on) options nobody used, as io-pkt does."""
        known = (known or set()) | self.used
        unknown = [k for k in self if k not in known]
        for key in unknown:
            log.warning("%s: unknown option %r ignored", owner, key)
        return unknown

    def word(self) -> str:
        return ",".join(k if v == "" else f"{k}={v}" for k, v in self.items())
