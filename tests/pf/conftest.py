"""pf/bpf fixtures: an in-process stack (lsm-pf and lsm-bpf loaded, mounts at a tmp
prefix) with tap0 = 10.77.0.2/24 inside a namespace the test made (kernel side
10.77.0.1), and a TCP echo server on the stack at port 8080.

Everything the test runs against the stack's files or the kernel goes through
``trio.run_process`` or a worker thread: the stack serves FUSE on this trio thread."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import HAVE_FUSE, HAVE_TUN, NetNS, running_stack

STACK_IP = "10.77.0.2"
KERNEL_IP = "10.77.0.1"
ECHO_PORT = 8080

#: python3 in the namespace: connect to the stack, print "ok", "timeout" or "refused"
CONNECT = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    s.sendall(b"ping"); s.settimeout(3); print("ok" if s.recv(10) == b"ping" else "bad")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error", e)
"""


class PfNet:
    def __init__(self, st: Any, ns: NetNS, prefix: str) -> None:
        self.st = st
        self.ns = ns
        self.prefix = prefix
        self.pfdir = Path(prefix) / "dev" / "pf"
        self.bpfdir = Path(prefix) / "dev" / "bpf"

    @property
    def pf(self) -> Any:
        return self.st.pf

    async def kernel(self, *cmd: str, check: bool = False, timeout: float = 20) -> str:
        with trio.fail_after(timeout):
            r = await trio.run_process(["ip", "netns", "exec", self.ns.name, *cmd],
                                       capture_stdout=True, capture_stderr=True, check=check)
        return (r.stdout + r.stderr).decode(errors="replace")

    async def connect(self, port: int = ECHO_PORT, timeout: float = 2.0) -> str:
        out = await self.kernel("python3", "-c", CONNECT, STACK_IP, str(port), str(timeout))
        return out.strip()

    async def kping(self, count: int = 1, wait: float = 1) -> bool:
        """The kernel pings the stack; True if a reply came."""
        with trio.fail_after(count * wait + 10):
            r = await trio.run_process(["ip", "netns", "exec", self.ns.name, "ping", "-n", "-c",
                                        str(count), "-W", str(wait), STACK_IP],
                                       capture_stdout=True, capture_stderr=True, check=False)
        return r.returncode == 0

    async def ctl(self, text: str) -> tuple[int, str]:
        import errno

        from rmgr.nodes import IoRequest, OpenRequest, open_node
        from tests.tools.helpers import ROOT

        node = self.pf_tree.lookup("ctl")
        h = await open_node(node, OpenRequest(ROOT, 2))  # type: ignore[arg-type]
        try:
            await h.write(memoryview(text.encode()), IoRequest(ROOT, False))
            code = 0
        except OSError as exc:
            code = exc.errno or errno.EIO
        return code, bytes(await h.read(65536, IoRequest(ROOT, False))).decode()

    async def load(self, text: str) -> None:
        code, reply = await self.ctl("load test.conf\n" + text)
        assert code == 0, reply

    async def read_file(self, path: Path) -> str:
        return await trio.to_thread.run_sync(path.read_text)


async def echo_server(st: Any, port: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    lst = st.tcp.socket()
    lst.bind((STACK_IP, port))
    lst.listen()
    task_status.started()

    async def serve(conn: Any) -> None:
        try:
            while True:
                data = await conn.recv(65536)
                if not data:
                    break
                await conn.send(data)
        except OSError:
            pass
        finally:
            conn.close()

    async with trio.open_nursery() as n:
        while True:
            conn, _ = await lst.accept()
            n.start_soon(serve, conn)


@pytest.fixture
async def pfnet(netns: NetNS, tmp_path: Path) -> AsyncIterator[PfNet]:
    if not (HAVE_FUSE and HAVE_TUN):
        pytest.skip("needs root, /dev/fuse, fusermount3 and /dev/net/tun")
    from stack.l2.iface import IFF_UP

    prefix = str(tmp_path / "s")
    async with running_stack(drivers=[("tap", f"name=tap0,netns={netns}")],
                             protocols=[("pf", ""), ("bpf", "")], prefix=prefix,
                             mount=True) as st:
        st.interfaces["tap0"].set_flags(IFF_UP)
        st.inet.add_address("tap0", f"{STACK_IP}/24")
        for cmd in (["addr", "add", f"{KERNEL_IP}/24", "dev", "tap0"],
                    ["link", "set", "tap0", "up"]):
            await trio.run_process(["ip", "-n", netns.name, *cmd], capture_stderr=True)
        net = PfNet(st, netns, prefix)
        from stack.pf import build_tree

        net.pf_tree = build_tree(st.pf)  # type: ignore[attr-defined]
        async with trio.open_nursery() as n:
            await n.start(echo_server, st, ECHO_PORT)
            try:
                yield net
            finally:
                n.cancel_scope.cancel()


@pytest.fixture
def pf_stack_process(stack_process: Any) -> Any:
    """``stack_process`` that also lazily unmounts dev/pf and dev/bpf of a stack that
    had to be killed (the shared fixture only knows dev/socket)."""
    import subprocess

    from stack.preflight import mounted_fuse_at

    made: list[Any] = []

    def start(*args: str, **kw: Any) -> Any:
        sp = stack_process(*args, **kw)
        made.append(sp)
        return sp

    yield start
    for sp in made:
        sp.cleanup()
        for sub in ("pf", "bpf"):
            path = f"{sp.prefix}/dev/{sub}"
            if mounted_fuse_at(path):
                subprocess.run(["fusermount3", "-u", "-z", path], check=False)
