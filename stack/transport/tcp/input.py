"""TCP input: a segment arrives (RFC 9293 3.10.7 for SYN_SENT and later states; LISTEN
is the protocol's, proto.py): the sequence and RST/SYN checks (RFC 5961), PAWS (RFC 7323),
ACK processing with the send window, loss detection and recovery (RFC 5681, 6582, 6675),
RTT samples (RFC 6298), received data and FIN. gVisor's tcp/rcv.go, NetBSD's tcp_input.c."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, cast

from stack.packet import QUEUE_BULK
from stack.transport.tcp import seq as sq
from stack.transport.tcp.state import BULK_SEGMENT, INF, RECV_STATES, S, TCBState
from stack.transport.wire.tcp import ACK, FIN, PSH, RST, SYN, TCPOptions, TCPSegment

#: the delivery rate (TCP_INFO, ss -i) is measured over intervals of at least this
#: much more than the smoothed RTT, so a TAP's 100 µs RTT does not make it jitter
DR_INTERVAL = 0.05

if TYPE_CHECKING:  # cycle: TCB is assembled from this role (tcb.py imports it); types only
    from stack.transport.tcp.tcb import TCB


#: pushed in-order data that leaves at most this much queued is a message (a request, an
#: echo), not a bulk stream's: its reader should run before the driver's batch goes on
#: (PSH: a bulk sender without segmentation offload sends MSS-sized segments into an
#: empty queue too, but pushes only at the end of each write)
SMALL_MESSAGE = 4096


class TCBInput(TCBState):
    """The input role of the TCB (see state.py)."""

    __slots__ = ()  # the attributes are TCBState's slots

    def segment_arrives(self, seg: TCPSegment) -> None:
        """RFC 9293 3.10.7.3/4 for SYN_SENT and later states (LISTEN is the proto's)."""
        self.segs_in += 1  # the protocol's segs_in counted it (proto.input)
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
            self.bytes_acked += sq.sub(seg.ack, self.snd_una)  # our SYN, as Linux counts it
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
        if self.proto.challenge_allowed():
            self._xmit(self.snd_nxt, ACK)

    def _ack_and_drop(self) -> None:
        """Drop the segment but answer with an ACK (the caller counted why)."""
        self.ack_now = True
        if self.state == S.SYN_RECEIVED:
            return
        self.output()

    def _input(self, seg: TCPSegment) -> None:
        c = self.c
        flags = seg.flags
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
            self._rst_arrives(seqno, rcv_wnd)
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
                c["drop_paws"] += 1
                self._ack_and_drop()
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
                    c["drop_beyond_window"] += 1
                    self._ack_and_drop()
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
                if not self._handshake_acked(seg, ack, seqno, opts, now):
                    return
                state = self.state
            else:
                c["rst_out_synrcvd_bad_ack"] += 1
                self.proto.send_rst_for(self.laddr, self.raddr, seg, len(seg.payload))
                return
        else:
            # RFC 5961 5.2 ACK acceptability
            if sq.gt(ack, self.snd_max):
                c["drop_ack_unsent"] += 1
                self._ack_and_drop()
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
            if flags & PSH and len(self.rcvbuf) <= SMALL_MESSAGE and self.sock is not None:
                batch = self.proto.batch
                if batch is not None:
                    batch.reader_woken()  # its reader runs before the rest of the batch
        if self.ooo.blocks:
            self.output()  # out of order: at once, each duplicate ACK counts
        else:
            self.output_soon()

    def _rst_arrives(self, seqno: int, rcv_wnd: int) -> None:
        """A RST in a synchronized state or SYN_RECEIVED (RFC 9293 3.10.7.4, RFC 5961 3.2:
        only one at exactly RCV.NXT resets; one elsewhere in the window is challenged)."""
        c = self.c
        if seqno != self.rcv_nxt:
            if sq.between(self.rcv_nxt, seqno, sq.add(self.rcv_nxt, max(rcv_wnd, 1))):
                self._challenge_ack()
            else:
                c["drop_rst_out_of_window"] += 1
            return
        c["rst_in"] += 1
        state = self.state
        if state == S.SYN_RECEIVED:
            if self.passive:
                self.destroy()
            else:
                self.drop(errno.ECONNREFUSED)
        elif state in (S.CLOSING, S.LAST_ACK):
            self.destroy()
        else:
            self.drop(errno.ECONNRESET)

    def _handshake_acked(self, seg: TCPSegment, ack: int, seqno: int,
                         opts: TCPOptions | None, now: float) -> bool:
        """SYN_RECEIVED and our SYN is acknowledged: ESTABLISHED (False: a listener's
        accept queue is full; stay, the SYN-ACK will be resent)."""
        self.snd_wnd = seg.wnd << self.snd_scale
        self.max_sndwnd = self.snd_wnd
        self.snd_wl1 = seqno
        self.snd_wl2 = ack
        if self.ts_ok and opts is not None and opts.ts is not None and opts.ts[1]:
            self._rtt_sample(((self.ts_now() - opts.ts[1]) & sq.MASK) / 1000)
        elif self.syn_retries == 0:
            self._rtt_sample(now - self.rtt_time)
        self.snd_una = ack
        if self.passive and not self.proto.handshake_done(cast("TCB", self)):
            self.snd_una = self.iss
            return False
        self.bytes_acked += sq.sub(ack, self.iss)  # our SYN, as Linux counts it
        self.established()
        return True

    def _receive_data(self, seqno: int, payload: memoryview, plen: int) -> bool:
        c = self.c
        if plen >= BULK_SEGMENT:
            self.queue = QUEUE_BULK
        if seqno == self.rcv_nxt:
            if self.rd_shut:
                c["rcv_discarded_shut_rd"] += plen
            else:
                self.rcvbuf.append(payload)  # queued as it came, copied once when read
            self.rcv_nxt = sq.add(self.rcv_nxt, plen)
            c["data_bytes_in"] += plen
            c["data_segs_in"] += 1
            self.data_segs_in += 1
            self.bytes_received += plen
            self.last_data_recv = self.last_rcv
            if self.ooo.blocks:
                while True:
                    blk = self.ooo.pop_ready(self.rcv_nxt)
                    if blk is None:
                        break
                    if not self.rd_shut:
                        self.rcvbuf.append(blk)
                    self.rcv_nxt = sq.add(self.rcv_nxt, len(blk))
                    self.bytes_received += len(blk)
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
        self.data_segs_in += 1
        self.rcv_ooopack += 1
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
        self.bytes_received += 1  # Linux counts RCV.NXT's advance, the FIN's included
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
            self.bytes_acked += acked
            if now - self.dr_time >= self.srtt + DR_INTERVAL:
                self._delivery_sample(now)
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

    def _delivery_sample(self, now: float) -> None:
        """Close a delivery-rate interval (one smoothed RTT + DR_INTERVAL): bytes
        acknowledged over its length. An interval that began before an idle time longer
        than the RTO only restarts the measurement (the sender had nothing to send)."""
        dt = now - self.dr_time
        if self.dr_time and 0 < dt <= max(self.rto, 4 * self.srtt) + DR_INTERVAL:
            self.delivery_rate = (self.bytes_acked - self.dr_bytes) / dt
        self.dr_time = now
        self.dr_bytes = self.bytes_acked

    def _rtt_sample(self, rtt: float) -> None:
        cfg = self.proto.cfg
        rtt = max(rtt, 1e-6)
        if rtt < self.min_rtt:
            self.min_rtt = rtt
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
