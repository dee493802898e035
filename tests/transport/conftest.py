from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from tests.transport.shim import Net


@pytest.fixture
async def net(autojump_clock: object) -> AsyncIterator[Net]:
    async with trio.open_nursery() as nursery:
        yield Net(nursery)
        nursery.cancel_scope.cancel()
