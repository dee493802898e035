"""The TCP connection's state and lifecycle (RFC 9293 3.3.1 names where they exist).

One TCB per connection (also the protocol control block of a bound or listening socket).
``TCB`` (tcp/tcb.py) is assembled from ``TCBState`` here and four roles, one module each,
as gVisor's tcp/rcv.go, snd.go, timer.go and NetBSD's tcp_input.c, tcp_output.c,
tcp_timer.c, tcp_usrreq.c:

* ``input.py`` ``TCBInput``: segment arrival and the state machine (RFC 9293 3.10.7),
  ACK processing, loss recovery, RTT samples;
* ``output.py`` ``TCBOutput``: what to send (data, ACKs, SYN/FIN, retransmissions, the
  window advertised), each segment handed finished to the protocol's emitter (emit.py),
  never to the network layer directly;
* ``timers.py`` ``TCBTimers``: retransmission, persist, keepalive, delayed ACK, orphans;
* ``user.py`` ``TCBUser``: the user calls (send, receive, shutdown, close, abort).

Here: the attributes, the transitions every role uses (``set_state``, ``established``,
``enter_time_wait``, ``drop``, ``destroy``) and the option negotiation; TIME_WAIT itself
is a compact record that takes the TCB's place in the protocol's tables (timewait.py).
The roles call each other through ``self``; what one role needs of another is declared
at the end of ``TCBState`` (stubs the roles override), so each role type-checks on its
own. A method of a role costs what a method of one class costs: the TCB class resolves
it (no extra call).

Everything is synchronous: segments arrive through ``segment_arrives``, the user calls
``user_*``, timers call ``on_timer``. The socket object (tcp/socket.py) turns state
changes into trio wake-ups. Sequence numbers are compared only with :mod:`seq`
(modular arithmetic).
"""

from __future__ import annotations

import errno
import math
from enum import IntEnum
from typing import TYPE_CHECKING, cast

from stack.addr import ANY4, Addr, is_v4, pseudo_header_sum
from stack.network import net_header_len
from stack.packet import GSO_TCPV4, GSO_TCPV6, QUEUE_SPARSE
from stack.transport.tcp import congestion
from stack.transport.tcp import seq as sq
from stack.transport.tcp.buffers import RecvBuffer, SendBuffer
from stack.transport.tcp.sack import ReassemblyQueue, Scoreboard
from stack.transport.wire import tcp as wire
from stack.transport.wire.tcp import TCPOptions

if TYPE_CHECKING:
    # cycles, types only: the protocol owns its TCBs and sockets, each holds the protocol;
    # and TCB (tcb.py) is assembled from this state, whose listener queues hold TCBs
    from stack.transport.tcp.proto import TCPProto
    from stack.transport.tcp.socket import TCPSocket
    from stack.transport.tcp.tcb import TCB
    from stack.transport.tcp.timers import TimerEntry

INF = math.inf
IPPROTO_TCP = 6
TCP_HDR = 20
TS_OPT_LEN = 12
#: a TSO super-segment's payload stays under this (the IP datagram's 64 KB, with room
#: for the largest network and TCP headers)
TSO_LIMIT = 65000 - 60

#: a connection key: (local address, local port, remote address, remote port)
ConnKey = tuple[Addr, int, Addr, int]


def mss_for(mtu: int, addr: Addr) -> int:
    """The MSS a path MTU allows toward ``addr``: MTU - network header (of its family)
    - TCP header."""
    return mtu - net_header_len(addr) - TCP_HDR


#: a segment this long either way (a GSO/TSO super-segment) marks a bulk flow
BULK_SEGMENT = 16384


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


class TCBState:
    """One connection's state, and the transitions every role uses."""

    #: every attribute, as slots: ~110 of them is past what an instance dict shares its
    #: keys for, so a dict cost each connection ~3.3 KB; slots ~0.9 KB (the roles and TCB
    #: add none; the weak reference is TimeWait's, timewait.py). A new attribute goes
    #: here as well as in ``__init__`` (else: AttributeError when a TCB is made)
    __slots__ = ("proto", "c", "sock", "state", "laddr", "lport", "raddr", "rport",
                 "pseudo", "bound", "reuseaddr", "v6only", "in_table", "backlog",
                 "syn_queue", "accept_queue", "listener", "iss", "snd_una", "snd_nxt",
                 "snd_max", "snd_wnd", "snd_wl1", "snd_wl2", "max_sndwnd", "snd_buf_seq",
                 "sndbuf", "snd_limit", "wr_shut", "irs", "rcv_nxt", "rcv_adv", "rcvbuf",
                 "rcv_limit", "ooo", "ooo_fin", "fin_rcvd", "rd_shut", "snd_mss",
                 "rcv_mss", "peer_mss", "ws_ok", "snd_scale", "rcv_scale", "ts_ok",
                 "ts_recent", "ts_recent_age", "last_ack_sent", "sack_ok", "scoreboard",
                 "srtt", "rttvar", "rto", "backoff", "rtt_seq", "rtt_time", "cc",
                 "dupacks", "in_recovery", "recover", "rexmit_high", "lost_high",
                 "rexmit_force", "ack_pending", "ack_now", "delack", "timer_at",
                 "timer_entry", "t_rexmt", "t_persist", "t_delack", "t_keep", "t_conn",
                 "persist_shift", "syn_retries", "keep_probes", "last_rcv", "nodelay",
                 "keepalive", "keepidle", "keepintvl", "keepcnt", "ttl", "tos", "error",
                 "softerror", "user_closed", "passive", "rcv_copied", "rcv_mark",
                 "tso_max", "gso_type", "csum_offload", "segs_in", "segs_out",
                 "data_segs_in", "data_segs_out", "bytes_received", "bytes_acked",
                 "bytes_sent", "bytes_retrans", "total_retrans", "rcv_ooopack",
                 "last_data_sent", "last_data_recv", "min_rtt", "delivery_rate", "dr_time",
                 "dr_bytes", "queue", "__weakref__")

    def __init__(self, proto: TCPProto, sock: TCPSocket | None = None) -> None:
        self.proto = proto
        self.c = proto.counters
        cfg = proto.cfg
        self.sock = sock
        self.state = S.CLOSED
        self.laddr: Addr = ANY4
        self.lport = 0
        self.raddr: Addr = ANY4
        self.rport = 0
        #: the pseudo header's sum over the addresses and protocol (set_endpoints): a
        #: segment's is this + its length, one addition per segment
        self.pseudo = 0
        self.bound = False
        self.reuseaddr = False
        self.v6only = False  # IPV6_V6ONLY: an AF_INET6 socket's "::" takes no IPv4
        self.in_table = False
        # listener
        self.backlog = 0
        self.syn_queue: dict[ConnKey, TCB] = {}
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
        self.rcvbuf = RecvBuffer()
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
        #: the device queue of its frames (TxMeta.queue): sparse until a super-segment
        #: goes either way (BULK_SEGMENT), then bulk for good, so a flow's frames never
        #: change queues back and forth (the device would reorder them)
        self.queue = QUEUE_SPARSE
        self.ack_now = False
        self.delack = cfg.delack if cfg.delayed_ack else 0.0
        # timers (absolute trio times; INF = off)
        self.timer_at = INF
        self.timer_entry: TimerEntry | None = None  # the heap's entry for timer_at
        self.t_rexmt = INF
        self.t_persist = INF
        self.t_delack = INF
        self.t_keep = INF
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
        self.gso_type = GSO_TCPV4  # the super-segments' kind (by family: setup_mss)
        self.csum_offload = False
        # per-connection statistics: TCP_INFO, ss -i, top (tcp/info.py reads them)
        self.segs_in = 0
        self.segs_out = 0
        self.data_segs_in = 0
        self.data_segs_out = 0
        self.bytes_received = 0   # in order, delivered to the receive buffer
        self.bytes_acked = 0      # of ours, acknowledged by the peer
        self.bytes_sent = 0       # data sent, retransmissions included
        self.bytes_retrans = 0
        self.total_retrans = 0    # segments retransmitted
        self.rcv_ooopack = 0      # segments received out of order
        self.last_data_sent = 0.0
        self.last_data_recv = 0.0
        self.min_rtt = INF
        self.delivery_rate = 0.0  # bytes/s acknowledged over the last RTT or more
        self.dr_time = 0.0        # start of the delivery-rate interval
        self.dr_bytes = 0         # bytes_acked at its start

    def __repr__(self) -> str:
        return (f"<TCB {self.state.name} {self.lport}->{self.rport} una={self.snd_una} "
                f"nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt}>")

    @property
    def key(self) -> ConnKey:
        return (self.laddr, self.lport, self.raddr, self.rport)

    def set_endpoints(self, laddr: Addr, lport: int, raddr: Addr, rport: int) -> None:
        """The connection's four-tuple, fixed before its first segment is sent."""
        self.laddr, self.lport, self.raddr, self.rport = laddr, lport, raddr, rport
        self.pseudo = pseudo_header_sum(laddr, raddr, IPPROTO_TCP, 0)

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

    # ------------------------------------------------------------------ lifecycle
    def set_state(self, st: State) -> None:
        old = self.state
        self.state = st
        self.c[f"state_{old.name}_to_{st.name}"] += 1
        if st == S.ESTABLISHED:
            self.c["established"] += 1
        self._notify()

    def enter_time_wait(self) -> None:
        """Both FINs are acknowledged: ACK the peer's FIN now (when owed), then leave
        2·MSL of TIME_WAIT to a compact record in the connection table (timewait.py) -
        this TCB is out of the tables and timers, freed once no socket holds it. Past
        ``net.inet.tcp.max_tw_buckets`` records the connection is closed at once
        (``tw_overflow``, Linux's TCPTimeWaitOverflow)."""
        if self.ack_now:
            self._xmit(self.snd_nxt, wire.ACK)
        self.timer_at_all_off()
        p = self.proto
        if p.tw_count >= p.cfg.max_tw_buckets:
            self.c["tw_overflow"] += 1
            self.destroy()
            return
        self.set_state(S.TIME_WAIT)
        if not p.time_wait(cast("TCB", self)):
            self.destroy()

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
        self.proto.remove(cast("TCB", self))
        self._notify()

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
        raddr = self.raddr
        mss = min(self.peer_mss, mss_for(self.proto.route_mtu(raddr), raddr))
        if self.ts_ok:
            mss -= TS_OPT_LEN
        self.snd_mss = max(mss, 64)
        self.cc.set_mss(self.snd_mss)
        self.cc.cwnd = congestion.INITIAL_WINDOW_SEGMENTS * self.snd_mss
        offl = self.proto.route_offloads(raddr)
        self.csum_offload = "csum" in offl
        v4 = is_v4(raddr)
        self.gso_type = GSO_TCPV4 if v4 else GSO_TCPV6
        if ("tso4" if v4 else "tso6") in offl and self.proto.cfg.tso and self.csum_offload:
            self.tso_max = TSO_LIMIT // self.snd_mss * self.snd_mss
        else:
            self.tso_max = 0

    # -------------------------------------------- what the roles provide one another
    # Declared here so that each role module type-checks alone; TCB (tcb.py) lists the
    # roles before TCBState, so these are never the ones called.
    def output_soon(self) -> None:
        raise NotImplementedError  # output.py

    def output(self, retransmit_timeout: bool = False) -> None:
        raise NotImplementedError  # output.py

    def _xmit(self, seqno: int, flags: int, payload: list[memoryview] | None = None,
              plen: int = 0, options: bytes | None = None, window: int | None = None) -> int:
        raise NotImplementedError  # output.py

    def _send_control(self, seqno: int, flags: int) -> None:
        raise NotImplementedError  # output.py

    def send_syn(self) -> None:
        raise NotImplementedError  # output.py

    def send_rst(self) -> None:
        raise NotImplementedError  # output.py

    def window_update_needed(self) -> bool:
        raise NotImplementedError  # output.py

    def rearm(self) -> None:
        raise NotImplementedError  # timers.py

    def _arm_persist(self, now: float) -> None:
        raise NotImplementedError  # timers.py

    def arm_keepalive(self) -> None:
        raise NotImplementedError  # timers.py

    def timer_at_all_off(self) -> None:
        raise NotImplementedError  # timers.py

    def user_shutdown_write(self) -> None:
        raise NotImplementedError  # user.py
