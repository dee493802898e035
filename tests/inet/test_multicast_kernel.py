"""IPv4 multicast and IGMP against the Linux kernel: the stack's tap0 lies in a namespace
the test creates (every address lives there), kernel senders and receivers are Python
sockets run in it, tcpdump there records what the stack puts on the wire, and a Linux
bridge with multicast snooping and its own querier learns the stack's memberships from
its reports (``bridge mdb``) and queries it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from scapy.layers.igmp import IGMP, IGMPv3
from scapy.layers.inet import IP
from scapy.utils import rdpcap

from stack.l2.iface import IFF_UP
from tests.conftest import NetNS, needs_fuse, needs_tun, running_stack

pytestmark = [needs_tun, pytest.mark.root]

ME, KERNEL = "10.9.0.2", "10.9.0.1"
GROUP = "239.1.2.3"
PY = sys.executable
IP_ADD_SOURCE_MEMBERSHIP = getattr(socket, "IP_ADD_SOURCE_MEMBERSHIP", 39)

AnyStack = Any


def mreq(group: str, iface: str) -> bytes:
    return socket.inet_aton(group) + socket.inet_aton(iface)


async def nsrun(ns: NetNS, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(["ip", "netns", "exec", ns.name, *cmd], capture_stdout=True,
                                  capture_stderr=True, check=check)


async def until(cond, timeout: float = 10, what: str = "") -> None:  # noqa: ANN001
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.02)


async def recv_within(sock, timeout: float) -> bytes | None:  # noqa: ANN001
    with trio.move_on_after(timeout):
        return (await sock.recvfrom(65536))[0]  # type: ignore[no-any-return]
    return None


#: a kernel sender: sends argv[3] to group argv[1] port argv[2] from argv[4] (its
#: interface address, IP_MULTICAST_IF) argv[5] times, 50 ms apart
SENDER = """
import socket, sys, time
group, port, data, src, n = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4], int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(src))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
for _ in range(n):
    s.sendto(data, (group, port))
    time.sleep(0.05)
"""

#: a kernel receiver joined to argv[1] on the interface with address argv[2], port
#: argv[3]: prints "ready", then each datagram as "SRC DATA", until argv[4] arrive
RECEIVER = """
import socket, sys
group, ifaddr, port, want = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((group, port))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton(group) + socket.inet_aton(ifaddr))
s.settimeout(15)
print("ready", flush=True)
for _ in range(want):
    data, (src, _p) = s.recvfrom(2048)
    print(src, data.decode(), flush=True)
"""


async def send_from_kernel(ns: NetNS, data: str, *, group: str = GROUP, port: int = 5000,
                           src: str = KERNEL, n: int = 5) -> None:
    await nsrun(ns, PY, "-c", SENDER, group, str(port), data, src, str(n))


class Capture:
    """tcpdump on a device in the namespace, written to a pcap file."""

    def __init__(self, ns: NetNS, dev: str, filt: str, path: Path) -> None:
        self.path = path
        self.err = path.with_suffix(".err")
        with open(self.err, "wb") as errf:
            self.proc = ns.popen("tcpdump", "-i", dev, "-n", "-U", "--immediate-mode", "-w",
                                 str(path), filt,
                                 stdout=subprocess.DEVNULL, stderr=errf)

    async def started(self) -> None:
        await until(lambda: "listening on" in self.err.read_text() or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.err.read_text()

    def stop(self) -> list[Any]:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return list(rdpcap(str(self.path))) if self.path.exists() and self.path.stat().st_size else []


@asynccontextmanager
async def capture(ns: NetNS, dev: str, filt: str) -> AsyncIterator[Capture]:
    with tempfile.TemporaryDirectory() as tmp:
        cap = Capture(ns, dev, filt, Path(tmp) / "cap.pcap")
        try:
            await cap.started()
            yield cap
        finally:
            cap.stop()


def igmp_of(pkts: list[Any], src: str = ME) -> list[Any]:
    return [p[IP] for p in pkts if IP in p and p[IP].proto == 2 and p[IP].src == src]


def v3_records(ip: Any) -> list[tuple[int, str, list[str]]]:
    r = IGMPv3(bytes(ip.payload))
    return [(g.rtype, g.maddr, list(g.srcaddrs or [])) for g in r.records]


@asynccontextmanager
async def stack_in(ns: NetNS, *, kernel_addr: bool = True) -> AsyncIterator[AnyStack]:
    async with running_stack(drivers=[("tap", f"name=tap0,netns={ns}")]) as st:
        st.interfaces["tap0"].set_flags(IFF_UP)
        st.inet.add_address("tap0", f"{ME}/24")
        if kernel_addr:
            await nsrun(ns, "ip", "addr", "add", f"{KERNEL}/24", "dev", "tap0")
        await nsrun(ns, "ip", "link", "set", "tap0", "up")
        yield st


def udp_socket(st: AnyStack, port: int = 5000) -> Any:
    s = st.udp.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", port))
    return s


# ==================================================================================
async def test_kernel_sender_reaches_joined_socket_and_reports_on_the_wire(netns: NetNS) -> None:
    async with stack_in(netns) as st, capture(netns, "tap0", "igmp") as cap:
        joined, unjoined = udp_socket(st), udp_socket(st)
        joined.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq(GROUP, ME))
        await send_from_kernel(netns, "hello group")
        assert await recv_within(joined, 5) == b"hello group"
        assert await recv_within(unjoined, 0.5) is None
        while await recv_within(joined, 0.3) is not None:
            pass  # the other copies
        joined.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, mreq(GROUP, ME))
        await trio.sleep(1.5)  # the retransmissions (within 1 s)
        await send_from_kernel(netns, "after the leave", n=2)
        assert await recv_within(joined, 0.5) is None
        assert st.inet.counters["drop_multicast_not_joined"] + \
            st.l2.counters["drop_multicast_not_joined"] >= 2
        pkts = cap.stop()
        joined.close()
        unjoined.close()
    reports = igmp_of(pkts)
    recs = [v3_records(ip) for ip in reports]
    # the join: TO_EX({}) twice (robustness 2); the leave: TO_IN({}) twice
    assert recs == [[(4, GROUP, [])]] * 2 + [[(3, GROUP, [])]] * 2, recs
    for ip in reports:
        assert ip.dst == "224.0.0.22" and ip.ttl == 1 and ip.tos == 0xC0
        assert bytes(ip)[20:24] == bytes.fromhex("94040000")  # Router Alert
        assert IGMPv3(bytes(ip.payload)).type == 0x22


async def test_kernel_receiver_gets_the_stack_datagrams(netns: NetNS) -> None:
    async with stack_in(netns) as st, capture(netns, "tap0", "udp") as cap:
        group = "239.1.2.4"
        tx = st.udp.socket()
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ME))
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 3)
        proc = netns.popen(PY, "-c", RECEIVER, group, KERNEL, "6000", "3",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            line = await trio.to_thread.run_sync(proc.stdout.readline)
            assert line.strip() == b"ready", proc.stderr.read() if proc.stderr else b""
            for i in range(3):
                tx.sendto_nowait(f"from the stack {i}".encode(), (group, 6000))
                await trio.sleep(0.05)
            out, err = await trio.to_thread.run_sync(proc.communicate, None, 20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        assert out.decode().splitlines() == [f"{ME} from the stack {i}" for i in range(3)]
        pkts = cap.stop()
        tx.close()
    sent = [p[IP] for p in pkts if IP in p and p[IP].dst == group]
    assert len(sent) == 3 and all(ip.ttl == 3 for ip in sent)
    assert all(p.dst == "01:00:5e:01:02:04" for p in pkts if IP in p and p[IP].dst == group)


async def test_source_specific_join_filters_sources(netns: NetNS) -> None:
    async with stack_in(netns) as st, capture(netns, "tap0", "igmp") as cap:
        other = "10.9.0.3"
        await nsrun(netns, "ip", "addr", "add", f"{other}/24", "dev", "tap0")
        ssm = "232.1.2.3"
        s = udp_socket(st)
        s.setsockopt(socket.IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP,
                     socket.inet_aton(ssm) + socket.inet_aton(ME) + socket.inet_aton(KERNEL))
        await send_from_kernel(netns, "wanted", group=ssm, n=2)
        await send_from_kernel(netns, "unwanted", group=ssm, src=other, n=2)
        got = []
        while (d := await recv_within(s, 1)) is not None:
            got.append(d)
        assert got == [b"wanted", b"wanted"]
        assert st.inet.counters["drop_multicast_source_filtered"] == 2
        pkts = cap.stop()
        s.close()
    recs = [v3_records(ip) for ip in igmp_of(pkts)]
    assert recs[0] == [(5, ssm, [KERNEL])]  # ALLOW_NEW_SOURCES(kernel)


BRIDGE_QUERIER = ("mcast_snooping", "1", "mcast_querier", "1", "mcast_igmp_version", "3",
                  "mcast_query_use_ifaddr", "1",
                  "mcast_query_interval", "300", "mcast_query_response_interval", "100",
                  "mcast_startup_query_interval", "100", "mcast_startup_query_count", "2")


async def bridge_lan(ns: NetNS) -> None:
    """br0 (snooping, IGMPv3 querier every 3 s, 10.9.0.1) in ``ns`` with tap0 as a port
    (fast leave: a TO_IN({}) removes the port's entry at once)."""
    await nsrun(ns, "ip", "link", "add", "br0", "type", "bridge", *BRIDGE_QUERIER)
    await nsrun(ns, "ip", "link", "set", "tap0", "master", "br0")
    await nsrun(ns, "ip", "link", "set", "tap0", "type", "bridge_slave", "mcast_fast_leave", "on")
    await nsrun(ns, "ip", "addr", "add", f"{KERNEL}/24", "dev", "br0")
    await nsrun(ns, "ip", "link", "set", "br0", "up")


async def mdb(ns: NetNS) -> str:
    return (await nsrun(ns, "bridge", "-d", "mdb", "show", "dev", "br0")).stdout.decode()


async def test_snooping_bridge_delivers_the_group_and_its_querier_is_answered(
        netns: NetNS) -> None:
    ns = netns
    async with stack_in(ns, kernel_addr=False) as st:
        await bridge_lan(ns)
        async with capture(ns, "tap0", "igmp") as cap:
            s = udp_socket(st)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq(GROUP, ME))
            # the bridge learnt the membership from our report...
            with trio.fail_after(10):
                while f"port tap0 grp {GROUP}" not in (out := await mdb(ns)):
                    await trio.sleep(0.1)
            # ... and its querier's general queries (every 3 s) are answered
            with trio.fail_after(12):
                while st.inet.igmp.counters["out_v3_current_state"] == 0:
                    await trio.sleep(0.1)
            await send_from_kernel(ns, "through the bridge", src=KERNEL)
            assert await recv_within(s, 5) == b"through the bridge"
            assert "filter_mode exclude" in out  # our TO_EX({}), as the bridge read it
            s.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, mreq(GROUP, ME))
            with trio.fail_after(10):  # fast leave on tap0: the entry goes with our TO_IN
                while f"grp {GROUP}" in await mdb(ns):
                    await trio.sleep(0.1)
            pkts = cap.stop()
            s.close()
    queries = [ip for ip in (p[IP] for p in pkts if IP in p and p[IP].proto == 2)
               if IGMP(bytes(ip.payload)).type == 0x11]
    assert queries, "the bridge's querier sent no query"
    answers = [v3_records(ip) for ip in igmp_of(pkts)]
    assert [(2, GROUP, [])] in answers  # MODE_IS_EXCLUDE: the answer to a general query


async def test_v2_querier_gets_v2_reports_and_a_leave(netns: NetNS) -> None:
    """The bridge's querier speaking IGMPv2: the stack falls back to v2 (reports to the
    group, a Leave to 224.0.0.2)."""
    async with stack_in(netns, kernel_addr=False) as st:
        await nsrun(netns, "ip", "link", "add", "br0", "type", "bridge", *_v2_options())
        await nsrun(netns, "ip", "link", "set", "tap0", "master", "br0")
        await nsrun(netns, "ip", "addr", "add", f"{KERNEL}/24", "dev", "br0")
        await nsrun(netns, "ip", "link", "set", "br0", "up")
        async with capture(netns, "tap0", "igmp") as cap:
            with trio.fail_after(10):
                while st.inet.igmp.counters["compat_v2"] == 0:
                    await trio.sleep(0.1)
            s = udp_socket(st)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq(GROUP, ME))
            await trio.sleep(0.2)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, mreq(GROUP, ME))
            await trio.sleep(0.5)
            pkts = cap.stop()
            s.close()
    mine = [(ip.dst, IGMP(bytes(ip.payload)).type, IGMP(bytes(ip.payload)).gaddr)
            for ip in igmp_of(pkts)]
    assert (GROUP, 0x16, GROUP) in mine and ("224.0.0.2", 0x17, GROUP) in mine, mine


def _v2_options() -> tuple[str, ...]:
    opts = list(BRIDGE_QUERIER)
    opts[opts.index("mcast_igmp_version") + 1] = "2"
    return tuple(opts)


# ============================================================ through FUSE: both doors
LIBSOCKET_RECEIVER = """
import socket, sys
group, ifaddr = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 5000))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,  # a struct ip_mreqn
             socket.inet_aton(group) + socket.inet_aton(ifaddr) + bytes(4))
assert s.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 1
assert s.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 1
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
assert s.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4) == socket.inet_aton(ifaddr)
s.settimeout(10)
print("ready", flush=True)
data, addr = s.recvfrom(2048)
print(addr[0], data.decode(), flush=True)
s.sendto(b"reply to the group", (group, 5001))
"""


@needs_fuse
async def test_libsocket_and_text_door_join(netns: NetNS, stack_process) -> None:  # noqa: ANN001
    sp = stack_process("-d", "tap", f"name=tap0,netns={netns}")
    sp.tool("ifconfig", "tap0", f"{ME}/24", "up")
    await nsrun(netns, "ip", "addr", "add", f"{KERNEL}/24", "dev", "tap0")
    await nsrun(netns, "ip", "link", "set", "tap0", "up")
    env = dict(os.environ, SOCK=sp.prefix, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    # an unmodified program over rmgr.libsocket
    prog = subprocess.Popen([PY, "-m", "rmgr.libsocket", "-c", LIBSOCKET_RECEIVER, GROUP, ME],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kernel_rx = netns.popen(PY, "-c", RECEIVER, GROUP, KERNEL, "5001", "1",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert prog.stdout is not None and kernel_rx.stdout is not None
        line = await trio.to_thread.run_sync(prog.stdout.readline)
        assert line.strip() == b"ready", prog.stderr.read() if prog.stderr else b""
        assert (await trio.to_thread.run_sync(kernel_rx.stdout.readline)).strip() == b"ready"
        await send_from_kernel(netns, "to libsocket", n=3)
        out, err = await trio.to_thread.run_sync(prog.communicate, None, 20)
        assert prog.returncode == 0, err.decode()
        assert out.decode().splitlines()[-1] == f"{KERNEL} to libsocket"
        kout, kerr = await trio.to_thread.run_sync(kernel_rx.communicate, None, 20)
        assert kout.decode().splitlines() == [f"{ME} reply to the group"], kerr
        # the text door: addmulti on a udp conversation, then datagrams on its data file
        root = Path(sp.path)
        ctl = os.open(root / "udp" / "clone", os.O_RDWR)
        try:
            n = os.read(ctl, 32).decode().strip()
            os.write(ctl, b"announce 5002")
            os.write(ctl, f"addmulti {GROUP} {ME}".encode())
            with pytest.raises(OSError):
                os.write(ctl, b"addmulti 10.0.0.1")  # not a group: EINVAL
            data = os.open(root / "udp" / n / "data", os.O_RDONLY)
            try:
                await send_from_kernel(netns, "to the text door", port=5002, n=1)
                got = await trio.to_thread.run_sync(os.read, data, 2048)
                assert got.endswith(b"to the text door")
            finally:
                os.close(data)
            os.write(ctl, f"remmulti {GROUP} {ME}".encode())
        finally:
            os.close(ctl)
    finally:
        for p in (prog, kernel_rx):
            if p.poll() is None:
                p.kill()
                p.wait()

