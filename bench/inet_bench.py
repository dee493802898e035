"""IPv4 layer benchmark: ping round trip kernel → stack (p50/p99 over N pings) beside
kernel → kernel over veth, and packets/s forwarded by the stack between two namespaces.

    python -m bench.inet_bench [--count 1000] [--markdown]

The stack runs in this process (trio) with devnp-tap interfaces inside private
namespaces; 198.18.0.0/15 (RFC 2544) addresses exist only inside them. Needs root and
/dev/net/tun.
"""

from __future__ import annotations

import argparse
import re
import time

import trio

from bench.common import Row, machine, netns, percentile, sh, table, veth_pair

_TIME = re.compile(r"time=([0-9.]+) ms")


def rtts(out: str) -> list[float]:
    return [float(x) * 1000 for x in _TIME.findall(out)]  # µs


async def _ping(ns: str, dst: str, count: int, *extra: str) -> str:
    r = await trio.run_process(["ip", "netns", "exec", ns, "ping", "-n", "-c", str(count),
                                *extra, dst], capture_stdout=True, capture_stderr=True,
                               check=False)
    return r.stdout.decode()


async def stack_side(count: int) -> tuple[list[float], float | None]:
    from stack.core import Stack, StackConfig
    from stack.l2.iface import IFF_UP
    from stack.options import Options

    with netns("pa") as a, netns("pb") as b:
        cfg = StackConfig(mount=False, tcpip=Options.parse("forward"),
                          drivers=[("tap", Options.parse(f"name=tap0,netns={a}")),
                                   ("tap", Options.parse(f"name=tap1,netns={b}"))])
        st = Stack(cfg)
        async with trio.open_nursery() as nursery:
            await nursery.start(st.run)
            for ifname, ns, mine, peer in (("tap0", a, "198.18.1.254", "198.18.1.1"),
                                           ("tap1", b, "198.18.2.254", "198.18.2.1")):
                st.interfaces[ifname].set_flags(IFF_UP)
                st.inet.add_address(ifname, f"{mine}/24")  # type: ignore[attr-defined]
                sh("ip", "-n", ns, "addr", "add", f"{peer}/24", "dev", ifname)
                sh("ip", "-n", ns, "link", "set", ifname, "up")
                sh("ip", "-n", ns, "route", "add", "default", "via", mine)
            await _ping(a, "198.18.1.254", 5, "-i", "0.01")  # warm up ARP
            out = await _ping(a, "198.18.1.254", count, "-i", "0.002")
            lat = rtts(out)
            await _ping(a, "198.18.2.1", 5, "-i", "0.01")
            before = st.inet.counters["forwarded"]  # type: ignore[attr-defined]
            ff0 = st.l2.fastfwd.counters["forwarded"]
            t0 = time.perf_counter()
            await _ping(a, "198.18.2.1", count * 3, "-f")
            dt = time.perf_counter() - t0
            fwd = (st.inet.counters["forwarded"] - before  # type: ignore[attr-defined]
                   + st.l2.fastfwd.counters["forwarded"] - ff0)
            pps = fwd / dt if dt > 0 else None
            await st.shutdown()
            nursery.cancel_scope.cancel()
    return lat, pps


def kernel_side(count: int) -> list[float]:
    with veth_pair() as (a, _b):
        sh("ip", "netns", "exec", a, "ping", "-c", "5", "-i", "0.01", "198.18.0.2")
        out = sh("ip", "netns", "exec", a, "ping", "-n", "-c", str(count), "-i", "0.002",
                 "198.18.0.2")
        return rtts(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    lat, pps = trio.run(stack_side, args.count)
    klat = kernel_side(args.count)
    rows = [
        Row("ping p50 kernel→stack", "µs", percentile(lat, 50), percentile(klat, 50), "<= 60",
            f"{len(lat)} replies"),
        Row("ping p99 kernel→stack", "µs", percentile(lat, 99), percentile(klat, 99), "-"),
        Row("forwarded (ping -f through the stack)", "pkt/s", pps, None, "-"),
    ]
    print(machine())
    print(table(rows, args.markdown), end="")


if __name__ == "__main__":
    main()
