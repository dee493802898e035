"""The text door's ``status`` (and ``stats``) name the protocol as docs/sockets.md shows
it: ``proto 6`` for a TCP connection made by ``tcp/clone``, ``proto 17`` for UDP, whichever
door made the socket (issue 14, item 6: a clone said ``proto 0``)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.conftest import HAVE_FUSE

pytestmark = pytest.mark.skipif(not HAVE_FUSE, reason="needs root, /dev/fuse, fusermount3")


def _clone(sockdir: str, kind: str) -> tuple[int, int]:
    fd = os.open(f"{sockdir}/{kind}/clone", os.O_RDWR)
    return fd, int(os.read(fd, 64).decode())


def _fields(line: str) -> dict[str, str]:
    words = line.split()
    return dict(zip(words[2::2], words[3::2], strict=False))


def test_status_names_the_protocol(stack_process: Any) -> None:
    sp = stack_process()
    fds = []
    try:
        opened = {}
        for kind, proto in (("tcp", "6"), ("udp", "17")):
            fd, n = _clone(sp.path, kind)
            fds.append(fd)
            opened[kind] = (n, proto)
            # the socket door's protocol-0 node makes the same socket
            fds.append(os.open(f"{sp.path}/2/{1 if kind == 'tcp' else 2}/0", os.O_RDWR))
        for kind, (n, proto) in opened.items():
            with open(f"{sp.path}/{kind}/{n}/status") as f:
                status = f.read()
            assert status.startswith(f"{kind}/{n} "), status
            assert _fields(status)["proto"] == proto, status
            with open(f"{sp.path}/{kind}/stats") as f:
                lines = [ln for ln in f.read().splitlines() if ln.strip()]
            assert len(lines) == 2, lines
            assert all(_fields(ln)["proto"] == proto for ln in lines), lines
    finally:
        for fd in fds:
            os.close(fd)
