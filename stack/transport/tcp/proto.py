"""TCP as a protocol of the stack: demultiplexing, LISTEN (SYN queue, SYN cookies), port
binding, RSTs for closed ports, ICMP errors, sysctls, the timer task.

Addresses are ``stack.addr.Addr`` values (either family); the connection table is keyed
by ``(laddr, lport, raddr, rport)`` and the listeners by ``(laddr, lport)``, an unbound
listener under its family's unspecified address. Segments leave through ``self.emit``
(emit.py), the network layer is asked only about routes (``route_mtu``,
``route_offloads``, ``source_for``, ``is_local``, ``is_broadcast``)."""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from stack.addr import AF_INET, ANY6, Addr, family, is_multicast, pseudo_header_sum, unspecified
from stack.batch import RxBatch
from stack.counters import Counters
from stack.network import IPInfo, NetworkLayer, control_errno, scoped_source
from stack.sysctl import Sysctl
from stack.transport.knobs import Knobs, register_sysctls
from stack.transport.ports import EphemeralPorts
from stack.transport.sockaddr import UNSPECIFIED, overlaps
from stack.transport.tcp import seq as sq
from stack.transport.tcp.counters import TCP_COUNTERS
from stack.transport.tcp.emit import Emitter, NetworkEmitter
from stack.transport.tcp.isn import ISNGenerator, SynCookies
from stack.transport.tcp.state import TS_OPT_LEN, ConnKey, mss_for
from stack.transport.tcp.tcb import INF, IPPROTO_TCP, TCB, State
from stack.transport.tcp.timers import TimerService
from stack.transport.tcp.timewait import TimeWait
from stack.transport.wire import tcp as wire
from stack.transport.wire.checksum import ParseError, checksum, verify
from stack.transport.wire.tcp import ACK, FIN, RST, SYN, TCPOptions, TCPSegment

if TYPE_CHECKING:  # cycle: the protocol makes its sockets, each holds the protocol; types only
    from stack.transport.tcp.socket import TCPSocket

S = State

#: what the connection table holds: a TCB, or the compact record of one in TIME_WAIT
Conn = TCB | TimeWait


def _err(code: int, msg: str = "") -> OSError:
    return OSError(code, msg or os.strerror(code))


@dataclass
class TCPConfig:
    """Live copy of the net.inet.tcp.* sysctls (times in seconds)."""

    msl: float = 30.0
    max_tw_buckets: int = 16384
    delayed_ack: int = 1
    delack: float = 0.04
    sack: int = 1
    timestamps: int = 1
    wscale: int = 1
    cc_algorithm: str = "cubic"
    rto_init: float = 1.0
    rto_min: float = 0.2
    rto_max: float = 60.0
    granularity: float = 0.001
    persist_min: float = 0.2
    persist_max: float = 60.0
    keepidle: float = 7200.0
    keepintvl: float = 75.0
    keepcnt: int = 8
    syn_backlog: int = 256
    syncookies: int = 1
    drop_synfin: int = 1
    syn_retries: int = 6
    synack_retries: int = 5
    max_retries: int = 15
    fin_wait2_timeout: float = 60.0
    sendspace: int = 128 * 1024
    recvspace: int = 128 * 1024
    sendbuf_max: int = 4 * 1024 * 1024
    recvbuf_max: int = 4 * 1024 * 1024
    recvbuf_auto: int = 1
    mssdflt: int = 536
    tso: int = 1
    challenge_ack_limit: int = 1000
    port_first: int = 49152
    port_last: int = 65535


#: sysctl name, TCPConfig attribute, unit scale (ms→s), description, lo, hi
KNOBS: Knobs = [
    ("net.inet.tcp.msl", "msl", 1000, "maximum segment lifetime, ms (TIME_WAIT = 2*msl)", 1, 600000),
    ("net.inet.tcp.max_tw_buckets", "max_tw_buckets", 0,
     "TIME_WAIT entries at most; beyond, a closing connection is freed at once", 0, 1 << 24),
    ("net.inet.tcp.delayed_ack", "delayed_ack", 0, "delay ACKs (1) or ACK every segment (0)", 0, 1),
    ("net.inet.tcp.delacktime", "delack", 1000, "delayed-ACK timeout, ms", 1, 500),
    ("net.inet.tcp.sack.enable", "sack", 0, "SACK (RFC 2018)", 0, 1),
    ("net.inet.tcp.timestamps", "timestamps", 0, "timestamps (RFC 7323)", 0, 1),
    ("net.inet.tcp.wscale", "wscale", 0, "window scaling (RFC 7323)", 0, 1),
    ("net.inet.tcp.cc.algorithm", "cc_algorithm", 0, "congestion control: newreno | cubic", None, None),
    ("net.inet.tcp.rexmit_initial", "rto_init", 1000, "initial RTO, ms", 10, 60000),
    ("net.inet.tcp.rexmit_min", "rto_min", 1000, "minimum RTO, ms", 1, 60000),
    ("net.inet.tcp.rexmit_max", "rto_max", 1000, "maximum RTO, ms", 100, 600000),
    ("net.inet.tcp.keepidle", "keepidle", 1000, "keepalive idle time, ms", 1, 2**31 - 1),
    ("net.inet.tcp.keepintvl", "keepintvl", 1000, "keepalive probe interval, ms", 1, 2**31 - 1),
    ("net.inet.tcp.keepcnt", "keepcnt", 0, "keepalive probes before drop", 1, 1000),
    ("net.inet.tcp.syncache.limit", "syn_backlog", 0, "SYN queue bound per listener", 1, 1 << 20),
    ("net.inet.tcp.syncookies", "syncookies", 0, "SYN cookies when the SYN queue is full", 0, 1),
    ("net.inet.tcp.drop_synfin", "drop_synfin", 0, "drop SYN+FIN segments to a listener (BSD)", 0, 1),
    ("net.inet.tcp.syn_retries", "syn_retries", 0, "SYN retransmissions before ETIMEDOUT", 1, 20),
    ("net.inet.tcp.synack_retries", "synack_retries", 0, "SYN-ACK retransmissions", 1, 20),
    ("net.inet.tcp.retries", "max_retries", 0, "data retransmissions before ETIMEDOUT", 1, 30),
    ("net.inet.tcp.finwait2_timeout", "fin_wait2_timeout", 1000, "orphan FIN_WAIT_2 limit, ms", 1, 2**31 - 1),
    ("net.inet.tcp.sendspace", "sendspace", 0, "initial send buffer, bytes", 4096, 1 << 30),
    ("net.inet.tcp.recvspace", "recvspace", 0, "initial receive buffer, bytes", 4096, 1 << 30),
    ("net.inet.tcp.sendbuf_max", "sendbuf_max", 0, "send buffer growth limit, bytes", 4096, 1 << 30),
    ("net.inet.tcp.recvbuf_max", "recvbuf_max", 0, "receive buffer growth limit, bytes", 4096, 1 << 30),
    ("net.inet.tcp.recvbuf_auto", "recvbuf_auto", 0, "grow receive buffers automatically", 0, 1),
    ("net.inet.tcp.mssdflt", "mssdflt", 0, "MSS when the peer sends none", 64, 65495),
    ("net.inet.tcp.tso", "tso", 0, "use TSO super-segments when the route offers tso4", 0, 1),
    ("net.inet.tcp.challenge_ack_limit", "challenge_ack_limit", 0, "challenge ACKs per second", 1, 1 << 30),
    ("net.inet.ip.portrange.first", "port_first", 0, "first ephemeral port", 1024, 65535),
    ("net.inet.ip.portrange.last", "port_last", 0, "last ephemeral port", 1024, 65535),
]


class TCPProto:
    name = "tcp"

    def __init__(self, inet: NetworkLayer, sysctl: Sysctl | None = None,
                 counters: Counters | None = None, emitter: Emitter | None = None) -> None:
        self.inet = inet
        self.cfg = TCPConfig()
        if sysctl is not None:
            register_sysctls(sysctl, self.cfg, KNOBS)
        self.counters = counters if counters is not None else Counters("tcp", TCP_COUNTERS)
        #: where every segment goes (emit.py): the network layer, or a test's recorder
        self.emitter: Emitter = emitter if emitter is not None else NetworkEmitter(inet)
        self.emit = self.emitter.emit
        self.timers = TimerService()
        #: the stack's receive batch (stack/batch.py), when a stack wires one: a
        #: connection's output after its segments runs once at the batch's end
        self.batch: RxBatch | None = None
        self.isn = ISNGenerator()
        self.cookies = SynCookies()
        #: connections by four-tuple; one in TIME_WAIT is a compact record (timewait.py)
        self.conns: dict[ConnKey, Conn] = {}
        self.listeners: dict[tuple[Addr, int], TCB] = {}
        #: port -> what is bound to it, as an ordered set (dict keys): binding, replacing a
        #: connection by its TIME_WAIT record and unbinding are O(1) however many
        #: connections share the port (a busy listener's port holds them all)
        self.ports: dict[int, dict[Conn, None]] = {}
        #: TimeWait records in ``conns`` (at most ``cfg.max_tw_buckets``)
        self.tw_count = 0
        self.challenge_epoch = 0.0
        self.challenge_count = 0
        self._ts_offset = random.getrandbits(32)
        self._ports = EphemeralPorts()
        #: test hook: called with every TCB that becomes ESTABLISHED by a listener
        self.on_accept: list[Callable[[TCB], None]] = []

    # ------------------------------------------------------------- environment
    def now(self) -> float:
        return trio.current_time()

    def ts_clock(self) -> int:
        return (int(trio.current_time() * 1000) + self._ts_offset) & sq.MASK

    def route_mtu(self, dst: Addr) -> int:
        """The path MTU toward ``dst`` (1500 when there is no route yet)."""
        return self.inet.route_mtu(dst) or 1500

    def route_offloads(self, dst: Addr) -> set[str]:
        return self.inet.route_offloads(dst)

    def socket(self, family: int = AF_INET) -> TCPSocket:
        """A socket of ``family`` (AF_INET, or AF_INET6: dual-stack unless IPV6_V6ONLY)."""
        from stack.transport.tcp.socket import TCPSocket  # the socket module imports this one

        return TCPSocket(self, family=family)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await self.timers.run()

    # ------------------------------------------------------------- ports
    def _conflicts(self, tcb: TCB, laddr: Addr, port: int) -> bool:
        for t in self.ports.get(port, ()):
            if t is tcb:
                continue
            if not overlaps(laddr, tcb.v6only, t.laddr, getattr(t, "v6only", False)):
                continue
            if t.state == S.LISTEN:
                return True
            # BSD: SO_REUSEADDR on the new socket allows sharing with connections (any
            # state but LISTEN) and with bound sockets that set it too
            if tcb.reuseaddr and (t.reuseaddr or t.rport):
                continue
            return True
        return False

    def bind(self, tcb: TCB, laddr: Addr, port: int) -> None:
        if tcb.bound:
            raise _err(errno.EINVAL, "socket is already bound")
        if laddr not in UNSPECIFIED and not self.inet.is_local(laddr):
            self.counters["bind_addrnotavail"] += 1
            raise _err(errno.EADDRNOTAVAIL)
        if port == 0:
            port = self._ephemeral(tcb, laddr)
        elif self._conflicts(tcb, laddr, port):
            self.counters["bind_addrinuse"] += 1
            raise _err(errno.EADDRINUSE)
        tcb.laddr = laddr
        tcb.lport = port
        tcb.bound = True
        self.ports.setdefault(port, {})[tcb] = None

    def _ephemeral(self, tcb: TCB, laddr: Addr) -> int:
        return self._ports.pick(self.cfg.port_first, self.cfg.port_last, self.ports,
                                self.counters)

    def _unbind(self, tcb: TCB) -> None:
        if tcb.bound:
            lst = self.ports.get(tcb.lport)
            if lst is not None and tcb in lst:
                del lst[tcb]
                if not lst:
                    del self.ports[tcb.lport]
            tcb.bound = False

    # ------------------------------------------------------------- connect / listen
    def connect(self, tcb: TCB, raddr: Addr, rport: int, ifname: str | None = None) -> None:
        """Start the handshake to ``raddr``; ``ifname``: the interface a link-local
        ``raddr``'s scope id names (the source is that interface's address, which then
        keeps the connection on it)."""
        if tcb.state == S.LISTEN:
            raise _err(errno.EINVAL)
        if tcb.state != S.CLOSED:
            raise _err(errno.EALREADY if tcb.state == S.SYN_SENT else errno.EISCONN)
        if rport == 0 or raddr in UNSPECIFIED:
            raise _err(errno.EADDRNOTAVAIL if raddr in UNSPECIFIED else errno.ECONNREFUSED)
        if self.inet.is_broadcast(raddr) or is_multicast(raddr):
            raise _err(errno.ENETUNREACH, "TCP to a broadcast/multicast address")
        laddr = tcb.laddr
        if laddr not in UNSPECIFIED and family(laddr) != family(raddr):
            raise _err(errno.ENETUNREACH, "bound to an address of the other family")
        if laddr in UNSPECIFIED:
            src = scoped_source(self.inet, raddr, ifname)
            if src is None:
                self.counters["connect_noroute"] += 1
                raise _err(errno.ENETUNREACH)
            laddr = src
        if not tcb.bound:
            self.bind(tcb, tcb.laddr, 0)
        if (laddr, tcb.lport, raddr, rport) in self.conns:
            raise _err(errno.EADDRINUSE)
        tcb.set_endpoints(laddr, tcb.lport, raddr, rport)
        tcb.iss = self.isn(laddr, tcb.lport, raddr, rport)
        tcb.snd_una = tcb.snd_nxt = tcb.snd_max = tcb.iss
        tcb.snd_buf_seq = sq.add(tcb.iss, 1)
        # a socket may connect again after a failed attempt: nothing of that one counts
        tcb.softerror = 0
        tcb.syn_retries = tcb.backoff = 0
        tcb.rto = self.cfg.rto_init
        tcb.rcv_mss = mss_for(self.route_mtu(raddr), raddr)
        tcb.rcv_limit = max(tcb.rcv_limit, 0)
        self.conns[tcb.key] = tcb
        tcb.in_table = True
        tcb.set_state(S.SYN_SENT)
        self.counters["active_opens"] += 1
        tcb.send_syn()

    def listen(self, tcb: TCB, backlog: int) -> None:
        if tcb.state == S.LISTEN:
            tcb.backlog = max(backlog, 1)
            return
        if tcb.state != S.CLOSED:
            raise _err(errno.EINVAL)
        if not tcb.bound:
            self.bind(tcb, tcb.laddr, 0)
        key = (tcb.laddr, tcb.lport)
        for t in self.ports.get(tcb.lport, ()):
            if t is not tcb and t.state == S.LISTEN and overlaps(
                    t.laddr, getattr(t, "v6only", False), tcb.laddr, tcb.v6only):
                raise _err(errno.EADDRINUSE)
        tcb.backlog = max(backlog, 1)
        self.listeners[key] = tcb
        tcb.set_state(S.LISTEN)

    def close_listener(self, tcb: TCB) -> None:
        for child in list(tcb.syn_queue.values()) + list(tcb.accept_queue):
            child.listener = None
            child.user_abort()
        tcb.syn_queue.clear()
        tcb.accept_queue.clear()
        if self.listeners.get((tcb.laddr, tcb.lport)) is tcb:
            del self.listeners[(tcb.laddr, tcb.lport)]
        tcb.state = S.CLOSED
        self._unbind(tcb)
        tcb._notify()

    def remove(self, tcb: TCB) -> None:
        if tcb.in_table:
            if self.conns.get(tcb.key) is tcb:
                del self.conns[tcb.key]
            tcb.in_table = False
        lst = tcb.listener
        if lst is not None:
            lst.syn_queue.pop(tcb.key, None)
            if tcb in lst.accept_queue:
                lst.accept_queue.remove(tcb)
            tcb.listener = None
        if self.listeners.get((tcb.laddr, tcb.lport)) is tcb:
            del self.listeners[(tcb.laddr, tcb.lport)]
        self._unbind(tcb)

    def time_wait(self, tcb: TCB) -> bool:
        """``tcb`` enters TIME_WAIT: a compact record takes its place in the connection
        table and the port's bindings, and the 2MSL timer starts (timewait.py). False,
        and nothing done, when it is not in the table. The caller (state.py
        ``enter_time_wait``) has checked ``net.inet.tcp.max_tw_buckets`` first."""
        if not tcb.in_table:
            return False
        tw = TimeWait(self, tcb)
        key = tcb.key
        if self.conns.get(key) is tcb:
            self.conns[key] = tw
        tcb.in_table = False
        lst = self.ports.get(tcb.lport)
        if tcb.bound and lst is not None and tcb in lst:
            del lst[tcb]
            lst[tw] = None
        tcb.bound = False
        self.remove(tcb)  # a listener's queues, if it is still in one
        self.tw_count += 1
        tw.arm(self.now())
        return True

    def tw_remove(self, tw: TimeWait) -> None:
        key = tw.key
        if self.conns.get(key) is tw:
            del self.conns[key]
            self.tw_count -= 1
        lst = self.ports.get(tw.lport)
        if lst is not None and tw in lst:
            del lst[tw]
            if not lst:
                del self.ports[tw.lport]

    def challenge_allowed(self) -> bool:
        """May a challenge ACK go now (RFC 5961 7: ``challenge_ack_limit`` per second,
        for the whole protocol)? Counts it, or that it was held back."""
        now = self.now()
        if now - self.challenge_epoch >= 1.0:
            self.challenge_epoch = now
            self.challenge_count = 0
        if self.challenge_count >= self.cfg.challenge_ack_limit:
            self.counters["challenge_ack_limited"] += 1
            return False
        self.challenge_count += 1
        self.counters["challenge_acks"] += 1
        return True

    def handshake_done(self, tcb: TCB) -> bool:
        """A passive connection completed its handshake: SYN queue → accept queue."""
        lst = tcb.listener
        if lst is None or lst.state != S.LISTEN:
            return True
        if len(lst.accept_queue) >= lst.backlog:
            self.counters["listen_overflow_ack_dropped"] += 1
            return False
        lst.syn_queue.pop(tcb.key, None)
        lst.accept_queue.append(tcb)
        self.counters["passive_opens"] += 1
        for fn in self.on_accept:
            fn(tcb)
        if lst.sock is not None:
            lst.sock._notify()
        return True

    # ------------------------------------------------------------- input
    def input(self, info: IPInfo) -> None:
        c = self.counters
        data = info.payload
        c["segs_in"] += 1
        try:
            seg = wire.parse(data)
        except ParseError:
            c["drop_malformed"] += 1
            return
        if not info.csum_valid and not verify(
                (data,), pseudo_header_sum(info.src, info.dst, IPPROTO_TCP, len(data))):
            c["drop_bad_checksum"] += 1
            return
        if info.broadcast:  # or multicast: the network layer says (stack/network.py)
            c["drop_broadcast"] += 1
            return
        key = (info.dst, seg.dport, info.src, seg.sport)
        tcb = self.conns.get(key)
        if tcb is not None:
            if tcb.state == S.TIME_WAIT and seg.flags & SYN and not seg.flags & (ACK | RST) \
                    and sq.gt(seg.seq, tcb.rcv_nxt):
                c["timewait_reused"] += 1  # RFC 6191-style: a new incarnation
                tcb.destroy()
            else:
                tcb.segment_arrives(seg)
                return
        lst = self.listeners.get((info.dst, seg.dport)) \
            or self.listeners.get((unspecified(family(info.dst)), seg.dport))
        if lst is None and info.dst >> 32 == 0xFFFF:
            # IPv4 to a dual-stack AF_INET6 listener on "::" (not IPV6_V6ONLY)
            lst = self.listeners.get((ANY6, seg.dport))
            if lst is not None and lst.v6only:
                lst = None
        if lst is None:
            if seg.flags & RST:
                c["drop_rst_closed_port"] += 1
                return
            c["rst_closed_port"] += 1
            self.send_rst_for(info.dst, info.src, seg, len(seg.payload))
            return
        self._listen_input(lst, seg, info.dst, info.src)

    def _listen_input(self, lst: TCB, seg: TCPSegment, laddr: Addr, raddr: Addr) -> None:
        c = self.counters
        flags = seg.flags
        if flags & RST:
            c["drop_rst_listen"] += 1
            return
        if flags & ACK:
            if not flags & SYN and self.cfg.syncookies and self._cookie_ack(lst, seg, laddr, raddr):
                return
            c["rst_listen_ack"] += 1
            self.send_rst_for(laddr, raddr, seg, len(seg.payload))
            return
        if not flags & SYN:
            c["drop_listen_no_syn"] += 1
            return
        if flags & FIN and self.cfg.drop_synfin:
            c["drop_synfin"] += 1  # BSD net.inet.tcp.drop_synfin: a scan, not an open
            return
        if len(lst.accept_queue) >= lst.backlog:
            c["listen_overflow_syn_dropped"] += 1
            return
        if len(lst.syn_queue) >= min(self.cfg.syn_backlog, max(lst.backlog, 16) * 2):
            if self.cfg.syncookies:
                c["syncookies_sent"] += 1
                self._send_cookie(lst, seg, laddr, raddr)
                return
            # bounded queue: evict the oldest embryonic connection
            oldest = next(iter(lst.syn_queue.values()))
            c["syn_queue_evicted"] += 1
            oldest.destroy()
        tcb = TCB(self, None)
        self._inherit(lst, tcb)
        tcb.passive = True
        tcb.listener = lst
        tcb.set_endpoints(laddr, seg.dport, raddr, seg.sport)
        tcb.irs = seg.seq
        tcb.rcv_nxt = tcb.rcv_adv = sq.add(seg.seq, 1)
        tcb.iss = self.isn(laddr, seg.dport, raddr, seg.sport)
        tcb.snd_una = tcb.snd_nxt = tcb.snd_max = tcb.iss
        tcb.snd_buf_seq = sq.add(tcb.iss, 1)
        tcb.snd_wnd = seg.wnd
        tcb.apply_syn_options(seg.opts)
        tcb.rcv_mss = mss_for(self.route_mtu(raddr), raddr)
        tcb.setup_mss()
        tcb.state = S.SYN_RECEIVED
        self.conns[tcb.key] = tcb
        tcb.in_table = True
        tcb.bound = True
        self.ports.setdefault(tcb.lport, {})[tcb] = None
        lst.syn_queue[tcb.key] = tcb
        c["syn_in"] += 1
        tcb.send_syn()

    def _inherit(self, lst: TCB, tcb: TCB) -> None:
        tcb.nodelay = lst.nodelay
        tcb.keepalive = lst.keepalive
        tcb.keepidle, tcb.keepintvl, tcb.keepcnt = lst.keepidle, lst.keepintvl, lst.keepcnt
        tcb.ttl = lst.ttl
        tcb.tos = lst.tos
        tcb.reuseaddr = lst.reuseaddr
        tcb.v6only = lst.v6only
        tcb.rcv_limit = lst.rcv_limit
        tcb.snd_limit = lst.snd_limit
        tcb.rcv_scale = lst.rcv_scale

    # SYN cookies: see isn.SynCookies for the encoding
    def _send_cookie(self, lst: TCB, seg: TCPSegment, laddr: Addr, raddr: Addr) -> None:
        o = seg.opts or TCPOptions()
        our_mss = mss_for(self.route_mtu(raddr), raddr)
        mss_in = min(o.mss or 536, our_mss)
        cookie = self.cookies.make(laddr, seg.dport, raddr, seg.sport, seg.seq, mss_in)
        opts = TCPOptions(mss=our_mss)
        if self.cfg.timestamps and o.ts is not None:
            ws = o.wscale if (self.cfg.wscale and o.wscale is not None) else 0xF
            sack = 1 if (self.cfg.sack and o.sack_perm) else 0
            tsval = (self.ts_clock() & ~0x3F) | (sack << 4) | ws
            opts.ts = (tsval & sq.MASK, o.ts[0])
            if ws != 0xF:
                opts.wscale = lst.rcv_scale
            opts.sack_perm = bool(sack)
        hdr = wire.emit_header(seg.dport, seg.sport, cookie, sq.add(seg.seq, 1), SYN | ACK,
                               min(lst.rcv_limit, 0xFFFF), opts.emit())
        self._emit_raw(laddr, raddr, hdr)

    def _cookie_ack(self, lst: TCB, seg: TCPSegment, laddr: Addr, raddr: Addr) -> bool:
        c = self.counters
        irs = sq.sub(seg.seq, 1) & sq.MASK
        iss = sq.sub(seg.ack, 1) & sq.MASK
        mss = self.cookies.check(laddr, seg.dport, raddr, seg.sport, irs, iss)
        if mss is None:
            return False
        if len(lst.accept_queue) >= lst.backlog:
            c["syncookie_overflow"] += 1
            return True  # drop; the client will retransmit
        c["syncookies_accepted"] += 1
        tcb = TCB(self, None)
        self._inherit(lst, tcb)
        tcb.passive = True
        tcb.listener = lst
        tcb.set_endpoints(laddr, seg.dport, raddr, seg.sport)
        tcb.irs = irs
        tcb.rcv_nxt = seg.seq
        # the cookie SYN-ACK offered this window (unscaled): data on the ACK that made
        # the connection, up to that edge, is inside what the peer was told it may send
        tcb.rcv_adv = sq.add(seg.seq, min(lst.rcv_limit, 0xFFFF))
        tcb.iss = iss
        tcb.snd_una = tcb.snd_nxt = tcb.snd_max = seg.ack
        tcb.snd_buf_seq = seg.ack
        opts = TCPOptions(mss=mss)
        o = seg.opts
        if o is not None and o.ts is not None and self.cfg.timestamps:
            echoed = o.ts[1]
            ws = echoed & 0xF
            opts.ts = (o.ts[0], 0)
            if ws != 0xF:
                opts.wscale = ws
            opts.sack_perm = bool(echoed & 0x10)
        tcb.apply_syn_options(opts)
        tcb.rcv_mss = mss_for(self.route_mtu(raddr), raddr)
        tcb.setup_mss()
        tcb.snd_wnd = seg.wnd << tcb.snd_scale
        tcb.max_sndwnd = tcb.snd_wnd
        tcb.snd_wl1 = seg.seq
        tcb.snd_wl2 = seg.ack
        tcb.state = S.SYN_RECEIVED
        self.conns[tcb.key] = tcb
        tcb.in_table = True
        tcb.bound = True
        self.ports.setdefault(tcb.lport, {})[tcb] = None
        lst.accept_queue.append(tcb)
        tcb.established()
        self.counters["passive_opens"] += 1
        for fn in self.on_accept:
            fn(tcb)
        if lst.sock is not None:
            lst.sock._notify()
        if len(seg.payload) or seg.flags & 0x01:
            tcb.segment_arrives(seg)
        return True

    def send_rst_for(self, laddr: Addr, raddr: Addr, seg: TCPSegment, plen: int) -> None:
        """RFC 9293 3.10.7.1: the reset for a segment no connection accepts. Never for a RST."""
        if seg.flags & RST:
            return
        self.counters["rst_out"] += 1
        if seg.flags & ACK:
            hdr = wire.emit_header(seg.dport, seg.sport, seg.ack, 0, RST, 0)
        else:
            seg_len = plen + (1 if seg.flags & SYN else 0) + (1 if seg.flags & 0x01 else 0)
            hdr = wire.emit_header(seg.dport, seg.sport, 0, sq.add(seg.seq, seg_len), RST | ACK, 0)
        self._emit_raw(laddr, raddr, hdr)

    def _emit_raw(self, laddr: Addr, raddr: Addr, hdr: bytearray) -> None:
        """A segment of no connection (RST, SYN-ACK with a cookie), header only."""
        c = checksum((hdr,), pseudo_header_sum(laddr, raddr, IPPROTO_TCP, len(hdr)))
        hdr[16] = c >> 8
        hdr[17] = c & 0xFF
        self.emit(laddr, raddr, hdr, None, None)

    # ------------------------------------------------------------- ICMP errors
    def icmp_error(self, icmp_type: int, code: int, src: Addr, dst: Addr, hdr: memoryview,
                   extra: int = 0) -> None:
        c = self.counters
        if len(hdr) < 8:
            c["icmp_short"] += 1
            return
        sport = (hdr[0] << 8) | hdr[1]
        dport = (hdr[2] << 8) | hdr[3]
        seqno = int.from_bytes(hdr[4:8], "big")
        tcb = self.conns.get((src, sport, dst, dport))
        if tcb is None:
            c["icmp_no_conn"] += 1
            return
        if isinstance(tcb, TimeWait):
            c["icmp_time_wait"] += 1  # nothing left to tell (Linux's tcp_v4_err too)
            return
        if not sq.between(tcb.snd_una, seqno, sq.add(tcb.snd_max, 1)):
            c["icmp_bad_seq"] += 1  # RFC 5927: must refer to data in flight
            return
        if icmp_type == 3 and code == 4:  # fragmentation needed: path MTU
            if extra >= 68:
                mss = mss_for(extra, dst) - (TS_OPT_LEN if tcb.ts_ok else 0)
                if mss < tcb.snd_mss:
                    c["pmtu_reduced"] += 1
                    tcb.snd_mss = max(mss, 64)
                    tcb.cc.set_mss(tcb.snd_mss)
                    tcb.snd_nxt = tcb.snd_una
                    tcb.output()
            return
        err = control_errno(icmp_type, code)
        if not err:
            c["icmp_ignored"] += 1  # redirect, source quench, ...: nothing for TCP to do
            return
        st = tcb.state
        if icmp_type == 3 and code in (2, 3) and st == S.SYN_SENT:
            # hard error (RFC 1122 4.2.3.9, BSD tcp_drop_syn_sent): protocol unreachable
            # is ENOPROTOOPT, port unreachable ECONNREFUSED
            c["icmp_hard_error"] += 1
            tcb.drop(err)
            return
        # soft errors (BSD tcp_notify); hard errors after SYN_SENT are soft (RFC 5461)
        if st == S.ESTABLISHED and err in (errno.EHOSTUNREACH, errno.ENETUNREACH,
                                           errno.EHOSTDOWN):
            c["icmp_soft_error_established"] += 1  # routes come back: only remembered
            tcb.softerror = err
            return
        if st in (S.SYN_SENT, S.SYN_RECEIVED) and tcb.syn_retries > 3 and tcb.softerror:
            # a second error after several SYN retransmissions: give up now rather than
            # wait for the connect to time out (BSD: t_rxtshift > 3 && t_softerror)
            c["conn_dropped_soft_error"] += 1
            tcb.drop(err)
            return
        c["icmp_soft_error"] += 1
        tcb.softerror = err  # reported instead of ETIMEDOUT if the connection times out

    # ------------------------------------------------------------- introspection
    def connections(self) -> list[Conn]:
        """Connections (TIME_WAIT records included) and listeners."""
        return list(self.conns.values()) + [t for t in self.listeners.values()]

    def stats(self) -> dict[str, int]:
        return self.counters.snapshot()


__all__ = ["TCPProto", "TCPConfig", "KNOBS", "INF", "Conn"]
