"""Empty datagrams through the files (issue 14 item 2), the Linux kernel as the peer in a
namespace: a 0-byte write(2) never reaches a FUSE server, so the socket door has
IOP_SEND0, rmgr.libsocket uses it for every empty send, C programs use it from the
header, and the text door has the ``send0`` ctl command. On TCP an empty send sends
nothing and returns 0, as on Linux."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from typing import Any

import pytest
import trio

from rmgr import libsocket
from tests.conftest import REPO, needs_tun

from .test_apps import start, stop
from .test_door import in_stack
from .test_door_send import readline

pytestmark = [needs_tun, pytest.mark.root]
HERE = f"{REPO}/tests/sockets"
PY = sys.executable

#: the kernel's receiver: one JSON line per datagram [payload hex, source, port]
#: ("timeout" when nothing came for a while); for "raw" the payload is the IP packet
RECEIVER = """
import json, socket, sys
kind, ip, port, wait = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if kind == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port))
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, port)
s.settimeout(wait)
print("ready", flush=True)
while True:
    try:
        d, a = s.recvfrom(65536)
    except socket.timeout:
        print(json.dumps("timeout"), flush=True)
        break
    print(json.dumps([d.hex(), a[0], a[1]]), flush=True)
"""


class Receiver:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    async def next(self) -> Any:
        line = await readline(self.proc, timeout=10)
        assert line, "the receiver exited"
        return json.loads(line)

    async def payloads(self, n: int) -> list[bytes]:
        out = []
        for _ in range(n):
            got = await self.next()
            assert got != "timeout", f"only {out} arrived"
            out.append(bytes.fromhex(got[0]))
        return out


async def receiver(net: Any, kind: str, port: int, wait: float = 3) -> Receiver:
    return Receiver(await start([PY, "-c", RECEIVER, kind, net.KERNEL_IP, str(port), str(wait)],
                                net.env(), ns=net.ns))


async def test_libsocket_sends_empty_udp_datagrams(net) -> None:  # type: ignore[no-untyped-def]
    rx = await receiver(net, "udp", 7960)
    counters = net.st.udp.counters
    before = counters["datagrams_out"]
    dest = (net.KERNEL_IP, 7960)

    def client() -> dict[str, Any]:
        out: dict[str, Any] = {}
        s = libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM)
        try:
            s.send(b"")
        except OSError as exc:  # not connected, no address: as the kernel
            out["unconnected"] = errno.errorcode[exc.errno or 0]
        out["sendto"] = s.sendto(b"", dest)
        out["sendto_x"] = s.sendto(b"x", dest)  # the empty one left nothing behind
        out["sendmsg"] = s.sendmsg([], (), 0, dest)
        s.settimeout(2)  # the timeout path (IOP_F_NONBLOCK + poll)
        out["sendto_timeout"] = s.sendto(b"", 0, dest)
        s.settimeout(None)
        s.connect(dest)
        out["send"] = s.send(b"")
        out["send_dontwait"] = s.send(b"", libsocket.MSG_DONTWAIT)
        s.sendall(b"")  # the stdlib's sendall sends once, also when empty
        out["sendmsg_connected"] = s.sendmsg([b"", b""])
        out["send_y"] = s.send(b"y")
        s.close()
        return out

    try:
        out = await in_stack(net, client)
        assert out == {"unconnected": "EDESTADDRREQ", "sendto": 0, "sendto_x": 1,
                       "sendmsg": 0, "sendto_timeout": 0, "send": 0, "send_dontwait": 0,
                       "sendmsg_connected": 0, "send_y": 1}
        got = await rx.payloads(9)
        assert got == [b"", b"x", b"", b"", b"", b"", b"", b"", b"y"], got
        assert counters["datagrams_out"] - before == 9
    finally:
        await stop(rx.proc)


async def test_empty_datagram_from_c_with_the_header(net, tmp_path) -> None:  # type: ignore[no-untyped-def]
    exe = str(tmp_path / "send_empty")
    subprocess.run(["gcc", "-Wall", "-Wextra", "-Werror", "-O2", "-I", f"{REPO}/rmgr/include",
                    "-o", exe, f"{HERE}/scripts/send_empty.c"], check=True, capture_output=True)
    rx = await receiver(net, "udp", 7961)
    try:
        with trio.fail_after(20):
            r = await trio.run_process([exe, net.KERNEL_IP, "7961"], env=net.env(),
                                       capture_stdout=True, capture_stderr=True, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.decode().splitlines() == [
            "send0 to ok", "write0 0", "send0 connected ok", "badflags EINVAL"]
        assert await rx.payloads(5) == [b"", b"x", b"", b"", b"y"]
        assert await rx.next() == "timeout"  # the 0-byte write sent nothing
    finally:
        await stop(rx.proc)


async def test_empty_raw_datagram(net) -> None:  # type: ignore[no-untyped-def]
    rx = await receiver(net, "raw", 253)

    def client() -> int:
        s = libsocket.socket(libsocket.AF_INET, libsocket.SOCK_RAW, 253)
        try:
            return s.sendto(b"", (net.KERNEL_IP, 0))
        finally:
            s.close()

    try:
        assert await in_stack(net, client) == 0
        (pkt,) = await rx.payloads(1)
        assert len(pkt) == 20 and pkt[9] == 253, pkt.hex()  # an IP header alone
        assert int.from_bytes(pkt[2:4], "big") in (20, 0)  # (the kernel may zero it)
    finally:
        await stop(rx.proc)


async def test_text_door_send0_from_bash(net) -> None:  # type: ignore[no-untyped-def]
    rx = await receiver(net, "udp", 7962)
    script = (f'set -e; D="$SOCK/dev/socket/udp"; exec 3<>"$D/clone"; read -r N <&3\n'
              f'echo "send0 {net.KERNEL_IP}!7962" >&3\n'
              f'echo "connect {net.KERNEL_IP}!7962" >&3\n'
              'echo send0 >&3\n'
              'printf z >"$D/$N/data"\n'
              'echo "send0 nonsense" >&3 2>/dev/null || echo refused\n'
              'exec 3>&-\n')
    try:
        with trio.fail_after(20):
            r = await trio.run_process(["bash", "-c", script], env=net.env(),
                                       capture_stdout=True, capture_stderr=True, check=False)
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"refused\n"
        assert await rx.payloads(3) == [b"", b"", b"z"]
    finally:
        await stop(rx.proc)


#: the kernel's TCP server: every chunk it receives until EOF, as one JSON line
TCP_SERVER = """
import json, socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2]))); l.listen(1)
print("ready", flush=True)
c, _ = l.accept(); c.settimeout(10)
chunks = []
while True:
    d = c.recv(65536)
    if not d:
        break
    chunks.append(d.decode())
print(json.dumps(chunks), flush=True)
"""


async def test_empty_send_on_tcp_sends_nothing(net) -> None:  # type: ignore[no-untyped-def]
    srv = await start([PY, "-c", TCP_SERVER, net.KERNEL_IP, "7963"], net.env(), ns=net.ns)
    tap = net.st.interfaces["tap0"]

    def client() -> list[Any]:
        import time

        s = libsocket.create_connection((net.KERNEL_IP, 7963), timeout=5)
        time.sleep(0.3)  # the handshake's last ACK is out: the link is idle
        out0 = tap.counters["opackets"]
        res: list[Any] = [s.send(b""), s.sendto(b"", (net.KERNEL_IP, 1)),
                          s.sendmsg([b""]), s.sendall(b"")]
        s.setblocking(False)
        res.append(s.send(b""))
        time.sleep(0.3)
        res.append(tap.counters["opackets"] - out0)  # nothing went on the wire
        s.setblocking(True)
        s.sendall(b"abc")
        s.shutdown(libsocket.SHUT_WR)
        try:
            s.send(b"")
        except OSError as exc:  # write side shut: EPIPE, as Linux
            res.append(errno.errorcode[exc.errno or 0])
        s.close()
        return res

    try:
        assert await in_stack(net, client) == [0, 0, 0, None, 0, 0, "EPIPE"]
        assert json.loads(await readline(srv, timeout=10)) == ["abc"]
    finally:
        await stop(srv)


async def test_unknown_flags_and_bad_address(net) -> None:  # type: ignore[no-untyped-def]
    import fcntl
    import os

    from rmgr.libsocket import abi

    def client() -> list[str]:
        fd = os.open(f"{net.prefix}/dev/socket/2/2/17", os.O_RDWR)
        res = []
        try:
            for arg in (abi.SOCKADDR.pack(0x80, 0, b""),
                        abi.SOCKADDR.pack(0, 16, b"\x0a\x00" + bytes(30))):  # AF_INET6
                try:
                    fcntl.ioctl(fd, abi.IOP_SEND0, arg)
                    res.append("ok")
                except OSError as exc:
                    res.append(errno.errorcode[exc.errno or 0])
            try:
                fcntl.ioctl(fd, abi.IOP_SEND0, abi.SOCKADDR.pack(0, 0, b""))
            except OSError as exc:
                res.append(errno.errorcode[exc.errno or 0])
        finally:
            os.close(fd)
        return res

    assert await in_stack(net, client) == ["EINVAL", "EAFNOSUPPORT", "EDESTADDRREQ"]

