"""devnp-packet: an AF_PACKET socket on an existing Linux interface as an io-pkt interface.

Options: ``if=IFNAME`` (required: the Linux link, e.g. one end of a veth pair),
``netns=NAME`` (the link lives in that namespace; the socket is created there),
``name=`` (default pktN), ``mac=`` (default: the link's own MAC, shared with the kernel;
another MAC is added to the link's unicast filter with PACKET_MR_UNICAST), ``promisc``
(PACKET_MR_PROMISC; also switched on by bridge membership), ``mtu=`` (default: the
link's), ``offload=0`` (no PACKET_VNET_HDR: no checksum/GSO metadata either way).

Receive drains the socket until EAGAIN (Python has no recvmmsg: one ``recvmsg_into``
per frame, into a fresh buffer + the spill area). PACKET_AUXDATA gives, per frame, the
VLAN tag the kernel stripped (put back into the frame so layer 2 sees it as on the wire)
and checksum state (CSUMNOTREADY → partial, CSUM_VALID → valid) when the virtio header
is off. PACKET_IGNORE_OUTGOING keeps the kernel's own transmissions out.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

from stack.l2.fdio import SMALL_RX, FdInterface, complete_csum
from stack.l2.iface import parse_mac
from stack.loader import ModuleContext
from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.netns import LinkControl, socket_in_netns
from stack.options import OptionError
from stack.packet import Buffer, Packet, TxMeta, locate_l4_csum

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_AUXDATA = 8
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_MULTICAST = 0
PACKET_MR_PROMISC = 1
PACKET_MR_UNICAST = 3
ETH_P_ALL = 0x0003
TP_STATUS_CSUMNOTREADY = 0x08
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
TP_STATUS_CSUM_VALID = 0x80

VNET_HDR_LEN = 10  # struct virtio_net_hdr (PACKET_VNET_HDR uses the short form)
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_ECN = 0x80
_vnet = struct.Struct("<BBHHHH")
_aux = struct.Struct("IIIHHHH")
_VNET_PLAIN = bytes(VNET_HDR_LEN)
_ANC = socket.CMSG_SPACE(_aux.size)


def _mreq(ifindex: int, mr_type: int, addr: bytes = b"") -> bytes:
    return struct.pack("iHH8s", ifindex, mr_type, len(addr), addr)


class PacketInterface(FdInterface):
    sock: socket.socket  # always set in __init__ (the fd's owner)

    kind = "ether"

    def __init__(self, name: str, *, link: str, netns: str | None, mac: bytes | None,
                 mtu: int | None, offload: bool, promisc: bool) -> None:
        ctl = LinkControl(netns)
        try:
            ifindex = ctl.get_index(link)
            link_mac = ctl.get_mac(link)
            link_mtu = ctl.get_mtu(link)
        finally:
            ctl.close()
        super().__init__(name, mac=mac or link_mac, mtu=mtu or link_mtu, driver="packet")
        self.link, self.netns, self.ifindex, self.link_mac = link, netns, ifindex, link_mac
        sock = socket_in_netns(netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:  # kernel < 4.20: filtered by pkttype instead (not needed on CI)
                pass
            self.vnet = offload
            if offload:
                sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                self.capabilities = self.offloads = {"csum", "tso4", "tso6"}
            sock.bind((link, 0))
            if self.mac != link_mac:
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                                _mreq(ifindex, PACKET_MR_UNICAST, self.mac))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.fd = sock.fileno()
        self._promisc_on = False
        self._hdr = bytearray(VNET_HDR_LEN)
        self._small = max(SMALL_RX, self.mtu + 32)
        if promisc:
            self.set_promisc(True)

    def _read_one(self) -> bool:
        buf = bytearray(self._small)
        if self.vnet:
            n, anc, _fl, _addr = self.sock.recvmsg_into((self._hdr, buf, self._spill), _ANC)
            n -= VNET_HDR_LEN
        else:
            n, anc, _fl, _addr = self.sock.recvmsg_into((buf, self._spill), _ANC)
        if n <= 0:
            self.counters["ierrors"] += 1
            return True
        if n > len(buf):
            buf += self._spill[:n - len(buf)]
            self.counters["rx_spill"] += 1
        status = tci = 0
        tpid = 0x8100
        for level, typ, data in anc:
            if level == SOL_PACKET and typ == PACKET_AUXDATA and len(data) >= _aux.size:
                status, _len, _snap, _mac, _net, tci, tp = _aux.unpack_from(data)
                if status & TP_STATUS_VLAN_TPID_VALID:
                    tpid = tp
        shift = 0
        if status & TP_STATUS_VLAN_VALID:  # the kernel stripped the tag: put it back
            buf[12:12] = tpid.to_bytes(2, "big") + tci.to_bytes(2, "big")
            n += 4
            shift = 4
            self.counters["rx_vlan_reinserted"] += 1
        pkt = Packet(memoryview(buf)[:n], self)
        if self.vnet:
            flags, gso_type, hdr_len, gso_size, cs, co = _vnet.unpack_from(self._hdr)
            if flags & F_NEEDS_CSUM:
                pkt.csum_partial = pkt.csum_valid = True
                pkt.csum_start, pkt.csum_offset = cs + shift, co
            elif flags & F_DATA_VALID:
                pkt.csum_valid = True
            if gso_type:
                pkt.gso_type = gso_type & ~GSO_ECN
                pkt.gso_size = gso_size
                pkt.hdr_len = hdr_len + shift if hdr_len else 0
                self.counters["rx_gso"] += 1
        elif status & TP_STATUS_CSUMNOTREADY:
            pkt.csum_partial = pkt.csum_valid = True
            where = locate_l4_csum(pkt.data, 14 + shift)
            if where is not None:
                pkt.csum_start, pkt.csum_offset = where
        elif status & TP_STATUS_CSUM_VALID:
            pkt.csum_valid = True
        self.deliver(pkt)
        return True

    def _write(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> None:
        if self.vnet:
            if meta is None or not (meta.needs_csum or meta.gso_type):
                hdr: bytes = _VNET_PLAIN
            else:
                hdr = _vnet.pack(F_NEEDS_CSUM if meta.needs_csum else 0, meta.gso_type,
                                 meta.hdr_len, meta.gso_size, meta.csum_start, meta.csum_offset)
            self.sock.sendmsg((hdr, *bufs))
            return
        if meta is not None and meta.needs_csum:
            bufs = complete_csum(bufs, meta)
            self.counters["tx_sw_csum"] += 1
        self.sock.sendmsg(bufs)

    def set_promisc(self, on: bool) -> None:
        super().set_promisc(on)
        want = self.promisc_refs > 0
        if want != self._promisc_on and not self.closed:
            opt = PACKET_ADD_MEMBERSHIP if want else PACKET_DROP_MEMBERSHIP
            self.sock.setsockopt(SOL_PACKET, opt, _mreq(self.ifindex, PACKET_MR_PROMISC))
            self._promisc_on = want

    def join_multicast(self, mac: bytes, join: bool = True) -> None:
        """Called by layer 2 when a multicast group is joined/left on this interface."""
        if not self.closed:
            opt = PACKET_ADD_MEMBERSHIP if join else PACKET_DROP_MEMBERSHIP
            self.sock.setsockopt(SOL_PACKET, opt, _mreq(self.ifindex, PACKET_MR_MULTICAST, mac))

    def destroy(self) -> None:
        self.close_fd()

    def describe(self) -> dict[str, str]:
        return {"link": self.link, "netns": self.netns or "-", "ifindex": str(self.ifindex),
                "vnet_hdr": str(VNET_HDR_LEN if self.vnet else 0),
                "promisc": "yes" if self._promisc_on else "no"}


async def main(ctx: ModuleContext) -> None:
    opts = ctx.opts
    link = opts.get_str("if")
    if not link:
        raise OptionError("if=IFNAME is required (the Linux interface to attach to)")
    macs = opts.get_str("mac")
    try:
        mac = parse_mac(macs) if macs else None
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    iface = PacketInterface(opts.get_str("name") or ctx.stack.unique_name("pkt"), link=link,
                            netns=opts.get_str("netns"), mac=mac,
                            mtu=opts.get_int("mtu", None, lo=68, hi=65535),
                            offload=bool(opts.get_int("offload", 1, lo=0, hi=1)),
                            promisc=opts.flag("promisc"))
    ctx.add_cleanup(iface.destroy)
    ctx.attach_interface(iface)
    iface.start(ctx.nursery)
    ctx.started()


IO_PKT_MODULE = ModuleEntry(kind="driver", api=MODULE_API_VERSION, entry=main,
                            description="AF_PACKET socket on an existing Linux interface")
