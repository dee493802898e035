"""Fault injection inside the stack, for kernels without ``tc netem`` (test fixture):
a pfil ``ether`` hook that loses, corrupts, duplicates and reorders frames.

Options (percentages): ``loss`` (in and out), ``corrupt``, ``duplicate``, ``reorder``
(inbound), ``seed``. Counters go to ``stack.counters["impair_*"]`` (config/status)."""

import random

from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.packet import Packet
from stack.pfil import PFIL_IN, PFIL_OUT


async def main(ctx):  # type: ignore[no-untyped-def]
    o = ctx.opts
    loss, corrupt = o.get_float("loss", 0.0) / 100, o.get_float("corrupt", 0.0) / 100
    dup, reorder = o.get_float("duplicate", 0.0) / 100, o.get_float("reorder", 0.0) / 100
    rnd = random.Random(o.get_int("seed", 1))
    st = ctx.stack
    c = st.counters
    # names of its own in the stack's group, declared (stack/counters.py)
    c.declare(f"impair_{what}" for what in ("lost", "reordered", "duplicated", "corrupted"))
    ours: set[int] = set()
    held: list[Packet] = []

    def reinject(pkt: Packet) -> None:
        async def later() -> None:
            ours.add(id(pkt))
            try:
                pkt.iface.deliver(pkt)
            finally:
                ours.discard(id(pkt))
        ctx.nursery.start_soon(later)

    def copy(pkt: Packet) -> Packet:
        p = Packet(memoryview(bytearray(pkt.data)), pkt.iface)
        p.csum_valid, p.csum_partial = pkt.csum_valid, pkt.csum_partial
        p.csum_start, p.csum_offset = pkt.csum_start, pkt.csum_offset
        return p

    def hook_in(pkt, iface, direction):  # type: ignore[no-untyped-def]
        if id(pkt) in ours or iface.name == "lo0":
            return pkt
        if held:
            reinject(held.pop())  # a held frame goes in after this one: reordered
        r = rnd.random()
        if r < loss:
            c["impair_lost"] += 1
            return False
        if r < loss + reorder:
            c["impair_reordered"] += 1
            held.append(copy(pkt))
            return False
        if r < loss + reorder + dup:
            c["impair_duplicated"] += 1
            reinject(copy(pkt))
            return pkt
        if r < loss + reorder + dup + corrupt and len(pkt.data) > 54:
            c["impair_corrupted"] += 1
            p = copy(pkt)
            p.csum_valid = p.csum_partial = False  # the wire broke it after the kernel
            at = rnd.randrange(34, len(p.data))
            p.data[at] ^= 1 << rnd.randrange(8)
            return p
        return pkt

    def hook_out(obj, iface, direction):  # type: ignore[no-untyped-def]
        if iface.name != "lo0" and rnd.random() < loss:
            c["impair_lost"] += 1
            return False
        return obj

    hi = st.pfil.add_hook(hook_in, "ether", PFIL_IN, name="impair-in")
    ho = st.pfil.add_hook(hook_out, "ether", PFIL_OUT, name="impair-out")
    ctx.add_cleanup(lambda: (st.pfil.remove_hook(hi), st.pfil.remove_hook(ho)))
    ctx.started()
    import trio

    await trio.sleep_forever()


IO_PKT_MODULE = ModuleEntry(kind="protocol", api=MODULE_API_VERSION, entry=main)
