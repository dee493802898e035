"""lsm-pf: the pf packet filter on the pfil "inet" hooks, with ``<prefix>/dev/pf``.

Load with ``io-pkt -p pf`` or ``io-pkt mount -T io-pkt lsm-pf``; drive it with
``io-pkt pfctl``. Options: ``enable`` (start enabled), ``rules=FILE`` (load a rule set
at start). The code is in ``stack/pf/``; see docs/pf-bpf.md. The mount is served in
this module's nursery, so unloading the module removes the hooks and the mount.
"""

from __future__ import annotations

import trio

from stack.loader import ModuleContext
from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.pf import Pf, build_tree
from stack.services import PF


async def main(ctx: ModuleContext) -> None:
    stack = ctx.stack
    if stack.services.get(PF) is not None:
        raise RuntimeError("lsm-pf is already loaded")
    pf = Pf(stack)
    rules = ctx.opts.get_str("rules", "")
    start_enabled = ctx.opts.flag("enable")
    if rules:
        with open(rules) as f:
            pf.load(f.read(), rules)  # a ParseError fails the load: "Unable to load/init"
    ctx.service(PF, pf)

    def cleanup() -> None:
        if pf.enabled:
            pf.disable()

    ctx.add_cleanup(cleanup)
    if start_enabled:
        pf.enable()
    await ctx.mount(build_tree(pf), f"{stack.config.prefix}/dev/pf",
                    fsname=f"pf{stack.config.instance}")
    ctx.nursery.start_soon(purge_loop, pf)
    ctx.started()


async def purge_loop(pf: Pf) -> None:
    """Expired states go on lookup; this pass (pf's ``interval``) frees the rest."""
    while True:
        await trio.sleep(pf.states.timeouts.get("interval", 10) or 10)
        if len(pf.states):
            pf.states.purge()


IO_PKT_MODULE = ModuleEntry(kind="protocol", api=MODULE_API_VERSION, entry=main,
                            description="pf: packet filter (pf.conf subset, states, tables)")
