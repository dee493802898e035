"""Scoped module contexts: everything a module registers through its context is undone
when it unloads. The module is examples/modules/lsm-echo.py, the worked example of
docs/architecture.md: it registers one of everything, each is used, then it unloads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
from scapy.layers.inet import IP  # type: ignore[import-untyped]
from scapy.layers.l2 import Ether  # type: ignore[import-untyped]

from stack.l2.iface import IFF_UP
from stack.options import Options
from stack.registry import AF_INET, ServiceKey
from tests.conftest import needs_fuse, running_stack
from tests.inet.conftest import FakeIface

ECHO_MODULE = Path(__file__).resolve().parents[2] / "examples" / "modules" / "lsm-echo.py"
MAC0 = bytes.fromhex("020000000001")
PEER = "02:00:00:00:00:99"


def _mounted(path: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


async def _exercise_and_unload(prefix: str | None, mount: bool) -> None:
    async with running_stack(prefix=prefix, mount=mount) as st:
        f0 = FakeIface("fake0", MAC0)
        st.attach_interface(f0)
        f0.set_flags(IFF_UP)
        st.inet.add_address("fake0", "10.0.0.1/24")
        f0.take()
        before = {
            "network": set(st.registries.network),
            "transports": set(st.registries.transports),
            "services": set(st.services.names()),
            "heads": st.pfil.heads(),
            "hooks": len(st.pfil.hooks),
            "listeners": len(st.iface_listeners),
            "l2": set(st.l2.handlers),
            "ip": set(st.inet.protocols),
            "tasks": len(st.nursery.child_tasks),
        }
        inst = await st.modules.load(str(ECHO_MODULE), "protocol", Options.parse(""))
        from_module = {type(r).__name__ for r in inst.registrations}
        assert from_module == {"Registration"} and len(inst.registrations) == 6

        echo: Any = st.services.get(ServiceKey("echo"))  # keys are equal by name
        assert echo is not None and echo.counters["iface_attach"] >= 2  # lo0, fake0 replayed
        assert (AF_INET, 253) in st.registries.transports and 253 in st.inet.protocols
        assert 0x88B5 in st.l2.handlers
        assert "echo" in st.pfil.heads()
        assert "service echo" in st.registries.render()

        # each registration does its job
        f0.inject(bytes(Ether(src=PEER, dst=MAC0, type=0x88B5) / b"ping-me"))
        f0.inject(bytes(Ether(src=PEER, dst=MAC0) / IP(src="10.0.0.2", dst="10.0.0.1", proto=253)
                        / b"x"))
        await trio.sleep(0)
        sent = [Ether(b) for b in f0.take()]
        assert any(p.type == 0x88B5 and p.dst == PEER and bytes(p.payload) == b"ping-me"
                   for p in sent), sent
        assert echo.counters["frames_echoed"] == 1
        assert echo.counters["datagrams_in"] == 1
        assert echo.counters["inet_packets_seen"] == 1
        # a hook on the module's own head sees (and may drop) echoed frames
        dropped: list[object] = []
        hook = st.pfil.add_hook(lambda obj, i, d: dropped.append(obj) or False, "echo")
        f0.inject(bytes(Ether(src=PEER, dst=MAC0, type=0x88B5) / b"drop-me"))
        assert len(dropped) == 1 and echo.counters["frames_filtered"] == 1
        if mount:
            assert _mounted(f"{prefix}/dev/echo")
            status = await trio.to_thread.run_sync(
                lambda: Path(f"{prefix}/dev/echo/status").read_text())
            assert "frames_echoed 1" in status

        st.modules.unload(inst)
        for _ in range(100):
            if inst.state == "unloaded" and inst not in st.modules.loaded:
                break
            await trio.sleep(0.01)
        assert inst not in st.modules.loaded
        # nothing is left behind
        assert all(not r.active for r in inst.registrations)
        assert set(st.registries.network) == before["network"]
        assert set(st.registries.transports) == before["transports"]
        assert set(st.services.names()) == before["services"]
        assert st.pfil.heads() == before["heads"]
        assert hook not in st.pfil.hooks          # hooks on its head went with the head
        assert len(st.pfil.hooks) == before["hooks"]
        assert len(st.iface_listeners) == before["listeners"]
        assert set(st.l2.handlers) == before["l2"]
        assert set(st.inet.protocols) == before["ip"]
        assert len(st.nursery.child_tasks) == before["tasks"]
        if mount:
            assert not _mounted(f"{prefix}/dev/echo")
        # and the stack goes on: the EtherType is unknown again, protocol 253 unreachable
        drops = st.l2.counters["drop_unknown_ethertype"]
        f0.inject(bytes(Ether(src=PEER, dst=MAC0, type=0x88B5) / b"late"))
        assert st.l2.counters["drop_unknown_ethertype"] == drops + 1
        # loading it again works (nothing stale blocks the registrations)
        again = await st.modules.load(str(ECHO_MODULE), "protocol", Options.parse(""))
        assert again.state == "running"


async def test_module_registrations_are_undone_at_unload() -> None:
    await _exercise_and_unload(None, mount=False)


@needs_fuse
async def test_module_mount_is_served_in_its_nursery(tmp_path: Path) -> None:
    await _exercise_and_unload(str(tmp_path), mount=True)


async def test_registration_conflicts_fail_the_load_and_leave_nothing(tmp_path: Path) -> None:
    """A second copy cannot take the EtherType: the load fails cleanly, the first stays."""
    copy = tmp_path / "lsm-echo2.py"
    copy.write_text(ECHO_MODULE.read_text())
    os.chmod(copy, 0o644)
    async with running_stack() as st:
        first = await st.modules.load(str(ECHO_MODULE), "protocol", Options.parse(""))
        services = set(st.services.names())
        with pytest.raises(Exception, match="EtherType 0x88b5 is already registered"):
            await st.modules.load(str(copy), "protocol", Options.parse(""))
        assert set(st.services.names()) == services
        assert first.state == "running" and 0x88B5 in st.l2.handlers
