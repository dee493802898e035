"""devnp-tap: a Linux TAP device as an io-pkt interface.

Options (one comma-separated word): ``name=`` (default tapN, the first free),
``netns=NAME`` (create the device inside that network namespace; the stack's mounts
stay where they are), ``mac=`` (the stack's address on this link; default a random
locally-administered one), ``mtu=`` (default 1500; also set on the kernel side),
``offload=0`` (no checksum/TSO offloads: the kernel completes checksums and segments
before handing frames over), ``txqlen=`` (transmit queue bound, default 512),
``queues=N`` (1-8, default 1; more: a multi-queue TAP, IFF_MULTI_QUEUE, one fd and one
receive task per queue).

Queues: the kernel sends a flow's frames to the queue the stack last wrote that flow's
frames on (tun's flow table, keyed by a symmetric flow hash), and the stack writes a
frame on the queue its TxMeta names: QUEUE_BULK (the second) for a TCP flow that moved
a super-segment, QUEUE_SPARSE (the first) for every other frame, with or without a
TxMeta (stack/packet.py). So the answers of a request/response flow never wait in the
device behind a bulk flow's megabytes: the first queue's task reads them between two
of the bulk queue's batches. What the kernel sends unasked lands on a queue by its
hash.
The price, as with any multi-queue NIC: frames of *different* flows may be taken in
another order than the kernel sent them (a spoofed DNS answer from another address may
come after the real one), which is why one queue is the default.

The device is opened IFF_TAP|IFF_NO_PI|IFF_VNET_HDR with a 12-byte virtio_net_hdr_v1
(TUNSETVNETHDRSZ). With offloads on (TUNSETOFFLOAD CSUM|TSO4|TSO6|TSO_ECN, plus
USO4|USO6 where the kernel has them, 6.2+) the kernel hands over 64 KB TCP
super-segments and UDP_SEGMENT super-datagrams (GSO_UDP_L4) with partial checksums
(NEEDS_CSUM) and accepts them from us (TxMeta → virtio header). Layer 2 splits a
UDP super-datagram that is not fast-forwarded into its datagrams before IP input. The kernel side of the link (same name, in the
namespace) is set up when the stack's interface is set up, and removed when the
interface is destroyed (closing the last fd of a non-persistent TAP deletes it).
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Sequence

from stack.counters import names
from stack.l2.counters import FDIO_COUNTERS
from stack.l2.fdio import SMALL_RX, FdInterface
from stack.l2.iface import parse_mac, random_mac
from stack.loader import ModuleContext
from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.netns import LinkControl, run_in_netns
from stack.options import OptionError
from stack.packet import GSO_NONE, Buffer, Packet, TxMeta

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
MAX_QUEUES = 8
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20  # Linux 6.2+: UDP segmentation offload (both or neither)
TUN_F_USO6 = 0x40

VNET_HDR_LEN = 12  # virtio_net_hdr_v1 (= virtio_net_hdr_mrg_rxbuf)
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_ECN = 0x80
_vnet = struct.Struct("<BBHHHHH")  # little-endian: virtio 1.0 / x86 native
_vnet_unpack = _vnet.unpack_from
_vnet_pack = _vnet.pack
_VNET_PLAIN = bytes(VNET_HDR_LEN)

#: the interface's counters (stack/counters.py): an fd driver's and these
COUNTERS: frozenset[str] = FDIO_COUNTERS | names("rx_spill rx_gso link_ctl_errors")


def open_tap(name: str, netns: str | None, offload: bool,
             queues: int = 1) -> tuple[list[int], str, set[str]]:
    """Create TAP ``name`` in ``netns`` (see stack.netns) with ``queues`` queues;
    returns (an fd per queue, kernel name, the offloads the kernel took)."""

    def create() -> tuple[list[int], str, set[str]]:
        fds: list[int] = []
        try:
            kname, offloads = name, set[str]()
            for _ in range(queues):  # the first creates it (a free name), the rest join
                fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                fds.append(fd)
                kname, offloads = _attach(fd, kname, offload,
                                          IFF_MULTI_QUEUE if queues > 1 else 0)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds, kname, offloads

    return run_in_netns(netns, create)


def _attach(fd: int, name: str, offload: bool, mq: int) -> tuple[str, set[str]]:
    """TUNSETIFF (creating the device, or one more queue of it) and its settings."""
    ifr = struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | mq)
    res = fcntl.ioctl(fd, TUNSETIFF, ifr.ljust(40, b"\0"))
    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
    offloads: set[str] = set()
    if offload:
        flags = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags | TUN_F_USO4 | TUN_F_USO6)
            offloads.add("uso")
        except OSError:  # EINVAL: a kernel before 6.2, no USO
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
        offloads |= {"csum", "tso4", "tso6"}
    else:
        fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
    return res[:16].rstrip(b"\0").decode(), offloads


class TapInterface(FdInterface):
    kind = "ether"
    counter_names = COUNTERS

    def __init__(self, name: str, *, mac: bytes, mtu: int, netns: str | None,
                 offload: bool, txq_max: int, queues: int = 1) -> None:
        super().__init__(name, mac=mac, mtu=mtu, driver="tap", txq_max=txq_max)
        self.netns = netns
        fds, self.kname, took = open_tap(name, netns, offload, queues)
        self.fd, self.extra_fds = fds[0], fds[1:]
        self.tx_fds = tuple(fds)  # by TxMeta.queue (modulo their number)
        self.capabilities = {"csum", "tso4", "tso6"} | took
        self.offloads = took
        self.ctl = LinkControl(netns)
        try:
            self.ctl.set_mtu(self.kname, mtu)
        except OSError:
            self.close_fd()
            self.ctl.close()
            raise
        self.peer_mac = self.ctl.get_mac(self.kname)
        self._hdr = bytearray(VNET_HDR_LEN)
        self._small = SMALL_RX if mtu + 32 <= SMALL_RX else mtu + 32

    # -- receive: one readv per frame ------------------------------------------------
    def _read_one(self) -> bool:
        buf = bytearray(self._small)
        n = os.readv(self.rx_fd, (self._hdr, buf, self._spill))  # EAGAIN raises
        n -= VNET_HDR_LEN
        if n <= 0:
            self.counters["ierrors"] += 1
            return True
        if n > len(buf):
            buf += memoryview(self._spill)[:n - len(buf)]  # one copy, not two
            self.counters["rx_spill"] += 1
        pkt = Packet(memoryview(buf)[:n], self)
        flags, gso_type, hdr_len, gso_size, cs, co, _nb = _vnet_unpack(self._hdr)
        if flags:
            if flags & F_NEEDS_CSUM:
                pkt.csum_partial = True
                pkt.csum_valid = True
                pkt.csum_start, pkt.csum_offset = cs, co
            elif flags & F_DATA_VALID:
                pkt.csum_valid = True
        if gso_type:
            pkt.gso_type = gso_type & ~GSO_ECN
            pkt.gso_size = gso_size
            pkt.hdr_len = hdr_len
            self.counters["rx_gso"] += 1
        self.deliver(pkt)
        return True

    # -- transmit: one writev per frame ----------------------------------------------
    def _write(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> None:
        if meta is None:
            os.writev(self.fd, (_VNET_PLAIN, *bufs))
            return
        if not (meta.needs_csum or meta.gso_type):
            hdr = _VNET_PLAIN
        else:
            hdr = _vnet_pack(F_NEEDS_CSUM if meta.needs_csum else 0,
                             meta.gso_type if meta.gso_type else GSO_NONE,
                             meta.hdr_len, meta.gso_size, meta.csum_start,
                             meta.csum_offset, 0)
        fds = self.tx_fds
        os.writev(fds[meta.queue % len(fds)] if meta.queue else self.fd, (hdr, *bufs))

    # -- control ---------------------------------------------------------------------
    def set_link_up(self, up: bool) -> None:
        """Admin up/down: the kernel side follows (in its namespace)."""
        if not self.closed:
            try:
                self.ctl.set_up(self.kname, up)
            except OSError:
                self.counters["link_ctl_errors"] += 1
        super().set_link_up(up)

    def set_mtu(self, mtu: int) -> None:
        super().set_mtu(mtu)
        self._small = SMALL_RX if mtu + 32 <= SMALL_RX else mtu + 32
        if not self.closed:
            self.ctl.set_mtu(self.kname, mtu)

    def destroy(self) -> None:
        self.close_fd()  # the last close of a non-persistent TAP deletes the netdev
        self.ctl.close()

    def describe(self) -> dict[str, str]:
        return {"device": self.kname, "netns": self.netns or "-",
                "peer_mac": ":".join(f"{b:02x}" for b in self.peer_mac),
                "vnet_hdr": str(VNET_HDR_LEN),
                "offloads": ",".join(sorted(self.offloads)) or "none",
                "queues": str(len(self.tx_fds)),
                "txq": f"{len(self.txq)}/{self.txq_max}"}


async def main(ctx: ModuleContext) -> None:
    opts = ctx.opts
    stack = ctx.stack
    name = opts.get_str("name") or stack.unique_name("tap")
    if len(name) > 15:
        raise OptionError(f"name={name}: at most 15 characters")
    macs = opts.get_str("mac")
    try:
        mac = parse_mac(macs) if macs else random_mac()
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    mtu = opts.get_int("mtu", 1500, lo=68, hi=65521)
    offload = opts.get_int("offload", 1, lo=0, hi=1)
    txq = opts.get_int("txqlen", 512, lo=1, hi=1 << 20)
    queues = opts.get_int("queues", 1, lo=1, hi=MAX_QUEUES)
    assert mtu is not None and txq is not None and queues is not None
    iface = TapInterface(name, mac=mac, mtu=mtu, netns=opts.get_str("netns"),
                         offload=bool(offload), txq_max=txq, queues=queues)
    ctx.add_cleanup(iface.destroy)
    ctx.attach_interface(iface)
    iface.start(ctx.nursery)
    ctx.started()


IO_PKT_MODULE = ModuleEntry(kind="driver", api=MODULE_API_VERSION, entry=main,
                            description="Linux TAP device (virtio-net header offloads)")
