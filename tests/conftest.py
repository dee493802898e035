"""Shared fixtures: private network namespaces, an in-process stack, root checks.

Every address a test uses lives in a namespace made here and deleted on every path."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import trio

from stack.core import Stack, StackConfig
from stack.counters import Counters
from stack.options import Options

HAVE_ROOT = os.geteuid() == 0
HAVE_FUSE = os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None
HAVE_TUN = os.path.exists("/dev/net/tun")

needs_root = pytest.mark.skipif(not HAVE_ROOT, reason="needs root (CI runs as root)")
needs_fuse = pytest.mark.skipif(not (HAVE_ROOT and HAVE_FUSE),
                                reason="needs root, /dev/fuse and fusermount3 (package fuse3)")
needs_tun = pytest.mark.skipif(not (HAVE_ROOT and HAVE_TUN),
                               reason="needs root and /dev/net/tun")


# Counter names (stack/counters.py): a name its group does not declare fails the test that
# counts it, in this process and in every io-pkt a test starts (they inherit the
# environment; stack_process fails a test whose stack reported one).
os.environ["IOPKT_STRICT_COUNTERS"] = "1"
Counters.strict = True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run only when asked for (``pytest -m slow``): each is a
    longer variant of something the suite also tests quickly (README: Tests)."""
    if "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def strict_counters() -> Iterator[None]:
    """Strict counters for every test (a test may turn it off; it is restored)."""
    Counters.strict = True
    yield
    Counters.strict = True


def sh(*cmd: str, check: bool = True, timeout: float = 30, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, timeout=timeout, **kw)  # type: ignore[call-overload]


class NetNS:
    """A network namespace owned by one test."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *cmd, check=check, timeout=timeout)

    def popen(self, *cmd: str, **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)  # type: ignore[call-overload]

    def __str__(self) -> str:
        return self.name


@pytest.fixture
def netns_factory() -> Iterator[object]:
    made: list[NetNS] = []

    def make(tag: str = "t", ipv6: bool = False) -> NetNS:
        name = f"iopkt-{tag}-{uuid.uuid4().hex[:6]}"
        sh("ip", "netns", "add", name)
        ns = NetNS(name)
        made.append(ns)
        ns.run("ip", "link", "set", "lo", "up")
        if not ipv6:
            # IPv4 tests: the kernel's IPv6 chatter (DAD, router and MLD solicitations)
            # would only add frames that race with what they assert on
            ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                   "net.ipv6.conf.default.disable_ipv6=1")
        return ns

    yield make
    for ns in made:
        with contextlib.suppress(Exception):
            sh("ip", "netns", "del", ns.name, check=False)


@pytest.fixture
def netns(netns_factory: object) -> NetNS:
    return netns_factory()  # type: ignore[operator,no-any-return]


@pytest.fixture
def netns6(netns_factory: object) -> NetNS:
    """A namespace whose kernel speaks IPv6 (DAD, ND, accept_ra as a host)."""
    return netns_factory("t6", ipv6=True)  # type: ignore[operator,no-any-return]


@contextlib.asynccontextmanager
async def running_stack(*, drivers: list[tuple[str, str]] = (),  # type: ignore[assignment]
                        protocols: list[tuple[str, str]] = (),  # type: ignore[assignment]
                        tcpip: str = "", prefix: str | None = None,
                        mount: bool = False, inet6: bool = False) -> AsyncIterator[Stack]:
    """Run a Stack inside the test's own trio run; shut it down in order on exit.
    Without ``inet6`` the stack has no link-local addresses (``auto_linklocal=0``): IPv4
    tests count frames, and IPv6's DAD, MLD and router solicitations would race with
    them (as the kernel's namespaces have IPv6 off for them)."""
    if not inet6 and "auto_linklocal" not in tcpip:
        tcpip = ",".join(filter(None, (tcpip, "auto_linklocal=0")))
    cfg = StackConfig(tcpip=Options.parse(tcpip), mount=mount,
                      drivers=[(d, Options.parse(o)) for d, o in drivers],
                      protocols=[(p, Options.parse(o)) for p, o in protocols])
    if prefix is not None:
        cfg.prefix = prefix
    stack = Stack(cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(stack.run)
        try:
            yield stack
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(10):
                    await stack.shutdown()
            nursery.cancel_scope.cancel()


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: run io-pkt from this checkout (not an installed copy)
IO_PKT = [__import__("sys").executable, "-m", "stack.main"]


def io_pkt_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


class StackProcess:
    """An io-pkt process started by a test; stopped (and its mount checked) on exit."""

    def __init__(self, args: list[str], prefix: str, env: dict[str, str] | None = None) -> None:
        self.prefix = prefix
        self.path = f"{prefix}/dev/socket"
        self.proc = subprocess.Popen(IO_PKT + args, cwd=REPO, env=env or io_pkt_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        #: what the process wrote to stderr, once it has been collected (stop, cleanup)
        self.stderr = ""

    def wait_ready(self, timeout: float = 20) -> None:
        import time

        from stack.tools.waitfor import ready

        deadline = time.monotonic() + timeout
        while not ready(self.path):
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                self.stderr += err
                raise AssertionError(f"io-pkt exited {self.proc.returncode}: {err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.path} not ready after {timeout}s")
            time.sleep(0.02)

    def tool(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(IO_PKT + list(args), cwd=REPO, env=io_pkt_env(SOCK=self.prefix),
                           text=True, capture_output=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"io-pkt {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def stop(self, sig: int = 15, timeout: float = 20) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.stderr += err
        return self.proc.returncode, err

    def cleanup(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            self.stderr += self.proc.communicate()[1]
        from stack.preflight import mounted_fuse_at

        for path in (self.path, f"{self.prefix}/dev/crypto"):  # every stack serves both
            if mounted_fuse_at(path):
                sh("fusermount3", "-u", "-z", path, check=False)


@pytest.fixture
def stack_process(tmp_path: object) -> Iterator[object]:
    """Factory: ``start(args..., prefix=None)`` runs io-pkt with a tmp prefix."""
    made: list[StackProcess] = []

    def start(*args: str, prefix: str | None = None, wait: bool = True,
              env: dict[str, str] | None = None) -> StackProcess:
        p = prefix or str(tmp_path) + f"/stack{len(made)}"  # type: ignore[operator]
        argv = list(args)
        given = [Options.parse(a).get("prefix") for a in argv
                 if not a.startswith("-") and "prefix=" in a]
        if given and given[-1]:
            p = given[-1]
        else:
            argv += ["-p", "tcpip", f"prefix={p}"]
        sp = StackProcess(argv, p, env)
        made.append(sp)
        if wait:
            sp.wait_ready()
        return sp

    yield start
    for sp in made:
        sp.cleanup()
    undeclared = [line for sp in made for line in sp.stderr.splitlines()
                  if "UndeclaredCounter" in line]
    if undeclared:
        pytest.fail("a stack counted an undeclared counter:\n" + "\n".join(undeclared))
