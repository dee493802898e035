"""IPv4 layer benchmark: the ``ping`` and ``fwd`` workloads of ``python -m bench``
(bench/workloads.py) alone: ping round trip kernel → stack (p50/p99) and UDP packets/s
forwarded by the stack between two namespaces, each beside the kernel in the same run.

    python -m bench.inet_bench [--runs N] [--seconds S] [--pings N] [--no-kernel] ...

Any option of ``python -m bench`` passes through; nothing is written to
docs/performance.md. Needs root and /dev/net/tun.
"""

from __future__ import annotations

import sys

from bench.__main__ import main as bench_main


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return bench_main(["--only", "ping", "--only", "fwd", "--no-write", *args])


if __name__ == "__main__":
    sys.exit(main())
