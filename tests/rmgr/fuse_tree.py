"""The tree the FUSE tests serve, and a server process for the signal tests:

    python -m tests.rmgr.fuse_tree MOUNTPOINT     (prints "ready" once mounted; SIGTERM stops)
"""

from __future__ import annotations

import errno
import os
import select
import struct
import sys

import trio

from rmgr.fuse.abi import IO, IOR, IOW, IOWR
from rmgr.nodes import (
    Caller,
    ControlFile,
    Directory,
    Handle,
    HandleFile,
    IoRequest,
    OpenRequest,
    TextFile,
)

# the ioctls the channel handle answers (type 'T'); tests/rmgr/c/fuse_client.c has the same
IOC_GET = IOR(ord("T"), 1, 8)  # -> u64 0x1122334455667788
IOC_SET = IOW(ord("T"), 2, 16)  # <- 16 bytes, kept in .stored
IOC_XOR = IOWR(ord("T"), 3, 32)  # <-> 32 bytes, each byte xor 0xA5; result 32
IOC_PING = IO(ord("T"), 4)  # result 42
IOC_UNKNOWN = IOR(ord("T"), 99, 4)  # ENOTTY
GET_VALUE = 0x1122334455667788

TEXT = "hello from io-pkt\n"


class Chan(Handle):
    """A per-open byte queue: write appends, read takes (blocking unless O_NONBLOCK), the
    test side can ``feed`` it. Poll reports POLLIN while data is queued."""

    def __init__(self, tree: FuseTree, req: OpenRequest) -> None:
        super().__init__()
        self.tree = tree
        self.open_flags = req.flags
        self.caller = req.caller
        self.buf = bytearray()
        self.readers = 0
        self.stored = b""
        self.released = 0
        self._changed = trio.Event()

    def feed(self, data: bytes) -> None:
        self.buf += data
        self._changed.set()
        self._changed = trio.Event()
        self.notify()

    async def read(self, size: int, req: IoRequest) -> bytes:
        while not self.buf:
            if req.nonblock:
                raise OSError(errno.EAGAIN, "no data")
            self.readers += 1
            try:
                await self._changed.wait()
            finally:
                self.readers -= 1
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out

    async def write(self, data: memoryview, req: IoRequest) -> int:
        self.tree.write_sizes.append(len(data))
        if bytes(data[:5]) == b"block":
            self.readers += 1
            try:
                await self.tree.gate.wait()
            finally:
                self.readers -= 1
        if len(data) <= 4096:
            self.feed(bytes(data))
        return len(data)

    async def ioctl(self, cmd: int, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        if cmd == IOC_GET:
            return 0, struct.pack("<Q", GET_VALUE)
        if cmd == IOC_SET:
            self.stored = arg
            return 0, b""
        if cmd == IOC_XOR:
            return 32, bytes(b ^ 0xA5 for b in arg)
        if cmd == IOC_PING:
            return 42, b""
        return await super().ioctl(cmd, arg, req)

    def poll(self) -> int:
        return select.POLLOUT | (select.POLLIN if self.buf else 0)

    def release(self) -> None:
        self.released += 1
        self.tree.releases += 1


class Boom(Handle):
    """Handlers that fail the way a bug would."""

    async def read(self, size: int, req: IoRequest) -> bytes:
        raise RuntimeError("a bug in a read handler")

    async def write(self, data: memoryview, req: IoRequest) -> int:
        raise OSError(errno.ENOSPC, "full")

    def poll(self) -> int:
        raise ValueError("a bug in a poll handler")


class FuseTree:
    def __init__(self) -> None:
        self.handles: list[Chan] = []
        self.write_sizes: list[int] = []
        self.releases = 0
        self.gate = trio.Event()
        self.commands: list[str] = []
        self.dyn_names: set[str] = {"one"}
        self.root = Directory()
        r = self.root
        r.add("text", TextFile(lambda: TEXT))
        r.add("ctl", ControlFile(self._command, lambda: "state: idle\n", mode=0o644))
        r.add("chan", HandleFile(self._open_chan, mode=0o666))
        r.add("secret", HandleFile(self._open_chan, mode=0o600))
        r.add("boom", HandleFile(lambda req: Boom(), mode=0o666))
        r.mkdirs("sub/deeper").add("leaf", TextFile(lambda: "leaf\n"))
        self.dyn_nodes: dict[str, TextFile] = {}
        r.add("dyn", Directory(dynamic=self._dynamic))

    def _open_chan(self, req: OpenRequest) -> Chan:
        h = Chan(self, req)
        self.handles.append(h)
        return h

    def _command(self, cmd: str, caller: Caller) -> str:
        self.commands.append(cmd)
        if cmd == "fail":
            raise OSError(errno.EINVAL, "the command failed")
        return f"done: {cmd}\n"

    def _dynamic(self) -> dict[str, TextFile]:
        for name in self.dyn_names:
            if name not in self.dyn_nodes:
                self.dyn_nodes[name] = TextFile(lambda name=name: f"{name}\n")  # type: ignore[misc]
        return {n: self.dyn_nodes[n] for n in sorted(self.dyn_names)}


async def _serve(mountpoint: str) -> None:
    from rmgr.fuse.session import serve_mount

    tree = FuseTree()
    with trio.open_signal_receiver(15) as signals:  # SIGTERM: an orderly stop
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_mount, tree.root, mountpoint)
            print("ready", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    trio.run(_serve, os.path.abspath(sys.argv[1]))
