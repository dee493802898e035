"""Fixtures for the FUSE layer: a served test tree at a private mountpoint, and the C
client compiled once. Every mount is removed on every path (fusermount3 -u -z)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial

import pytest
import trio

from rmgr.fuse.session import FuseSession, serve_mount
from stack.preflight import mounted_fuse_at
from tests.rmgr.fuse_tree import FuseTree

HERE = os.path.dirname(os.path.abspath(__file__))


def force_unmount(path: str) -> None:
    if mounted_fuse_at(path):
        subprocess.run(["fusermount3", "-u", "-z", path], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def fuse_base() -> Iterator[str]:
    """A fresh directory others may traverse (0755: the uid-65534 test walks into it)."""
    base = tempfile.mkdtemp(prefix="iopkt-fuse-", dir="/tmp")
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        for entry in os.listdir(base):
            force_unmount(os.path.join(base, entry))
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Mounted:
    path: str
    tree: FuseTree
    session: FuseSession

    def p(self, name: str) -> str:
        return os.path.join(self.path, name)


@pytest.fixture
async def mounted(fuse_base: str) -> AsyncIterator[Mounted]:
    """The test tree served in the test's own trio run (do file I/O from threads or
    subprocesses: a blocking call on the mount from this thread would deadlock)."""
    path = os.path.join(fuse_base, "mnt")
    tree = FuseTree()
    try:
        async with trio.open_nursery() as nursery:
            session = await nursery.start(partial(serve_mount, tree.root, path,
                                                  allow_other=True, fsname="io-pkt-test"))
            yield Mounted(path, tree, session)
            nursery.cancel_scope.cancel()
    finally:
        force_unmount(path)


@pytest.fixture(scope="session")
def c_client(tmp_path_factory: pytest.TempPathFactory) -> str:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler")
    out = str(tmp_path_factory.mktemp("cbin") / "fuse_client")
    subprocess.run([gcc, "-O1", "-Wall", "-Werror", "-o", out,
                    os.path.join(HERE, "c", "fuse_client.c")], check=True, timeout=60)
    return out


async def blocking(fn, *args, **kw):  # type: ignore[no-untyped-def]
    """Run a blocking file operation off the trio thread. Abandoned on cancel, so a test's
    timeout fails it instead of hanging: closing the session's fd then aborts the
    request the thread waits on."""
    return await trio.to_thread.run_sync(partial(fn, *args, **kw), abandon_on_cancel=True)


async def wait_for(cond, timeout: float = 5.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    with trio.move_on_after(timeout):
        while not cond():
            await trio.sleep(0.005)
        return
    raise AssertionError(f"timed out waiting for {what}")
