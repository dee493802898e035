"""The socket files alone, with the kernel's own sockets behind them (test double
``KernelEndpoint``): the files, ioctls and rmgr.libsocket work independently of the
stack's transports. Uses only 127.0.0.1 of this host (no address is added anywhere)."""

from __future__ import annotations

import socket as std

import trio

from rmgr import libsocket


async def test_tcp_echo_and_text_door_over_kernel_endpoints(kstack) -> None:  # type: ignore[no-untyped-def]
    prefix = kstack.prefix
    srv = std.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def client() -> tuple[bytes, str]:
        libsocket.setsockprefix(prefix)
        try:
            with libsocket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"hello")
                status = open(f"{prefix}/dev/socket/{s.info().name}/status").read()
                return s.recv(100), status
        finally:
            libsocket.clearsockprefix()

    def server() -> None:
        c, _ = srv.accept()
        c.sendall(c.recv(100).upper())
        c.close()

    async with trio.open_nursery() as n:
        n.start_soon(trio.to_thread.run_sync, server)
        got, status = await trio.to_thread.run_sync(client)
    srv.close()
    assert got == b"HELLO"
    assert "Established" in status


async def test_selectors_echo_script_echoes_what_is_pending_at_eof(kstack) -> None:  # type: ignore[no-untyped-def]
    """scripts/selectors_echo.py (test_apps' selectors server) must echo everything even
    when the last data and the FIN come together: it used to read the EOF in the next
    round, before sending that data, and closed with it still pending (the client got
    only what earlier rounds had sent, e.g. 65,536 of 100,000 bytes)."""
    import os
    import subprocess
    import sys

    from tests.conftest import io_pkt_env

    from .conftest import spawn

    probe = std.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts",
                          "selectors_echo.py")
    srv = await spawn([sys.executable, "-m", "rmgr.libsocket", script, "127.0.0.1", str(port)],
                      env=io_pkt_env(SOCK=kstack.prefix, PYTHONUNBUFFERED="1"),
                      stdout=subprocess.PIPE)

    def clients() -> list[bytes]:
        got = []
        for i in range(3):
            first, last = b"%d first " % i * 100, b"%d last " % i * 100
            with std.create_connection(("127.0.0.1", port), timeout=5) as c:
                c.sendall(first)
                echo = b""
                while len(echo) < len(first):
                    echo += c.recv(65536)
                # the last data and the FIN in one segment: the server reads both in one
                # select round
                c.setsockopt(std.IPPROTO_TCP, std.TCP_CORK, 1)
                c.sendall(last)
                c.shutdown(std.SHUT_WR)
                while chunk := c.recv(65536):
                    echo += chunk
            got.append(echo)
        return got

    try:
        with trio.fail_after(20):
            assert (await trio.to_thread.run_sync(srv.stdout.readline)).startswith(b"serving")  # type: ignore[union-attr]
            got = await trio.to_thread.run_sync(clients)
    finally:
        srv.kill()
        await trio.to_thread.run_sync(srv.wait)
    assert got == [b"%d first " % i * 100 + b"%d last " % i * 100 for i in range(3)]
