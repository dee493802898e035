"""A module written for another module API version (test fixture)."""

from stack.module_api import ModuleEntry


async def main(ctx):  # type: ignore[no-untyped-def]
    pass


IO_PKT_MODULE = ModuleEntry(kind="protocol", api=999, entry=main)
