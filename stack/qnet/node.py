"""The Qnet instance of one stack: options, peers and their links, the LAN resolver, the
connections (l4.py), the KIF client and server (kif.py), frame input from layer 2 and
from IP protocol 106.

LAN resolver (LR): a node broadcasts its mapping (an LR reply to "*") at start and every
``auto_add`` ticks of 200 ms (default 150: 30 s) and answers requests for its name; a
lookup of an unknown name under ``/net`` broadcasts a request and waits ``LR_WAIT``.
``auto_add=0``: no broadcasts, and unsolicited mappings are refused (only answers to
this node's own requests are learned). ``resolve=file``: the static list
``resolve_file`` (``name MAC [interface]`` or ``name ip ADDRESS`` per line), never
expired. A node learned by LR that stays silent for three periods leaves ``/net``.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from stack.counters import Counters
from stack.l2.iface import BROADCAST_MAC, IFF_LOOPBACK, Interface
from stack.packet import Buffer, Packet
from stack.qnet import wire
from stack.qnet.counters import QNET_COUNTERS
from stack.qnet.kif import KifClient, KifServer
from stack.qnet.l4 import ST_DOWN, ST_INIT, Conn, PeerLink, new_incarnation
from stack.qnet.wire import Header, ParseError
from stack.registry import ServiceKey

if TYPE_CHECKING:  # cycle: the stack loads this module's users; types only
    from stack.core import Stack

log = logging.getLogger("io-pkt.qnet")

TICK = 0.2
LR_WAIT = 0.6
LR_REPLY_RATE = 50.0     # replies per second (token bucket), beyond: lr_rate_limited
MAX_PEERS = 256
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Peer:
    def __init__(self, name: str, nd: int) -> None:
        self.name = name
        self.nd = nd              # this node's descriptor for the peer
        self.their_nd = 0         # the peer's descriptor for this node
        self.links: dict[str, PeerLink] = {}
        self.last_heard = time.monotonic()
        self.static = False
        self.incarnation = 0


class Qnet:
    def __init__(self, stack: Stack, *, host: str, binds: list[str] | None, bind_ip: bool,
                 auto_add: int, resolve_file: str | None, key: bytes | None,
                 tx_retries: int, maproot: int | None, mapany: int | None,
                 allow: set[str] | None) -> None:
        self.stack = stack
        self.host = host
        self.binds = binds          # None: every interface but loopback
        self.bind_ip = bind_ip
        self.auto_add = auto_add
        self.key = key
        self.tx_retries = tx_retries
        self.maproot = maproot
        self.mapany = mapany
        self.allow = allow
        self.counters = Counters("qnet", QNET_COUNTERS)
        self.peers: dict[str, Peer] = {}
        self.conns: dict[int, Conn] = {}
        self.client_conns: dict[tuple[str, int, str | None], Conn] = {}
        self.incarnation = new_incarnation()
        self._next_cid = 1
        self._next_nd = 1
        self._lr_waiters: dict[str, trio.Event] = {}
        self._tokens = LR_REPLY_RATE
        self._tokens_at = time.monotonic()
        self._rem_down_at = 0.0
        self.nursery: trio.Nursery = None  # type: ignore[assignment]  # set by run()
        self.kif_client = KifClient(self)
        self.kif_server: KifServer | None = None
        self.static: dict[str, list[tuple[str, str]]] = {}
        if resolve_file:
            self.static = load_resolve_file(resolve_file)

    # -- interfaces ---------------------------------------------------------------------------
    def bound(self, iface: Interface) -> bool:
        if self.binds is None:
            return not iface.flags & IFF_LOOPBACK
        return iface.name in self.binds

    def bound_ifaces(self) -> list[Interface]:
        return [i for i in self.stack.interfaces.values() if self.bound(i) and i.up]

    def _ether_link(self, peer: Peer, iface: Interface, mac: bytes) -> PeerLink:
        lk = peer.links.get(iface.name)
        if lk is not None and lk.key == (iface.name, mac):
            return lk
        l2 = self.stack.l2

        def send(bufs: Sequence[Buffer]) -> bool:
            return l2.output(iface, mac, wire.ETHERTYPE_QNET, bufs)

        idx = lk.idx if lk is not None else len(peer.links)
        new = PeerLink(iface.name, idx, iface.mtu, send, (iface.name, mac))
        peer.links[iface.name] = new
        return new

    def _ip_link(self, peer: Peer, addr: int) -> PeerLink:
        from stack.addr import v4

        lk = peer.links.get("ip")
        key = ("ip", addr.to_bytes(4, "big"))
        if lk is not None and lk.key == key:
            return lk
        stack = self.stack
        dst = v4(addr)

        def send(bufs: Sequence[Buffer]) -> bool:
            self.counters["ip_out"] += 1
            return stack.inet.output(None, dst, wire.IPPROTO_QNET, list(bufs)) == 0

        new = PeerLink("ip", len(peer.links), 1480, send, key)
        peer.links["ip"] = new
        return new

    # -- peers ----------------------------------------------------------------------------------
    def peer_names(self) -> list[str]:
        return sorted(self.peers)

    def knows(self, name: str) -> bool:
        return name in self.peers

    def _peer(self, name: str) -> Peer | None:
        p = self.peers.get(name)
        if p is None:
            if len(self.peers) >= MAX_PEERS:
                self.counters["lr_table_full"] += 1
                return None
            p = Peer(name, self._next_nd)
            self._next_nd += 1
            self.peers[name] = p
        return p

    def learn(self, name: str, iface: Interface, mac: bytes) -> Peer | None:
        if name == self.host:
            return None
        known = name in self.peers
        p = self._peer(name)
        if p is None:
            return None
        self._ether_link(p, iface, mac)
        p.last_heard = time.monotonic()
        if not known:
            self.counters["lr_learned"] += 1
            log.info("qnet: node %s at %s on %s", name, mac.hex(":"), iface.name)
        ev = self._lr_waiters.pop(name, None)
        if ev is not None:
            ev.set()
        return p

    def _apply_static(self) -> None:
        for name, entries in self.static.items():
            p = self._peer(name)
            if p is None:
                continue
            p.static = True
            for kind, value in entries:
                if kind == "ip":
                    self._ip_link(p, int(ipaddress.IPv4Address(value)))
                    continue
                mac = bytes.fromhex(value.replace(":", ""))
                for iface in self.bound_ifaces():
                    if kind in ("", iface.name):
                        self._ether_link(p, iface, mac)

    async def resolve(self, name: str) -> bool:
        """Is ``name`` a node (asking the LAN when not known yet)?"""
        if name in self.peers:
            return True
        if not _NAME.match(name) or name == self.host:
            return False
        ev = self._lr_waiters.get(name)
        if ev is None:
            ev = self._lr_waiters[name] = trio.Event()
            self._lr_send(wire.LR_REQUEST, name, BROADCAST_MAC, b"")
        with trio.move_on_after(LR_WAIT):
            await ev.wait()
        self._lr_waiters.pop(name, None)
        return name in self.peers

    # -- connections -----------------------------------------------------------------------------
    def new_cid(self) -> int:
        cid = (self.incarnation << 16) | self._next_cid
        self._next_cid = self._next_cid % 0xFFFF + 1
        return cid

    async def connect(self, name: str, qos: int, link: str | None) -> Conn:
        key = (name, qos, link)
        conn = self.client_conns.get(key)
        if conn is None or conn.state == ST_DOWN:
            peer = self.peers.get(name)
            if peer is None:
                if not await self.resolve(name):
                    raise OSError(errno.EHOSTDOWN, f"node {name} is not known")
                peer = self.peers[name]
            conn = Conn(self, peer, self.new_cid(), initiator=True, qos_type=qos,
                        qos_link=link)
            self.conns[conn.cid] = conn
            self.client_conns[key] = conn
            self.kif_client.attach(conn)
            self.nursery.start_soon(conn.handshake)
            self.nursery.start_soon(conn.timer_loop)
        if conn.state == ST_INIT:
            await conn.up_event.wait()
        if conn.state == ST_DOWN:
            raise OSError(conn.down_errno or errno.EHOSTDOWN, f"node {name} is down")
        return conn

    def forget_conn(self, conn: Conn) -> None:
        self.conns.pop(conn.cid, None)
        for k, v in list(self.client_conns.items()):
            if v is conn:
                del self.client_conns[k]

    def _peer_restarted(self, peer: Peer, cid: int) -> None:
        inc = cid >> 16
        if peer.incarnation and inc != peer.incarnation:
            self.counters["peer_restart"] += 1
            log.info("qnet: node %s restarted", peer.name)
            for conn in [c for c in self.conns.values() if c.peer is peer]:
                conn.go_down(errno.EHOSTDOWN, "peer restarted")
        peer.incarnation = inc

    # -- frames out --------------------------------------------------------------------------------
    def transmit(self, link: PeerLink, hdr: Header, payload: Buffer) -> None:
        bufs = hdr.emit(payload, self.key)
        c = self.counters
        c["frames_out"] += 1
        c["bytes_out"] += wire.HDR_LEN + len(payload)
        link.frames_out += 1
        link.send(bufs)

    def _lr_send(self, typ: int, dst_name: str, dst_mac: bytes, to_mac: bytes,
                 only: Interface | None = None) -> None:
        for iface in ([only] if only else self.bound_ifaces()):
            msg = wire.LrMessage(typ, self.host, "", iface.mac, dst_name, "", to_mac)
            bufs = Header(type=wire.T_LR, layer=wire.L_LR).emit(msg.emit(), self.key)
            self.counters["frames_out"] += 1
            if typ == wire.LR_REQUEST:
                self.counters["lr_requests_out"] += 1
            elif dst_name == "*":
                self.counters["lr_announce_out"] += 1
            else:
                self.counters["lr_replies_out"] += 1
            self.stack.l2.output(iface, dst_mac, wire.ETHERTYPE_QNET, bufs)

    def announce(self) -> None:
        self._lr_send(wire.LR_REPLY, "*", BROADCAST_MAC, b"")

    # -- frames in ---------------------------------------------------------------------------------
    def frame_in(self, iface: Interface, pkt: Packet) -> None:
        c = self.counters
        c["frames_in"] += 1
        if not self.bound(iface):
            c["drop_not_bound"] += 1
            return
        try:
            f = wire.parse(pkt.payload(), self.key)
        except ParseError as exc:
            c[exc.reason] += 1
            return
        c["bytes_in"] += wire.HDR_LEN + f.hdr.length
        src = bytes(pkt.src_mac)
        if f.hdr.type == wire.T_LR:
            self._lr_in(f, iface, src)
            return

        def link_for(peer: Peer) -> PeerLink:
            return self._ether_link(peer, iface, src)

        self._l4_in(f, link_for)

    def ip_in(self, src_addr: int, payload: memoryview) -> None:
        c = self.counters
        c["ip_in"] += 1
        c["frames_in"] += 1
        if not self.bind_ip:
            c["drop_not_bound"] += 1
            return
        try:
            f = wire.parse(payload, self.key)
        except ParseError as exc:
            c[exc.reason] += 1
            return
        if f.hdr.type == wire.T_LR:
            c["drop_bad_lr"] += 1
            return

        def link_for(peer: Peer) -> PeerLink:
            return self._ip_link(peer, src_addr)

        self._l4_in(f, link_for)

    def _l4_in(self, f: wire.Frame, link_for: Any) -> None:
        c = self.counters
        hdr = f.hdr
        if hdr.type == wire.T_TCS_INIT:
            self._tcs_init_in(f, link_for)
            return
        conn = self.conns.get(hdr.dconn)
        if conn is None:
            c["drop_unknown_conn"] += 1
            if hdr.type == wire.T_DATA and hdr.sconn:
                self._rem_down(hdr, link_for)
            return
        if hdr.type == wire.T_TCS_REM_UP:
            c["tcs_rem_up_in"] += 1
            if conn.initiator and conn.state == ST_INIT:
                self._peer_restarted(conn.peer, hdr.sconn)
                conn.rcid = hdr.sconn
                link = link_for(conn.peer)
                conn.peer.their_nd = hdr.dst_nd
                conn.send_control(wire.T_TCS_UP, link=link)
                conn.set_up()
            elif hdr.sconn == conn.rcid:
                conn.send_control(wire.T_TCS_UP, link=link_for(conn.peer))
            return
        if hdr.sconn != conn.rcid:
            c["drop_bad_conn"] += 1
            return
        link = link_for(conn.peer)
        if link.heard(trio.current_time()):
            c["link_up"] += 1
            log.info("qnet: link %s to %s up", link.name, conn.peer.name)
        conn.peer.last_heard = time.monotonic()
        t = hdr.type
        if t == wire.T_DATA:
            if hdr.layer != wire.L_KIF:
                c["drop_nr_layer"] += 1
                return
            conn.data_in(hdr, f.payload, link)
        elif t == wire.T_ACK:
            c["acks_in"] += 1
            conn.ack_in(hdr.seq, f.payload)
        elif t == wire.T_NACK:
            c["nacks_in"] += 1
            conn.nack_in(hdr.seq, link, f.payload)
        elif t == wire.T_TCS_UP:
            c["tcs_up_in"] += 1
            conn.set_up()
        elif t in (wire.T_TCS_DOWN, wire.T_TCS_REM_DOWN):
            c["tcs_down_in" if t == wire.T_TCS_DOWN else "tcs_rem_down_in"] += 1
            conn.go_down(errno.EHOSTDOWN, "peer closed the connection")

    def _rem_down(self, hdr: Header, link_for: Any) -> None:
        """A data frame for a connection this node does not have (it restarted): tell the
        sender, at most 20 times a second."""
        now = time.monotonic()
        if now - self._rem_down_at < 0.05:
            return
        self._rem_down_at = now
        for peer in self.peers.values():
            # only to a node this node knows a link to (never to a forged source)
            lk = link_for(peer) if peer.links else None
            if lk is None:
                continue
            self.counters["tcs_rem_down_out"] += 1
            self.transmit(lk, Header(type=wire.T_TCS_REM_DOWN, flags=wire.F_FIRST | wire.F_LAST,
                                     layer=wire.L_SEQ, sconn=0, dconn=hdr.sconn), b"")
            return

    def _tcs_init_in(self, f: wire.Frame, link_for: Any) -> None:
        c = self.counters
        c["tcs_init_in"] += 1
        hdr = f.hdr
        try:
            src_name, dst_name = wire.parse_tcs_init(f.payload)
        except ParseError as exc:
            c[exc.reason] += 1
            return
        if dst_name != self.host or not _NAME.match(src_name) or hdr.sconn == 0:
            c["drop_bad_tcs"] += 1
            return
        if self.allow is not None and src_name not in self.allow:
            c["drop_not_allowed"] += 1
            return
        if self.kif_server is None:
            c["drop_bad_tcs"] += 1
            return
        peer = self._peer(src_name)
        if peer is None:
            return
        link = link_for(peer)
        link.heard(trio.current_time())
        peer.last_heard = time.monotonic()
        peer.their_nd = hdr.dst_nd
        self._peer_restarted(peer, hdr.sconn)
        for conn in self.conns.values():
            if conn.peer is peer and not conn.initiator and conn.rcid == hdr.sconn:
                conn.send_control(wire.T_TCS_REM_UP, link=link)  # its INIT again
                return
        conn = Conn(self, peer, self.new_cid(), initiator=False, qos_type=hdr.qos_type)
        conn.rcid = hdr.sconn
        conn.last_rx_link = link
        self.conns[conn.cid] = conn
        self.kif_server.attach(conn)
        conn.set_up()
        conn.send_control(wire.T_TCS_REM_UP, link=link)
        self.nursery.start_soon(conn.timer_loop)

    def _lr_in(self, f: wire.Frame, iface: Interface, src: bytes) -> None:
        c = self.counters
        c["lr_in"] += 1
        try:
            m = wire.parse_lr(f.payload)
        except ParseError as exc:
            c[exc.reason] += 1
            return
        if not _NAME.match(m.src_name):
            c["lr_bad_name"] += 1
            return
        if m.src_name == self.host:
            return  # our own broadcast, or a node using our name
        solicited = m.type == wire.LR_REPLY and m.dst_name == self.host \
            and m.src_name in self._lr_waiters
        if self.allow is not None and m.src_name not in self.allow:
            c["drop_not_allowed"] += 1
        elif self.auto_add or solicited:
            self.learn(m.src_name, iface, src)
        else:
            c["lr_refused_unsolicited"] += 1
        if m.type == wire.LR_REQUEST and m.dst_name == self.host:
            if self._take_token():
                self._lr_send(wire.LR_REPLY, m.src_name, src, src, only=iface)
            else:
                c["lr_rate_limited"] += 1

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(LR_REPLY_RATE, self._tokens + (now - self._tokens_at) * LR_REPLY_RATE)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    # -- the periodic part ---------------------------------------------------------------------------
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._apply_static()
            task_status.started()
            ticks = 0
            if self.auto_add:
                self.announce()
            while True:
                await trio.sleep(TICK)
                ticks += 1
                if self.static:
                    self._apply_static()  # interfaces that came up since
                if self.auto_add and ticks % self.auto_add == 0:
                    self.announce()
                    self._expire()

    def _expire(self) -> None:
        limit = 3 * self.auto_add * TICK
        now = time.monotonic()
        for name, p in list(self.peers.items()):
            if p.static or now - p.last_heard <= limit:
                continue
            if any(cn.peer is p and cn.state != ST_DOWN for cn in self.conns.values()):
                continue
            self.counters["lr_expired"] += 1
            log.info("qnet: node %s silent for %.1f s: removed", name, now - p.last_heard)
            del self.peers[name]

    def shutdown(self) -> None:
        """Tell every peer its connections are gone (TCS_DOWN)."""
        for conn in list(self.conns.values()):
            if conn.state != ST_DOWN:
                self.counters["tcs_down_out"] += 1
                conn.send_control(wire.T_TCS_DOWN)
                conn.go_down(errno.EHOSTDOWN, "shutting down")

    # -- status ----------------------------------------------------------------------------------------
    def render_nodes(self) -> str:
        lines = [f"host {self.host} incarnation {self.incarnation:#06x} "
                 f"auto_add {self.auto_add} tx_retries {self.tx_retries} "
                 f"key {'on' if self.key else 'off'}"]
        for name in sorted(self.peers):
            p = self.peers[name]
            age = time.monotonic() - p.last_heard
            lines.append(f"node {name} nd {p.nd} heard {age:.1f}s"
                         f"{' static' if p.static else ''}")
            for lk in p.links.values():
                addr = lk.key[1].hex(":") if lk.name != "ip" else str(
                    ipaddress.IPv4Address(lk.key[1]))
                lines.append(f"  link {lk.name} idx {lk.idx} {addr} "
                             f"{'up' if lk.up else 'down'} out {lk.frames_out} "
                             f"in {lk.frames_in} inflight {lk.inflight}")
            for cn in self.conns.values():
                if cn.peer is p:
                    role = "client" if cn.initiator else "server"
                    qos = wire.QOS_NAMES.get(cn.qos_type, str(cn.qos_type))
                    lines.append(f"  conn {cn.cid:#010x}->{cn.rcid:#010x} {role} {cn.state} "
                                 f"qos {qos}{':' + cn.qos_link if cn.qos_link else ''} "
                                 f"rtt {cn.srtt * 1000:.2f}ms rto {cn.rto * 1000:.0f}ms "
                                 f"retransmits {cn.retransmits} unacked {len(cn.unacked)}")
        return "\n".join(lines) + "\n"

    def render_stats(self) -> str:
        return "".join(f"{k} {v}\n" for k, v in sorted(self.counters.snapshot().items()))


#: ``stack.services.get(QNET)``: the running Qnet instance (lsm-qnet offers it)
QNET: ServiceKey[Qnet] = ServiceKey("qnet")


def load_resolve_file(path: str) -> dict[str, list[tuple[str, str]]]:
    """``name MAC [interface]`` or ``name ip ADDRESS`` lines; # comments."""
    out: dict[str, list[tuple[str, str]]] = {}
    with open(path, encoding="utf-8") as fh:
        for n, raw in enumerate(fh, 1):
            line = raw.split("#", 1)[0].split()
            if not line:
                continue
            name = line[0]
            if not _NAME.match(name) or len(line) < 2:
                raise ValueError(f"{path}:{n}: expected 'name MAC [interface]'")
            if line[1] == "ip":
                ipaddress.IPv4Address(line[2])
                out.setdefault(name, []).append(("ip", line[2]))
                continue
            mac = line[1].replace(":", "").replace("-", "")
            if len(mac) != 12:
                raise ValueError(f"{path}:{n}: bad MAC {line[1]!r}")
            bytes.fromhex(mac)
            out.setdefault(name, []).append((line[2] if len(line) > 2 else "", line[1]))
    return out
