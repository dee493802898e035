"""The transports' sysctls: each protocol keeps a live config object (``TCPConfig``,
``UDPConfig``) whose attributes follow their ``net.inet.*`` knobs."""

from __future__ import annotations

import errno

from stack.sysctl import Sysctl

#: sysctl name, config attribute, unit scale (ms→s: 1000; 0: as is), description, lo, hi
Knobs = list[tuple[str, str, float, str, int | None, int | None]]


def register_sysctls(sysctl: Sysctl, cfg: object, knobs: Knobs) -> None:
    for name, attr, scale, desc, lo, hi in knobs:
        cur = getattr(cfg, attr)
        default: int | str = cur if isinstance(cur, str) else int(round(cur * scale)) if scale else int(cur)

        def setter(v: int | str, attr: str = attr, scale: float = scale) -> None:
            if attr == "cc_algorithm":
                from stack.transport.tcp.congestion import ALGORITHMS
                if v not in ALGORITHMS:
                    raise OSError(errno.EINVAL, f"unknown congestion control {v!r}")
                setattr(cfg, attr, v)
            elif isinstance(v, str) or not scale:
                setattr(cfg, attr, v)
            else:
                setattr(cfg, attr, v / scale)

        knob = sysctl.register(name, default, desc, lo=lo, hi=hi, on_change=setter)
        # a value set before we registered wins
        if knob.value != default:
            setter(knob.value)
