"""Qnet's L4 transport: links to peers, and connections between node pairs that carry
messages losslessly and in order over links that lose, reorder and duplicate frames.

* **Link** (``PeerLink``): one way to reach a peer node: an interface and the peer's
  MAC (or, for ``bind=ip``, an IPv4 address). A link is up until ``tx_retries``
  retransmissions of one frame on it go unanswered; a down link is probed once a second
  (a NACK of sequence 0, answered by an ACK) and is up again when the peer answers.
* **Connection** (``Conn``): set up by the TCS handshake (TCS_INIT → TCS_REM_UP →
  TCS_UP); each side names it by its connection id (``sconn``/``dconn`` in the header).
  The top 16 bits of every id this node makes are its incarnation, so a peer that
  restarted is told apart by its first TCS_INIT and everything of its old incarnation is
  dropped. A message is cut into frames of the link MTU (FIRST/LAST, ``offset``), each
  with the next sequence number; the receiver buffers out-of-order frames within
  ``RX_WINDOW``, drops duplicates and frames outside the window, delivers in order,
  reassembles, and answers with cumulative ACKs (``seq`` = next expected) and a NACK
  for the first hole. The sender keeps ``TX_WINDOW`` frames in flight, retransmits on
  NACK and on timeout (RTO from RTT samples as RFC 6298, doubled per retry up to
  ``RTO_MAX``) and after ``tx_retries`` failures on a link falls over to another link the
  QoS allows; with none left the connection is down and its users get EHOSTDOWN.
* **QoS**: ``loadbalance`` (each frame on the up link with the fewest frames in flight),
  ``preferred`` (the named link while up, else the others), ``exclusive`` (the named
  link only). The side that accepted the connection answers on the link the peer used
  last.
"""

from __future__ import annotations

import errno
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from stack.packet import Buffer
from stack.qnet import wire
from stack.qnet.wire import Header

if TYPE_CHECKING:  # cycle: the node owns connections, which call back into it; types only
    from stack.qnet.node import Peer, Qnet

log = logging.getLogger("io-pkt.qnet")

TX_WINDOW = 128
RX_WINDOW = 512
RTO_MIN = 0.1
RTO_MAX = 1.0
RTO_INIT = 0.3
ACK_DELAY = 0.002
ACK_EVERY = 16
PROBE_INTERVAL = 1.0

ST_INIT, ST_UP, ST_DOWN = "init", "up", "down"


class PeerLink:
    """One way to reach a peer: ``send(bufs)`` puts a Qnet frame on it."""

    def __init__(self, name: str, idx: int, mtu: int, send: Callable[[Sequence[Buffer]], bool],
                 key: tuple[str, bytes]) -> None:
        self.name = name          # the interface's name ("ip" for bind=ip)
        self.idx = idx            # this node's qos index of the link
        self.mtu = mtu
        self.send = send
        self.key = key            # (interface, peer MAC or packed address)
        self.up = True
        self.inflight = 0
        self.last_heard = 0.0
        self.last_probe = 0.0
        self.frames_out = 0
        self.frames_in = 0
        self.failures = 0

    def heard(self, now: float) -> bool:
        """A frame came from the peer on this link; True when that brought it back up."""
        self.last_heard = now
        self.frames_in += 1
        if not self.up:
            self.up = True
            return True
        return False


class TxFrame:
    __slots__ = ("seq", "flags", "offset", "payload", "tries", "sent_at", "deadline",
                 "link", "retransmitted", "sacked")

    def __init__(self, seq: int, flags: int, offset: int, payload: bytes) -> None:
        self.seq = seq
        self.flags = flags
        self.offset = offset
        self.payload = payload
        self.tries = 0
        self.sent_at = 0.0
        self.deadline = 0.0
        self.link: PeerLink | None = None
        self.retransmitted = False
        self.sacked = False


class Conn:
    """One connection to a peer node (see the module docstring)."""

    def __init__(self, qnet: Qnet, peer: Peer, cid: int, *, initiator: bool,
                 qos_type: int = wire.QOS_LOADBALANCE, qos_link: str | None = None) -> None:
        self.qnet = qnet
        self.peer = peer
        self.cid = cid
        self.rcid = 0
        self.initiator = initiator
        self.qos_type = qos_type
        self.qos_link = qos_link
        self.state = ST_INIT
        self.up_event = trio.Event()
        self.down_errno = 0
        self.tx_next = 1
        self.unacked: dict[int, TxFrame] = {}
        self.queue: deque[TxFrame] = deque()
        self.rx_next = 1
        self.rx_buf: dict[int, tuple[int, int, bytes]] = {}
        self.reasm: list[bytes] = []
        self.reasm_len = 0
        self.ack_pending = 0
        self.ack_scheduled = False
        self.last_nack_at = 0.0
        self.last_nack_seq = 0
        self.last_rx_link: PeerLink | None = None
        self.srtt = 0.0
        self.rttvar = 0.0
        self.rto = RTO_INIT
        self.retransmits = 0
        self.timer_wake = trio.Event()
        self.handshake_tries = 0
        #: the user of the connection (the KIF client or server)
        self.on_message: Callable[[bytes], None] = lambda msg: None
        self.on_down: list[Callable[[int], None]] = []

    # -- link choice ------------------------------------------------------------------------
    def links(self) -> list[PeerLink]:
        return list(self.peer.links.values())

    def choose_link(self, exclude: PeerLink | None = None) -> PeerLink | None:
        links = [lk for lk in self.peer.links.values() if lk.up and lk is not exclude]
        if self.qos_type in (wire.QOS_EXCLUSIVE, wire.QOS_PREFERRED) and self.qos_link:
            named = [lk for lk in links if lk.name == self.qos_link]
            if named:
                return named[0]
            if self.qos_type == wire.QOS_EXCLUSIVE:
                return None
        if not links:
            return None
        if not self.initiator and self.last_rx_link in links:
            return self.last_rx_link
        return min(links, key=lambda lk: (lk.inflight, lk.idx))

    def payload_room(self) -> int:
        mtu = min((lk.mtu for lk in self.peer.links.values()), default=1500)
        return max(64, mtu - wire.HDR_LEN - (wire.MAC_LEN if self.qnet.key else 0))

    # -- frames out -------------------------------------------------------------------------
    def _header(self, typ: int, layer: int = wire.L_SEQ, seq: int = 0, flags: int = 0,
                offset: int = 0, link: PeerLink | None = None) -> Header:
        return Header(type=typ, flags=flags | wire.F_FIRST | wire.F_LAST if typ != wire.T_DATA
                      else flags, layer=layer, src_nd=self.peer.their_nd,
                      dst_nd=self.peer.nd, sconn=self.cid, dconn=self.rcid, seq=seq,
                      qos_type=self.qos_type, qos_idx=link.idx if link else 0, offset=offset)

    def send_control(self, typ: int, seq: int = 0, payload: bytes = b"",
                     link: PeerLink | None = None, layer: int = wire.L_SEQ) -> None:
        targets = [link] if link is not None else [lk for lk in [self.choose_link()] if lk]
        for lk in targets:
            self.qnet.transmit(lk, self._header(typ, layer, seq, link=lk), payload)

    def send_message(self, msg: bytes) -> bool:
        """Queue one message; False (nothing queued) when the connection is down."""
        if self.state == ST_DOWN:
            return False
        c = self.qnet.counters
        c["messages_out"] += 1
        room = self.payload_room()
        off = 0
        n = len(msg)
        while True:
            chunk = msg[off:off + room]
            flags = (wire.F_FIRST if off == 0 else 0) | (wire.F_LAST if off + room >= n else 0)
            self.queue.append(TxFrame(self.tx_next, flags, off, chunk))
            self.tx_next += 1
            off += len(chunk)
            if off >= n:
                break
        self.pump()
        return True

    def pump(self) -> None:
        if self.state != ST_UP:
            return
        was_idle = not self.unacked
        while self.queue and len(self.unacked) < TX_WINDOW:
            f = self.queue.popleft()
            self.unacked[f.seq] = f
            if not self._send_data(f):
                self.qnet.counters["tx_no_link"] += 1
                break
        if was_idle:
            self.timer_wake.set()

    def _send_data(self, f: TxFrame, link: PeerLink | None = None) -> bool:
        lk = link or self.choose_link()
        if lk is None:
            if f.link is not None:
                f.link.inflight -= 1
                f.link = None
            f.deadline = trio.current_time() + self.rto
            return False
        now = trio.current_time()
        if f.link is not lk:
            if f.link is not None:
                f.link.inflight -= 1
            lk.inflight += 1
            f.link = lk
        f.tries += 1
        f.sent_at = now
        f.deadline = now + min(self.rto * (1 << min(f.tries - 1, 6)), RTO_MAX)
        c = self.qnet.counters
        c["data_out"] += 1
        if f.tries > 1:
            f.retransmitted = True
            c["retransmits"] += 1
            self.retransmits += 1
        hdr = self._header(wire.T_DATA, wire.L_KIF, f.seq, f.flags, f.offset, lk)
        self.qnet.transmit(lk, hdr, f.payload)
        return True

    # -- frames in --------------------------------------------------------------------------
    def data_in(self, hdr: Header, payload: memoryview, link: PeerLink) -> None:
        c = self.qnet.counters
        self.last_rx_link = link
        seq = hdr.seq
        if seq < self.rx_next:
            c["dup_in"] += 1
            self._ack_now(link)
            return
        if seq >= self.rx_next + RX_WINDOW:
            c["drop_out_of_window"] += 1
            return
        if seq in self.rx_buf:
            c["dup_in"] += 1
            return
        self.rx_buf[seq] = (hdr.flags, hdr.offset, bytes(payload))
        c["data_in"] += 1
        if seq != self.rx_next:
            c["ooo_in"] += 1
            self._nack(link)
            return
        self._deliver()
        if self.rx_buf:  # a hole right after what was delivered
            self._nack(link)
        self.ack_pending += 1
        if self.ack_pending >= ACK_EVERY:
            self._ack_now(None)
        elif not self.ack_scheduled:
            self.ack_scheduled = True
            self.qnet.nursery.start_soon(self._delayed_ack)

    def _deliver(self) -> None:
        c = self.qnet.counters
        buf = self.rx_buf
        while self.rx_next in buf:
            flags, offset, data = buf.pop(self.rx_next)
            self.rx_next += 1
            if flags & wire.F_FIRST:
                if self.reasm:
                    c["drop_bad_fragment"] += 1
                self.reasm = []
                self.reasm_len = 0
            elif not self.reasm or offset != self.reasm_len:
                c["drop_bad_fragment"] += 1
                self.reasm = []
                self.reasm_len = 0
                continue
            self.reasm.append(data)
            self.reasm_len += len(data)
            if flags & wire.F_LAST:
                msg = b"".join(self.reasm)
                self.reasm = []
                self.reasm_len = 0
                c["messages_in"] += 1
                try:
                    self.on_message(msg)
                except Exception:
                    log.exception("qnet: message handler failed")

    async def _delayed_ack(self) -> None:
        await trio.sleep(ACK_DELAY)
        self.ack_scheduled = False
        if self.ack_pending and self.state != ST_DOWN:
            self._ack_now(None)

    def _sack(self) -> bytes:
        """Which frames after the first hole arrived: a bitmap (bit i: rx_next + 1 + i)
        in the ACK/NACK payload, so the sender resends only what is missing."""
        if not self.rx_buf:
            return b""
        bits = 0
        base = self.rx_next + 1
        for s in self.rx_buf:
            bits |= 1 << (s - base)
        return bits.to_bytes(RX_WINDOW // 8, "little")

    def _ack_now(self, link: PeerLink | None) -> None:
        self.ack_pending = 0
        self.qnet.counters["acks_out"] += 1
        self.send_control(wire.T_ACK, self.rx_next, self._sack(),
                          link=link or self.last_rx_link)

    def _nack(self, link: PeerLink) -> None:
        now = trio.current_time()
        if self.rx_next == self.last_nack_seq and \
                now - self.last_nack_at < max(self.srtt, 0.01):
            return
        self.last_nack_at = now
        self.last_nack_seq = self.rx_next
        self.qnet.counters["nacks_out"] += 1
        self.send_control(wire.T_NACK, self.rx_next, self._sack(), link=link)

    def ack_in(self, seq: int, sack: bytes | memoryview = b"") -> None:
        c = self.qnet.counters
        if seq > self.tx_next or seq < 1:
            c["drop_bad_ack"] += 1
            return
        now = trio.current_time()
        acked = [s for s in self.unacked if s < seq]
        sample: float | None = None
        for s in acked:
            f = self.unacked.pop(s)
            if f.link is not None:
                f.link.inflight -= 1
                f.link.failures = 0
            if not f.retransmitted:
                sample = now - f.sent_at
        if sample is not None:
            c["rtt_samples"] += 1
            if self.srtt == 0:
                self.srtt, self.rttvar = sample, sample / 2
            else:
                self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
                self.srtt = 0.875 * self.srtt + 0.125 * sample
            self.rto = min(max(self.srtt + 4 * self.rttvar, RTO_MIN), RTO_MAX)
        if sack:
            self._sack_in(seq, int.from_bytes(sack, "little"), now)
        if acked:
            self.pump()

    def _sack_in(self, seq: int, bits: int, now: float) -> None:
        """Mark what the receiver holds; resend, once per RTT, what is missing below the
        highest frame it holds (those were lost, not late)."""
        base = seq + 1
        top = 0
        for s, f in self.unacked.items():
            i = s - base
            if 0 <= i < RX_WINDOW and bits >> i & 1:
                f.sacked = True
                top = max(top, s)
        if not top:
            return
        wait = max(self.srtt, 0.005)
        for s, f in list(self.unacked.items()):
            if s < top and not f.sacked and (not f.retransmitted or now - f.sent_at > wait):
                self._send_data(f)

    def nack_in(self, seq: int, link: PeerLink, sack: bytes | memoryview = b"") -> None:
        if seq == 0:  # a maintenance probe: answer on the link it came by
            self.qnet.counters["probes_in"] += 1
            self.send_control(wire.T_ACK, self.rx_next, link=link)
            return
        self.ack_in(seq, sack)
        f = self.unacked.get(seq)
        if f is not None and not f.sacked and (
                not f.retransmitted or trio.current_time() - f.sent_at > max(self.srtt, 0.005)):
            self._send_data(f)

    # -- timers -----------------------------------------------------------------------------
    async def timer_loop(self) -> None:
        """Retransmission, link failure and probing for this connection."""
        while self.state != ST_DOWN:
            if not self.unacked and not self.queue:
                self.timer_wake = trio.Event()
                with trio.move_on_after(PROBE_INTERVAL):
                    await self.timer_wake.wait()
                self._probe_down_links()
                continue
            now = trio.current_time()
            due = min((f.deadline for f in self.unacked.values() if not f.sacked),
                      default=now + 0.05)
            if self.queue and not self.unacked:
                due = now + 0.05
            if due > now:
                self.timer_wake = trio.Event()
                with trio.move_on_after(due - now):
                    await self.timer_wake.wait()
                continue
            self._expire(now)
            self._probe_down_links()

    def _expire(self, now: float) -> None:
        """The oldest frame past its deadline is sent again (the holes after it are
        NACKed by the receiver as they come to its front); the others wait one more RTO,
        so a slow peer does not get the whole window again."""
        c = self.qnet.counters
        late = [f for f in self.unacked.values() if f.deadline <= now and not f.sacked]
        if not late:
            return
        f = min(late, key=lambda f: f.seq)
        for other in late:
            if other is not f:
                other.deadline = now + self.rto
        c["timeouts"] += 1
        if f.tries > self.qnet.tx_retries:
            lk = f.link
            if lk is not None and lk.up:
                lk.up = False
                lk.failures += 1
                c["link_down"] += 1
                log.info("qnet: link %s to %s down", lk.name, self.peer.name)
            alt = self.choose_link()
            if alt is None:
                self.go_down(errno.EHOSTDOWN, "no link left")
                return
            for g in self.unacked.values():  # everything in flight on it moves over
                if g.link is lk and g is not f:
                    g.deadline = now
            f.tries = 0
            self._send_data(f, alt)
        elif not self._send_data(f):
            f.tries += 1  # no link up: the budget runs on
        self.pump()

    def _probe_down_links(self) -> None:
        now = trio.current_time()
        for lk in self.peer.links.values():
            if not lk.up and now - lk.last_probe >= PROBE_INTERVAL:
                lk.last_probe = now
                self.qnet.counters["probes_out"] += 1
                self.send_control(wire.T_NACK, 0, link=lk)

    # -- state ------------------------------------------------------------------------------
    def set_up(self) -> None:
        if self.state == ST_INIT:
            self.state = ST_UP
            self.qnet.counters["conn_up"] += 1
            self.up_event.set()
            self.pump()

    def go_down(self, code: int, why: str) -> None:
        if self.state == ST_DOWN:
            return
        log.info("qnet: connection %#x to %s down: %s", self.cid, self.peer.name, why)
        self.state = ST_DOWN
        self.down_errno = code
        self.qnet.counters["conn_down"] += 1
        for f in self.unacked.values():
            if f.link is not None:
                f.link.inflight -= 1
        self.unacked.clear()
        self.queue.clear()
        self.rx_buf.clear()
        self.up_event.set()
        self.timer_wake.set()
        self.qnet.forget_conn(self)
        for fn in list(self.on_down):
            try:
                fn(code)
            except Exception:
                log.exception("qnet: connection-down handler failed")

    async def handshake(self) -> None:
        """Initiator: TCS_INIT until TCS_REM_UP (or the retry budget is spent)."""
        c = self.qnet.counters
        payload = wire.tcs_init_payload(self.qnet.host, self.peer.name)
        delay = RTO_INIT
        for _ in range(self.qnet.tx_retries + 1):
            links = [lk for lk in self.peer.links.values() if lk.up] or self.links()
            if self.qos_type == wire.QOS_EXCLUSIVE and self.qos_link:
                links = [lk for lk in links if lk.name == self.qos_link and lk.up]
            for lk in links:
                c["tcs_init_out"] += 1
                self.qnet.transmit(lk, self._header(wire.T_TCS_INIT, link=lk), payload)
            with trio.move_on_after(delay):
                await self.up_event.wait()
            if self.state != ST_INIT:
                return
            delay = min(delay * 2, RTO_MAX)
        self.go_down(errno.EHOSTDOWN, "no answer to TCS_INIT")


def new_incarnation() -> int:
    """The top 16 bits of this node's connection ids (never 0)."""
    return int.from_bytes(os.urandom(2), "big") or 1
