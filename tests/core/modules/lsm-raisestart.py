"""A module that raises while starting (test fixture)."""

from stack.module_api import MODULE_API_VERSION, ModuleEntry


async def main(ctx):  # type: ignore[no-untyped-def]
    raise RuntimeError("cannot find the hardware")


IO_PKT_MODULE = ModuleEntry(kind="protocol", api=MODULE_API_VERSION, entry=main)
