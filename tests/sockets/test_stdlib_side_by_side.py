"""The stdlib's behaviours that rmgr.libsocket claims, run side by side: the same script
with the real socket module (in the namespace, kernel to kernel) and with rmgr.libsocket
(through the stack's files to the same kernel servers)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import trio

from tests.conftest import needs_tun

from .conftest import spawn

pytestmark = [needs_tun, pytest.mark.root]
HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable


def _parse(out: bytes) -> dict[str, list[object]]:
    return {r[0]: r[1:] for r in (json.loads(line) for line in out.decode().splitlines())}


async def test_stdlib_behaviours_match(net) -> None:  # type: ignore[no-untyped-def]
    srv = await spawn(["ip", "netns", "exec", net.ns.name, PY, f"{HERE}/scripts/kservers.py",
                       net.KERNEL_IP], stdout=-1)
    try:
        assert (await trio.to_thread.run_sync(srv.stdout.readline)).strip() == b"ready"
        real = await trio.run_process(
            ["ip", "netns", "exec", net.ns.name, PY, f"{HERE}/scripts/behaviours.py", "real",
             net.KERNEL_IP], capture_stdout=True, capture_stderr=True, env=net.env(), check=False)
        lib = await trio.run_process(
            [PY, f"{HERE}/scripts/behaviours.py", "lib", net.KERNEL_IP], capture_stdout=True,
            capture_stderr=True, env=net.env(), check=False)
    finally:
        srv.kill()
        await trio.to_thread.run_sync(srv.wait)
    assert real.returncode == 0, real.stderr.decode()
    assert lib.returncode == 0, lib.stderr.decode()
    r, k = _parse(real.stdout), _parse(lib.stdout)
    assert set(r) == set(k)
    diffs = {name: (r[name], k[name]) for name in r if r[name] != k[name]}
    assert not diffs, "\n".join(f"{n}: real={a} lib={b}" for n, (a, b) in diffs.items())
