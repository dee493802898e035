"""A protocol module that publishes a file and counts its starts (test fixture)."""

from rmgr.nodes import TextFile
from stack.module_api import MODULE_API_VERSION, ModuleEntry


async def main(ctx):  # type: ignore[no-untyped-def]
    ctx.stack.counters.declare({"good_started"})  # a name of its own in the stack's group
    ctx.stack.counters["good_started"] += 1
    word = ctx.opts.get_str("word", "hello")
    ctx.stack.config_dir.add("good", TextFile(lambda: f"{word}\n"))
    ctx.add_cleanup(lambda: ctx.stack.config_dir.remove("good"))


IO_PKT_MODULE = ModuleEntry(kind="protocol", api=MODULE_API_VERSION, entry=main,
                            description="test: a well-behaved module")
