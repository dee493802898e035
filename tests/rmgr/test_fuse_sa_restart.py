"""A signal whose handler has SA_RESTART, delivered while a C program is blocked in
read(2) on a FUSE file: Linux restarts such a read on its own sockets, through FUSE the
caller gets EINTR (docs/sockets.md, "Signals and SA_RESTART"). These tests pin down
what the docs say, on the kernel the suite runs on:

* the read fails with EINTR although the handler asked for SA_RESTART, and a retry then
  reads the data - nothing is lost;
* a FUSE server cannot make the kernel restart the call instead: a reply carrying
  -ERESTARTSYS (512, the kernel's internal "restart me") is refused with EINVAL
  (fs/fuse/dev.c accepts errors 1..511 only), so the session answers EINTR."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess

import pytest
import trio

from rmgr.fuse import abi
from rmgr.fuse.session import FuseSession
from tests.conftest import needs_fuse
from tests.rmgr.conftest import Mounted, wait_for

pytestmark = needs_fuse
HERE = os.path.dirname(os.path.abspath(__file__))
ERESTARTSYS = 512  # include/linux/errno.h: never seen by user space


@pytest.fixture(scope="module")
def sa_restart(tmp_path_factory: pytest.TempPathFactory) -> str:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler")
    out = str(tmp_path_factory.mktemp("cbin") / "sa_restart")
    subprocess.run([gcc, "-O1", "-Wall", "-Werror", "-o", out,
                    os.path.join(HERE, "c", "sa_restart.c")], check=True, timeout=60)
    return out


async def _interrupt_blocked_read(mounted: Mounted, prog: str) -> bytes:
    """Run ``prog`` on ``chan``, SIGUSR1 it while it is blocked in read, then feed data
    once it is blocked again (retrying); return what it printed."""
    proc = await trio.lowlevel.open_process([prog, mounted.p("chan")], stdout=subprocess.PIPE)
    try:
        await wait_for(lambda: mounted.tree.handles and mounted.tree.handles[0].readers == 1,
                       what="C reader blocked")
        proc.send_signal(signal.SIGUSR1)
        await wait_for(lambda: mounted.session.counters["interrupted"] == 1,
                       what="the read interrupted")
        await wait_for(lambda: mounted.tree.handles[0].readers == 1, what="C reader retrying")
        mounted.tree.handles[0].feed(b"hello")
        with trio.fail_after(5):
            await proc.wait()
        assert proc.stdout is not None
        out = b""
        while chunk := await proc.stdout.receive_some():
            out += chunk
        assert proc.returncode == 0, out
        return out
    finally:
        proc.kill()
        await proc.wait()


async def test_sa_restart_read_gets_eintr_and_a_retry_loses_nothing(
        mounted: Mounted, sa_restart: str) -> None:
    out = await _interrupt_blocked_read(mounted, sa_restart)
    assert out == b"EINTR\ngot hello handled 1\n", out


async def test_the_kernel_refuses_a_restart_reply(mounted: Mounted, sa_restart: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Before answering the interrupted read with EINTR, try -ERESTARTSYS: the kernel
    refuses that reply (EINVAL), so the only answers are EINTR or the data later."""
    tried: list[int | str] = []
    reply_error = FuseSession.reply_error

    def restart_first(self: FuseSession, unique: int, code: int) -> bool:
        if code == errno.EINTR:
            try:
                os.write(self.fd, abi.OUT_HEADER.pack(16, -ERESTARTSYS, unique))
                tried.append("accepted")
            except OSError as exc:
                tried.append(exc.errno or 0)
        return reply_error(self, unique, code)

    monkeypatch.setattr(FuseSession, "reply_error", restart_first)
    out = await _interrupt_blocked_read(mounted, sa_restart)
    assert tried == [errno.EINVAL], tried
    assert out == b"EINTR\ngot hello handled 1\n", out
