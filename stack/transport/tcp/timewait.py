"""TIME_WAIT as a compact record (Linux's ``inet_timewait_sock``, FreeBSD's ``tcptw``).

A connection that enters TIME_WAIT (state.py ``enter_time_wait``) has nothing left to
send or receive: all it must still do for 2·MSL is answer the peer's retransmitted FIN
(its last ACK may have been lost), keep old duplicates of this incarnation away from the
next one, and hold its four-tuple and port. The full TCB (send and receive buffers,
congestion state, SACK scoreboard, reassembly queue, options, RTT state: ~8 KB) is not
needed for that, so the protocol puts a ``TimeWait`` in its place in the connection
table (and in the port's binding list) and lets the TCB go: freed at once when no socket
holds it any more. The record keeps only what TIME_WAIT needs - the four-tuple, SND.NXT
and RCV.NXT, the receive window it last offered (and the window field that offers it),
the largest send window (RFC 5961's ACK check), the timestamps for PAWS and TS.Recent,
TTL/TOS for its ACKs, SO_REUSEADDR for bind conflicts and its 2MSL deadline - in slots.

How many there may be is bounded too: ``net.inet.tcp.max_tw_buckets`` (Linux's
``tcp_max_tw_buckets``); beyond it a connection entering TIME_WAIT is freed at once
after its last ACK, counted ``tw_overflow`` (Linux's TCPTimeWaitOverflow).

Segments to a record get what the TCB in TIME_WAIT gave them (input.py's checks, in the
same order, reduced to what can happen once both FINs are acknowledged):

* RST (RFC 5961 3.2): at exactly RCV.NXT it ends TIME_WAIT (``rst_in``: the stack
  never followed RFC 1337's "ignore RSTs in TIME_WAIT", nor does Linux by default),
  elsewhere in the window it gets a challenge ACK, outside it is dropped;
* SYN: a SYN without ACK above RCV.NXT is a new incarnation (proto.py ``input``: the
  record is ended, ``timewait_reused``, and the SYN goes to the listener); any other
  SYN gets a challenge ACK (RFC 5961 4.2);
* PAWS (RFC 7323 5): an older TSval is dropped with an ACK (``drop_paws``);
* a duplicate (below RCV.NXT, e.g. the retransmitted FIN) or a zero-window probe is
  ACKed, a segment beyond the window dropped with an ACK; a segment without ACK is
  dropped; an ACK of unsent data is dropped with an ACK, one too old gets a challenge
  ACK; TS.Recent is updated as in ESTABLISHED;
* a FIN (the peer's, retransmitted) restarts the 2MSL timer and is ACKed
  (``timewait_fin_reacked``, RFC 9293 3.10.7.4);
* anything else (an in-window bare ACK, data after the FIN) is absorbed silently.

ICMP errors about a record are ignored (``icmp_time_wait``, as Linux's tcp_v4_err).

The record holds a weak reference to the TCB it replaced: while a socket still holds
that TCB (shutdown for writing, not closed yet: its unread data can still be read),
the TCB shows TIME_WAIT as before and becomes CLOSED when the record ends; a weak
reference keeps nothing alive."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, ClassVar

from stack.addr import Addr, pseudo_header_sum
from stack.transport.tcp import seq as sq
from stack.transport.tcp.state import INF, IPPROTO_TCP, ConnKey, S, State
from stack.transport.wire import tcp as wire
from stack.transport.wire.checksum import checksum
from stack.transport.wire.tcp import ACK, FIN, RST, SYN, TCPSegment

if TYPE_CHECKING:  # cycle: the protocol makes the records, each holds the protocol
    from stack.transport.tcp.proto import TCPProto
    from stack.transport.tcp.tcb import TCB
    from stack.transport.tcp.timers import TimerEntry

#: how long a remembered TSval guards against old duplicates (RFC 7323 5.5: 24 days)
PAWS_IDLE = 24 * 24 * 3600


class TimeWait:
    """One connection in TIME_WAIT, in place of its TCB (see the module's docstring)."""

    __slots__ = ("proto", "laddr", "lport", "raddr", "rport", "snd_nxt", "rcv_nxt",
                 "rcv_wnd", "wnd", "max_sndwnd", "ts_ok", "ts_recent", "ts_recent_age",
                 "ttl", "tos", "reuseaddr", "timer_at", "timer_entry", "_tcb")

    #: what listings read of a connection (control/backend.py list_sockets): a record has
    #: no buffers and is always in TIME_WAIT
    state: ClassVar[State] = S.TIME_WAIT
    rcvbuf: ClassVar[bytes] = b""
    sndbuf: ClassVar[bytes] = b""

    def __init__(self, proto: TCPProto, tcb: TCB) -> None:
        self.proto = proto
        self.laddr: Addr = tcb.laddr
        self.lport: int = tcb.lport
        self.raddr: Addr = tcb.raddr
        self.rport: int = tcb.rport
        self.snd_nxt: int = tcb.snd_nxt  # = SND.UNA = SND.MAX: our FIN is acknowledged
        self.rcv_nxt: int = tcb.rcv_nxt  # past the peer's FIN
        # the window still offered, as input.py measures it, and the field saying it
        rcv_wnd = max(sq.sub(tcb.rcv_adv, tcb.rcv_nxt), 0)
        self.rcv_wnd: int = rcv_wnd
        scale = tcb.rcv_scale
        self.wnd: int = min((rcv_wnd + (1 << scale) - 1) >> scale, 0xFFFF)
        self.max_sndwnd: int = tcb.max_sndwnd
        self.ts_ok: bool = tcb.ts_ok
        self.ts_recent: int = tcb.ts_recent
        self.ts_recent_age: float = tcb.ts_recent_age
        self.ttl: int | None = tcb.ttl
        self.tos: int = tcb.tos
        self.reuseaddr: bool = tcb.reuseaddr
        self.timer_at: float = INF
        self.timer_entry: TimerEntry | None = None
        self._tcb: weakref.ref[TCB] | None = weakref.ref(tcb)

    def __repr__(self) -> str:
        return (f"<TimeWait {self.lport}->{self.rport} nxt={self.snd_nxt} "
                f"rcv_nxt={self.rcv_nxt} until={self.timer_at}>")

    @property
    def key(self) -> ConnKey:
        return (self.laddr, self.lport, self.raddr, self.rport)

    # ------------------------------------------------------------------ 2MSL
    def arm(self, now: float) -> None:
        """(Re)start the 2MSL timer from ``now``."""
        p = self.proto
        deadline = now + 2 * p.cfg.msl
        if deadline == self.timer_at:
            return  # armed for it already (a FIN again at the same instant)
        old = self.timer_entry
        self.timer_entry = p.timers.schedule(self, deadline)
        if old is not None:
            old[2] = None

    def on_timer(self, now: float) -> None:
        self.timer_entry = None  # popped by the service
        self.proto.counters["timewait_expired"] += 1
        self.destroy()

    def destroy(self) -> None:
        """TIME_WAIT is over (2MSL, an acceptable RST, a new incarnation's SYN): out of
        the tables, and a TCB a socket still holds becomes CLOSED."""
        p = self.proto
        p.timers.schedule(self, INF)
        old = self.timer_entry
        if old is not None:
            old[2] = None
            self.timer_entry = None
        p.tw_remove(self)
        ref, self._tcb = self._tcb, None
        tcb = ref() if ref is not None else None
        if tcb is not None and tcb.state == S.TIME_WAIT:
            tcb.state = S.CLOSED
            tcb._notify()

    # ------------------------------------------------------------------ input
    def segment_arrives(self, seg: TCPSegment) -> None:
        """A segment for this connection (see the module's docstring)."""
        c = self.proto.counters  # segs_in: counted once, by proto.input
        flags = seg.flags
        seqno = seg.seq
        rcv_nxt = self.rcv_nxt
        rcv_wnd = self.rcv_wnd
        if flags & RST:
            if seqno != rcv_nxt:
                if sq.between(rcv_nxt, seqno, sq.add(rcv_nxt, max(rcv_wnd, 1))):
                    self._challenge_ack()
                else:
                    c["drop_rst_out_of_window"] += 1
                return
            c["rst_in"] += 1
            self.destroy()
            return
        if flags & SYN:
            self._challenge_ack()
            return
        now = self.proto.now()
        opts = seg.opts
        tsval = None
        if self.ts_ok and opts is not None and opts.ts is not None:
            tsval = opts.ts[0]
            if self.ts_recent_age and sq.lt(tsval, self.ts_recent) \
                    and now - self.ts_recent_age < PAWS_IDLE:
                c["drop_paws"] += 1
                self._send_ack()
                return
        plen = len(seg.payload)
        fin = 1 if flags & FIN else 0
        ack_now = False
        todrop = sq.sub(rcv_nxt, seqno)
        if todrop > 0:
            if todrop > plen or (todrop == plen and not fin):
                c["dup_segs_in"] += 1
                ack_now = True
                fin = 0
                todrop = plen
            elif todrop:
                c["partial_dup_trimmed"] += 1
            plen -= todrop
            seqno = sq.add(seqno, todrop)
        over = sq.sub(sq.add(seqno, plen + fin), sq.add(rcv_nxt, rcv_wnd))
        if over > 0:
            if over >= plen + fin and plen + fin:
                if rcv_wnd == 0 and seqno == rcv_nxt:
                    c["zero_window_probe_in"] += 1
                    ack_now = True
                else:
                    c["drop_beyond_window"] += 1
                    self._send_ack()
                    return
            else:
                c["beyond_window_trimmed"] += 1
        if not flags & ACK:
            c["drop_no_ack"] += 1
            return
        if tsval is not None and sq.le(seg.seq, rcv_nxt) \
                and (not self.ts_recent_age or sq.ge(tsval, self.ts_recent)):
            self.ts_recent = tsval  # our last ACK acknowledged RCV.NXT
            self.ts_recent_age = now
        ack = seg.ack
        if sq.gt(ack, self.snd_nxt):
            c["drop_ack_unsent"] += 1
            self._send_ack()
            return
        if sq.lt(ack, sq.sub(self.snd_nxt, max(self.max_sndwnd, 1)) & sq.MASK):
            self._challenge_ack()
            return
        if flags & FIN:
            # the peer's FIN again: our ACK of it was lost; RFC 9293 3.10.7.4: ACK it
            # and restart the 2 MSL timeout
            c["timewait_fin_reacked"] += 1
            self.arm(now)
            ack_now = True
        if ack_now:
            self._send_ack()

    # ------------------------------------------------------------------ output
    def _challenge_ack(self) -> None:
        if self.proto.challenge_allowed():
            self._send_ack()

    def _send_ack(self) -> None:
        """<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, with the window last offered and our
        timestamp echoing TS.Recent."""
        p = self.proto
        opts = wire.emit_ts_sack((p.ts_clock(), self.ts_recent), None) if self.ts_ok else b""
        hdr = wire.emit_header(self.lport, self.rport, self.snd_nxt, self.rcv_nxt, ACK,
                               self.wnd, opts)
        laddr, raddr = self.laddr, self.raddr
        csum = checksum((hdr,), pseudo_header_sum(laddr, raddr, IPPROTO_TCP, len(hdr)))
        hdr[16] = csum >> 8
        hdr[17] = csum & 0xFF
        c = p.counters
        c["segs_out"] += 1
        if p.emit(laddr, raddr, hdr, None, None, self.ttl, self.tos):
            c["output_errors"] += 1
