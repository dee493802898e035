"""lsm-bpf: the bpf device at ``<prefix>/dev/bpf`` (QNX exposes /dev/bpf on every stack).

Load with ``io-pkt -p bpf`` or ``io-pkt mount -T io-pkt lsm-bpf``. The code lives in
``stack/bpf/``; see docs/pf-bpf.md for the files, the ioctls and the stream format.
The mount is served in this module's nursery, so unloading the module unmounts it.
"""

from __future__ import annotations

from stack.bpf.device import BpfDevice
from stack.loader import ModuleContext
from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.services import BPF


async def main(ctx: ModuleContext) -> None:
    stack = ctx.stack
    if stack.services.get(BPF) is not None:
        raise RuntimeError("lsm-bpf is already loaded")
    dev = BpfDevice(stack)
    ctx.add_cleanup(dev.close)
    ctx.service(BPF, dev)
    await ctx.mount(dev.tree, f"{stack.config.prefix}/dev/bpf",
                    fsname=f"bpf{stack.config.instance}")
    ctx.started()


IO_PKT_MODULE = ModuleEntry(kind="protocol", api=MODULE_API_VERSION, entry=main,
                            description="bpf: live pcap capture, filters and injection")
