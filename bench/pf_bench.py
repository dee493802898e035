"""pf benchmark: TCP bulk (the kernel sends, the stack receives) through a TAP, with pf
disabled, then enabled with 100 rules (stateful: the connection's packets match its
state), then with 100 stateless rules (every packet walks the whole compiled rule set).

    .venv/bin/python -m bench.pf_bench [--seconds 3]

Needs root and /dev/net/tun; everything runs in a private network namespace. Target
(issue 11): pf enabled with 100 rules ≥ 80% of the unfiltered throughput.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import uuid
from typing import Any

import trio

STACK_IP, KERNEL_IP, PORT = "10.78.0.2", "10.78.0.1", 5001

SENDER = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
buf = b"x" * 65536
end = time.monotonic() + float(sys.argv[3])
n = 0
while time.monotonic() < end:
    n += s.send(buf)
s.close()
print(n)
"""


def ruleset(stateful: bool) -> str:
    """100 rules: 98 that never match this traffic, a block, and the pass."""
    lines = ["table <bad> { 192.0.2.0/24, 198.51.100.7 }"]
    for i in range(49):
        lines.append(f"block in quick proto tcp from 172.16.{i}.0/24 to any port {1000 + i}")
        lines.append(f"pass in proto udp from any to 10.78.0.2 port {2000 + i}")
    lines.append("block in quick from <bad>")
    st = "keep state" if stateful else "no state"
    lines.append(f"pass proto tcp from any to any {'flags S/SA ' if stateful else ''}{st}")
    return "\n".join(lines) + "\n"


async def sink(st: Any, counter: list[int], task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    lst = st.tcp.socket()
    lst.bind((STACK_IP, PORT))
    lst.listen()
    task_status.started()
    async with trio.open_nursery() as n:
        while True:
            conn, _ = await lst.accept()

            async def drain(c: Any = conn) -> None:
                while True:
                    data = await c.recv(1 << 20)
                    if not data:
                        break
                    counter[0] += len(data)
                c.close()

            n.start_soon(drain)


async def run_once(ns: str, seconds: float, counter: list[int]) -> float:
    counter[0] = 0
    t0 = trio.current_time()
    await trio.run_process(["ip", "netns", "exec", ns, "python3", "-c", SENDER, STACK_IP,
                                str(PORT), str(seconds)], capture_stdout=True)
    await trio.sleep(0.3)
    dt = trio.current_time() - t0
    return counter[0] * 8 / dt / 1e6


async def main(seconds: float) -> int:
    from stack.l2.iface import IFF_UP
    from tests.conftest import running_stack

    ns = f"iopkt-pfbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")],
                                 protocols=[("pf", "")]) as st:
            st.interfaces["tap0"].set_flags(IFF_UP)
            st.inet.add_address("tap0", f"{STACK_IP}/24")
            for cmd in (["addr", "add", f"{KERNEL_IP}/24", "dev", "tap0"],
                        ["link", "set", "tap0", "up"], ["link", "set", "lo", "up"]):
                await trio.run_process(["ip", "-n", ns, *cmd])
            counter = [0]
            async with trio.open_nursery() as n:
                await n.start(sink, st, counter)
                await run_once(ns, 1, counter)  # warm up (ARP, caches)
                results = {}
                results["pf disabled"] = await run_once(ns, seconds, counter)
                st.pf.load(ruleset(True))
                st.pf.enable()
                results["pf enabled, 100 rules, keep state"] = await run_once(ns, seconds, counter)
                st.pf.load(ruleset(False))
                results["pf enabled, 100 rules, no state"] = await run_once(ns, seconds, counter)
                st.pf.disable()
                results["pf disabled again"] = await run_once(ns, seconds, counter)
                n.cancel_scope.cancel()
            base = (results["pf disabled"] + results["pf disabled again"]) / 2
            for name, mbit in results.items():
                print(f"{name:40} {mbit:10.1f} Mbit/s  {mbit / base * 100:6.1f}%")
            info = st.pf.stats
            print(f"pf: state matches {info['state-match']}, rule set evaluations "
                  f"{info['evaluations']}, rules {len(st.pf.ruleset.rules)}")
            worst = min(results["pf enabled, 100 rules, keep state"],
                        results["pf enabled, 100 rules, no state"])
            ok = worst >= 0.8 * base
            print(f"target >= 80% of unfiltered: {'met' if ok else 'NOT met'}")
            return 0 if ok else 1
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args()
    sys.exit(trio.run(main, a.seconds))
