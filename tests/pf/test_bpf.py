"""The bpf device against the kernel peer, and the BPF machine against tcpdump -ddd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import trio

from stack.bpf.vm import BpfError, Filter, Insn, parse_ddd, run
from tests.pf.conftest import KERNEL_IP, STACK_IP, PfNet

HAVE_TCPDUMP = subprocess.run(["which", "tcpdump"], capture_output=True).returncode == 0
needs_tcpdump = pytest.mark.skipif(not HAVE_TCPDUMP, reason="needs tcpdump")
CLIENT = os.path.join(os.path.dirname(__file__), "bpf_client.py")


def ddd(expr: str) -> str:
    return subprocess.run(["tcpdump", "-y", "EN10MB", "-ddd", expr], capture_output=True,
                          text=True, check=True).stdout


def frames() -> dict[str, bytes]:
    from scapy.all import ARP, ICMP, IP, TCP, UDP, Dot1Q, Raw
    from scapy.all import Ether as _Ether

    def Ether(dst: str = "02:00:00:00:00:01") -> object:  # noqa: N802 - scapy's name
        return _Ether(dst=dst, src="02:00:00:00:00:02")

    return {
        "icmp": bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()),
        "tcp80syn": bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.9") / TCP(dport=80, flags="S")),
        "tcp22ack": bytes(Ether() / IP(src="192.0.2.1", dst="10.0.0.2", ihl=6, options=b"\x01\x01\x01\x00")
                          / TCP(sport=22, dport=5555, flags="A")),
        "udp53big": bytes(Ether() / IP(src="10.0.0.3", dst="10.0.0.2") / UDP(dport=53) / Raw(b"x" * 300)),
        "arp": bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.2")),
        "frag": bytes(Ether() / IP(flags="MF", frag=10) / TCP(dport=80)),
        "vlan": bytes(Ether() / Dot1Q(vlan=5) / IP() / ICMP()),
    }


CASES = {
    "icmp": {"icmp"},
    "tcp port 80": {"tcp80syn"},
    "tcp[13] & 2 != 0": {"tcp80syn"},
    "tcp src port 22 and tcp[tcpflags] & tcp-ack != 0": {"tcp22ack"},
    "udp and greater 200": {"udp53big"},
    "arp": {"arp"},
    "net 10.0.0.0/24 and not arp": {"icmp", "tcp80syn", "tcp22ack", "udp53big"},
    "ip[2:2] > 100": {"udp53big"},
    "ip[0] & 0xf != 5": {"tcp22ack"},
    "len > 100 or ether broadcast": {"udp53big", "arp"},
    "ip[6:2] & 0x1fff != 0": {"frag"},
    "host 10.0.0.2 and (icmp or udp)": {"icmp", "udp53big"},
    "(ip[2:2] - ((ip[0] & 0xf) << 2)) % 7 = 3 or ip[8] * 2 / 4 = 32": set(),
}


@needs_tcpdump
@pytest.mark.parametrize("expr", list(CASES))
def test_vm_matches_tcpdump_programs(expr: str) -> None:
    prog = parse_ddd(ddd(expr))
    got = {name for name, f in frames().items() if run(prog, f)}
    if expr.startswith("(ip[2:2]"):  # arithmetic check: compute the expectation by hand
        want = set()
        for name, f in frames().items():
            if f[12:14] != b"\x08\x00":
                continue
            ip = f[14:]
            tot, ihl = int.from_bytes(ip[2:4], "big"), (ip[0] & 15) << 2
            if (tot - ihl) % 7 == 3 or ip[8] * 2 // 4 == 32:
                want.add(name)
        assert got == want
    else:
        assert got == CASES[expr]


def test_vm_every_opcode_class() -> None:
    # ldx len, st/stx, ldx mem, alu x ops, neg, jmp x, ja, txa/tax, ret a/x, ld mem
    prog = [Insn(0x81, 0, 0, 0),   # ldx len
            Insn(0x03, 0, 0, 1),   # stx M[1]
            Insn(0x00, 0, 0, 3),   # ld #3
            Insn(0x2C, 0, 0, 0),   # mul x
            Insn(0x02, 0, 0, 2),   # st M[2]
            Insn(0x84, 0, 0, 0),   # neg
            Insn(0x84, 0, 0, 0),   # neg
            Insn(0x61, 0, 0, 2),   # ldx M[2]
            Insn(0x1D, 1, 0, 0),   # jeq x → +1
            Insn(0x06, 0, 0, 0),   # ret #0 (skipped)
            Insn(0x05, 0, 0, 1),   # ja +1
            Insn(0x06, 0, 0, 1),   # ret #1 (skipped)
            Insn(0x60, 0, 0, 1),   # ld M[1]
            Insn(0x07, 0, 0, 0),   # tax
            Insn(0x87, 0, 0, 0),   # txa
            Insn(0x94, 0, 0, 3),   # mod #3
            Insn(0x16, 0, 0, 0)]   # ret a
    assert run(prog, b"\0" * 10) == 10 % 3
    assert run(prog, b"\0" * 11) == 11 % 3
    # out-of-bounds loads reject
    assert run([Insn(0x20, 0, 0, 100), Insn(0x06, 0, 0, 1)], b"\0" * 10) == 0
    assert run([Insn(0x01, 0, 0, 8), Insn(0x50, 0, 0, 2), Insn(0x06, 0, 0, 1)], b"\0" * 10) == 0


def test_vm_validation() -> None:
    with pytest.raises(BpfError, match="last instruction"):
        Filter([Insn(0x00, 0, 0, 0)])
    with pytest.raises(BpfError, match="jump out"):
        Filter([Insn(0x15, 5, 0, 1), Insn(0x06, 0, 0, 0)])
    with pytest.raises(BpfError, match="division by constant zero"):
        Filter([Insn(0x34, 0, 0, 0), Insn(0x06, 0, 0, 0)])
    with pytest.raises(BpfError, match="scratch memory"):
        Filter([Insn(0x02, 0, 0, 16), Insn(0x06, 0, 0, 0)])
    with pytest.raises(BpfError, match="count says"):
        parse_ddd("3\n6 0 0 1\n")


# -- the device, against the kernel -------------------------------------------------------
@needs_tcpdump
async def test_tcpdump_reads_live_capture_of_a_ping(pfnet: PfNet) -> None:
    path = pfnet.bpfdir / "tap0"
    result: list[bytes] = []

    async def capture() -> None:
        r = await trio.run_process(["sh", "-c", f"timeout 4 cat {path} | tcpdump -n -r -"],
                                   capture_stdout=True, capture_stderr=True, check=False)
        result.append(r.stdout + r.stderr)

    async with trio.open_nursery() as n:
        n.start_soon(capture)
        for _ in range(100):  # wait until cat has the file open
            if pfnet.st.bpf.readers:
                break
            await trio.sleep(0.05)
        assert await pfnet.kping(count=2, wait=1)
    out = result[0].decode()
    assert f"IP {KERNEL_IP} > {STACK_IP}: ICMP echo request" in out, out
    assert f"IP {STACK_IP} > {KERNEL_IP}: ICMP echo reply" in out, out


class Reader:
    """tests/pf/bpf_client.py in a subprocess (see its docstring for why)."""

    def __init__(self, pfnet: PfNet, path: str, *args: str) -> None:
        self.pfnet = pfnet
        self.argv = [sys.executable, CLIENT, path, "tap0", *args]
        self.proc: trio.Process | None = None
        self._out = b""

    async def _line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        while b"\n" not in self._out:
            chunk = await self.proc.stdout.receive_some(1 << 20)
            if not chunk:
                raise AssertionError(f"bpf client exited: {self._out!r}")
            self._out += chunk
        line, _, self._out = self._out.partition(b"\n")
        return line.decode()

    async def __aenter__(self) -> Reader:
        self.proc = await trio.lowlevel.open_process(self.argv, stdin=subprocess.PIPE,
                                                     stdout=subprocess.PIPE)
        with trio.fail_after(10):
            assert await self._line() == "ready"
        return self

    async def finish(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        await self.proc.stdin.send_all(b"go\n")
        with trio.fail_after(10):
            res = json.loads(await self._line())
        res["records"] = [bytes.fromhex(r) for r in res["records"]]
        return res  # type: ignore[no-any-return]

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        with trio.move_on_after(5):
            await self.proc.wait()
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@needs_tcpdump
async def test_filter_program_from_tcpdump_passes_only_icmp(pfnet: PfNet, tmp_path: Any) -> None:
    (tmp_path / "icmp.ddd").write_text(ddd("icmp"))
    async with Reader(pfnet, str(pfnet.bpfdir / "clone"), "--filter",
                      str(tmp_path / "icmp.ddd")) as r:
        assert await pfnet.kping(count=2, wait=1)
        assert await pfnet.connect() == "ok"  # TCP traffic: filtered out
        await pfnet.kernel("python3", "-c", "import socket; s=socket.socket(2,2); "
                           f"s.sendto(b'x', ('{STACK_IP}', 7777))")
        res = await r.finish()
    recs = res["records"]
    assert len(recs) >= 4  # 2 requests, 2 replies
    for rec in recs:
        assert rec[12:14] == b"\x08\x00" and rec[23] == 1, rec.hex()
    assert res["recv"] > len(recs) and res["drop"] == 0


@needs_tcpdump
async def test_ctl_default_filter_for_shell_readers(pfnet: PfNet) -> None:
    from rmgr.nodes import IoRequest, OpenRequest, open_node
    from tests.tools.helpers import ROOT

    h = await open_node(pfnet.st.bpf.tree.lookup("ctl"), OpenRequest(ROOT, 2))
    await h.write(memoryview(("filter tap0\n" + ddd("icmp")).encode()), IoRequest(ROOT, False))
    async with Reader(pfnet, str(pfnet.bpfdir / "tap0")) as r:
        assert await pfnet.connect() == "ok"
        assert await pfnet.kping()
        res = await r.finish()
    assert res["records"] and all(rec[23] == 1 for rec in res["records"])


async def test_injected_frame_reaches_the_kernel(pfnet: PfNet) -> None:
    from scapy.all import ICMP, IP, Ether, Raw

    kmac = (await pfnet.kernel("cat", "/sys/class/net/tap0/address")).strip()
    smac = ":".join(f"{b:02x}" for b in pfnet.st.interfaces["tap0"].mac)
    frame = bytes(Ether(src=smac, dst=kmac) / IP(src=STACK_IP, dst=KERNEL_IP)
                  / ICMP(id=0x4242, seq=7) / Raw(b"injected-by-bpf"))
    async with Reader(pfnet, str(pfnet.bpfdir / "clone"), "--inject", frame.hex()) as r:
        await trio.sleep(0.5)
        res = await r.finish()
    # the reader sees its own frame go out and the kernel's echo reply come in
    replies = [rec for rec in res["records"] if rec[12:14] == b"\x08\x00" and rec[23] == 1
               and rec[34] == 0 and b"injected-by-bpf" in rec]
    assert replies, [rec.hex() for rec in res["records"]]
    assert pfnet.st.bpf.counters["injected"] == 1


async def test_slow_reader_drops_and_does_not_stall(pfnet: PfNet) -> None:
    async with Reader(pfnet, str(pfnet.bpfdir / "clone"), "--bufsize", "4096") as r:
        # nothing is read while the kernel sends enough to overflow 4 KiB
        await pfnet.kernel("ping", "-n", "-q", "-c", "20", "-i", "0.01", "-s", "1000", STACK_IP)
        assert await pfnet.kping()  # the stack keeps serving
        ctl = await pfnet.read_file(pfnet.bpfdir / "ctl")
        assert "tap0" in ctl
        res = await r.finish()
    assert res["drop"] > 0 and res["recv"] >= 40
