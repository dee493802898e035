"""devnp-packet: an AF_PACKET socket on an existing Linux interface as an io-pkt interface.

Options: ``if=IFNAME`` (required: the Linux link, e.g. one end of a veth pair),
``netns=NAME`` (the link lives in that namespace; the socket is created there),
``name=`` (default pktN), ``mac=`` (default: the link's own MAC, shared with the kernel;
another MAC is added to the link's unicast filter with PACKET_MR_UNICAST), ``promisc``
(PACKET_MR_PROMISC; also switched on by bridge membership), ``mtu=`` (default: the
link's), ``offload=0`` (no PACKET_VNET_HDR: no checksum/GSO metadata either way; the
stack then checksums and segments in software what it sends, and a TCP frame received
bigger than the MTU — a veth peer's TSO — is taken as a super-segment of MTU-sized
segments),
``ring=0`` (no receive ring: one ``recvmsg_into`` per frame), ``ring_frames=N`` (slots
in the receive ring, default 64, rounded up to whole blocks), ``ring_frame=BYTES`` (slot
size, default 68 KiB: the largest frame the kernel hands over, a 64 KiB GSO/GRO
super-segment, plus the slot's headers; a ring takes at most 256 MiB), ``ring_copy=0``
(a frame bigger than a slot is dropped and counted instead of being read in full from
the socket queue).

Receive, by default, walks a PACKET_RX_RING (TPACKET_V2, mmap'd): on each poll wake-up
every slot the kernel has handed over (``TP_STATUS_USER``) is copied once into a fresh
``bytearray`` (stack-owned: layer 2 may queue it), returned to the kernel
(``TP_STATUS_KERNEL``) and delivered, until a slot is not ready — no system call per
frame. The slot header gives the VLAN tag the kernel stripped (``tp_vlan_tci``/
``tp_vlan_tpid``, put back into the frame so layer 2 sees it as on the wire) and
checksum state (CSUMNOTREADY → partial, CSUM_VALID → valid) when the virtio header is
off; with it on, the 10-byte virtio_net_hdr sits just before ``tp_mac``. A frame longer
than its slot (``tp_snaplen < tp_len``) is never delivered truncated: with
PACKET_COPY_THRESH the kernel also queued it whole on the socket (``TP_STATUS_COPY``)
and it is read from there (``rx_ring_copy``); otherwise it is dropped
(``rx_truncated``). Frames the kernel dropped because the ring (or, ``ring=0``, the
socket buffer) was full are read from PACKET_STATISTICS (``rx_kernel_drops``: when a
slot carries ``TP_STATUS_LOSING`` and on every ``describe()``/nicinfo).

With ``ring=0`` (or when the ring cannot be set up: logged) receive drains the socket
until EAGAIN, one ``recvmsg_into`` per frame into a fresh buffer + the spill area, with
the same metadata from PACKET_AUXDATA. PACKET_IGNORE_OUTGOING keeps the kernel's own
transmissions out. Transmit is one ``sendmsg`` per frame either way.
"""

from __future__ import annotations

import mmap
import platform
import socket
import struct
from collections.abc import Sequence

from stack.counters import names
from stack.l2.counters import FDIO_COUNTERS
from stack.l2.fdio import SMALL_RX, FdInterface
from stack.l2.iface import parse_mac
from stack.loader import ModuleContext
from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.netns import LinkControl, socket_in_netns
from stack.options import OptionError
from stack.packet import GSO_TCPV4, GSO_TCPV6, Buffer, Packet, TxMeta, locate_l4_csum

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_COPY_THRESH = 7
PACKET_AUXDATA = 8
PACKET_VERSION = 10
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_MULTICAST = 0
PACKET_MR_PROMISC = 1
PACKET_MR_UNICAST = 3
TPACKET_V2 = 1
ETH_P_ALL = 0x0003
TP_STATUS_KERNEL = 0x00
TP_STATUS_USER = 0x01
TP_STATUS_COPY = 0x02
TP_STATUS_LOSING = 0x04
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

#: struct tpacket2_hdr up to tp_vlan_tpid: status, len, snaplen, mac, net, sec, nsec,
#: vlan_tci, vlan_tpid (32 bytes with its padding; sockaddr_ll follows at 32)
_tp2 = struct.Struct("=IIIHHIIHH")
_stats = struct.Struct("=II")  # struct tpacket_stats: tp_packets, tp_drops (clear on read)
_vlan = struct.Struct("!HH")
TPACKET_ALIGNMENT = 16
#: default slot: a 64 KiB GSO/GRO frame + Ethernet/VLAN header after the slot's own
#: header (tpacket2_hdr + sockaddr_ll + the virtio header: tp_mac is 76 with it on)
RING_SAFE = platform.machine() in ("x86_64", "AMD64")  # see main(): the default ring
RING_FRAME = 68 << 10
#: default number of slots (rounded up to whole blocks: 75 slots of 68 KiB = 5 MiB)
RING_FRAMES = 64
#: blocks grow (powers of two) until they waste < 1/16 of themselves, up to this size
RING_BLOCK_MAX = 1 << 20
#: the most kernel memory ring_frame= x ring_frames= may ask for
RING_MAX_BYTES = 256 << 20


def _mreq(ifindex: int, mr_type: int, addr: bytes = b"") -> bytes:
    return struct.pack("iHH8s", ifindex, mr_type, len(addr), addr)


def ring_geometry(frame: int, frames: int) -> tuple[int, int, int, int]:
    """``struct tpacket_req`` (block size, block count, frame size, frame count) for at
    least ``frames`` slots of at least ``frame`` bytes. Blocks are a power-of-two number
    of pages (what the kernel allocates), large enough to waste little space (68 KiB
    slots: 15 per 1 MiB block)."""
    frame = -(-frame // TPACKET_ALIGNMENT) * TPACKET_ALIGNMENT
    block = mmap.PAGESIZE
    while block < frame:
        block <<= 1
    while block < RING_BLOCK_MAX and (block % frame) * 16 > block:
        block <<= 1
    per_block = block // frame
    blocks = -(-frames // per_block)
    return block, blocks, frame, blocks * per_block


#: the interface's counters (stack/counters.py): an fd driver's and these
COUNTERS: frozenset[str] = FDIO_COUNTERS | names("""
    rx_ring_frames rx_ring_copy rx_truncated rx_vlan_reinserted rx_spill rx_gso
    rx_gso_inferred rx_oversize rx_kernel_drops
""")


class PacketInterface(FdInterface):
    sock: socket.socket  # always set in __init__ (the fd's owner)

    kind = "ether"
    counter_names = COUNTERS

    def __init__(self, name: str, *, link: str, netns: str | None, mac: bytes | None,
                 mtu: int | None, offload: bool, promisc: bool, ring: bool = True,
                 ring_frame: int = RING_FRAME, ring_frames: int = RING_FRAMES,
                 ring_copy: bool = True) -> None:
        ctl = LinkControl(netns)
        try:
            ifindex = ctl.get_index(link)
            link_mac = ctl.get_mac(link)
            link_mtu = ctl.get_mtu(link)
        finally:
            ctl.close()
        super().__init__(name, mac=mac or link_mac, mtu=mtu or link_mtu, driver="packet")
        self.link, self.netns, self.ifindex, self.link_mac = link, netns, ifindex, link_mac
        #: the ring (None: the recvmsg path), its geometry, and why it could not be set up
        self._ring: memoryview | None = None
        self._status = memoryview(b"")  # the ring as 32-bit words: tp_status reads/writes
        self._ring_map: mmap.mmap | None = None
        self._ring_req = (0, 0, 0, 0)
        self._slots: list[int] = []
        self._slot = 0
        self.ring_error: str | None = None
        # protocol 0: no frame is queued before bind() names the link (a socket made
        # with ETH_P_ALL would take every interface's frames until then)
        sock = socket_in_netns(netns, socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:  # kernel < 4.20: filtered by pkttype instead (not needed on CI)
                pass
            self.vnet = offload
            if offload:  # before the ring: the kernel refuses it afterwards (EBUSY)
                sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                self.capabilities = self.offloads = {"csum", "tso4", "tso6"}
            if ring:
                self._setup_ring(sock, ring_frame, ring_frames)
            sock.bind((link, ETH_P_ALL))  # Python converts the protocol to network order
            if self._ring is not None and ring_copy:
                # only now: the socket queue is empty, so each TP_STATUS_COPY slot has
                # exactly one queued frame, in slot order
                sock.setsockopt(SOL_PACKET, PACKET_COPY_THRESH, 1)
            if self.mac != link_mac:
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                                _mreq(ifindex, PACKET_MR_UNICAST, self.mac))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            self._unmap()
            raise
        self.sock = sock
        self.fd = sock.fileno()
        self._promisc_on = False
        self._hdr = bytearray(VNET_HDR_LEN)
        self._small = max(SMALL_RX, self.mtu + 32)
        if promisc:
            self.set_promisc(True)

    def _setup_ring(self, sock: socket.socket, frame: int, frames: int) -> None:
        """TPACKET_V2 + PACKET_RX_RING + mmap; on failure leave the socket ring-less
        (the recvmsg path) and say why in ``ring_error``."""
        req = ring_geometry(frame, frames)
        block, blocks, frame_size, _n = req
        size = block * blocks
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack("IIII", *req))
        except OSError as exc:
            self.ring_error = f"PACKET_RX_RING {req}: {exc}"
            return
        try:
            # Python's mmap keeps a dup of the fd: _unmap() after closing the socket
            self._ring_map = mmap.mmap(sock.fileno(), size)
        except OSError as exc:
            self.ring_error = f"mmap of the {size}-byte ring: {exc}"
            try:  # a ring nobody reads would take every frame: free it
                sock.setsockopt(SOL_PACKET, PACKET_RX_RING, bytes(16))
            except OSError:
                pass
            return
        self._ring = memoryview(self._ring_map)
        self._status = self._ring.cast("I")
        assert self._status.itemsize == 4
        self._ring_req = req
        self._slots = [b * block + i * frame_size
                       for b in range(blocks) for i in range(block // frame_size)]

    def _unmap(self) -> None:
        ring, self._ring = self._ring, None
        if ring is not None:
            self._status.release()
            ring.release()
        rmap, self._ring_map = self._ring_map, None
        if rmap is not None:
            try:
                rmap.close()
            except BufferError:  # a view still exported (cannot happen on the data path)
                pass

    # -- receive -----------------------------------------------------------------------
    def _read_one(self) -> bool:
        mv = self._ring
        if mv is None:
            return self._recv_one()
        off = self._slots[self._slot]
        status = self._status[off >> 2]
        if not status & TP_STATUS_USER:
            return False
        _st, tp_len, snap, mac, _net, _sec, _nsec, tci, tpid = _tp2.unpack_from(mv, off)
        c = self.counters
        c["rx_ring_frames"] += 1
        if status & TP_STATUS_LOSING:
            self.poll_stats()
        start = off + mac
        vnet = None
        if snap < tp_len or snap == 0:
            buf = None
        elif status & TP_STATUS_VLAN_VALID:  # the kernel stripped the tag: put it back
            # one copy, from 4 bytes early (the slot has headers before tp_mac), then
            # the 12 address bytes move down over them and the tag follows
            buf = bytearray(mv[start - 4:start + snap])
            buf[0:12] = buf[4:16]
            _vlan.pack_into(buf, 12, tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100,
                            tci)
        else:
            buf = bytearray(mv[start:start + snap])
        if buf is not None and self.vnet:
            vnet = _vnet.unpack_from(mv, start - VNET_HDR_LEN)
        # the frame is ours: give the slot back before the stack runs, with ONE aligned
        # 32-bit store (a memoryview item). Not struct.pack_into: it zero-fills the
        # field, then stores the value again; the kernel can take the slot (it waits
        # for exactly 0) and fill it between the two, and the second store erases its
        # TP_STATUS_USER: a filled slot that looks free, where the driver then waits
        # while the kernel fills the slots after it — stalls and reordered frames
        # (seen under floods, whenever this process was interrupted in between).
        self._status[off >> 2] = TP_STATUS_KERNEL
        self._slot = self._slot + 1 if self._slot + 1 < len(self._slots) else 0
        if buf is None:
            if status & TP_STATUS_COPY:  # queued whole on the socket too: read it there
                c["rx_ring_copy"] += 1
                try:
                    self._recv_one()
                except BlockingIOError:
                    c["rx_truncated"] += 1
            elif tp_len == 0:
                c["ierrors"] += 1
            else:
                c["rx_truncated"] += 1
            return True
        shift = 0
        if status & TP_STATUS_VLAN_VALID:
            shift = 4
            c["rx_vlan_reinserted"] += 1
        self._finish(Packet(memoryview(buf), self), vnet, status, shift)
        return True

    def _recv_one(self) -> bool:
        """One frame from the socket queue (the ring=0 path, and TP_STATUS_COPY)."""
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
        vnet = _vnet.unpack_from(self._hdr) if self.vnet else None
        self._finish(Packet(memoryview(buf)[:n], self), vnet, status, shift)
        return True

    def _finish(self, pkt: Packet, vnet: tuple[int, ...] | None, status: int,
                shift: int) -> None:
        """Offload metadata from the virtio header (or, without it, the tpacket/auxdata
        status), offsets moved by ``shift`` (a reinserted tag), then deliver."""
        if vnet is not None:
            flags, gso_type, hdr_len, gso_size, cs, co = vnet
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
        else:
            if status & TP_STATUS_CSUMNOTREADY:
                pkt.csum_partial = pkt.csum_valid = True
                where = locate_l4_csum(pkt.data, 14 + shift)
                if where is not None:
                    pkt.csum_start, pkt.csum_offset = where
            elif status & TP_STATUS_CSUM_VALID:
                pkt.csum_valid = True
            if len(pkt.data) > self.mtu + 14 + shift:
                self._infer_gso(pkt, 14 + shift)
        self.deliver(pkt)

    def _infer_gso(self, pkt: Packet, l3: int) -> None:
        """Without the virtio header the kernel still hands over GSO super-frames from a
        veth (its TCP's TSO), but says nothing of them. A TCP frame bigger than the MTU
        is one: mark it a super-segment of MTU-sized segments (the sender's MSS is at
        most that), so forwarding cuts it (software GSO) instead of answering "needs
        fragmentation" to a sender whose own MTU it fits, which would stall the
        connection. Other oversized frames (UDP_SEGMENT: the datagram size is lost)
        are left as they are and counted (``rx_oversize``)."""
        data = pkt.data
        c = self.counters
        try:
            v = data[l3] >> 4
            if v == 4 and data[l3 + 9] == 6 and not (data[l3 + 6] & 0x3F or data[l3 + 7]):
                ihl, gso_type = (data[l3] & 15) * 4, GSO_TCPV4
            elif v == 6 and data[l3 + 6] == 6:
                ihl, gso_type = 40, GSO_TCPV6
            else:
                c["rx_oversize"] += 1
                return
            thl = (data[l3 + ihl + 12] >> 4) * 4
        except IndexError:
            c["rx_oversize"] += 1
            return
        mss = self.mtu - ihl - thl
        if thl < 20 or mss < 8:
            c["rx_oversize"] += 1
            return
        pkt.gso_type, pkt.gso_size, pkt.hdr_len = gso_type, mss, l3 + ihl + thl
        c["rx_gso_inferred"] += 1

    def poll_stats(self) -> None:
        """Add the kernel's drop count since the last read (PACKET_STATISTICS clears
        on read) to ``rx_kernel_drops``."""
        if self.closed:
            return
        try:
            data = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _stats.size)
        except OSError:
            return
        _packets, drops = _stats.unpack_from(data)
        if drops:
            self.counters["rx_kernel_drops"] += drops

    # -- transmit and control ------------------------------------------------------------
    def _write(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> None:
        if self.vnet:
            if meta is None or not (meta.needs_csum or meta.gso_type):
                hdr: bytes = _VNET_PLAIN
            else:
                hdr = _vnet.pack(F_NEEDS_CSUM if meta.needs_csum else 0, meta.gso_type,
                                 meta.hdr_len, meta.gso_size, meta.csum_start, meta.csum_offset)
            self.sock.sendmsg((hdr, *bufs))
            return
        # no virtio header: no offloads either, so Interface.output has already finished
        # any checksum or segmentation a TxMeta asked for (stack.l2.gso)
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
        self._unmap()  # after the socket: the mmap's own fd copy goes last

    def describe(self) -> dict[str, str]:
        self.poll_stats()
        facts = {"link": self.link, "netns": self.netns or "-", "ifindex": str(self.ifindex),
                 "vnet_hdr": str(VNET_HDR_LEN if self.vnet else 0),
                 "promisc": "yes" if self._promisc_on else "no",
                 "rx_path": "ring" if self._ring is not None else "recvmsg"}
        if self._ring is not None:
            block, blocks, frame, frames = self._ring_req
            facts["rx_ring"] = (f"TPACKET_V2 {frames} slots of {frame} bytes, {blocks} "
                                f"blocks of {block} ({block * blocks} bytes)")
        elif self.ring_error:
            facts["rx_ring"] = f"off ({self.ring_error})"
        return facts


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
    # the ring is read and handed back without memory barriers (Python has none): safe on
    # x86-64's ordering, so the default elsewhere is the recvmsg path
    ring = bool(opts.get_int("ring", 1 if RING_SAFE else 0, lo=0, hi=1))
    ring_frame = opts.get_int("ring_frame", RING_FRAME, lo=16, hi=RING_BLOCK_MAX) or RING_FRAME
    ring_frames = opts.get_int("ring_frames", RING_FRAMES, lo=1, hi=1 << 16) or RING_FRAMES
    block, blocks, _f, _n = ring_geometry(ring_frame, ring_frames)
    if ring and block * blocks > RING_MAX_BYTES:
        raise OptionError(f"ring_frame={ring_frame} x ring_frames={ring_frames}: a ring of "
                          f"{block * blocks} bytes (at most {RING_MAX_BYTES})")
    iface = PacketInterface(opts.get_str("name") or ctx.stack.unique_name("pkt"), link=link,
                            netns=opts.get_str("netns"), mac=mac,
                            mtu=opts.get_int("mtu", None, lo=68, hi=65535),
                            offload=bool(opts.get_int("offload", 1, lo=0, hi=1)),
                            promisc=opts.flag("promisc"), ring=ring, ring_frame=ring_frame,
                            ring_frames=ring_frames, ring_copy=bool(opts.get_int("ring_copy", 1, lo=0, hi=1)))
    ctx.add_cleanup(iface.destroy)
    if iface.ring_error:
        ctx.log.warning("%s: no receive ring, one recvmsg per frame instead: %s",
                        iface.name, iface.ring_error)
    ctx.attach_interface(iface)
    iface.start(ctx.nursery)
    ctx.started()


IO_PKT_MODULE = ModuleEntry(kind="driver", api=MODULE_API_VERSION, entry=main,
                            description="AF_PACKET socket on an existing Linux interface")
