"""A module that takes a while to initialise (test fixture for readiness)."""

import trio

from stack.module_api import MODULE_API_VERSION, ModuleEntry


async def main(ctx):  # type: ignore[no-untyped-def]
    await trio.sleep(ctx.opts.get_float("delay", 1.0))


IO_PKT_MODULE = ModuleEntry(kind="protocol", api=MODULE_API_VERSION, entry=main)
