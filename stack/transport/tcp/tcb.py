"""The TCP connection: RFC 9293's state machine with the modern additions.

One :class:`TCB` per connection (also the protocol control block of a bound or
listening socket). Everything here is synchronous: segments arrive through
:meth:`TCB.segment_arrives`, the user calls ``user_*`` methods, timers call
:meth:`TCB.on_timer`; output goes through :meth:`TCB.output`. The socket object
(``tcp/socket.py``) turns state changes into trio wake-ups.

Sequence numbers are compared only with :mod:`seq` (modular arithmetic).
"""

from __future__ import annotations

import errno
import math
from enum import IntEnum
from typing import TYPE_CHECKING

from stack.packet import GSO_TCPV4, TxMeta
from stack.transport.tcp import congestion
from stack.transport.tcp import seq as sq
from stack.transport.tcp.buffers import SendBuffer
from stack.transport.tcp.sack import ReassemblyQueue, Scoreboard
from stack.transport.wire import tcp as wire
from stack.transport.wire.checksum import checksum, fold, pseudo_header_sum
from stack.transport.wire.tcp import ACK, FIN, PSH, RST, SYN, TCPOptions, TCPSegment

if TYPE_CHECKING:  # cycle: the protocol owns its TCBs and sockets, each holds the protocol; types only
    from stack.transport.tcp.proto import TCPProto
    from stack.transport.tcp.socket import TCPSocket

INF = math.inf
IPPROTO_TCP = 6
IP_HDR = 20
TCP_HDR = 20
TS_OPT_LEN = 12


class State(IntEnum):
    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    CLOSE_WAIT = 5
    FIN_WAIT_1 = 6
    CLOSING = 7
    LAST_ACK = 8
    FIN_WAIT_2 = 9
    TIME_WAIT = 10


S = State
SYNCHRONIZED = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK,
                          S.FIN_WAIT_2, S.TIME_WAIT})
#: states in which we may still send data / our FIN
SEND_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})
#: states in which received data is accepted
RECV_STATES = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})


def _wscale_for(space: int) -> int:
    s = 0
    while s < wire.MAX_WSCALE and (0xFFFF << s) < space:
        s += 1
    return s


class TCB:
    """One connection's state (RFC 9293 3.3.1 names where they exist)."""

    def __init__(self, proto: TCPProto, sock: TCPSocket | None = None) -> None:
        self.proto = proto
        self.c = proto.counters
        cfg = proto.cfg
        self.sock = sock
        self.state = S.CLOSED
        self.laddr = 0
        self.lport = 0
        self.raddr = 0
        self.rport = 0
        self.bound = False
        self.reuseaddr = False
        self.in_table = False
        # listener
        self.backlog = 0
        self.syn_queue: dict[tuple[int, int, int, int], TCB] = {}
        self.accept_queue: list[TCB] = []
        self.listener: TCB | None = None
        # send sequence space
        self.iss = 0
        self.snd_una = 0
        self.snd_nxt = 0
        self.snd_max = 0
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_sndwnd = 0
        self.snd_buf_seq = 0  # sequence number of sndbuf's first byte
        self.sndbuf = SendBuffer()
        self.snd_limit = cfg.sendspace
        self.wr_shut = False  # FIN queued after the data
        # receive sequence space
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # right edge of the window last advertised
        self.rcvbuf = bytearray()
        self.rcv_limit = cfg.recvspace
        self.ooo = ReassemblyQueue()
        self.ooo_fin: int | None = None
        self.fin_rcvd = False
        self.rd_shut = False
        # options
        self.snd_mss = cfg.mssdflt  # what we may send per segment (payload)
        self.rcv_mss = 1460         # what we announced
        self.peer_mss = cfg.mssdflt
        self.ws_ok = False
        self.snd_scale = 0
        self.rcv_scale = _wscale_for(cfg.recvbuf_max) if cfg.wscale else 0
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_recent_age = 0.0
        self.last_ack_sent = 0
        self.sack_ok = False
        self.scoreboard = Scoreboard()
        # RTT / RTO (RFC 6298)
        self.srtt = 0.0
        self.rttvar = 0.0
        self.rto = cfg.rto_init
        self.backoff = 0
        self.rtt_seq: int | None = None
        self.rtt_time = 0.0
        # congestion control and loss recovery
        self.cc = congestion.make(cfg.cc_algorithm, self.snd_mss)
        self.dupacks = 0
        self.in_recovery = False
        self.recover = 0
        self.rexmit_high = 0
        self.lost_high = 0
        self.rexmit_force = False
        # ACK policy
        self.ack_pending = 0
        self.ack_now = False
        self.delack = cfg.delack if cfg.delayed_ack else 0.0
        # timers (absolute trio times; INF = off)
        self.timer_at = INF
        self.t_rexmt = INF
        self.t_persist = INF
        self.t_delack = INF
        self.t_keep = INF
        self.t_2msl = INF
        self.t_conn = INF  # orphaned FIN_WAIT_2 / linger limit
        self.persist_shift = 0
        self.syn_retries = 0
        self.keep_probes = 0
        self.last_rcv = 0.0
        # user options
        self.nodelay = False
        self.keepalive = False
        # TCP_KEEPIDLE/KEEPINTVL/KEEPCNT; None: the net.inet.tcp.keep* sysctls
        self.keepidle: float | None = None
        self.keepintvl: float | None = None
        self.keepcnt: int | None = None
        self.ttl: int | None = None
        self.tos = 0
        self.error = 0          # pending SO_ERROR
        self.softerror = 0      # last ICMP soft error (BSD t_softerror), see drop()
        self.user_closed = False
        self.passive = False    # created by a listener
        self.rcv_copied = 0     # receive-buffer autotuning
        self.rcv_mark = 0.0
        self.tso_max = 0        # >0: super-segments allowed (offload on the route)
        self.csum_offload = False

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        return (f"<TCB {self.state.name} {self.lport}->{self.rport} una={self.snd_una} "
                f"nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt}>")

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.laddr, self.lport, self.raddr, self.rport)

    def now(self) -> float:
        return self.proto.now()

    def ts_now(self) -> int:
        return self.proto.ts_clock()

    def _notify(self) -> None:
        sock = self.sock
        if sock is not None:
            sock._notify()
        elif self.listener is not None and self.state == S.ESTABLISHED:
            lsock = self.listener.sock
            if lsock is not None:
                lsock._notify()

    def rcv_space(self) -> int:
        return max(0, self.rcv_limit - len(self.rcvbuf) - self.ooo.bytes)

    def flight(self) -> int:
        return sq.sub(self.snd_max, self.snd_una)

    def fin_seq(self) -> int:
        return sq.add(self.snd_buf_seq, len(self.sndbuf))

    def fin_sent(self) -> bool:
        return self.wr_shut and sq.gt(self.snd_max, self.fin_seq())

    def fin_acked(self) -> bool:
        return self.wr_shut and sq.gt(self.snd_una, self.fin_seq())

    # ------------------------------------------------------------------ timers
    def rearm(self) -> None:
        t = min(self.t_rexmt, self.t_persist, self.t_delack, self.t_keep, self.t_2msl,
                self.t_conn)
        if t != self.timer_at:
            self.proto.timers.schedule(self, t)

    def on_timer(self, now: float) -> None:
        try:
            if self.t_2msl <= now:
                self.t_2msl = INF
                self.c["timewait_expired"] += 1
                self.destroy()
                return
            if self.t_conn <= now:
                self.t_conn = INF
                self.c["orphan_timeout"] += 1
                self.drop(errno.ETIMEDOUT, send_rst=self.state != S.FIN_WAIT_2)
                return
            if self.t_rexmt <= now:
                self.t_rexmt = INF
                self._rexmt_timeout(now)
                if self.state == S.CLOSED:
                    return
            if self.t_persist <= now:
                self.t_persist = INF
                self._persist_timeout(now)
            if self.t_keep <= now:
                self.t_keep = INF
                self._keep_timeout(now)
                if self.state == S.CLOSED:
                    return
            if self.t_delack <= now:
                self.t_delack = INF
                self.c["delayed_acks"] += 1
                self.ack_now = True
                self.output()
        finally:
            if self.state != S.CLOSED:
                self.rearm()

    def _rexmt_timeout(self, now: float) -> None:
        cfg = self.proto.cfg
        self.c["rexmt_timeouts"] += 1
        if self.state == S.SYN_SENT or self.state == S.SYN_RECEIVED:
            limit = cfg.syn_retries if self.state == S.SYN_SENT else cfg.synack_retries
            if self.syn_retries >= limit:
                self.c["conn_timeouts"] += 1
                if self.state == S.SYN_RECEIVED and self.passive:
                    self.destroy()
                else:
                    self.drop(errno.ETIMEDOUT, send_rst=False)
                return
            self.syn_retries += 1
            self.backoff += 1
            self.rto = min(self.rto * 2, cfg.rto_max)
            self.send_syn()
            return
        if self.flight() == 0:
            return
        if self.backoff >= cfg.max_retries:
            self.c["conn_timeouts"] += 1
            self.drop(errno.ETIMEDOUT, send_rst=True)
            return
        self.backoff += 1
        self.rto = min(self.rto * 2, cfg.rto_max)
        self.cc.on_rto(now, self.flight())
        self.in_recovery = False
        self.dupacks = 0
        self.recover = self.snd_max
        self.scoreboard.clear()
        self.rtt_seq = None  # Karn
        self.snd_nxt = self.snd_una  # go back N
        self.output(retransmit_timeout=True)

    def _persist_timeout(self, now: float) -> None:
        if self.state not in SEND_STATES:
            return
        self.c["persist_probes"] += 1
        # window probe: an ACK with an old sequence number elicits the peer's window
        self._send_control(sq.sub(self.snd_una, 1) & sq.MASK, ACK)
        self.persist_shift += 1
        self._arm_persist(now)

    def _arm_persist(self, now: float) -> None:
        cfg = self.proto.cfg
        interval = max(self.rto, cfg.rto_min) * (1 << min(self.persist_shift, 12))
        self.t_persist = now + min(max(interval, cfg.persist_min), cfg.persist_max)

    def keep_times(self) -> tuple[float, float, int]:
        """(idle, interval, count): this socket's keepalive times, else the sysctls'."""
        cfg = self.proto.cfg
        return (cfg.keepidle if self.keepidle is None else self.keepidle,
                cfg.keepintvl if self.keepintvl is None else self.keepintvl,
                cfg.keepcnt if self.keepcnt is None else self.keepcnt)

    def _keep_timeout(self, now: float) -> None:
        if not self.keepalive or self.state not in (S.ESTABLISHED, S.CLOSE_WAIT):
            return
        keepidle, keepintvl, keepcnt = self.keep_times()
        # compare with the deadline itself, not ``now - last_rcv < keepidle``: in floating
        # point that can hold at the very deadline and re-arm the timer for ``now``, forever
        due = self.last_rcv + keepidle
        if self.keep_probes == 0 and now < due:
            self.t_keep = due
            return
        if self.keep_probes >= keepcnt:
            self.c["keepalive_drops"] += 1
            self.drop(errno.ETIMEDOUT, send_rst=True)
            return
        self.keep_probes += 1
        self.c["keepalive_probes"] += 1
        self._send_control(sq.sub(self.snd_una, 1) & sq.MASK, ACK)
        self.t_keep = now + keepintvl

    def arm_keepalive(self) -> None:
        if self.keepalive and self.state in (S.ESTABLISHED, S.CLOSE_WAIT):
            self.t_keep = self.last_rcv + self.keep_times()[0]
        else:
            self.t_keep = INF
        self.rearm()

    # ------------------------------------------------------------------ RTT
    def _rtt_sample(self, rtt: float) -> None:
        cfg = self.proto.cfg
        rtt = max(rtt, 1e-6)
        if self.srtt == 0.0:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(max(self.srtt + max(cfg.granularity, 4 * self.rttvar), cfg.rto_min),
                       cfg.rto_max)
        self.softerror = 0  # the path works (BSD tcp_xmit_timer)
        self.c["rtt_samples"] += 1

    # ------------------------------------------------------------------ window
    def _advertise(self) -> int:
        """The window field for an outgoing non-SYN segment; the right edge offered never
        moves left (RFC 7323 2.4, RFC 9293 3.8.6) unless that would overcommit the buffer.

        With a scale factor the field counts units of 2^scale bytes. The room is rounded
        *up* to a unit (as Linux, ALIGN(win, 1 << wscale)): rounding down moved the edge
        left by up to a unit - 1 bytes and input trimmed data the peer had sent inside the
        window it was offered. ``rcv_adv`` is the largest edge ever advertised and input
        accepts everything up to it, so the buffer may take up to a unit - 1 bytes more
        than ``rcv_limit``.

        When the edge already offered is beyond the room there is (the peer is filling
        it), keeping it costs a rounding up of what is left each time: a peer trickling
        segments smaller than a unit into a buffer nobody reads would push the edge right
        for ever. So that is done only while what the peer may still send fits the buffer
        with ``_rcv_slack()``; past that the field is rounded down (a retraction of less
        than a unit, which RFC 7323 2.4 allows) while input still accepts up to
        ``rcv_adv``: nothing offered is ever dropped, and memory stays bounded."""
        space = self.rcv_space()
        # receiver SWS avoidance (RFC 9293 3.8.6.2.2): don't open tiny windows
        if space < min(self.rcv_limit // 2, self.rcv_mss):
            space = 0
        scale = self.rcv_scale
        round_up = (1 << scale) - 1
        kept = sq.sub(self.rcv_adv, self.rcv_nxt)  # still offered: the edge never left
        if space >= kept:
            wnd = (space + round_up) >> scale
        else:
            wnd = (kept + round_up) >> scale
            if len(self.rcvbuf) + (wnd << scale) > self.rcv_limit + self._rcv_slack():
                wnd = kept >> scale
                self.c["rcv_wnd_rounded_down"] += 1
        wnd = min(wnd, 0xFFFF)
        edge = sq.add(self.rcv_nxt, wnd << scale)
        if sq.gt(edge, self.rcv_adv):
            self.rcv_adv = edge
        return wnd

    def _rcv_slack(self) -> int:
        """How far past ``rcv_limit`` keeping an offered edge may commit the buffer: a
        unit, or 1/16 of the buffer (a bulk sender's full-sized segments push the edge
        by a few percent of the window while it closes: 40 of every 1448 bytes at scale 7)."""
        return max(1 << self.rcv_scale, self.rcv_limit >> 4)

    def window_update_needed(self) -> bool:
        """After the reader drained: would a new advertisement open the window enough?"""
        if self.state not in RECV_STATES:
            return False
        adv = sq.sub(self.rcv_adv, self.rcv_nxt)
        space = self.rcv_space()
        return space - adv >= min(2 * self.rcv_mss, self.rcv_limit // 2) or (adv == 0 and space >= self.rcv_mss)

    # ------------------------------------------------------------------ output
    def _options(self, sack: bool = True) -> bytes:
        ts = (self.ts_now(), self.ts_recent) if self.ts_ok else None
        blocks = None
        if sack and self.sack_ok and self.ooo.blocks:
            blocks = self.ooo.sack_blocks(3 if self.ts_ok else 4)
        if ts is None and not blocks:
            return b""
        return wire.emit_ts_sack(ts, blocks)

    def _xmit(self, seqno: int, flags: int, payload: list[memoryview] | None = None,
              plen: int = 0, options: bytes | None = None, window: int | None = None) -> int:
        """Emit one segment (or a super-segment when plen > snd_mss)."""
        if options is None:
            options = self._options()
        if flags & ACK:
            ack = self.rcv_nxt
            self.last_ack_sent = ack
            self.ack_pending = 0
            self.ack_now = False
            if self.t_delack != INF:
                self.t_delack = INF
        else:
            ack = 0
        wnd = self._advertise() if window is None else window
        hdr = wire.emit_header(self.lport, self.rport, seqno, ack, flags, wnd, options)
        hlen = len(hdr)
        meta = None
        total = hlen + plen
        bufs: list = [hdr]
        if payload:
            bufs.extend(payload)
        if self.csum_offload:
            meta = TxMeta(csum_start=0, csum_offset=16, needs_csum=True, hdr_len=hlen)
            pseudo = fold(pseudo_header_sum(self.laddr, self.raddr, IPPROTO_TCP, total))
            hdr[16] = pseudo >> 8
            hdr[17] = pseudo & 0xFF
            if plen > self.snd_mss:
                meta.gso_type = GSO_TCPV4
                meta.gso_size = self.snd_mss
        else:
            c = checksum(bufs, pseudo_header_sum(self.laddr, self.raddr, IPPROTO_TCP, total))
            hdr[16] = c >> 8
            hdr[17] = c & 0xFF
        self.c["segs_out"] += 1
        err = self.proto.inet.output(self.laddr, self.raddr, IPPROTO_TCP, bufs, ttl=self.ttl,
                                     tos=self.tos, meta=meta)
        if err:
            self.c["output_errors"] += 1
        return err

    def _send_control(self, seqno: int, flags: int) -> None:
        self.c["ctl_out"] += 1
        self._xmit(seqno, flags)

    def send_rst(self) -> None:
        self.c["rst_out"] += 1
        self._xmit(self.snd_nxt, RST | ACK, options=b"", window=0)

    def syn_options(self) -> bytes:
        cfg = self.proto.cfg
        opts = TCPOptions(mss=self.rcv_mss)
        syn_ack = self.state == S.SYN_RECEIVED
        if cfg.wscale and (not syn_ack or self.ws_ok):
            opts.wscale = self.rcv_scale
        if cfg.sack and (not syn_ack or self.sack_ok):
            opts.sack_perm = True
        if cfg.timestamps and (not syn_ack or self.ts_ok):
            opts.ts = (self.ts_now(), self.ts_recent if syn_ack else 0)
        return opts.emit()

    def send_syn(self) -> None:
        """(Re)send our SYN (SYN_SENT) or SYN-ACK (SYN_RECEIVED)."""
        flags = SYN | (ACK if self.state == S.SYN_RECEIVED else 0)
        self.c["syn_out" if not flags & ACK else "synack_out"] += 1
        opts = self.syn_options()
        if self.syn_retries == 0:
            self.rtt_time = self.now()
        wnd = min(self.rcv_space(), 0xFFFF)
        self._xmit(self.iss, flags, options=opts, window=wnd)
        if flags & ACK:
            edge = sq.add(self.rcv_nxt, wnd)
            if sq.gt(edge, self.rcv_adv):  # a resent SYN-ACK never takes back its window
                self.rcv_adv = edge
        self.snd_nxt = sq.add(self.iss, 1)
        self.snd_max = self.snd_nxt
        self.t_rexmt = self.now() + self.rto
        self.rearm()

    def output(self, retransmit_timeout: bool = False) -> None:
        """Send what the windows allow: recovery retransmissions, new data, FIN, ACKs."""
        now = self.now()
        if self.state not in SEND_STATES:
            if self.state in (S.FIN_WAIT_2, S.TIME_WAIT):
                self._ack_policy(False, now)
                self.rearm()
            return
        mss = self.snd_mss
        cc = self.cc
        sent = False
        max_seg = self.tso_max if self.tso_max > mss else mss
        while True:
            in_flight = sq.sub(self.snd_nxt, self.snd_una)
            if self.in_recovery:
                pipe = self._pipe()
                hole = self.scoreboard.next_hole(self.rexmit_high, self.lost_high)
                if hole is not None and (pipe < cc.cwnd or self.rexmit_force):
                    self.rexmit_force = False
                    start, end = hole
                    n = min(sq.sub(end, start), max_seg, max(cc.cwnd - pipe, mss))
                    self._send_data(start, n, now, retrans=True)
                    self.rexmit_high = sq.add(start, n)
                    self.c["fast_rexmt_segs"] += 1
                    sent = True
                    continue
                window_room = cc.cwnd - pipe
            else:
                window_room = cc.cwnd - in_flight
            off = sq.sub(self.snd_nxt, self.snd_buf_seq)
            avail = len(self.sndbuf) - off
            wnd_room = self.snd_wnd - in_flight
            n = max(min(avail, wnd_room, window_room, max_seg), 0)
            # our FIN rides on the last data (or goes alone) until it is acknowledged
            fin = (self.wr_shut and n == avail and not self.fin_acked()
                   and sq.le(self.snd_nxt, self.fin_seq()))
            if n == 0 and not fin:
                if avail > 0 and wnd_room <= 0 and self.flight() == 0 and self.t_persist == INF:
                    self.persist_shift = 0
                    self._arm_persist(now)
                    self.c["persist_armed"] += 1
                break
            if n < avail:
                if n > mss:
                    n -= n % mss  # whole segments from a super-segment
                elif n < mss and in_flight > 0 and n < self.max_sndwnd // 2:
                    self.c["sws_deferred"] += 1
                    break  # sender SWS avoidance: wait for the window to open
            elif n < mss and not fin and not self.nodelay and in_flight > 0 \
                    and not retransmit_timeout:
                self.c["nagle_deferred"] += 1
                break  # Nagle (RFC 896)
            self._send_data(self.snd_nxt, n, now, retrans=sq.lt(self.snd_nxt, self.snd_max),
                            fin=fin)
            sent = True
            self.snd_nxt = sq.add(self.snd_nxt, n + (1 if fin else 0))
            if sq.gt(self.snd_nxt, self.snd_max):
                self.snd_max = self.snd_nxt
            if fin:
                break
        self._ack_policy(sent, now)
        if self.flight() and self.t_rexmt == INF:
            self.t_rexmt = now + self.rto
            self.t_persist = INF
        self.rearm()

    def _ack_policy(self, sent: bool, now: float) -> None:
        if sent:
            return
        if self.ack_now or (self.ack_pending and self.delack == 0):
            self._xmit(self.snd_nxt, ACK)
        elif self.ack_pending and self.t_delack == INF:
            self.t_delack = now + self.delack

    def _pipe(self) -> int:
        """RFC 6675-style pipe: outstanding - SACKed - lost and not yet retransmitted."""
        sb = self.scoreboard
        pipe = self.flight() - sb.sacked
        lo = self.rexmit_high if sq.gt(self.rexmit_high, self.snd_una) else self.snd_una
        if sq.lt(lo, self.lost_high):
            pipe -= sq.sub(self.lost_high, lo) - sb.sacked_between(lo, self.lost_high)
        return max(pipe, 0)

    def _send_data(self, seqno: int, n: int, now: float, *, retrans: bool,
                   fin: bool = False) -> None:
        off = sq.sub(seqno, self.snd_buf_seq)
        payload = self.sndbuf.slice(off, n) if n else None
        flags = ACK | (FIN if fin else 0)
        if n and off + n == len(self.sndbuf):
            flags |= PSH
        if retrans:
            self.c["rexmt_segs"] += 1
            self.c["rexmt_bytes"] += n
            if self.rtt_seq is not None and sq.ge(self.rtt_seq, seqno):
                self.rtt_seq = None  # Karn: never time a retransmitted segment
        else:
            self.c["data_segs_out"] += 1
            self.c["data_bytes_out"] += n
            if self.rtt_seq is None and not self.ts_ok and n:
                self.rtt_seq = seqno
                self.rtt_time = now
        self._xmit(seqno, flags, payload, n)

    # ------------------------------------------------------------------ user calls
    def user_send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of ``data`` as the send buffer takes; returns the count."""
        room = self.snd_limit - len(self.sndbuf)
        if room <= 0:
            return 0
        n = min(room, len(data))
        self.sndbuf.append(data[:n] if n < len(data) else data)
        self.c["user_bytes_in"] += n
        if self.state in SEND_STATES:
            self.output()
        return n

    def user_recv(self, n: int, peek: bool = False) -> bytes:
        buf = self.rcvbuf
        n = min(n, len(buf))
        if n <= 0:
            return b""
        with memoryview(buf) as view:  # one copy (buf[:n] would copy twice)
            data = bytes(view[:n])
        if peek:
            return data
        del buf[:n]
        self.rcv_copied += n
        self._autotune_rcv()
        if self.window_update_needed():
            self.c["window_updates"] += 1
            self.ack_now = True
            self.output()
        return data

    def _autotune_rcv(self) -> None:
        cfg = self.proto.cfg
        if not cfg.recvbuf_auto or self.rcv_limit >= cfg.recvbuf_max:
            return
        now = self.now()
        period = max(self.srtt, 0.001)
        if now - self.rcv_mark >= period:
            if self.rcv_copied * 2 >= self.rcv_limit:
                self.rcv_limit = min(self.rcv_limit * 2, cfg.recvbuf_max)
                self.c["rcvbuf_grown"] += 1
            self.rcv_copied = 0
            self.rcv_mark = now

    def user_shutdown_write(self) -> None:
        if self.wr_shut:
            return
        if self.state in (S.SYN_SENT, S.CLOSED, S.LISTEN):
            self.wr_shut = True
            return
        self.wr_shut = True
        if self.state == S.ESTABLISHED:
            self.set_state(S.FIN_WAIT_1)
        elif self.state == S.CLOSE_WAIT:
            self.set_state(S.LAST_ACK)
        self.output()

    def user_close(self, linger_zero: bool = False) -> None:
        """close(): the socket is gone; the connection finishes on its own."""
        self.user_closed = True
        self.sock = None
        st = self.state
        if st == S.LISTEN:
            self.proto.close_listener(self)
            return
        if st in (S.CLOSED, S.SYN_SENT):
            self.destroy()
            return
        if linger_zero or self.rcvbuf or (st in SYNCHRONIZED and self.ooo.bytes and False):
            if st != S.TIME_WAIT:
                self.c["close_rst"] += 1
                self.send_rst()
            self.destroy()
            return
        self.user_shutdown_write()
        if self.state == S.FIN_WAIT_2:
            self.t_conn = self.now() + self.proto.cfg.fin_wait2_timeout
            self.rearm()

    def user_abort(self) -> None:
        if self.state in SYNCHRONIZED or self.state == S.SYN_RECEIVED:
            self.send_rst()
        self.destroy()

    # ------------------------------------------------------------------ lifecycle
    def set_state(self, st: State) -> None:
        old = self.state
        self.state = st
        self.c[f"state_{old.name}_to_{st.name}"] += 1
        if st == S.ESTABLISHED:
            self.c["established"] += 1
        self._notify()

    def enter_time_wait(self) -> None:
        self.set_state(S.TIME_WAIT)
        self.t_rexmt = self.t_persist = self.t_keep = self.t_delack = self.t_conn = INF
        self.t_2msl = self.now() + 2 * self.proto.cfg.msl
        self.rearm()

    def drop(self, err: int, send_rst: bool = False) -> None:
        """Abort with an error for the user (ECONNRESET, ETIMEDOUT, ECONNREFUSED...).
        A timeout reports the ICMP soft error remembered, if any (BSD tcp_drop)."""
        if err == errno.ETIMEDOUT and self.softerror:
            self.c["timeout_soft_error"] += 1
            err = self.softerror
        if send_rst and self.state in SYNCHRONIZED | {S.SYN_RECEIVED}:
            self.send_rst()
        self.error = err
        self.c[f"drop_{errno.errorcode.get(err, err)}"] += 1
        self.destroy()

    def destroy(self) -> None:
        self.state = S.CLOSED
        self.timer_at_all_off()
        self.proto.remove(self)
        self._notify()

    def timer_at_all_off(self) -> None:
        self.t_rexmt = self.t_persist = self.t_delack = self.t_keep = self.t_2msl = INF
        self.t_conn = INF
        self.proto.timers.schedule(self, INF)

    # ------------------------------------------------------------------ negotiation
    def apply_syn_options(self, opts: TCPOptions | None, *, we_offered: bool = True) -> None:
        """Record what the peer's SYN (or SYN-ACK) offered; intersect with our sysctls."""
        cfg = self.proto.cfg
        o = opts or TCPOptions()
        self.peer_mss = o.mss if o.mss else 536
        self.ws_ok = bool(cfg.wscale and o.wscale is not None and we_offered)
        if self.ws_ok:
            self.snd_scale = o.wscale or 0
        else:
            self.snd_scale = 0
            self.rcv_scale = 0
        self.sack_ok = bool(cfg.sack and o.sack_perm)
        self.ts_ok = bool(cfg.timestamps and o.ts is not None)
        if self.ts_ok and o.ts is not None:
            self.ts_recent = o.ts[0]
            self.ts_recent_age = self.now()

    def setup_mss(self) -> None:
        route_mtu = self.proto.route_mtu(self.raddr)
        mss = min(self.peer_mss, route_mtu - IP_HDR - TCP_HDR)
        if self.ts_ok:
            mss -= TS_OPT_LEN
        self.snd_mss = max(mss, 64)
        self.cc.set_mss(self.snd_mss)
        self.cc.cwnd = congestion.INITIAL_WINDOW_SEGMENTS * self.snd_mss
        offl = self.proto.route_offloads(self.raddr)
        self.csum_offload = "csum" in offl
        if "tso4" in offl and self.proto.cfg.tso and self.csum_offload:
            self.tso_max = (65000 - 60) // self.snd_mss * self.snd_mss
        else:
            self.tso_max = 0

    def established(self) -> None:
        """The handshake completed (either side)."""
        self.snd_buf_seq = sq.add(self.iss, 1)
        self.recover = self.snd_una
        self.rexmit_high = self.lost_high = self.snd_una
        self.t_rexmt = INF
        self.backoff = 0
        self.syn_retries = 0
        if not self.srtt:
            self.rto = self.proto.cfg.rto_init
        self.last_rcv = self.now()
        self.set_state(S.ESTABLISHED)
        if self.wr_shut:
            self.wr_shut = False
            self.user_shutdown_write()
        self.arm_keepalive()

    # ------------------------------------------------------------------ input
    def segment_arrives(self, seg: TCPSegment) -> None:
        """RFC 9293 3.10.7.3/4 for SYN_SENT and later states (LISTEN is the proto's)."""
        self.c["segs_in"] += 1
        if self.state == S.SYN_SENT:
            self._syn_sent_input(seg)
        else:
            self._input(seg)
        if self.state != S.CLOSED:
            self.rearm()

    def _syn_sent_input(self, seg: TCPSegment) -> None:
        flags = seg.flags
        if flags & ACK:
            if sq.le(seg.ack, self.iss) or sq.gt(seg.ack, self.snd_max):
                if not flags & RST:
                    self.c["rst_out_bad_ack"] += 1
                    self.proto.send_rst_for(self.laddr, self.raddr, seg, len(seg.payload))
                self.c["drop_syn_sent_bad_ack"] += 1
                return
        if flags & RST:
            if flags & ACK:
                self.c["conn_refused"] += 1
                self.drop(errno.ECONNREFUSED)
            else:
                self.c["drop_rst_no_ack"] += 1
            return
        if not flags & SYN:
            self.c["drop_syn_sent_no_syn"] += 1
            return
        self.irs = seg.seq
        self.rcv_nxt = sq.add(seg.seq, 1)
        self.rcv_adv = self.rcv_nxt
        self.apply_syn_options(seg.opts)
        self.setup_mss()
        if flags & ACK:
            self.snd_una = seg.ack
            self.snd_wnd = seg.wnd  # never scaled in a SYN
            self.max_sndwnd = self.snd_wnd
            self.snd_wl1 = seg.seq
            self.snd_wl2 = seg.ack
            if self.ts_ok and seg.opts is not None and seg.opts.ts is not None and seg.opts.ts[1]:
                self._rtt_sample((self.ts_now() - seg.opts.ts[1]) % (1 << 32) / 1000)
            elif self.syn_retries == 0:
                self._rtt_sample(self.now() - self.rtt_time)
            self.established()
            self.ack_now = True
            self.output()
        else:
            # simultaneous open (RFC 9293 figure 7)
            self.c["simultaneous_open"] += 1
            self.set_state(S.SYN_RECEIVED)
            self.send_syn()

    def _challenge_ack(self) -> None:
        p = self.proto
        now = p.now()
        if now - p.challenge_epoch >= 1.0:
            p.challenge_epoch = now
            p.challenge_count = 0
        if p.challenge_count >= p.cfg.challenge_ack_limit:
            self.c["challenge_ack_limited"] += 1
            return
        p.challenge_count += 1
        self.c["challenge_acks"] += 1
        self._xmit(self.snd_nxt, ACK)

    def _ack_and_drop(self, reason: str) -> None:
        self.c[reason] += 1
        self.ack_now = True
        if self.state == S.SYN_RECEIVED:
            return
        self.output()

    def _input(self, seg: TCPSegment) -> None:
        c = self.c
        flags = seg.flags
        orig_flags = flags
        payload = seg.payload
        plen = len(payload)
        opts = seg.opts
        now = self.now()
        state = self.state
        seqno = seg.seq
        rcv_wnd = max(sq.sub(self.rcv_adv, self.rcv_nxt), 0)

        if state == S.SYN_RECEIVED and flags & SYN and not flags & ACK and seqno == self.irs:
            c["dup_syn_resend_synack"] += 1
            self.send_syn()
            return

        # RST first, on the untrimmed sequence number (RFC 5961 3.2)
        if flags & RST:
            if seqno != self.rcv_nxt:
                if sq.between(self.rcv_nxt, seqno, sq.add(self.rcv_nxt, max(rcv_wnd, 1))):
                    self._challenge_ack()
                else:
                    c["drop_rst_out_of_window"] += 1
                return
            c["rst_in"] += 1
            if state == S.SYN_RECEIVED:
                if self.passive:
                    self.destroy()
                else:
                    self.drop(errno.ECONNREFUSED)
            elif state in (S.CLOSING, S.LAST_ACK, S.TIME_WAIT):
                self.destroy()
            else:
                self.drop(errno.ECONNRESET)
            return

        # a SYN on a synchronized connection, wherever it falls: challenge ACK (RFC
        # 5961 4.2; also answers a retransmitted SYN-ACK whose ACK was lost)
        if flags & SYN and state != S.SYN_RECEIVED:
            self._challenge_ack()
            return

        # PAWS (RFC 7323 5)
        tsval = None
        if self.ts_ok and opts is not None and opts.ts is not None:
            tsval = opts.ts[0]
            if self.ts_recent_age and sq.lt(tsval, self.ts_recent) \
                    and now - self.ts_recent_age < 24 * 24 * 3600:
                self._ack_and_drop("drop_paws")
                return

        # 1. sequence check, BSD-style: trim the duplicate head and the part beyond the
        # window; a segment trimmed to nothing still has its ACK processed.
        todrop = sq.sub(self.rcv_nxt, seqno)
        if todrop > 0:
            if flags & SYN:
                flags &= ~SYN
                seqno = sq.add(seqno, 1)
                todrop -= 1
                self.ack_now = True  # a retransmitted SYN(-ACK): our ACK was lost
            if todrop > plen or (todrop == plen and not flags & FIN):
                if plen or flags & FIN or todrop > 0:
                    c["dup_segs_in"] += 1
                    self.ack_now = True
                flags &= ~FIN
                todrop = plen
            elif todrop:
                c["partial_dup_trimmed"] += 1
            if todrop:
                payload = payload[todrop:]
                plen -= todrop
                seqno = sq.add(seqno, todrop)
        over = sq.sub(sq.add(seqno, plen + (1 if flags & FIN else 0)), sq.add(self.rcv_nxt, rcv_wnd))
        if over > 0:
            if over >= plen + (1 if flags & FIN else 0) and plen + (flags & FIN):
                if rcv_wnd == 0 and seqno == self.rcv_nxt:
                    c["zero_window_probe_in"] += 1
                    self.ack_now = True
                    payload = payload[:0]
                    plen = 0
                    flags &= ~FIN
                else:
                    self._ack_and_drop("drop_beyond_window")
                    return
            else:
                cut = min(over, plen)
                plen -= cut
                payload = payload[:plen]
                flags &= ~FIN
                c["beyond_window_trimmed"] += 1

        # 4. a SYN left in the window of a synchronized connection (RFC 5961 4.2)
        if flags & SYN:
            if state == S.SYN_RECEIVED and self.passive:
                c["drop_syn_in_synrcvd"] += 1
                self.destroy()
                return
            self._challenge_ack()
            return

        # 5. ACK
        if not flags & ACK:
            c["drop_no_ack"] += 1
            return
        if tsval is not None and sq.le(seg.seq, self.last_ack_sent) \
                and (not self.ts_recent_age or sq.ge(tsval, self.ts_recent)):
            self.ts_recent = tsval
            self.ts_recent_age = now
        ack = seg.ack
        if state == S.SYN_RECEIVED:
            if sq.lt(self.snd_una, ack) and sq.le(ack, self.snd_max):
                self.snd_wnd = seg.wnd << self.snd_scale
                self.max_sndwnd = self.snd_wnd
                self.snd_wl1 = seqno
                self.snd_wl2 = ack
                if self.ts_ok and opts is not None and opts.ts is not None and opts.ts[1]:
                    self._rtt_sample(((self.ts_now() - opts.ts[1]) & sq.MASK) / 1000)
                elif self.syn_retries == 0:
                    self._rtt_sample(now - self.rtt_time)
                self.snd_una = ack
                if self.passive and not self.proto.handshake_done(self):
                    # accept queue full: stay in SYN_RECEIVED, the SYN-ACK will be resent
                    self.snd_una = self.iss
                    return
                self.established()
                state = self.state
            else:
                c["rst_out_synrcvd_bad_ack"] += 1
                self.proto.send_rst_for(self.laddr, self.raddr, seg, len(seg.payload))
                return
        else:
            # RFC 5961 5.2 ACK acceptability
            if sq.gt(ack, self.snd_max):
                self._ack_and_drop("drop_ack_unsent")
                return
            if sq.lt(ack, sq.sub(self.snd_una, max(self.max_sndwnd, 1)) & sq.MASK):
                self._challenge_ack()
                return
            self._process_ack(seg, ack, seqno, plen, flags, opts, now)
            if self.state == S.CLOSED:
                return
            state = self.state

        # our FIN acknowledged?
        if self.wr_shut and self.fin_acked():
            if state == S.FIN_WAIT_1:
                self.set_state(S.FIN_WAIT_2)
                state = S.FIN_WAIT_2
                if self.user_closed:
                    self.t_conn = now + self.proto.cfg.fin_wait2_timeout
            elif state == S.CLOSING:
                self.enter_time_wait()
                return
            elif state == S.LAST_ACK:
                self.destroy()
                return
        if state == S.TIME_WAIT:
            if orig_flags & FIN:
                c["timewait_fin_reacked"] += 1
                self.t_2msl = now + 2 * self.proto.cfg.msl
                self.ack_now = True
            self.output()
            return

        self.last_rcv = now
        self.keep_probes = 0
        if self.keepalive:
            self.t_keep = now + (self.proto.cfg.keepidle if self.keepidle is None
                                 else self.keepidle)

        # 7. segment text
        changed = False
        if plen:
            if state in RECV_STATES and not self.fin_rcvd:
                if self.user_closed and self.sock is None:
                    # data for a closed socket: RFC 9293 3.10.7.4 / RFC 2525 - reset
                    c["rst_data_after_close"] += 1
                    self.rcv_nxt = sq.add(seqno, plen)
                    self.drop(errno.ECONNRESET, send_rst=True)
                    return
                changed = self._receive_data(seqno, payload, plen)
            else:
                c["drop_data_bad_state"] += 1

        # 8. FIN
        if flags & FIN:
            fin_at = sq.add(seqno, plen)
            if fin_at == self.rcv_nxt:
                self._fin_received(now)
                changed = True
            elif sq.gt(fin_at, self.rcv_nxt):
                self.ooo_fin = fin_at
                self.ack_now = True
        if changed:
            self._notify()
        self.output()

    def _receive_data(self, seqno: int, payload: memoryview, plen: int) -> bool:
        c = self.c
        if seqno == self.rcv_nxt:
            if self.rd_shut:
                c["rcv_discarded_shut_rd"] += plen
            else:
                self.rcvbuf += payload  # the one copy
            self.rcv_nxt = sq.add(self.rcv_nxt, plen)
            c["data_bytes_in"] += plen
            c["data_segs_in"] += 1
            if self.ooo.blocks:
                while True:
                    blk = self.ooo.pop_ready(self.rcv_nxt)
                    if blk is None:
                        break
                    if not self.rd_shut:
                        self.rcvbuf += blk
                    self.rcv_nxt = sq.add(self.rcv_nxt, len(blk))
                    c["ooo_reassembled"] += 1
                self.ack_now = True  # a hole was filled: tell the sender at once
                if self.ooo_fin is not None and self.ooo_fin == self.rcv_nxt:
                    self.ooo_fin = None
                    self._fin_received(self.now())
            self.ack_pending += plen
            if self.ack_pending >= 2 * self.rcv_mss or self.delack == 0:
                self.ack_now = True
            return True
        c["ooo_segs_in"] += 1
        if self.ooo.insert(seqno, payload, self.rcv_nxt):
            c["ooo_queued"] += 1
        else:
            c["ooo_dup"] += 1
        self.ack_now = True  # duplicate ACK with SACK blocks
        return False

    def _fin_received(self, now: float) -> None:
        if self.fin_rcvd:
            return
        self.fin_rcvd = True
        self.rcv_nxt = sq.add(self.rcv_nxt, 1)
        self.ack_now = True
        self.c["fin_in"] += 1
        st = self.state
        if st in (S.SYN_RECEIVED, S.ESTABLISHED):
            self.set_state(S.CLOSE_WAIT)
        elif st == S.FIN_WAIT_1:
            if self.fin_acked():
                self.enter_time_wait()
            else:
                self.c["simultaneous_close"] += 1
                self.set_state(S.CLOSING)
        elif st == S.FIN_WAIT_2:
            self.t_conn = INF
            self.enter_time_wait()

    def _process_ack(self, seg: TCPSegment, ack: int, seqno: int, plen: int, flags: int,
                     opts: TCPOptions | None, now: float) -> None:
        c = self.c
        cc = self.cc
        acked = sq.sub(ack, self.snd_una)
        new_sack = 0
        if self.sack_ok and opts is not None and opts.sack:
            new_sack = self.scoreboard.update(opts.sack, self.snd_una if acked <= 0 else ack,
                                              self.snd_max)
        # window update (RFC 9293 3.10.7.4, SND.WL1/WL2)
        wnd = seg.wnd << self.snd_scale
        window_changed = False
        if sq.lt(self.snd_wl1, seqno) or (self.snd_wl1 == seqno and sq.le(self.snd_wl2, ack)):
            if wnd != self.snd_wnd:
                window_changed = True
                if self.snd_wnd == 0 and wnd > 0:
                    c["window_reopened"] += 1
                    self.t_persist = INF
                    self.persist_shift = 0
            self.snd_wnd = wnd
            self.snd_wl1 = seqno
            self.snd_wl2 = ack
            if wnd > self.max_sndwnd:
                self.max_sndwnd = wnd
        if acked > 0:
            c["acks_in_new"] += 1
            # RTT sample (RFC 7323 4 with timestamps, else Karn's timed segment)
            if self.ts_ok and opts is not None and opts.ts is not None and opts.ts[1]:
                self._rtt_sample(((self.ts_now() - opts.ts[1]) & sq.MASK) / 1000)
            elif self.rtt_seq is not None and sq.gt(ack, self.rtt_seq):
                self._rtt_sample(now - self.rtt_time)
                self.rtt_seq = None
            self.backoff = 0
            data_acked = min(acked, len(self.sndbuf))
            if data_acked:
                self.sndbuf.consume(data_acked)
                self.snd_buf_seq = sq.add(self.snd_buf_seq, data_acked)
            self.snd_una = ack
            if sq.lt(self.snd_nxt, ack):
                self.snd_nxt = ack
            self.scoreboard.ack(ack)
            if sq.lt(self.rexmit_high, ack):
                self.rexmit_high = ack
            if sq.lt(self.lost_high, ack):
                self.lost_high = ack
            flight = self.flight()
            if self.in_recovery:
                if sq.ge(ack, self.recover):
                    self.in_recovery = False
                    cc.on_recovery_end(now, flight)
                    c["recovery_exits"] += 1
                else:
                    # partial ACK (RFC 6582 3.2 step 5)
                    c["partial_acks"] += 1
                    if self.sack_ok:
                        self.lost_high = sq.max_(self.lost_high, self.scoreboard.high(ack))
                    else:
                        self.rexmit_high = ack
                        self.rexmit_force = True
                        self.lost_high = sq.add(ack, min(self.snd_mss, flight))
                        cc.cwnd = max(cc.cwnd - acked + (self.snd_mss if acked >= self.snd_mss else 0),
                                      self.snd_mss)
                    self.t_rexmt = now + self.rto
            else:
                cc.on_ack(acked, now, self.srtt or 0.1, flight)
            self.dupacks = 0
            # restart the retransmission timer (RFC 6298 5.3)
            self.t_rexmt = now + self.rto if flight else INF
            if not flight and self.rtt_seq is not None:
                self.rtt_seq = None
            # grow the send buffer with the window (autotuning)
            cfg = self.proto.cfg
            want = min(max(cfg.sendspace, 2 * cc.cwnd, 2 * self.snd_wnd), cfg.sendbuf_max)
            if want > self.snd_limit:
                self.snd_limit = want
            if self.sock is not None:
                self.sock._notify()
        elif acked == 0 and self.flight() > 0 and plen == 0 and not flags & (SYN | FIN) \
                and (not window_changed or new_sack):
            # duplicate ACK (RFC 5681 2)
            self.dupacks += 1
            c["dupacks_in"] += 1
            if self.in_recovery:
                if self.sack_ok:
                    self.lost_high = sq.max_(self.lost_high, self.scoreboard.high(self.snd_una))
                else:
                    cc.cwnd += self.snd_mss  # NewReno inflation
            elif self.dupacks >= 3 or (self.sack_ok and self.scoreboard.sacked >= 3 * self.snd_mss):
                if sq.ge(self.snd_una, self.recover):  # RFC 6582 3.2 step 2
                    self._enter_recovery(now)
                else:
                    c["dupack_no_recovery"] += 1

    def _enter_recovery(self, now: float) -> None:
        c = self.c
        cc = self.cc
        c["fast_retransmits"] += 1
        self.in_recovery = True
        self.recover = self.snd_max
        cc.on_congestion(now, self.flight())
        self.rexmit_high = self.snd_una
        if self.sack_ok and self.scoreboard:
            self.lost_high = self.scoreboard.high(self.snd_una)
        else:
            self.lost_high = sq.add(self.snd_una, min(self.snd_mss, self.flight()))
            cc.cwnd = cc.ssthresh + 3 * self.snd_mss
        self.rtt_seq = None
        self.rexmit_force = True
        self.t_rexmt = now + self.rto
