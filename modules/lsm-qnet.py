"""lsm-qnet: Qnet, transparent distributed processing (issue 17; docs/qnet.md).

    io-pkt -d vwire path=/tmp/w,name=vw0 -p qnet host=a[,bind=IF]...[,bind=ip]
           [,auto_add=TICKS][,resolve=file,resolve_file=F][,export=DIR[:ro][+DIR...]]
           [,maproot=UID][,mapany=UID][,key=F][,tx_retries=N][,allow=NODE[:NODE...]]

EtherType 0x8204 (and IP protocol 106 with ``bind=ip``), the LwL4 header Wireshark's
qnet6 dissector decodes; its own mount ``<prefix>/net`` lists the known nodes, and
``<prefix>/net/<node>/`` is that node's exported tree: its stack's files
(``dev/socket``, ``dev/bpf`` and ``dev/pf`` where loaded) and the host directories named
by ``export=``. The code is in ``stack/qnet/``.

``bind=`` and ``export=`` may be repeated (``bind=vw0,bind=vw1,bind=ip``); several values
may also be joined in one, with ``:`` (``bind=vw0:vw1``, ``allow=b:c``) or, for
``export=`` (whose ``:ro`` is a suffix), with ``+``.
"""

from __future__ import annotations

import os
import socket

from rmgr.nodes import Directory, Node
from stack.loader import ModuleContext
from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.network import IPInfo
from stack.options import OptionError
from stack.qnet import wire
from stack.qnet.fs import NetRoot
from stack.qnet.kif import HostDir, KifServer
from stack.qnet.node import QNET, Qnet
from stack.registry import AF_INET
from stack.services import BPF, PF


class _IpTransport:
    """IP protocol 106: Qnet frames in IPv4 datagrams (``bind=ip``)."""

    name = "qnet"

    def __init__(self, qnet: Qnet) -> None:
        self.qnet = qnet

    def input(self, info: IPInfo) -> None:
        from stack.addr import v4_bits

        self.qnet.ip_in(v4_bits(info.src), info.payload)

    def icmp_error(self, icmp_type: int, code: int, src: object, dst: object,
                   hdr: memoryview, extra: int = 0) -> None:
        return None


def export_tree(ctx: ModuleContext, exports: list[tuple[str, bool]]) -> Directory:
    """What peers see under /net/<this node>/: the stack's files and named host dirs."""
    stack = ctx.stack
    pf_tree: list[Node] = []

    def dev_nodes() -> dict[str, Node]:
        out: dict[str, Node] = {}
        bpf = stack.services.get(BPF)
        if bpf is not None:
            out["bpf"] = bpf.tree
        pf = stack.services.get(PF)
        if pf is not None:
            if not pf_tree:
                from stack.pf.files import build_tree

                pf_tree.append(build_tree(pf))
            out["pf"] = pf_tree[0]
        return out

    root = Directory()
    dev = root.add("dev", Directory(dynamic=dev_nodes))
    dev.add("socket", stack.tree)
    for path, ro in exports:
        parent = root.mkdirs(os.path.dirname(path.rstrip("/")))
        parent.add(os.path.basename(path.rstrip("/")), HostDir(path, ro))
    return root


def _ids(ctx: ModuleContext, key: str) -> int | None:
    return ctx.opts.get_int(key, None, lo=0, hi=0xFFFFFFFE)


async def main(ctx: ModuleContext) -> None:
    stack = ctx.stack
    o = ctx.opts
    host = o.get_str("host") or socket.gethostname().split(".")[0]
    # bind=tap0,bind=tap1 (the contract's form) or bind=tap0:tap1
    parts = [b for opt in o.get_all("bind") for b in opt.split(":") if b]
    bind_ip = "ip" in parts
    ifaces = [b for b in parts if b != "ip"]
    binds = ifaces if ifaces or bind_ip else None
    resolve = o.get_str("resolve")
    resolve_file = o.get_str("resolve_file")
    if resolve not in (None, "file", "lr"):
        raise OptionError(f"resolve={resolve}: expected 'file' (or the default, LR)")
    if resolve == "file" and not resolve_file:
        raise OptionError("resolve=file needs resolve_file=FILE")
    exports: list[tuple[str, bool]] = []
    for item in filter(None, (x for opt in o.get_all("export") for x in opt.split("+"))):
        path, _, mode = item.partition(":")
        if not os.path.isabs(path) or not os.path.isdir(path):
            raise OptionError(f"export={item}: not an absolute directory")
        if mode not in ("", "ro"):
            raise OptionError(f"export={item}: the suffix may only be ':ro'")
        exports.append((os.path.realpath(path), mode == "ro"))
    key: bytes | None = None
    key_file = o.get_str("key")
    if key_file:
        with open(key_file, "rb") as fh:
            key = fh.read().strip()
        if len(key) < 16:
            raise OptionError(f"key={key_file}: the key needs at least 16 bytes")
    allow_opt = o.get_str("allow")
    qnet = Qnet(stack, host=host, binds=binds, bind_ip=bind_ip,
                auto_add=o.get_int("auto_add", 150, lo=0, hi=36000) or 0,
                resolve_file=resolve_file if resolve == "file" else None, key=key,
                tx_retries=o.get_int("tx_retries", 5, lo=1, hi=50) or 5,
                maproot=_ids(ctx, "maproot"), mapany=_ids(ctx, "mapany"),
                allow=set(allow_opt.split(":")) if allow_opt else None)
    qnet.kif_server = KifServer(qnet, export_tree(ctx, exports))
    await ctx.nursery.start(qnet.run)
    ctx.add_cleanup(qnet.shutdown)
    ctx.register_ethertype(wire.ETHERTYPE_QNET, qnet.frame_in)
    if bind_ip:
        ctx.register_transport(AF_INET, wire.IPPROTO_QNET, _IpTransport(qnet))
    ctx.service(QNET, qnet)
    await ctx.mount(NetRoot(qnet), f"{stack.config.prefix}/net",
                    fsname=f"qnet{stack.config.instance}")
    ctx.started()


IO_PKT_MODULE = ModuleEntry(kind="protocol", api=MODULE_API_VERSION, entry=main,
                            description="qnet: other nodes' files under <prefix>/net")
