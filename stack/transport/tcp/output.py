"""TCP output: what to send and when (RFC 9293 3.8/3.10, 5681, 6675, 896, 7323): new
data within the send and congestion windows, retransmissions in recovery, SYN/SYN-ACK,
FIN, RST, ACKs (delayed or at once) and the window advertised; sender and receiver SWS
avoidance, Nagle. Each finished segment (header with its checksum, or the pseudo-header
sum when the device completes it) goes to the protocol's emitter (emit.py), so this file
never calls the network layer. gVisor's tcp/snd.go, NetBSD's tcp_output.c."""

from __future__ import annotations

from stack.packet import QUEUE_BULK, TxMeta
from stack.transport.tcp import seq as sq
from stack.transport.tcp.state import BULK_SEGMENT, INF, RECV_STATES, SEND_STATES, S, TCBState
from stack.transport.wire import tcp as wire
from stack.transport.wire.checksum import checksum, fold
from stack.transport.wire.tcp import ACK, FIN, PSH, RST, SYN, TCPOptions


class TCBOutput(TCBState):
    """The output role of the TCB (see state.py)."""

    __slots__ = ()  # the attributes are TCBState's slots

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
        """After the reader drained: would a new advertisement open the window enough?

        Linux's rule (tcp_cleanup_rbuf): only when the window still offered is at most
        half the buffer and the new one is at least twice it (and a segment more, so no
        silly window). A reader that drains often (every few segments of a bulk flow)
        then costs no extra segments: the ACKs the data triggers carry the window."""
        if self.state not in RECV_STATES:
            return False
        adv = sq.sub(self.rcv_adv, self.rcv_nxt)
        if 2 * adv > self.rcv_limit:
            return False
        space = self.rcv_space()
        return space >= 2 * adv and space - adv >= self.rcv_mss

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
        if self.csum_offload:
            # CHECKSUM_PARTIAL: the field holds the pseudo-header sum, the device the rest
            meta = TxMeta(csum_start=0, csum_offset=16, needs_csum=True, hdr_len=hlen,
                          queue=self.queue)
            pseudo = fold(self.pseudo + hlen + plen)
            hdr[16] = pseudo >> 8
            hdr[17] = pseudo & 0xFF
            if plen > self.snd_mss:
                meta.gso_type = self.gso_type
                meta.gso_size = self.snd_mss
        else:
            c = checksum((hdr, *payload) if payload else (hdr,), self.pseudo + hlen + plen)
            hdr[16] = c >> 8
            hdr[17] = c & 0xFF
        self.c["segs_out"] += 1
        self.segs_out += 1 if plen <= self.snd_mss else -(-plen // self.snd_mss)
        err = self.proto.emit(self.laddr, self.raddr, hdr, payload, meta, self.ttl, self.tos)
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

    def output_soon(self) -> None:
        """``output()``, or, inside a batch (stack/batch.py: a driver's receive batch, a
        FUSE request's handler), once for this connection at the batch's end: one ACK
        for a batch's segments, one send for a burst of ACKs, a WRITE's reply before
        its segment."""
        batch = self.proto.batch
        if batch is not None and batch.depth:
            batch.defer(id(self), self._batched_output)
        else:
            self.output()

    def _batched_output(self) -> None:
        if self.state != S.CLOSED:  # not reset or closed meanwhile
            self.output()

    def output(self, retransmit_timeout: bool = False) -> None:
        """Send what the windows allow: recovery retransmissions, new data, FIN, ACKs."""
        now = self.now()
        if self.state not in SEND_STATES:
            if self.state == S.FIN_WAIT_2:
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
        segs = 1 if n <= self.snd_mss else -(-n // self.snd_mss)  # a TSO super-segment's
        if n >= BULK_SEGMENT:
            self.queue = QUEUE_BULK
        if n:
            self.data_segs_out += segs
            self.bytes_sent += n
            self.last_data_sent = now
        if retrans:
            self.c["rexmt_segs"] += 1
            self.c["rexmt_bytes"] += n
            self.total_retrans += segs
            self.bytes_retrans += n
            if self.rtt_seq is not None and sq.ge(self.rtt_seq, seqno):
                self.rtt_seq = None  # Karn: never time a retransmitted segment
        else:
            self.c["data_segs_out"] += 1
            self.c["data_bytes_out"] += n
            if self.rtt_seq is None and not self.ts_ok and n:
                self.rtt_seq = seqno
                self.rtt_time = now
        self._xmit(seqno, flags, payload, n)
