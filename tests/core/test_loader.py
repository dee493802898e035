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
    # the module's name, as QNX prints it ("-p missing" -> lsm-missing), not the spec typed
    assert lines == [f"Unable to load/init lsm-{spec}: " + lines[0].split(": ", 1)[1]]
    assert reason in lines[0]


async def test_failure_line_names_the_module(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """-d foo -> devnp-foo; a path to a module file -> its stem; a path naming no module
    file -> the path as given. One line each, and the stack goes on."""
    bad = tmp_path / "devnp-broken.py"
    bad.write_text("raise ImportError('no hardware library')\n")
    specs = [("driver", "foo"), ("driver", "devnp-bar.so"), ("protocol", str(bad)),
             ("protocol", "../../../etc/passwd")]
    with caplog.at_level(logging.ERROR, logger="io-pkt"):
        async with running_stack(drivers=[(s, "") for k, s in specs if k == "driver"],
                                 protocols=[(s, "") for k, s in specs if k == "protocol"]
                                 + [("good", "")]) as stack:
            assert stack.counters["modules_failed_load"] == 4
            assert [m.name for m in stack.modules.loaded] == ["lsm-good"]
    lines = [r.getMessage() for r in caplog.records if "Unable to load/init" in r.getMessage()]
    assert [ln.split(": ", 1)[0] for ln in lines] == [
        "Unable to load/init devnp-foo", "Unable to load/init devnp-bar",
        "Unable to load/init devnp-broken", "Unable to load/init ../../../etc/passwd"]
    assert "module not found" in lines[0] and "module not found" in lines[1]
    assert lines[2].endswith(f"{bad}: ImportError: no hardware library")
    assert lines[3].endswith(": not a module file (expected a path to devnp-NAME.py or "
                             "lsm-NAME.py)")


def _module_file(d: Path, name: str, mode: int = 0o644) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    f = d / name
    # running it leaves NAME.ran beside it
    f.write_text((HERE / "devnp-dummy.py").read_text()
                 + "\n__import__('pathlib').Path(__file__ + '.ran').touch()\n")
    f.chmod(mode)
    return f


def test_module_paths_validated_before_running(tmp_path: Path) -> None:
    """A path is run only if it is a regular devnp-/lsm-NAME.py file that not every user
    can change; each refusal says why, and a refused file is never executed."""
    from stack.loader import find_module

    ok = _module_file(tmp_path / "ok", "devnp-fine.py")
    assert find_module(str(ok), "driver")[0] == "devnp-fine"
    cases = {
        "/etc/passwd": "not a module file",
        str(_module_file(tmp_path / "t", "devnp-text.txt")): "not a module file",
        str(tmp_path / "devnp-..x.py"): "bad module name 'devnp-..x'",
        str(_module_file(tmp_path / "u", "Devnp-upper.py")): "bad module name 'Devnp-upper'",
        str(tmp_path / "nowhere" / "devnp-gone.py"): "no such file",
        str(tmp_path / "u"): "not a module file",
        str(_module_file(tmp_path / "ww", "devnp-ww.py", 0o666)):
            "is world-writable: refusing to run it (chmod o-w",
    }
    (tmp_path / "dir" / "devnp-dir.py").mkdir(parents=True)
    cases[str(tmp_path / "dir" / "devnp-dir.py")] = "not a regular file"
    wdir = _module_file(tmp_path / "wdir", "devnp-indir.py")
    wdir.parent.chmod(0o777)
    cases[str(wdir)] = f"its directory {wdir.parent} is world-writable"
    for spec, reason in cases.items():
        with pytest.raises(LoadError) as e:
            find_module(spec, "driver")
        assert reason in str(e.value), (spec, str(e.value))
    assert sorted(p.name for p in tmp_path.rglob("*.ran")) == ["devnp-fine.py.ran"]
    # a world-writable directory with the sticky bit (/tmp) is fine: only the owner of
    # the file can replace it
    sticky = _module_file(tmp_path / "sticky", "devnp-sticky.py")
    sticky.parent.chmod(0o1777)
    assert find_module(str(sticky), "driver")[0] == "devnp-sticky"
    assert Path(f"{sticky}.ran").exists()


def test_world_writable_module_on_the_search_path_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stack.loader import find_module

    _module_file(tmp_path, "devnp-shared.py", 0o646)
    monkeypatch.setenv("IO_PKT_MODULE_PATH", f"{tmp_path}:{HERE}")
    with pytest.raises(LoadError, match="world-writable"):
        find_module("shared", "driver")
    assert not list(tmp_path.glob("*.ran"))


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
