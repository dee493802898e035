"""A protocol module with bugs on purpose (test fixture for tests/reliability/test_faults.py):
a pfil hook on the ``inet`` head that raises on every ``every``-th inbound packet, and a
task that raises ``task_after`` seconds after start (0: never)."""

import trio

from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.pfil import PFIL_IN


async def main(ctx):  # type: ignore[no-untyped-def]
    every = ctx.opts.get_int("every", 2, lo=1)
    after = ctx.opts.get_float("task_after", 0.0)
    seen = [0]

    def hook(obj, iface, direction):  # type: ignore[no-untyped-def]
        seen[0] += 1
        if seen[0] % every == 0:
            raise RuntimeError("hook bug on purpose")
        return obj

    h = ctx.stack.pfil.add_hook(hook, "inet", PFIL_IN, name="faulty")
    ctx.add_cleanup(lambda: ctx.stack.pfil.remove_hook(h))

    async def boom() -> None:
        await trio.sleep(after)
        raise RuntimeError("task bug on purpose")

    if after > 0:
        ctx.nursery.start_soon(boom)
    ctx.started()
    await trio.sleep_forever()


IO_PKT_MODULE = ModuleEntry(kind="protocol", api=MODULE_API_VERSION, entry=main)
