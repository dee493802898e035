"""A driver with N interfaces that drop what they send (test fixture)."""

import os

from stack.l2.iface import Interface
from stack.module_api import MODULE_API_VERSION, ModuleEntry


class Dummy(Interface):
    kind = "dummy"

    def transmit(self, bufs, meta):  # type: ignore[no-untyped-def]
        return True

    def destroy(self) -> None:
        if self.stack is not None:
            self.stack.counters["dummy_destroyed"] += 1


async def main(ctx):  # type: ignore[no-untyped-def]
    count = ctx.opts.get_int("count", 1, lo=1, hi=16)
    base = ctx.opts.get_str("name", None)
    ctx.stack.counters.declare({"dummy_destroyed"})  # a name of its own in the stack's group
    for i in range(count):
        name = f"{base}{i}" if base and count > 1 else base or ctx.stack.unique_name("dummy")
        mac = b"\x02" + os.urandom(5)
        ctx.attach_interface(Dummy(name, mac=mac, driver="dummy"))


IO_PKT_MODULE = ModuleEntry(kind="driver", api=MODULE_API_VERSION, entry=main)
