"""lsm-bpf: the bpf device at ``<prefix>/dev/bpf`` (QNX exposes /dev/bpf on every stack).

Load with ``io-pkt -p bpf`` or ``io-pkt mount -T io-pkt lsm-bpf``. The code lives in
``stack/bpf/``; see docs/pf-bpf.md for the files, the ioctls and the stream format.
The mount is served in this module's nursery, so unloading the module unmounts it.
"""

from __future__ import annotations

import functools

from stack.bpf.device import BpfDevice
from stack.loader import ModuleContext
from stack.module_api import MODULE_API_VERSION, ModuleEntry


async def main(ctx: ModuleContext) -> None:
    stack = ctx.stack
    if getattr(stack, "bpf", None) is not None:
        raise RuntimeError("lsm-bpf is already loaded")
    dev = BpfDevice(stack)
    stack.bpf = dev  # type: ignore[attr-defined]

    def cleanup() -> None:
        dev.close()
        if getattr(stack, "bpf", None) is dev:
            stack.bpf = None  # type: ignore[attr-defined]

    ctx.add_cleanup(cleanup)
    if stack.config.mount:
        from rmgr.fuse.session import serve_mount

        path = f"{stack.config.prefix}/dev/bpf"
        await ctx.nursery.start(functools.partial(
            serve_mount, dev.tree, path, fsname=f"bpf{stack.config.instance}"))
    ctx.started()


IO_PKT_MODULE = ModuleEntry(kind="protocol", api=MODULE_API_VERSION, entry=main,
                            description="bpf: live pcap capture, filters and injection")
