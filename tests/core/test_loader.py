"""The module loader: good, missing, no entry, wrong version, raising at start and later."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from rmgr.nodes import Caller
from stack.loader import LoadError
from stack.options import Options
from tests.conftest import running_stack

HERE = Path(__file__).parent / "modules"


@pytest.fixture(autouse=True)
def module_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IO_PKT_MODULE_PATH", str(HERE))


async def test_good_module_by_name_and_by_path() -> None:
    async with running_stack(protocols=[("good", "word=hi")]) as stack:
        assert stack.counters["good_started"] == 1
        assert stack.config_dir.lookup("good") is not None
        inst = await stack.modules.load(str(HERE / "devnp-dummy.py"), "driver",
                                        Options.parse("count=2,name=dm"))
        assert [i.name for i in inst.interfaces] == ["dm0", "dm1"]
        assert {"lo0", "dm0", "dm1"} <= set(stack.interfaces)


@pytest.mark.parametrize("spec,reason", [
    ("missing", "module not found"),
    ("noentry", "no IO_PKT_MODULE entry"),
    ("oldapi", "module API version 999"),
    ("raisestart", "RuntimeError: cannot find the hardware"),
])
async def test_bad_modules_get_one_line_and_the_stack_goes_on(
        spec: str, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="io-pkt"):
        async with running_stack(protocols=[(spec, ""), ("good", "")]) as stack:
            assert stack.counters["good_started"] == 1  # the next module still loaded
            assert stack.counters["modules_failed_load"] == 1
            assert [m.name for m in stack.modules.loaded] == ["lsm-good"]
    lines = [r.getMessage() for r in caplog.records if "Unable to load/init" in r.getMessage()]
    assert lines == [f"Unable to load/init {spec}: " + lines[0].split(": ", 1)[1]]
    assert reason in lines[0]


async def test_kind_mismatch_is_refused() -> None:
    async with running_stack() as stack:
        with pytest.raises(LoadError, match="is a protocol module, loaded as a driver"):
            await stack.modules.load("lsm-good", "driver", Options())


async def test_module_raising_later_is_isolated(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="io-pkt"):
        async with running_stack(protocols=[("raiselater", "after=0.05"), ("good", "")]) as stack:
            assert stack.config_dir.lookup("raiselater") is not None
            await trio.sleep(0.3)
            assert stack.counters["modules_failed_run"] == 1
            assert stack.config_dir.lookup("raiselater") is None  # its cleanup ran
            assert [m.name for m in stack.modules.loaded] == ["lsm-good"]
            # the stack keeps serving: lo0 still loops frames, modules still load
            await stack.modules.load("devnp-dummy", "driver", Options())
    assert any("module lsm-raiselater failed and was unloaded" in r.getMessage()
               for r in caplog.records)


async def test_load_and_unload_through_the_control_file() -> None:
    async with running_stack() as stack:
        node = stack.config_dir.lookup("modules")
        root = Caller(uid=0)
        reply = await node.handler("load -d dummy count=2,name=dx", root)  # type: ignore[union-attr]
        assert reply == "loaded devnp-dummy dx0 dx1\n"
        assert "devnp-dummy driver running interfaces=dx0,dx1" in stack.modules.render()
        with pytest.raises(OSError, match="needs root"):
            await node.handler("load -d dummy", Caller(uid=1000))  # type: ignore[union-attr]
        with pytest.raises(OSError, match="Unable to load/init nosuch: module not found"):
            await node.handler("load -p nosuch", root)  # type: ignore[union-attr]
        with pytest.raises(OSError, match="unknown command"):
            await node.handler("frob", root)  # type: ignore[union-attr]


async def test_driver_unloads_when_its_last_interface_is_destroyed() -> None:
    async with running_stack(drivers=[("dummy", "count=2,name=dz")]) as stack:
        (inst,) = stack.modules.loaded
        stack.detach_interface("dz0")
        await trio.sleep(0.01)
        assert inst.state == "running" and stack.counters["dummy_destroyed"] == 1
        stack.detach_interface("dz1")
        await trio.sleep(0.05)
        assert inst.state == "unloaded" and not stack.modules.loaded
        assert set(stack.interfaces) == {"lo0"}
        with pytest.raises(OSError, match="lo0 cannot be destroyed"):
            stack.detach_interface("lo0")
