"""A fragment flood (issue 14, item 3): first fragments with ever-new IP ids, never
completed, as fast as the tap takes them, from the kernel's namespace. Every datagram is
evicted long before its 30 s timer; memory must stay bounded by the configured limits
(net.inet.ip.maxfragmem, maxfragpackets) whatever the rate, during the flood and after
it, and the reassembly counters must show the byte limit held."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from tests.reliability.helpers import (
    KERNEL_IP,
    STACK_IP,
    TapStack,
    delta,
    needs_tap_stack,
    settled,
)

pytestmark = [needs_tap_stack]

NSATTACK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nsattack.py")
FLOOD_SECONDS = 8
MAXFRAGMEM = 1 << 20
#: RSS growth allowed: what the byte limit holds (1 MiB of frames, ~2.2 kB charged
#: each) plus Python's own arenas and the queues' bookkeeping; the old heap of cancelled
#: timers grew by ~130 bytes per evicted datagram (+100 MB at 800,000)
RSS_BOUND_KB = 20_000


def test_fragment_flood_memory_bounded(netns: Any, stack_process: Any) -> None:
    ts = TapStack.start(stack_process, netns)
    ts.sp.tool("sysctl", "-w", f"net.inet.ip.maxfragmem={MAXFRAGMEM}")
    netns.run("ip", "link", "set", "tap0", "txqueuelen", "10000")
    assert ts.ping(2)
    rss0 = ts.rss_kb()
    before = ts.stats("reass")
    flood = netns.popen(sys.executable, NSATTACK, "fragflood", str(FLOOD_SECONDS), ts.mac(),
                        KERNEL_IP, STACK_IP, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = rss0
    try:
        while flood.poll() is None:
            peak = max(peak, ts.rss_kb())
            time.sleep(0.2)
        out, err = flood.communicate(timeout=30)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.communicate()
    assert flood.returncode == 0, err.decode()[-1000:]
    settled(lambda: ts.stats("reass").get("frag_in", 0), quiet=1.0, timeout=60, step=0.2)
    after = ts.rss_kb()
    peak = max(peak, after)
    reass = ts.stats("reass")
    d = delta(before, reass)
    print(f"fragment flood: {out.decode().strip()}, reass {d}, RSS {rss0} -> peak {peak}, "
          f"after {after} kB")
    # enough datagrams to show a retention: >= 100,000 evicted queues
    assert d.get("frag_in", 0) >= 100_000, d
    assert peak - rss0 < RSS_BOUND_KB, (rss0, peak, after, d)
    assert after - rss0 < RSS_BOUND_KB, (rss0, peak, after, d)
    # the byte limit held: never more than maxfragmem charged, and everything beyond it
    # was evicted (oldest first) rather than kept
    assert 0 < reass.get("mem_peak", 0) <= MAXFRAGMEM, reass
    assert reass.get("mem", 0) <= MAXFRAGMEM, reass
    assert d.get("frag_evicted", 0) >= d["frag_in"] - 1024, d
    assert ts.ping(2)
