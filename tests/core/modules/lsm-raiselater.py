"""A module that starts fine and raises later from one of its tasks (test fixture)."""

import trio

from rmgr.nodes import TextFile
from stack.module_api import MODULE_API_VERSION, ModuleEntry


async def main(ctx):  # type: ignore[no-untyped-def]
    delay = ctx.opts.get_float("after", 0.2)
    ctx.stack.config_dir.add("raiselater", TextFile(lambda: "alive\n"))
    ctx.add_cleanup(lambda: ctx.stack.config_dir.remove("raiselater"))

    async def boom() -> None:
        await trio.sleep(delay)
        raise RuntimeError("module bug at run time")

    ctx.nursery.start_soon(boom)
    ctx.started()
    await trio.sleep_forever()


IO_PKT_MODULE = ModuleEntry(kind="protocol", api=MODULE_API_VERSION, entry=main)
