"""Nodes found under a directory's ``dynamic`` part (a socket's ``tcp/N`` and everything
in it) must be FORGOTTEN by the kernel once they vanish, whatever was open or cached below
them when they did, so the session's inode table (and the sockets its nodes hold) returns
to its size before. Issue 14 item 6: churning sockets while others listed ``tcp/`` and
read ``tcp/N/status`` left a ``tcp/N`` directory (and through it the whole socket: Conn,
endpoint, TCB) in the table now and then, for good.

The cause: a file of ``tcp/N`` (``status``) open while ``tcp/N`` vanished. The sweep's
NOTIFY_INVAL_ENTRY unhashes ``tcp/N`` but cannot drop a child in use; when that file was
closed its dentry, cached for ENTRY_TTL, stayed in the kernel's LRU pinning ``tcp/N``,
and no lookup could ever reach it again to find it expired (the kernel drops an expired
dentry on its last close only for virtiofs, ``delete_stale``). So the sweep invalidates
what it handed out below ``tcp/N`` as well: unhashed, a child is dropped on its last
close, releasing ``tcp/N``, and the kernel FORGETs both."""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio

from rmgr.fuse import abi, inodes
from rmgr.fuse.session import FuseSession, serve_mount
from rmgr.nodes import Directory, TextFile
from tests.conftest import HAVE_FUSE
from tests.rmgr.conftest import blocking, force_unmount
from tests.rmgr.test_fuse_protocol import FakeKernel, read_in


class Conns:
    """A ``conns/`` directory whose entries come and go, like the text door's ``tcp/``:
    each ``conns/N`` is a directory with fixed children."""

    def __init__(self) -> None:
        self.live: dict[str, Directory] = {}
        self.root = Directory()
        self.root.add("conns", Directory(dynamic=lambda: dict(self.live)))
        self.root.add("static", Directory({"leaf": TextFile(lambda: "leaf\n")}))

    def add(self, name: str) -> None:
        self.live[name] = Directory({"status": TextFile(lambda: f"{name} alive\n"),
                                     "data": TextFile(lambda: "data\n")})

    def remove(self, name: str) -> None:
        del self.live[name]


# -- the protocol, with the test playing the kernel --------------------------------------

@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeKernel, Conns]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.setblocking(False)
    tree = Conns()
    session = FuseSession(tree.root, theirs.fileno(), name="fake", max_write=128 * 1024)
    k = FakeKernel(ours.fileno(), session, tree)  # type: ignore[arg-type]
    try:
        async with trio.open_nursery() as nursery:
            k.send(abi.INIT, abi.INIT_IN.pack(7, 40, 65536, 0xFFFFFFFF) + bytes(48))

            async def run() -> None:
                await session.handshake()
                await session.serve()

            nursery.start_soon(run)
            assert (await k.recv()).error == 0
            yield k, tree
            nursery.cancel_scope.cancel()
    finally:
        ours.close()
        theirs.close()


def _inval(r: object) -> tuple[int, str]:
    body = r.body  # type: ignore[attr-defined]
    parent, namelen, _flags = abi.NOTIFY_INVAL_ENTRY_OUT.unpack_from(body)
    off = abi.NOTIFY_INVAL_ENTRY_OUT.size
    return parent, body[off:off + namelen].decode()


async def test_vanished_entry_is_invalidated_with_what_is_below_it(
        fake: tuple[FakeKernel, Conns], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inodes, "DYN_SWEEP_INTERVAL", 0.02)
    k, tree = fake
    s = k.session
    tree.add("7")
    tree.add("8")
    conns = await k.lookup("conns")
    seven = await k.lookup("7", conns)
    status = await k.lookup("status", seven)
    await k.lookup("status", await k.lookup("8", conns))
    static = await k.lookup("static")
    await k.lookup("leaf", static)  # not below a dynamic entry: never invalidated
    tree.remove("7")
    # the child first (it may be open: unhashed, the kernel drops it on its last close
    # and so releases conns/7), then conns/7 itself; nothing for the live conns/8
    notes = [await k.recv(), await k.recv()]
    assert [(r.unique, r.error) for r in notes] == [(0, abi.NOTIFY_INVAL_ENTRY)] * 2
    assert [_inval(r) for r in notes] == [(seven, "status"), (conns, "7")]
    await k.no_reply(0.1)
    assert s.counters["inval_entry"] == 2
    # nothing new is hung below the vanished directory (a walk that got there before)
    assert (await k.call(abi.LOOKUP, b"data\0", seven)).error == -errno.ENOENT
    r = await k.call(abi.OPENDIR, abi.OPEN_IN.pack(0, 0), seven)
    fh = abi.OPEN_OUT.unpack(r.body)[0]
    r = await k.call(abi.READDIRPLUS, read_in(fh, 4096), seven)
    off = 0
    while off < len(r.body):  # listed without entries (nodeid 0): no lookup counted
        assert abi.ENTRY_OUT.unpack_from(r.body, off)[0] == 0
        namelen = abi.DIRENT.unpack_from(r.body, off + abi.ENTRY_OUT.size)[2]
        off += abi.direntplus_size(namelen)
    # the kernel forgets them: the bookkeeping goes with them
    k.send(abi.BATCH_FORGET, abi.BATCH_FORGET_IN.pack(2, 0) + abi.FORGET_ONE.pack(status, 1)
           + abi.FORGET_ONE.pack(seven, 1))
    await k.no_reply(0.05)
    assert seven not in s.known_inodes() and status not in s.known_inodes()
    t = s.inodes
    assert not (t._dead | set(t._below) | set(t._kids)) & {seven, status}


# -- the real kernel -----------------------------------------------------------------------

needs_fuse = pytest.mark.skipif(not HAVE_FUSE, reason="needs root, /dev/fuse, fusermount3")


@pytest.fixture
async def mounted_conns(fuse_base: str,
                        monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, Conns,
                                                                                FuseSession]]:
    monkeypatch.setattr(inodes, "DYN_SWEEP_INTERVAL", 0.05)
    path = os.path.join(fuse_base, "mnt")
    tree = Conns()
    try:
        async with trio.open_nursery() as nursery:
            session = await nursery.start(partial(serve_mount, tree.root, path,
                                                  fsname="io-pkt-test"))
            yield path, tree, session
            nursery.cancel_scope.cancel()
    finally:
        force_unmount(path)


async def _forgotten(session: FuseSession, inos: set[int], timeout: float = 5.0) -> set[int]:
    """The inodes of ``inos`` the kernel still holds after waiting up to ``timeout``."""
    with trio.move_on_after(timeout):
        while inos & set(session.known_inodes()):
            await trio.sleep(0.05)
    return inos & set(session.known_inodes())


@needs_fuse
async def test_entry_vanishing_while_a_child_is_open_is_forgotten(
        mounted_conns: tuple[str, Conns, FuseSession]) -> None:
    path, tree, session = mounted_conns
    await blocking(os.listdir, os.path.join(path, "conns"))
    base = set(session.known_inodes())
    for n in range(5):
        name = str(n)
        tree.add(name)
        opened = threading.Event()
        release = threading.Event()

        def reader(name: str = name, opened: threading.Event = opened,
                   release: threading.Event = release) -> bytes:
            with open(os.path.join(path, "conns", name, "status"), "rb") as f:
                opened.set()
                release.wait(10)
                return f.read()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocking, reader)
            await blocking(opened.wait, 10)
            assert name in await blocking(os.listdir, os.path.join(path, "conns"))
            mine = set(session.known_inodes()) - base
            assert len(mine) == 2, mine  # conns/N and conns/N/status
            tree.remove(name)  # the socket closes while its status file is open
            await trio.sleep(0.3)  # the sweep invalidates conns/N (NOTIFY_INVAL_ENTRY)
            release.set()
        assert await _forgotten(session, mine) == set(), (name, session.known_inodes())
    assert set(session.known_inodes()) == base
