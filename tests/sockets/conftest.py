"""Fixtures for the socket files: an in-process stack mounted at a tmp prefix.

``kstack`` serves the socket files over the *kernel's* sockets (tests/sockets/
kernel_endpoint.py), so the files, rmgr.libsocket and the C examples are tested end to
end through FUSE on their own; the kernel-peer tests run them on the stack's transports.
Blocking socket calls must not run on the trio thread that serves FUSE: tests call them
through ``trio.to_thread.run_sync`` or from subprocesses."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import AsyncIterator

import pytest

from tests.conftest import HAVE_FUSE, running_stack

# This process serves the socket files AND may hold some of them open while it starts
# subprocesses: the child closes those files before exec (a FLUSH this process must
# answer) while Popen() waits for the exec. So never call subprocess.Popen on the trio
# thread here: use ``spawn()`` (or trio.run_process, which already uses a thread).


async def spawn(cmd: list[str], **kw: object) -> subprocess.Popen[bytes]:
    import functools

    import trio

    return await trio.to_thread.run_sync(functools.partial(subprocess.Popen, cmd, **kw))  # type: ignore[arg-type]

needs_fuse = pytest.mark.skipif(not HAVE_FUSE, reason="needs root, /dev/fuse and fusermount3")


@pytest.fixture
async def kstack(tmp_path, monkeypatch) -> AsyncIterator[object]:  # type: ignore[no-untyped-def]
    if not HAVE_FUSE:
        pytest.skip("needs root, /dev/fuse and fusermount3")
    import stack.sockets.backend as backend

    from .kernel_endpoint import kernel_socket_types

    monkeypatch.setattr(backend, "socket_types", lambda st: kernel_socket_types(st.nursery))
    prefix = str(tmp_path / "k")
    async with running_stack(prefix=prefix, mount=True) as st:
        st.prefix = prefix  # type: ignore[attr-defined]
        yield st


class Net:
    """A stack in this process with tap0 = 10.9.0.2/24 inside namespace ``ns`` (the
    kernel side is 10.9.0.1), its socket files at ``prefix``/dev/socket."""

    STACK_IP = "10.9.0.2"
    KERNEL_IP = "10.9.0.1"

    def __init__(self, st: object, ns: object, prefix: str) -> None:
        self.st = st
        self.ns = ns
        self.prefix = prefix
        self.sockdir = f"{prefix}/dev/socket"

    def env(self, **extra: str) -> dict[str, str]:
        from tests.conftest import io_pkt_env

        env = io_pkt_env(SOCK=self.prefix, **extra)
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                  "ALL_PROXY"):
            env.pop(k, None)
        env["no_proxy"] = "*"
        return env


@contextlib.asynccontextmanager
async def tap_net(netns, tap_opts: str = "", **stack_kw: object) -> AsyncIterator[Net]:  # type: ignore[no-untyped-def]
    """A mounted stack on tap0 in ``netns`` (``tap_opts`` appended to the driver's
    options), both ends addressed and up; skips without FUSE and a TUN device. The
    prefix is under a 0755 directory (pytest's tmp dirs are 0700) so that a stack
    mounted ``allow_other`` serves other users too."""
    from tests.conftest import HAVE_TUN

    if not (HAVE_FUSE and HAVE_TUN):
        pytest.skip("needs root, /dev/fuse, fusermount3 and /dev/net/tun")
    import shutil
    import tempfile

    import trio

    from stack.l2.iface import IFF_UP

    top = tempfile.mkdtemp(prefix="iopkt-sock-")
    os.chmod(top, 0o755)
    prefix = f"{top}/s"
    try:
        async with running_stack(drivers=[("tap", f"name=tap0,netns={netns}{tap_opts}")],
                                 prefix=prefix, mount=True, **stack_kw) as st:  # type: ignore[arg-type]
            st.interfaces["tap0"].set_flags(IFF_UP)
            st.inet.add_address("tap0", f"{Net.STACK_IP}/24")
            for cmd in (["addr", "add", f"{Net.KERNEL_IP}/24", "dev", "tap0"],
                        ["link", "set", "tap0", "up"]):
                await trio.run_process(["ip", "-n", netns.name, *cmd], capture_stderr=True)
            yield Net(st, netns, prefix)
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
async def net(netns, tmp_path) -> AsyncIterator[Net]:  # type: ignore[no-untyped-def]
    # mounted allow_other, so permission tests can run as nobody
    async with tap_net(netns, tcpip="allow_other") as n:
        yield n

