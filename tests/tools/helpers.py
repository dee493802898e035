"""Drive the control files in-process (no FUSE): open a node, write a command, read."""

from __future__ import annotations

import errno

from rmgr.nodes import Caller, Directory, IoRequest, OpenRequest, open_node
from stack.core import Stack

ROOT = Caller(0, 0, 1)
USER = Caller(1000, 1000, 1)


def node_at(stack: Stack, rel: str) -> object:
    here: object = stack.tree
    for part in rel.split("/"):
        assert isinstance(here, Directory), rel
        nxt = here.lookup(part)
        assert nxt is not None, f"{rel}: {part} missing"
        here = nxt
    return here


async def read(stack: Stack, rel: str) -> str:
    h = await open_node(node_at(stack, rel), OpenRequest(ROOT, 0))  # type: ignore[arg-type]
    out = b""
    while True:
        chunk = await h.read(65536, IoRequest(ROOT, False))
        if not chunk:
            return out.decode()
        out += bytes(chunk)


async def write(stack: Stack, rel: str, text: str, caller: Caller = ROOT) -> tuple[int, str]:
    """(0, reply) or (errno, 'error: ENAME: message')."""
    h = await open_node(node_at(stack, rel), OpenRequest(caller, 2))  # type: ignore[arg-type]
    try:
        await h.write(memoryview(text.encode()), IoRequest(caller, False))
        code = 0
    except OSError as exc:
        code = exc.errno or errno.EIO
    reply = bytes(await h.read(65536, IoRequest(caller, False))).decode()
    return code, reply
