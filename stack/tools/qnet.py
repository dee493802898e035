"""``io-pkt qnet [nodes|stats]``: the Qnet state of a running stack (lsm-qnet), read from
``$SOCK/net/.qnet/``: this node, every known node with its links (up/down, frames, in
flight) and connections (QoS, RTT, RTO, retransmissions), and the counters."""

from __future__ import annotations

import sys

from stack.tools.common import pop_prefix, wants_help

TOOL = "qnet"
USAGE = "usage: qnet [nodes|stats]"


def main(argv: list[str]) -> int:
    prefix, args = pop_prefix(argv)
    if wants_help(args):
        print(USAGE)
        return 0
    what = args[0] if args else "all"
    if what not in ("all", "nodes", "stats") or len(args) > 1:
        print(f"io-pkt qnet: {USAGE}", file=sys.stderr)
        return 2
    out = []
    try:
        for name in (["nodes", "stats"] if what == "all" else [what]):
            with open(f"{prefix}/net/.qnet/{name}", encoding="utf-8") as fh:
                out.append(fh.read())
    except OSError as exc:
        print(f"io-pkt qnet: no Qnet at {prefix}/net ({exc.strerror}); "
              "is lsm-qnet loaded? (io-pkt -p qnet)", file=sys.stderr)
        return 1
    sys.stdout.write("".join(out))
    return 0
