"""Unmodified programs over the stack, the Linux kernel as the peer in a namespace:
http.server + curl, urllib.request, asyncio and selectors servers with concurrent socat
clients, the C examples built with gcc, and bash speaking HTTP through the text door."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import trio

from tests.conftest import REPO, needs_tun

from .conftest import spawn

pytestmark = [needs_tun, pytest.mark.root]
HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
LIB = [PY, "-m", "rmgr.libsocket"]


async def start(cmd: list[str], env: dict[str, str], ns: object = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` (in ``ns`` if given) and wait for its first line of output."""
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns.name, *cmd]  # type: ignore[attr-defined]
    env = dict(env, PYTHONUNBUFFERED="1")
    proc = await spawn(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    with trio.fail_after(20):
        line = await trio.to_thread.run_sync(proc.stdout.readline)  # type: ignore[union-attr]
    if not line:
        proc.wait()
        raise AssertionError(f"{cmd} exited {proc.returncode} before it was ready")
    return proc


async def stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap off the trio thread: the process may be inside a FUSE request that
    this thread has to answer before the kernel lets it die."""
    proc.kill()
    await trio.to_thread.run_sync(proc.wait)


async def nsrun(ns: object, *cmd: str, stdin: bytes = b"", timeout: float = 30,
                check: bool = True) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(["ip", "netns", "exec", ns.name, *cmd],  # type: ignore[attr-defined]
                                      stdin=stdin, capture_stdout=True, capture_stderr=True,
                                      check=check)


def blob(path: str, size: int = 1 << 20) -> str:
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


async def test_curl_fetches_from_http_server_over_the_stack(net, tmp_path) -> None:  # type: ignore[no-untyped-def]
    www = tmp_path / "www"
    www.mkdir()
    digest = blob(str(www / "blob.bin"))
    srv = await start([*LIB, "-m", "http.server", "8000", "--bind", net.STACK_IP,
                       "--directory", str(www)], net.env())
    try:
        out = tmp_path / "got.bin"
        await nsrun(net.ns, "curl", "-sS", "--fail", "--max-time", "30", "-o", str(out),
                    f"http://{net.STACK_IP}:8000/blob.bin")
        assert sha(str(out)) == digest
        listing = await nsrun(net.ns, "curl", "-sS", "--fail", f"http://{net.STACK_IP}:8000/")
        assert b"blob.bin" in listing.stdout
    finally:
        await stop(srv)


async def test_urllib_over_the_stack_fetches_from_the_kernel(net, tmp_path) -> None:  # type: ignore[no-untyped-def]
    www = tmp_path / "www"
    www.mkdir()
    digest = blob(str(www / "blob.bin"), 300_000)
    srv = await start([PY, "-m", "http.server", "8001", "--bind", net.KERNEL_IP,
                       "--directory", str(www)], net.env(), ns=net.ns)
    try:
        out = tmp_path / "got.bin"
        with trio.fail_after(60):
            r = await trio.run_process(
                [*LIB, f"{HERE}/scripts/urllib_fetch.py",
                 f"http://{net.KERNEL_IP}:8001/blob.bin", str(out)],
                env=net.env(), cwd=REPO, capture_stdout=True, capture_stderr=True)
        assert r.stdout.split() == [b"200", b"300000"]
        assert sha(str(out)) == digest
    finally:
        await stop(srv)


async def _concurrent_clients(net, port: int, n: int = 6) -> None:  # type: ignore[no-untyped-def]
    results: dict[int, bytes] = {}

    async def client(i: int) -> None:
        lines = b"".join(b"client %d line %d\n" % (i, j) for j in range(20))
        r = await nsrun(net.ns, "socat", "-t", "5", "-", f"TCP:{net.STACK_IP}:{port}",
                        stdin=lines)
        results[i] = r.stdout
        assert r.stdout == lines.upper(), (i, r.stdout[:200], r.stderr)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(client, i)
    assert len(results) == n


async def test_asyncio_stream_echo_server_over_the_stack(net) -> None:  # type: ignore[no-untyped-def]
    srv = await start([*LIB, f"{HERE}/scripts/asyncio_echo.py", net.STACK_IP, "8002"],
                      net.env())
    try:
        await _concurrent_clients(net, 8002)
    finally:
        await stop(srv)


async def test_selectors_server_over_the_stack(net) -> None:  # type: ignore[no-untyped-def]
    srv = await start([*LIB, f"{HERE}/scripts/selectors_echo.py", net.STACK_IP, "8003"],
                      net.env())
    try:
        results: list[bytes] = []

        async def client(i: int) -> None:
            data = os.urandom(50_000).hex().encode()
            r = await nsrun(net.ns, "socat", "-t", "5", "-",
                            f"TCP:{net.STACK_IP}:8003", stdin=data)
            assert r.stdout == data, (i, len(r.stdout), r.stderr)
            results.append(r.stdout)

        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(client, i)
        assert len(results) == 6
    finally:
        await stop(srv)


@pytest.fixture(scope="module")
def c_examples(tmp_path_factory) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("c")
    made = {}
    for name in ("tcp_client", "tcp_server"):
        exe = str(out / name)
        subprocess.run(["gcc", "-Wall", "-Wextra", "-Werror", "-O2",
                        "-I", f"{REPO}/rmgr/include", "-o", exe,
                        f"{REPO}/examples/{name}.c"], check=True, capture_output=True)
        made[name] = exe
    return made


async def test_c_examples_talk_to_the_kernel(net, c_examples) -> None:  # type: ignore[no-untyped-def]
    echo = await spawn(["ip", "netns", "exec", net.ns.name, "socat",
                        "TCP-LISTEN:7010,reuseaddr,fork", "EXEC:cat"])
    try:
        await trio.sleep(0.3)
        for flag in ([], ["-n"]):
            with trio.fail_after(20):
                r = await trio.run_process([c_examples["tcp_client"], *flag, net.KERNEL_IP,
                                            "7010", "hello from C"], env=net.env(),
                                           capture_stdout=True, capture_stderr=True)
            assert r.stdout == b"hello from C"
            assert b"connected from 10.9.0.2:" in r.stderr
            if flag:
                assert b"non-blocking connect done" in r.stderr
    finally:
        await stop(echo)
    srv = await start([c_examples["tcp_server"], "7011", "2"], net.env())
    try:
        for msg in (b"first", b"second"):
            r = await nsrun(net.ns, "socat", "-t", "5", "-", f"TCP:{net.STACK_IP}:7011",
                            stdin=msg)
            assert r.stdout == msg.upper()
        with trio.fail_after(10):
            await trio.to_thread.run_sync(srv.wait)
        assert srv.returncode == 0
    finally:
        await stop(srv)


async def test_bash_speaks_http_through_the_text_door(net, tmp_path) -> None:  # type: ignore[no-untyped-def]
    www = tmp_path / "www"
    www.mkdir()
    (www / "hello.txt").write_text("hello through the text door\nsecond line\n")
    srv = await start([PY, "-m", "http.server", "8004", "--bind", net.KERNEL_IP,
                       "--directory", str(www)], net.env(), ns=net.ns)
    try:
        with trio.fail_after(60):
            r = await trio.run_process(["bash", f"{HERE}/scripts/http_text_door.sh",
                                        net.KERNEL_IP, "8004", "/hello.txt"], env=net.env(),
                                       capture_stdout=True, capture_stderr=True)
        out = r.stdout.decode()
        assert out.startswith("HTTP/1.0 200 OK"), out
        assert out.endswith("hello through the text door\nsecond line\n"), out
        assert "Established" in r.stderr.decode()
    finally:
        await stop(srv)
