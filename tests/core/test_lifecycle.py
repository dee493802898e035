"""The io-pkt process: readiness, clean shutdown, two instances, loading while running."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stack.preflight import mounted_fuse_at
from tests.conftest import needs_fuse

MODS = str(Path(__file__).parent / "modules")

pytestmark = needs_fuse


def test_readiness_path_appears_only_when_ready(stack_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = dict(os.environ, IO_PKT_MODULE_PATH=MODS, PYTHONPATH=str(Path(__file__).parents[2]))
    sp = stack_process("-p", "slowstart", "delay=1.5", wait=False, env=env)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        assert not os.path.exists(sp.path), "socket path exists before the stack is ready"
        time.sleep(0.05)
    sp.wait_ready()
    assert (Path(sp.path) / "config" / "status").read_text().startswith(f"pid {sp.proc.pid}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_on_signal(stack_process, sig) -> None:  # type: ignore[no-untyped-def]
    sp = stack_process("-d", "tap", "name=tapsig0") if os.path.exists("/dev/net/tun") \
        else stack_process()
    assert mounted_fuse_at(sp.path)
    rc, err = sp.stop(sig)
    assert rc == 0, err
    assert not mounted_fuse_at(sp.path)
    assert not os.path.exists(sp.path), "the mountpoint the stack made is removed"
    # the TAP the stack created is gone from the host
    r = subprocess.run(["ip", "link", "show", "tapsig0"], capture_output=True)
    assert r.returncode != 0


def test_two_instances_side_by_side(stack_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = stack_process()
    b = stack_process("-i", "1", "-p", "tcpip", f"prefix={tmp_path}/second")
    sa = (Path(a.path) / "config" / "status").read_text()
    sb = (Path(b.path) / "config" / "status").read_text()
    assert "instance 0" in sa and "instance 1" in sb
    assert f"pid {a.proc.pid}" in sa and f"pid {b.proc.pid}" in sb
    # a third at an occupied prefix refuses clearly
    c = stack_process("-p", "tcpip", f"prefix={a.prefix}", wait=False)
    rc = c.proc.wait(timeout=20)
    err = c.proc.stderr.read()
    assert rc == 1 and "already serving" in err
    assert a.stop()[0] == 0 and b.stop()[0] == 0


def test_stale_mount_after_sigkill_is_cleaned(stack_process) -> None:  # type: ignore[no-untyped-def]
    a = stack_process()
    a.proc.kill()
    a.proc.wait()
    assert mounted_fuse_at(a.path)  # the kernel keeps the dead mount
    b = stack_process("-p", "tcpip", f"prefix={a.prefix}")
    assert (Path(b.path) / "config" / "status").read_text().startswith(f"pid {b.proc.pid}")
    assert b.stop()[0] == 0


def test_mount_tool_loads_a_module_into_a_running_stack(stack_process) -> None:  # type: ignore[no-untyped-def]
    env = dict(os.environ, IO_PKT_MODULE_PATH=MODS, PYTHONPATH=str(Path(__file__).parents[2]))
    sp = stack_process(env=env)
    r = sp.tool("mount", "-T", "io-pkt", "devnp-dummy", "count=2,name=mt")
    assert r.stdout.strip() == "loaded devnp-dummy mt0 mt1"
    assert "devnp-dummy driver running interfaces=mt0,mt1" in \
        (Path(sp.path) / "config" / "modules").read_text()
    bad = sp.tool("mount", "-T", "io-pkt", "devnp-nosuch", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("mount: Unable to load/init devnp-nosuch: "
                                         "module not found")
    bad = sp.tool("mount", "-T", "nfs", "x", check=False)
    assert bad.returncode == 1 and "unknown mount type" in bad.stderr
    # a module raising later does not take the stack down
    sp.tool("mount", "-T", "io-pkt", "lsm-raiselater", "after=0.1")
    time.sleep(0.5)
    assert "modules_failed_run 1" in (Path(sp.path) / "config" / "status").read_text()
    assert sp.stop()[0] == 0


def test_no_stack_at_prefix_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import IO_PKT, REPO, io_pkt_env

    r = subprocess.run(IO_PKT + ["mount", "-T", "io-pkt", "devnp-tap"], cwd=REPO,
                       env=io_pkt_env(SOCK=str(tmp_path / "none")), capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip() == f"mount: no io-pkt stack at {tmp_path}/none/dev/socket " \
                               "(is it running? set SOCK or --prefix)"
