"""Sending through the socket files against the Linux kernel in a namespace: a blocked
write interrupted by a signal (no byte lost or repeated), close with SO_LINGER > 0 (all
data, then FIN), and UDP through the text door from bash."""

from __future__ import annotations

import errno
import json
import struct
import subprocess
import sys
from array import array

import pytest
import trio

from rmgr import libsocket
from tests.conftest import REPO, needs_tun

from .conftest import spawn
from .test_apps import nsrun, start, stop
from .test_door import in_stack

pytestmark = [needs_tun, pytest.mark.root]
HERE = f"{REPO}/tests/sockets"
PY = sys.executable


def pattern(n: int) -> bytes:
    """Big-endian 32-bit counters 0, 1, 2, ... cut at n bytes (scripts/sink.py checks)."""
    a = array("I", range(n // 4 + 1))
    if sys.byteorder == "little":
        a.byteswap()
    return a.tobytes()[:n]


async def readline(proc: subprocess.Popen[bytes], timeout: float = 5) -> bytes:
    with trio.fail_after(timeout):
        return await trio.to_thread.run_sync(proc.stdout.readline,  # type: ignore[union-attr]
                                             abandon_on_cancel=True)


async def start_sink(net, port: int) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    """The kernel peer that reads nothing until the test writes a line to its stdin."""
    proc = await spawn(["ip", "netns", "exec", net.ns.name, PY, f"{HERE}/scripts/sink.py",
                        net.KERNEL_IP, str(port)], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert await readline(proc) == b"ready\n"
    return proc


def go(proc: subprocess.Popen[bytes]) -> None:
    proc.stdin.write(b"go\n")  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def eintr_write(tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    exe = str(tmp_path_factory.mktemp("c") / "eintr_write")
    subprocess.run(["gcc", "-Wall", "-Wextra", "-Werror", "-O2", "-I", f"{REPO}/rmgr/include",
                    "-o", exe, f"{HERE}/scripts/eintr_write.c"], check=True,
                   capture_output=True)
    return exe


async def test_signal_interrupts_blocked_write_without_loss(net, eintr_write) -> None:  # type: ignore[no-untyped-def]
    total = 3 << 20  # far more than the send buffer and the peer's window hold
    sink = await start_sink(net, 7800)
    writer = await spawn([eintr_write, net.KERNEL_IP, "7800", str(total)], env=net.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # the write blocked (the peer reads nothing) and SIGALRM broke it: EINTR, or a
        # short count if part of that write went
        line = (await readline(writer)).split()
        if not line:  # the writer failed: show why
            await trio.to_thread.run_sync(writer.wait)
            raise AssertionError(writer.stderr.read())  # type: ignore[union-attr]
        assert line[0] == b"interrupted" and line[1] in (b"eintr", b"short"), line
        assert 0 <= int(line[2]) < total
        go(sink)  # the peer reads now; the writer goes on from where it was told it was
        assert await readline(writer) == f"done {total}\n".encode()
        # exactly the counter stream: nothing from the interrupted write lost or repeated
        assert await readline(sink) == f"{total} ok eof\n".encode()
        with trio.fail_after(5):
            assert await trio.to_thread.run_sync(writer.wait) == 0
    finally:
        await stop(writer)
        await stop(sink)


async def test_close_with_linger_delivers_everything_then_fin(net) -> None:  # type: ignore[no-untyped-def]
    data = pattern(4 << 20)

    def fill_and_close(secs: int) -> int:
        s = libsocket.create_connection((net.KERNEL_IP, 7801), timeout=5)
        s.setsockopt(libsocket.SOL_SOCKET, libsocket.SO_LINGER, struct.pack("ii", 1, secs))
        assert struct.unpack("ii", s.getsockopt(libsocket.SOL_SOCKET, libsocket.SO_LINGER,
                                                8)) == (1, secs)
        s.setblocking(False)
        sent = 0
        while True:  # until the send buffer is full: the peer reads nothing yet
            try:
                sent += s.send(data[sent:sent + 65536])
            except BlockingIOError:
                break
        assert s.getsockopt(libsocket.SOL_SOCKET, libsocket.SO_ERROR) == 0
        s.close()  # with unsent data queued
        return sent

    sink = await start_sink(net, 7801)
    try:
        # the peer reads soon after the close: everything, then EOF (not RST)
        sent = await in_stack(net, lambda: fill_and_close(2))
        assert sent > 0
        await trio.sleep(0.2)
        go(sink)
        assert await readline(sink) == f"{sent} ok eof\n".encode()
        # the peer starts reading only after the linger time ran out: as Linux, the
        # connection still delivers everything in the background, then FIN
        sent = await in_stack(net, lambda: fill_and_close(1))
        await trio.sleep(1.5)
        go(sink)
        assert await readline(sink) == f"{sent} ok eof\n".encode()
    finally:
        await stop(sink)


async def test_udp_text_door_from_bash(net) -> None:  # type: ignore[no-untyped-def]
    code = ("import socket\n"
            "u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"u.bind(('{net.KERNEL_IP}',7900)); print('ready',flush=True)\n"
            "while True:\n"
            "  d,a=u.recvfrom(65536); u.sendto(d,a)\n")
    echo = await start([PY, "-c", code], net.env(), ns=net.ns)  # a UDP echo, listening
    script = await spawn(["bash", f"{HERE}/scripts/udp_text_door.sh", net.KERNEL_IP, "7900",
                          "7901"], env=net.env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        first = (await readline(script)).decode().split()
        if not first:  # the script failed: show why
            await trio.to_thread.run_sync(script.wait)
            raise AssertionError(script.stderr.read())  # type: ignore[union-attr]
        n = first[2]
        assert first[1:] == ["ping", n, "abc", "gh", f"{net.KERNEL_IP}!7900"], first
        assert await readline(script) == b"bound 0.0.0.0!7901\n"
        code = ("import socket\n"
                "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                f"s.bind(('{net.KERNEL_IP}',7902)); s.settimeout(5)\n"
                f"s.sendto(b'hello',('{net.STACK_IP}',7901))\n"
                "d,a=s.recvfrom(100); print(d.decode(),a[0],a[1])\n")
        r = await nsrun(net.ns, PY, "-c", code, timeout=10)
        assert r.stdout == f"got hello {net.STACK_IP} 7901\n".encode()
        assert await readline(script) == f"answered hello {net.KERNEL_IP}!7902\n".encode()
        with trio.fail_after(5):
            assert await trio.to_thread.run_sync(script.wait) == 0
    finally:
        await stop(script)
        await stop(echo)


async def test_recv_flags_with_signals_and_hostile_values(net) -> None:  # type: ignore[no-untyped-def]
    srv = await spawn(["ip", "netns", "exec", net.ns.name, PY, f"{HERE}/scripts/kservers.py",
                       net.KERNEL_IP], stdout=subprocess.PIPE)
    try:
        assert await readline(srv) == b"ready\n"
        with trio.fail_after(30):
            r = await trio.run_process([PY, f"{HERE}/scripts/recv_flags.py", net.KERNEL_IP],
                                       env=net.env(), capture_stdout=True,
                                       capture_stderr=True, check=False)
    finally:
        await stop(srv)
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout) == {
        "lib_oob": errno.errorcode[errno.EOPNOTSUPP],
        "ioctl_unknown": errno.errorcode[errno.EOPNOTSUPP],
        "waitall_interrupted": ["12345", True], "after": "67890",
        "peek_after_eintr": ["peekaboo", "peekaboo"], "waitall_gathers": 20_000}
