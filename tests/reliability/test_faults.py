"""Faults survived by a running io-pkt (devnp-tap in the test's namespace):

* the TAP device deleted under the stack: the interface goes down, the stack lives, the
  driver can be loaded again with ``io-pkt mount -T io-pkt devnp-tap ...``;
* a module whose pfil hook raises and whose task raises: isolated and counted;
* SIGKILL, then a restart at the same prefix (stale mount cleaned; the basic case is in
  tests/core/test_lifecycle.py, this one is with a live TAP and traffic);
* client processes SIGKILLed in the middle of blocking reads on socket files: no socket
  left behind (counted in config/sockets before/after) and RSS bounded.

``tc netem`` loss/reorder/duplicate/corrupt during a TCP transfer with the kernel is in
``test_netem_transfer_intact`` (the deterministic in-memory versions of these faults are
tests/transport/test_tcp_mock.py::test_bulk_faults; they are not repeated here).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import io_pkt_env
from tests.reliability.helpers import (
    HERE,
    KERNEL_IP,
    STACK_IP,
    TapStack,
    delta,
    needs_tap_stack,
    transfer,
    wait_for,
)

pytestmark = [needs_tap_stack]


def iface_stanza(ts: TapStack, name: str) -> str:
    text = ts.read("config/interfaces")
    if f"{name}:" not in text:
        return ""
    return text.split(f"{name}:", 1)[1].split("\n\n", 1)[0]


def test_tap_deleted_under_running_stack(netns: Any, stack_process: Any) -> None:
    ts = TapStack.start(stack_process, netns)
    assert ts.ping(1)
    netns.run("ip", "link", "del", "tap0")

    def down_or_gone() -> bool:
        st = iface_stanza(ts, "tap0")
        return not st or "RUNNING" not in st.split("flags", 1)[1].split("\n", 1)[0]

    assert wait_for(down_or_gone, timeout=10), iface_stanza(ts, "tap0")
    assert ts.alive()
    # and the receive task is not spinning on the dead descriptor
    st = iface_stanza(ts, "tap0")
    if st:
        time.sleep(0.5)
        assert "counter ierrors" not in st or int(iface_stanza(ts, "tap0").split(
            "counter ierrors ")[1].split()[0]) < 10, iface_stanza(ts, "tap0")
    # the stack still serves its files and lo0
    assert "lo0:" in ts.read("config/interfaces")
    # destroy what is left of tap0 (if anything), then load the driver again
    if iface_stanza(ts, "tap0"):
        ts.sp.tool("ifconfig", "tap0", "destroy")
    ts.sp.tool("mount", "-T", "io-pkt", "devnp-tap", f"name=tap0,netns={netns}")
    ts.configure()
    assert ts.ping(3), "re-added tap0 does not work"
    assert ts.alive()


def test_module_raising_in_hook_and_task_is_isolated(netns: Any, stack_process: Any) -> None:
    ts = TapStack.start(stack_process, netns)
    mod = os.path.join(HERE, "modules", "lsm-faulty.py")
    before = ts.stats("ip")
    ts.sp.tool("mount", "-T", "io-pkt", mod, "every=2,task_after=1.5")
    # every other inbound IP packet hits the raising hook: dropped and counted, never fatal
    netns.run("ping", "-c", "6", "-i", "0.1", "-W", "1", STACK_IP, check=False)
    d = delta(before, ts.stats("ip"))
    assert d.get("drop_pfil_in", 0) >= 2, d
    # the task raises after 1.5 s: the module is unloaded (its hook removed), counted
    assert wait_for(lambda: "modules_failed_run 1" in ts.read("config/status"), timeout=10)
    assert "lsm-faulty" not in ts.read("config/modules")
    assert ts.ping(3)  # no more drops: the hook went with the module
    assert ts.alive()


def test_sigkill_then_restart_with_tap(netns: Any, stack_process: Any, tmp_path: Any) -> None:
    prefix = str(tmp_path / "k")
    ts = TapStack.start(stack_process, netns, "-p", "tcpip", f"prefix={prefix}")
    assert ts.ping(1)
    ts.sp.proc.send_signal(signal.SIGKILL)
    ts.sp.proc.wait(10)
    # the next start at the same prefix cleans the stale mount and recreates tap0
    ts2 = TapStack.start(stack_process, netns, "-p", "tcpip", f"prefix={prefix}")
    assert ts2.ping(3)


#: a client that blocks in recv() on a socket file until it is killed
_BLOCKED_READER = r"""
import sys
from rmgr import libsocket
libsocket.setsockprefix(sys.argv[1])
kind = sys.argv[2]
if kind == "udp":
    s = libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
else:
    s = libsocket.create_connection((sys.argv[3], int(sys.argv[4])))
print("blocked", flush=True)
s.recv(100)
"""


def test_clients_killed_in_blocking_reads_leak_nothing(netns: Any, stack_process: Any) -> None:
    ts = TapStack.start(stack_process, netns)
    ts.sp.tool("sysctl", "-w", "net.inet.tcp.msl=200")  # TIME_WAIT of the aborted clients: 0.4 s
    srv = netns.popen("socat", "-T", "30", "TCP-LISTEN:7777,fork,reuseaddr", "EXEC:sleep 30",
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        time.sleep(0.3)
        base = len(ts.sockets())
        rss0 = ts.rss_kb()
        for rnd in range(3):
            procs = []
            for i in range(10):
                kind = "udp" if i % 2 else "tcp"
                p = subprocess.Popen([sys.executable, "-c", _BLOCKED_READER, ts.sp.prefix, kind,
                                      KERNEL_IP, "7777"], env=io_pkt_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                procs.append(p)
            for p in procs:
                line = p.stdout.readline()  # type: ignore[union-attr]
                assert line == b"blocked\n", p.stderr.read() if p.poll() is not None else line  # type: ignore[union-attr]
            time.sleep(0.2)  # they are now inside read(2) on the socket files
            assert len(ts.sockets()) >= base + 10
            for p in procs:
                p.send_signal(signal.SIGKILL)
            for p in procs:
                p.wait(10)
            assert wait_for(lambda: len(ts.sockets()) <= base, timeout=20), \
                f"round {rnd}: {len(ts.sockets()) - base} sockets left: {ts.sockets()[:5]}"
        assert ts.rss_kb() - rss0 < 30_000
        assert ts.alive() and ts.ping(1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        srv.kill()
        srv.wait()


def have_netem() -> bool:
    """tc netem needs CONFIG_NET_SCH_NETEM (this CI kernel lacks it: probe, don't assume)."""
    name = f"iopkt-netem-probe-{os.getpid()}"
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                       check=True, capture_output=True)
        r = subprocess.run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo",
                            "root", "netem", "loss", "1%"], capture_output=True)
        return r.returncode == 0
    except (OSError, subprocess.CalledProcessError):
        return False
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


NETEM = [("loss", ["loss", "3%"]), ("reorder", ["delay", "5ms", "reorder", "25%", "50%"]),
         ("duplicate", ["duplicate", "5%"]), ("corrupt", ["corrupt", "2%"])]


@pytest.mark.parametrize("name,args", NETEM, ids=[n for n, _ in NETEM])
def test_netem_transfer_intact(netns: Any, stack_process: Any, name: str, args: list[str]) -> None:
    """A 1 MB kernel -> stack transfer through tc netem on the kernel side of the TAP."""
    if not have_netem():
        pytest.skip("tc netem unavailable (kernel without CONFIG_NET_SCH_NETEM); "
                    "test_impaired_transfer_intact injects the same faults in the stack")
    ts = TapStack.start(stack_process, netns)
    netns.run("tc", "qdisc", "add", "dev", "tap0", "root", "netem", *args)
    with transfer(ts, total=1_000_000, rate=5_000_000):
        pass
    assert ts.alive()


IMPAIR = [("loss", "loss=3", "tcp.rexmt_segs"), ("reorder", "reorder=20", "tcp.ooo_segs_in"),
          ("duplicate", "duplicate=5", "tcp.dup_segs_in"),
          ("corrupt", "corrupt=3", "tcp.drop_bad_checksum"),
          ("all", "loss=2,reorder=10,duplicate=3,corrupt=2", "tcp.drop_bad_checksum")]


@pytest.mark.parametrize("name,opts,counter", IMPAIR, ids=[n for n, _, _ in IMPAIR])
def test_impaired_transfer_intact(netns: Any, stack_process: Any, name: str, opts: str,
                                  counter: str) -> None:
    """The netem faults injected at the stack's pfil ether head (modules/lsm-impair.py):
    a 1 MB kernel -> stack transfer arrives intact (sha256), the fault is counted."""
    ts = TapStack.start(stack_process, netns)
    ts.sp.tool("mount", "-T", "io-pkt", os.path.join(HERE, "modules", "lsm-impair.py"), opts)
    before = ts.all_stats()
    with transfer(ts, total=1_000_000, rate=5_000_000):
        pass
    d = delta(before, ts.all_stats())
    status = ts.read("config/status")
    assert "impair_" in status, status
    if counter.startswith("tcp.rexmt"):
        assert d.get("tcp.rexmt_segs", 0) + d.get("tcp.fast_retransmits", 0) + \
            d.get("tcp.dupacks_in", 0) + d.get("tcp.ooo_segs_in", 0) > 0, d
    else:
        assert d.get(counter, 0) > 0, d
    assert ts.alive() and ts.ping(5)  # any reply: the loss hook also drops some pings
