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
