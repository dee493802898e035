"""ESP (RFC 4303) over the crypto framework: the engine behind the SPD hooks.

Output: the "inet_out_prefrag" hook finds an ``ipsec`` policy for a datagram and
reroutes it to ``enc0``; the IP layer runs "inet" out on enc0 (pf sees the inner
datagram there) and enc0's transmit hands it here: the SA is chosen, the ESP payload
built and dispatched to the crypto framework; when the request completes (at once on
swcrypto, later and in any order on an offload engine) the ESP packet is sent by the IP
layer to the SA's destination (UDP 4500 around it for a NAT-T SA), fragmented there if
it is too big.

IPv6 (docs/ipsec.md): the "inet6_out_prefrag" hook does for IPv6 datagrams what the
IPv4 one does; ESP is also the (AF_INET6, 50) transport; an "inet6" in hook refuses clear
datagrams an inbound ``require`` policy covers. Tunnel mode carries either family inside
either (next header 4 or 41). Neighbor Discovery and MLD never pass the SPD (they
would deadlock the link: RFC 4301 leaves ND to local policy; Linux and NetBSD users
add bypass policies for them).

Input: ESP is the transport (AF_INET, 50); a NAT-T SA's UDP 4500 packets are turned into
ESP by the "inet" in hook. The SA is found by (dst, SPI), the replay window checked,
the packet decrypted and verified; the window is updated only then. The inner datagram
(tunnel mode) or the rebuilt one (transport mode) is received on ``enc0`` (pf sees it
there), after the inbound policy check. Every drop is counted by reason.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from stack.addr import Addr
from stack.counters import Counters
from stack.crypto.algs import Alg
from stack.crypto.framework import DECRYPT, ENCRYPT, CryptoError, CryptoRequest, SessionParams
from stack.inet.wire import checksum1
from stack.inet.wire.icmp import DEST_UNREACH, UNREACH_NEEDFRAG
from stack.inet6.wire.ipv6 import EXTENSION_HEADERS, HLEN, ChainError, pack_header, walk_chain
from stack.ipsec.counters import IPSEC_COUNTERS
from stack.ipsec.sa import SA, Databases, Policy
from stack.l2.iface import IFF_POINTOPOINT, IFF_RUNNING, IFF_UP, Interface
from stack.l2.medium import PointToPointMedium
from stack.packet import Buffer, Packet, TxMeta
from stack.pfil import Reroute
from stack.services import IPV6

if TYPE_CHECKING:  # cycle: the Stack holds this part; types only
    from stack.core import Stack
    from stack.network import IPInfo

log = logging.getLogger("io-pkt.ipsec")

PROTO_ESP = 50
PROTO_UDP = 17
PROTO_IPIP = 4
PROTO_IPV6 = 41
PROTO_ICMPV6 = 58
#: ICMPv6 types that never pass the SPD: MLD and Neighbor Discovery
ND_MLD_TYPES = frozenset((130, 131, 132, 133, 134, 135, 136, 137, 143))
NATT_PORT = 4500
GCM_IV = 8
CBC_IV = 16
ICV = 16


class Enc0(Interface):
    """The IPsec pseudo-interface: outbound inner datagrams leave by it (its transmit is
    the encryption), inbound decrypted ones arrive on it, so pf and bpf see them."""

    kind = "enc"
    medium_type = PointToPointMedium

    def __init__(self, engine: Esp) -> None:
        super().__init__("enc0", mac=b"", mtu=65535, driver="enc",
                         flags=IFF_POINTOPOINT | IFF_UP | IFF_RUNNING)
        self.engine = engine

    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        return self.engine.output(bufs)


def _ports(d: bytes | memoryview, ihl: int, proto: int, frag: bool) -> tuple[int, int]:
    if frag or proto not in (6, 17, 132) or len(d) < ihl + 4:
        return 0, 0
    return (d[ihl] << 8) | d[ihl + 1], (d[ihl + 2] << 8) | d[ihl + 3]


def _sel6(d: bytes | memoryview) -> tuple[int, int, int, int, int, bool]:
    """An IPv6 datagram's selector: (src, dst, upper protocol, sport, dport, exempt),
    ``exempt`` for Neighbor Discovery and MLD. The extension headers are walked."""
    s = int.from_bytes(d[8:24], "big")
    dst = int.from_bytes(d[24:40], "big")
    nh = d[6]
    l4 = HLEN
    frag = False
    if nh in EXTENSION_HEADERS:
        try:
            ch = walk_chain(d, 0, len(d), nh)
        except ChainError:
            return s, dst, nh, 0, 0, False
        nh, l4 = ch.proto, ch.l4
        frag = ch.frag_at >= 0 and bool(ch.frag_offset or ch.frag_more)
    if nh == PROTO_ICMPV6:
        return s, dst, nh, 0, 0, not frag and len(d) > l4 and d[l4] in ND_MLD_TYPES
    sp, dp = _ports(d, l4, nh, frag)
    return s, dst, nh, sp, dp, False


def _selector(d: bytes | memoryview) -> tuple[int, int, int, int, int, int]:
    """Any datagram's selector: (family, src, dst, upper protocol, sport, dport)."""
    if d[0] >> 4 == 6:
        s, dst, proto, sp, dp, _ = _sel6(d)
        return 6, s, dst, proto, sp, dp
    ihl = (d[0] & 15) << 2
    proto = d[9]
    frag = bool(int.from_bytes(d[6:8], "big") & 0x3FFF)
    sp, dp = _ports(d, ihl, proto, frag)
    return 4, int.from_bytes(d[12:16], "big"), int.from_bytes(d[16:20], "big"), proto, sp, dp


class Esp6:
    """ESP as the (AF_INET6, 50) transport: the engine's input for IPv6."""

    name = "esp6"

    def __init__(self, engine: Esp) -> None:
        self.engine = engine

    def input(self, info: IPInfo) -> None:
        self.engine.input(info, 6)

    def icmp_error(self, icmp_type: int, code: int, src: Addr, dst: Addr, hdr: memoryview,
                   extra: int = 0) -> None:
        return None


def _ip_header(src: int, dst: int, proto: int, total: int, ttl: int, tos: int) -> bytes:
    h = bytearray(struct.pack("!BBHHHBBHII", 0x45, tos, total, 0, 0, ttl, proto, 0, src, dst))
    h[10:12] = struct.pack("!H", checksum1(h))
    return bytes(h)


class Esp:
    name = "esp"

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.counters = Counters("ipsec", IPSEC_COUNTERS)
        self.db = Databases()
        self.enc0 = Enc0(self)
        #: set while this engine sends an ESP packet (the output hook lets it pass)
        self._emitting = False
        #: outer destination -> (its path MTU, when to look again)
        self._path_mtu: dict[int, tuple[int, float]] = {}

    # -- sessions --------------------------------------------------------------------
    def make_session(self, sa: SA) -> None:
        crypto = self.stack.crypto
        if sa.gcm:
            if len(sa.enc_key) not in (20, 36):
                raise CryptoError(errno.EINVAL, "aes-gcm-16 takes a 128 or 256-bit key "
                                                "followed by a 4-byte salt")
            params = SessionParams(cipher=Alg.AES_GCM_16, key=sa.enc_key[:-4],
                                   salt=sa.enc_key[-4:])
        else:
            if sa.auth == "":
                raise CryptoError(errno.EINVAL, "aes-cbc needs an authentication algorithm "
                                                "(-A hmac-sha256)")
            params = SessionParams(cipher=Alg.AES_CBC, key=sa.enc_key,
                                   auth=Alg.SHA2_256_HMAC, auth_key=sa.auth_key, mac_len=16)
        sa.session = crypto.new_session(params)

    def free_session(self, sa: SA) -> None:
        if sa.session is not None:
            self.stack.crypto.free_session(sa.session)
            sa.session = None

    # -- the output hook ("inet_out_prefrag") ---------------------------------------------
    def prefrag_hook(self, bufs: list[Buffer], iface: Interface, direction: str) -> Any:
        if self._emitting or not self.db.spd["out"]:
            return None
        head = bytes(bufs[0][:24]) if len(bufs[0]) >= 24 else b"".join(bytes(b) for b in bufs)[:24]
        ihl = (head[0] & 15) << 2
        proto = head[9]
        frag = bool(int.from_bytes(head[6:8], "big") & 0x3FFF)
        s = int.from_bytes(head[12:16], "big")
        d = int.from_bytes(head[16:20], "big")
        if len(head) < ihl + 4:
            head = b"".join(bytes(b) for b in bufs)[:ihl + 4]
        sp, dp = _ports(head, ihl, proto, frag)
        pol = self.db.lookup("out", s, d, proto, sp, dp)
        if pol is None or pol.action == "none":
            if pol is not None:
                self.counters["out_bypass"] += 1
            return None
        if pol.action == "discard":
            self.counters["out_drop_policy_discard"] += 1
            return False
        return Reroute(self.enc0)

    # -- the IPv6 output hook ("inet6_out_prefrag") ---------------------------------------
    def prefrag6_hook(self, bufs: list[Buffer], iface: Interface, direction: str) -> Any:
        if self._emitting or not self.db.spd["out"]:
            return None
        dgram = b"".join(bytes(b) for b in bufs)
        if len(dgram) < HLEN:
            return None
        s, d, proto, sp, dp, exempt = _sel6(dgram)
        if exempt:
            return None
        pol = self.db.lookup("out", s, d, proto, sp, dp, 6)
        if pol is None or pol.action == "none":
            if pol is not None:
                self.counters["out_bypass"] += 1
            return None
        if pol.action == "discard":
            self.counters["out_drop_policy_discard"] += 1
            return False
        return Reroute(self.enc0)

    # -- output: enc0's transmit ---------------------------------------------------------------
    def output(self, bufs: Sequence[Buffer]) -> bool:
        c = self.counters
        dgram = b"".join(bytes(b) for b in bufs)
        v = dgram[0] >> 4 if dgram else 0
        if len(dgram) < (20 if v == 4 else HLEN) or v not in (4, 6) or (v == 6 and dgram[6] == 0):
            c["out_drop_bad_packet"] += 1  # (a hop-by-hop header cannot go inside ESP)
            return False
        fam, s, d, proto, sp, dp = _selector(dgram)
        ihl = (dgram[0] & 15) << 2 if v == 4 else HLEN
        pol = self.db.lookup("out", s, d, proto, sp, dp, fam)
        if pol is None or pol.action != "ipsec":
            c["out_drop_no_policy"] += 1
            return False
        if pol.mode == "tunnel":
            osrc, odst, ofam = pol.tsrc, pol.tdst, pol.tfamily
            inner, nh = dgram, PROTO_IPIP if v == 4 else PROTO_IPV6
        else:
            osrc, odst, ofam = s, d, fam
            inner, nh = dgram[ihl:], dgram[9] if v == 4 else dgram[6]
        sa = self.db.out_sa(osrc, odst, ofam)
        if sa is None or sa.session is None:
            c["out_drop_no_sa"] += 1
            return False
        life = sa.check_lifetime()
        if life == "soft":
            c["sa_soft_expired"] += 1
        elif life == "hard":
            c["sa_hard_expired"] += 1
            c["out_drop_sa_expired"] += 1
            return False
        if v == 4 and ofam == 4 and len(dgram) > 512 and \
                self._too_big(dgram, sa, pol.mode, ihl, odst):
            return False
        limit = (1 << 64) - 1 if sa.esn else 0xFFFFFFFF
        if sa.seq >= limit:  # RFC 4303 3.3.3: never cycle; a new SA is needed
            c["out_drop_seq_overflow"] += 1
            sa.state = "dying"
            return False
        sa.seq += 1
        seq = sa.seq
        block = 4 if sa.gcm else 16
        padlen = (-(len(inner) + 2)) % block
        trailer = bytes(range(1, padlen + 1)) + bytes((padlen, nh))
        hdr = struct.pack("!II", sa.spi, seq & 0xFFFFFFFF)
        if sa.gcm:
            iv = seq.to_bytes(8, "big")
            aad = struct.pack("!III", sa.spi, seq >> 32, seq & 0xFFFFFFFF) if sa.esn else hdr
            buf = hdr + iv + inner + trailer
            req = CryptoRequest(sa.session, ENCRYPT, buf, skip=16, inject=len(buf), iv=iv,
                                aad=aad)
        else:
            iv = os.urandom(CBC_IV)
            buf = hdr + iv + inner + trailer
            req = CryptoRequest(sa.session, ENCRYPT, buf, skip=24, auth_skip=0,
                                inject=len(buf), iv=iv,
                                auth_tail=struct.pack("!I", seq >> 32) if sa.esn else b"")
        tos = dgram[1] if v == 4 else (dgram[0] & 15) << 4 | dgram[1] >> 4
        ttl = 64 if pol.mode == "tunnel" else dgram[8] if v == 4 else dgram[7]
        req.opaque = (sa, osrc, odst, tos, ttl, len(dgram), ofam)
        req.callback = self._output_done
        self.stack.crypto.dispatch(req)
        if not req.finished:  # completes later (an engine's thread may have filled out)
            c["out_async"] += 1
        return True

    def _too_big(self, dgram: bytes, sa: SA, mode: str, ihl: int, odst: int) -> bool:
        """Path MTU through the SA (RFC 4301 8.2; Linux's xfrm_tunnel_check_size). The
        inner datagram may be as big as what, encrypted, fits the path to the SA's
        destination. A bigger one with DF set is dropped (True) and its source told, by an
        ICMP "fragmentation needed" with that MTU (a host behind a gateway learns it as
        from a router). Without DF the ESP packet goes, fragmented — except the first
        such segment of a local TCP (this stack's TCP does not set DF but takes
        frag-needed as Linux's does with DF): it is dropped and TCP told, once per inner
        destination (the path MTU is learned at once), so it resends in segments that
        fit and the ESP packets are not fragments."""
        mtu = self._inner_mtu(sa, mode, ihl, odst)
        if not mtu or len(dgram) <= mtu:
            return False
        inet = self.stack.inet
        if dgram[6] & 0x40:
            self.counters["out_drop_too_big"] += 1
            if mtu >= 68:
                inet.icmp.send_error(DEST_UNREACH, UNREACH_NEEDFRAG, memoryview(dgram), mtu)
            return True
        if dgram[9] == 6 and mtu >= 68 and inet.is_local(int.from_bytes(dgram[12:16], "big")) \
                and inet.route_mtu(int.from_bytes(dgram[16:20], "big")) > mtu:
            self.counters["out_pmtu_local"] += 1
            inet.learn_pmtu(int.from_bytes(dgram[16:20], "big"), mtu)  # at once: told once
            inet.icmp.send_error(DEST_UNREACH, UNREACH_NEEDFRAG, memoryview(dgram), mtu)
            return True  # TCP takes the error only for a segment still unacknowledged
        return False

    def _inner_mtu(self, sa: SA, mode: str, ihl: int, odst: int) -> int:
        """The biggest inner datagram whose ESP packet fits the path to ``odst`` (0: no
        route); the outer path MTU is looked up at most once a second per destination."""
        now = trio.current_time()
        hit = self._path_mtu.get(odst)
        if hit is None or hit[1] < now:
            if len(self._path_mtu) > 1024:
                self._path_mtu.clear()
            hit = (self.stack.inet.route_mtu(odst), now + 1.0)
            self._path_mtu[odst] = hit
        if not hit[0]:
            return 0
        block = 4 if sa.gcm else 16
        fixed = 20 + 8 + (GCM_IV if sa.gcm else CBC_IV) + ICV + (8 if sa.natt else 0)
        return (hit[0] - fixed) // block * block - 2 + (0 if mode == "tunnel" else ihl)

    def _output_done(self, req: CryptoRequest) -> None:
        c = self.counters
        sa, osrc, odst, tos, ttl, inner_len, ofam = req.opaque
        if req.error or req.out is None:
            c["out_drop_crypto"] += 1
            return
        esp = bytes(req.out)
        sa.bytes += inner_len
        sa.packets += 1
        proto = PROTO_ESP
        if sa.natt:
            esp = struct.pack("!HHHH", sa.natt_sport, sa.natt_dport, 8 + len(esp), 0) + esp
            proto = PROTO_UDP
            c["out_natt"] += 1
        self._emitting = True
        try:
            if ofam == 4:
                err = self.stack.inet.output(osrc, odst, proto, [esp], ttl=ttl, tos=tos)
            else:
                ip6 = self.stack.services.get(IPV6)
                err = errno.EAFNOSUPPORT if ip6 is None else \
                    ip6.output(osrc, odst, proto, [esp], ttl=ttl, tos=tos)
        finally:
            self._emitting = False
        if err:
            c["out_drop_send"] += 1
            return
        c["out_packets"] += 1
        c["out_bytes"] += inner_len

    # -- the input hook ("inet" in): inbound policy, NAT-T ---------------------------------
    def inet_in_hook(self, pkt: Packet, iface: Interface, direction: str) -> Any:
        if iface is self.enc0:
            return None
        data = pkt.data
        off = pkt.l3
        ihl = (data[off] & 15) << 2
        proto = data[off + 9]
        if proto == PROTO_ESP:
            return None
        flags = int.from_bytes(data[off + 6:off + 8], "big")
        frag = bool(flags & 0x3FFF)
        s = int.from_bytes(data[off + 12:off + 16], "big")
        d = int.from_bytes(data[off + 16:off + 20], "big")
        sp, dp = _ports(data[off:], ihl, proto, frag)
        if proto == PROTO_UDP and dp == NATT_PORT and not frag:
            return self._natt_in(pkt, off, ihl, s, d)
        if not self.db.spd["in"]:
            return None
        return self._clear_verdict(self.db.lookup("in", s, d, proto, sp, dp))

    def inet6_in_hook(self, pkt: Packet, iface: Interface, direction: str) -> Any:
        """A clear IPv6 datagram an inbound ``require`` policy covers is dropped."""
        if iface is self.enc0 or not self.db.spd["in"]:
            return None
        data = pkt.data
        off = pkt.l3
        if data[off + 6] == PROTO_ESP:
            return None
        total = HLEN + int.from_bytes(data[off + 4:off + 6], "big")
        s, d, proto, sp, dp, exempt = _sel6(data[off:off + total])
        if exempt or proto == PROTO_ESP:
            return None
        return self._clear_verdict(self.db.lookup("in", s, d, proto, sp, dp, 6))

    def _clear_verdict(self, pol: Policy | None) -> bool | None:
        """Either family's inbound policy for a datagram that arrived in the clear: None
        (pass: no policy, bypass, or ``use``), False (drop: discard, or ``require``)."""
        if pol is None or pol.action == "none":
            if pol is not None:
                self.counters["in_bypass"] += 1
            return None
        if pol.action == "discard":
            self.counters["in_drop_policy_discard"] += 1
            return False
        if pol.level == "use":
            return None
        self.counters["in_drop_policy_mismatch"] += 1  # should have come in ESP
        return False

    def _natt_in(self, pkt: Packet, off: int, ihl: int, s: int, d: int) -> Any:
        """RFC 3948: UDP 4500 carrying ESP (a non-zero SPI) becomes an ESP datagram; a
        keepalive (one 0xFF byte) is dropped; IKE (a zero marker) goes on to UDP."""
        c = self.counters
        data = pkt.data
        total = int.from_bytes(data[off + 2:off + 4], "big")
        body = data[off + ihl + 8:off + total]
        if len(body) == 1 and body[0] == 0xFF:
            c["in_natt_keepalive"] += 1
            return False
        if len(body) >= 4 and bytes(body[:4]) == b"\0\0\0\0":
            return None
        if len(body) < 8:
            c["in_drop_natt_bad"] += 1
            return False
        c["in_natt"] += 1
        hdr = bytearray(data[off:off + ihl])
        hdr[2:4] = (ihl + len(body)).to_bytes(2, "big")
        hdr[9] = PROTO_ESP
        hdr[10:12] = b"\0\0"
        hdr[10:12] = checksum1(hdr).to_bytes(2, "big")
        new = Packet(memoryview(bytes(hdr) + bytes(body)), pkt.iface)
        new.ethertype = pkt.ethertype
        return new

    # -- input: the (AF_INET, 50) and (AF_INET6, 50) transports ---------------------------
    def input(self, info: IPInfo, family: int = 4) -> None:
        c = self.counters
        data = info.payload
        if len(data) < 8:
            c["in_drop_truncated"] += 1
            return
        spi, lo = struct.unpack_from("!II", data, 0)
        mask = 0xFFFFFFFF if family == 4 else (1 << 128) - 1
        d = int(info.dst) & mask
        sa = self.db.sad.get((d, spi))
        if sa is None or sa.session is None or sa.family != family:
            c["in_drop_bad_spi"] += 1
            return
        life = sa.check_lifetime()
        if life == "soft":
            c["sa_soft_expired"] += 1
        elif life == "hard":
            c["sa_hard_expired"] += 1
            c["in_drop_sa_expired"] += 1
            return
        seq = sa.infer_seq(lo)
        bad = sa.replay_check(seq)
        if bad:
            c["in_drop_" + ("replay" if bad == "replay" else "out_of_window")] += 1
            return
        n = len(data)
        buf = bytes(data)
        if sa.gcm:
            if n < 8 + GCM_IV + 4 + ICV or (n - 8 - GCM_IV - ICV) % 4:
                c["in_drop_bad_length"] += 1
                return
            aad = struct.pack("!III", spi, seq >> 32, lo) if sa.esn else buf[:8]
            req = CryptoRequest(sa.session, DECRYPT, buf, skip=16, length=n - 16 - ICV,
                                inject=n - ICV, iv=buf[8:16], aad=aad)
        else:
            if n < 8 + CBC_IV + 16 + ICV or (n - 8 - CBC_IV - ICV) % 16:
                c["in_drop_bad_length"] += 1
                return
            req = CryptoRequest(sa.session, DECRYPT, buf, skip=24, length=n - 24 - ICV,
                                auth_skip=0, inject=n - ICV, iv=buf[8:24],
                                auth_tail=struct.pack("!I", seq >> 32) if sa.esn else b"")
        req.opaque = (sa, seq, int(info.src) & mask, d, info.ttl, info.tos)
        req.callback = self._input_done
        self.stack.crypto.dispatch(req)
        if not req.finished:  # completes later (an engine's thread may have filled out)
            c["in_async"] += 1

    def _input_done(self, req: CryptoRequest) -> None:
        c = self.counters
        sa, seq, src, dst, ttl, tos = req.opaque
        if req.error == errno.EBADMSG:
            c["in_drop_auth_failed"] += 1
            return
        if req.error or req.out is None:
            c["in_drop_crypto"] += 1
            return
        bad = sa.replay_check(seq)  # again: another copy may have completed first
        if bad:
            c["in_drop_" + ("replay" if bad == "replay" else "out_of_window")] += 1
            return
        out = req.out
        start = 16 if sa.gcm else 24
        end = len(out) - ICV
        padlen, nh = out[end - 2], out[end - 1]
        body_end = end - 2 - padlen
        if body_end < start or bytes(out[body_end:end - 2]) != bytes(range(1, padlen + 1)):
            c["in_drop_bad_padding"] += 1
            return
        sa.replay_update(seq)
        body = bytes(out[start:body_end])
        if nh == PROTO_IPIP:
            if len(body) < 20 or body[0] >> 4 != 4 or \
                    int.from_bytes(body[2:4], "big") > len(body):
                c["in_drop_bad_inner"] += 1
                return
            inner = body[:int.from_bytes(body[2:4], "big")]
            if sa.mode == "transport":
                c["in_drop_policy_mismatch"] += 1
                return
        elif nh == PROTO_IPV6 and sa.mode != "transport":
            if len(body) < HLEN or body[0] >> 4 != 6 or \
                    HLEN + int.from_bytes(body[4:6], "big") > len(body):
                c["in_drop_bad_inner"] += 1
                return
            inner = body[:HLEN + int.from_bytes(body[4:6], "big")]
        else:
            if sa.mode == "tunnel":
                c["in_drop_policy_mismatch"] += 1
                return
            if sa.family == 4:
                inner = _ip_header(src, dst, nh, 20 + len(body), ttl, tos) + body
            else:
                inner = pack_header(tos, 0, len(body), nh, ttl, src, dst) + body
        if not self._in_policy_ok(inner, sa):
            return
        sa.bytes += len(inner)
        sa.packets += 1
        c["in_packets"] += 1
        c["in_bytes"] += len(inner)
        self.enc0.deliver(Packet(memoryview(inner), self.enc0))

    def _in_policy_ok(self, inner: bytes, sa: SA) -> bool:
        """The decrypted datagram must match an inbound ipsec policy of this mode
        (RFC 4301 5.2: the selectors are checked after decryption)."""
        fam, s, d, proto, sp, dp = _selector(inner)
        pol: Policy | None = self.db.lookup("in", s, d, proto, sp, dp, fam)
        if pol is None or pol.action == "none":
            return True
        if pol.action == "discard":
            self.counters["in_drop_policy_discard"] += 1
            return False
        if pol.mode != sa.mode and sa.mode != "any":
            self.counters["in_drop_policy_mismatch"] += 1
            return False
        return True

    def icmp_error(self, icmp_type: int, code: int, src: Addr, dst: Addr, hdr: memoryview,
                   extra: int = 0) -> None:
        return None
