from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import trio

from stack.counters import Counters
from tests.transport.shim import Net


@pytest.fixture(autouse=True)
def strict_counters() -> Iterator[None]:
    """A counter name the transports do not declare fails the test (stack/counters.py)."""
    old, Counters.strict = Counters.strict, True
    yield
    Counters.strict = old


@pytest.fixture
async def net(autojump_clock: object) -> AsyncIterator[Net]:
    async with trio.open_nursery() as nursery:
        yield Net(nursery)
        nursery.cancel_scope.cancel()
