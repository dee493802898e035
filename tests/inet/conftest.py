"""Helpers for the IPv4 tests: an in-memory interface (frames sent are captured, frames
injected are delivered), a stack with two of them, and namespace helpers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence

import pytest
import trio

from stack.core import Stack
from stack.l2.iface import IFF_UP, Interface
from stack.packet import Buffer, Packet, TxMeta
from tests.conftest import running_stack

MAC0 = bytes.fromhex("020000000a01")
MAC1 = bytes.fromhex("020000000b01")
PEER0 = bytes.fromhex("02000000aa02")
PEER1 = bytes.fromhex("02000000bb02")
VENV_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                       ".venv", "bin", "python")


class FakeIface(Interface):
    """An interface whose wire is a Python list."""

    def __init__(self, name: str, mac: bytes, mtu: int = 1500) -> None:
        super().__init__(name, mac=mac, mtu=mtu, driver="fake")
        self.sent: list[bytes] = []
        self.metas: list[TxMeta | None] = []

    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        self.sent.append(b"".join(bytes(b) for b in bufs))
        self.metas.append(meta)
        return True

    def inject(self, frame: bytes) -> None:
        self.deliver(Packet(memoryview(bytearray(frame)), self))

    def take(self) -> list[bytes]:
        out, self.sent = self.sent, []
        self.metas = []
        return out


@pytest.fixture
async def two_if_stack() -> AsyncIterator[tuple[Stack, FakeIface, FakeIface]]:
    """A stack with fake0 (10.0.0.1/24) and fake1 (10.1.0.1/24), both up."""
    async with running_stack() as st:
        f0 = FakeIface("fake0", MAC0)
        f1 = FakeIface("fake1", MAC1)
        for f in (f0, f1):
            st.attach_interface(f)
            f.set_flags(IFF_UP)
        st.inet.add_address("fake0", "10.0.0.1/24")
        st.inet.add_address("fake1", "10.1.0.1/24")
        f0.take()
        f1.take()
        yield st, f0, f1


async def settle() -> None:
    """Let lo0 and timer tasks run."""
    for _ in range(5):
        await trio.sleep(0)
