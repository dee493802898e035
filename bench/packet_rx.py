"""devnp-packet receive rate: the kernel floods frames into a devnp-packet interface and
we count what the stack takes in per second, for each receive configuration (the
PACKET_RX_RING by default, ``ring=0``: one recvmsg per frame, ...). Not a test and not
part of ``python -m bench``: a quick comparison, run as root::

    sudo .venv/bin/python -m bench.packet_rx [--seconds 3] [--size 60] [--rounds 3]
        [--config ring=0 --config "" ...] [--module PATH]

Per configuration and round: a fresh namespace with a veth pair va/vb; a stack in this
process (pinned to CPU 0 when there are two or more) with ``-d packet if=vb,<config>``,
interface up, nothing registered for the frames' EtherType (0x88B5), so each frame costs
the driver plus layer 2's input and dispatch, then is dropped (``unknown_ethertype``);
``--senders`` processes in the namespace (pinned to the other CPUs) send ``--size``-byte
frames to vb's MAC on va as fast as they can (sendmmsg, 256 frames per call), for 0.5 s
of warm-up plus ``--seconds`` measured. Reported: frames/s the stack delivered (Δ ipackets / Δ time),
the stack process's CPU time per delivered frame (all of it: driver, layer 2, trio;
the senders and the kernel's receive path run on the other CPU), frames per poll
wake-up, frames/s offered, and the kernel's drops (PACKET_STATISTICS).
Then a burst: with the trio loop blocked, 1,000 frames are sent; how many the stack gets
once it runs again is the depth of the ring or socket buffer. Rounds alternate the
configurations; the median is printed. ``--module`` loads the driver from a file (e.g. a
copy of an older devnp-packet.py, for a before/after)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import time
from typing import Any

import trio

from bench.common import PY, netns, sh
from stack.core import Stack, StackConfig
from stack.l2.iface import IFF_UP
from stack.netns import LinkControl, socket_in_netns
from stack.options import Options

ETYPE = 0x88B5

#: a flood sender: sendmmsg (through ctypes) of 256 copies of one frame per call
_SENDER = """
import ctypes, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((sys.argv[1], 0))
frame, secs, batch = bytes.fromhex(sys.argv[2]), float(sys.argv[3]), 256
fbuf = ctypes.create_string_buffer(frame, len(frame))
iov = iovec(ctypes.cast(fbuf, ctypes.c_void_p), len(frame))
msgs = (mmsghdr * batch)()
for m in msgs:
    m.hdr.iov, m.hdr.iovlen = ctypes.pointer(iov), 1
fd, n = s.fileno(), 0
end = time.monotonic() + secs
while time.monotonic() < end:
    r = libc.sendmmsg(fd, msgs, batch, 0)
    if r < 0:
        raise OSError(ctypes.get_errno(), "sendmmsg")
    n += r
print(n)
"""


def _mac(ns: str, ifname: str) -> bytes:
    ctl = LinkControl(ns)
    try:
        return ctl.get_mac(ifname)
    finally:
        ctl.close()


async def one_run(driver: str, config: str, size: int, seconds: float, senders: int,
                  cpus: list[int]) -> dict[str, Any]:
    with netns("prx") as ns:
        sh("ip", "netns", "exec", ns, "ip", "link", "add", "va", "type", "veth", "peer",
           "name", "vb")
        for dev in ("va", "vb"):
            sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        opts = f"if=vb,netns={ns}" + (f",{config}" if config else "")
        cfg = StackConfig(tcpip=Options.parse(""), mount=False,
                          drivers=[(driver, Options.parse(opts))], protocols=[])
        stack = Stack(cfg)
        async with trio.open_nursery() as nursery:
            await nursery.start(stack.run)
            try:
                iface = stack.interfaces["pkt0"]
                iface.set_flags(IFF_UP)
                frame = (iface.mac + _mac(ns, "va") + ETYPE.to_bytes(2, "big")).ljust(size, b"x")
                pin = ["taskset", "-c", ",".join(map(str, cpus[1:]))] if len(cpus) > 1 else []
                procs = [subprocess.Popen(
                    [*pin, "ip", "netns", "exec", ns, PY, "-c", _SENDER, "va", frame.hex(),
                     str(seconds + 1.0)], stdout=subprocess.PIPE, text=True)
                    for _ in range(senders)]
                c = iface.counters
                await trio.sleep(0.5)
                describe = getattr(iface, "describe", dict)
                describe()  # zero the kernel's drop counter (clear on read)
                t0, p0, w0, d0 = time.perf_counter(), c["ipackets"], c["rx_wakeups"], \
                    c["rx_kernel_drops"]
                cpu0 = time.process_time()
                await trio.sleep(seconds)
                cpu1 = time.process_time()
                describe()
                t1, p1, w1, d1 = time.perf_counter(), c["ipackets"], c["rx_wakeups"], \
                    c["rx_kernel_drops"]
                sent = 0
                for p in procs:
                    out, _ = await trio.to_thread.run_sync(p.communicate)
                    sent += int(out.strip() or 0)
                await trio.sleep(0.3)
                # the burst: 1000 frames while this loop cannot run
                before = c["ipackets"]
                s = socket_in_netns(ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
                try:
                    s.bind(("va", 0))
                    for _ in range(1000):
                        s.send(frame)
                    time.sleep(0.2)
                finally:
                    s.close()
                await trio.sleep(0.5)
                burst = c["ipackets"] - before
                facts: dict[str, str] = describe()
            finally:
                with trio.CancelScope(shield=True):
                    await stack.shutdown()
                nursery.cancel_scope.cancel()
    dt = t1 - t0
    return {"rx_fps": (p1 - p0) / dt, "cpu_us": (cpu1 - cpu0) * 1e6 / max(1, p1 - p0), "per_wakeup": (p1 - p0) / max(1, w1 - w0),
            "offered_fps": sent / (seconds + 1.0), "kernel_drops_fps": (d1 - d0) / dt,
            "burst_1000": burst, "rx_path": facts.get("rx_path", "recvmsg"),
            "rx_ring": facts.get("rx_ring", "-")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=60, help="frame size (bytes, >= 14)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--senders", type=int, default=1)
    ap.add_argument("--config", action="append",
                    help='driver options to compare (default: "" and "ring=0")')
    ap.add_argument("--module", default="packet", help="driver: name or path to a file")
    ap.add_argument("--json", action="store_true", help="one JSON line per run as well")
    args = ap.parse_args()
    configs = args.config if args.config is not None else ["", "ring=0"]
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[0]})
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    for r in range(args.rounds):
        for config in configs:
            res = trio.run(one_run, args.module, config, args.size, args.seconds,
                           args.senders, cpus)
            results[config].append(res)
            if args.json:
                print(json.dumps({"round": r, "config": config, **res}), flush=True)
    print(f"{args.size}-byte frames, {args.seconds:g} s x {args.rounds} rounds, "
          f"module {args.module}, medians:")
    print(f"{'config':32} {'rx frames/s':>12} {'CPU µs/frame':>12} {'per wake-up':>12} "
          f"{'offered/s':>10} {'drops/s':>10} {'burst/1000':>10}")
    for config, runs in results.items():
        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return float(statistics.median(x[key] for x in runs))
        print(f"{config or '(default: ring)':32} {med('rx_fps'):12.0f} "
              f"{med('cpu_us'):12.2f} {med('per_wakeup'):12.1f} {med('offered_fps'):10.0f} "
              f"{med('kernel_drops_fps'):10.0f} {med('burst_1000'):10.0f}")
        print(f"{'':32} {runs[0]['rx_path']}: {runs[0]['rx_ring']}")


if __name__ == "__main__":
    main()
