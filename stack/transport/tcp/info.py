"""TCP_INFO: one connection's state as Linux's ``struct tcp_info`` (linux/tcp.h).

``tcp_info(conn)`` reads a TCB (or a TIME_WAIT record, or a listener) into a dict keyed
by Linux's field names without the ``tcpi_`` prefix; ``pack`` lays it out byte for byte
as Linux does (232 bytes: the layout up to ``tcpi_snd_wnd``, Linux 5.4 and later), so
code that unpacks Linux's tcp_info reads it unchanged; ``unpack`` is the inverse. The C
twin is ``struct iop_tcp_info`` in rmgr/include/io_pkt_socket.h (the tests compare its
offsets with linux/tcp.h's and with ``LAYOUT`` here).

Units are Linux's: times in microseconds (rto, ato, rtt, rttvar, min_rtt) or
milliseconds (last_*), windows in segments (snd_cwnd, snd_ssthresh, unacked, sacked,
lost, retrans), rates in bytes per second. Where the stack keeps nothing of the kind the
field is 0 (fackets, rcv_rtt, busy_time, rwnd_limited, sndbuf_limited, delivered_ce,
dsack_dups, reord_seen); the pacing rate is computed as Linux computes it from cwnd and
the smoothed RTT (the stack does not pace); the delivery rate is the bytes acknowledged
over the last interval of at least one RTT (input.py ``_delivery_sample``).
"""

from __future__ import annotations

import struct

from stack.transport.tcp import seq as sq
from stack.transport.tcp.proto import Conn
from stack.transport.tcp.state import INF, State
from stack.transport.tcp.tcb import TCB

S = State

#: Linux's socket option number (netinet/tcp.h)
TCP_INFO = 11

#: Linux's TCP states (include/net/tcp_states.h)
LINUX_STATES: dict[State, int] = {
    S.ESTABLISHED: 1, S.SYN_SENT: 2, S.SYN_RECEIVED: 3, S.FIN_WAIT_1: 4, S.FIN_WAIT_2: 5,
    S.TIME_WAIT: 6, S.CLOSED: 7, S.CLOSE_WAIT: 8, S.LAST_ACK: 9, S.LISTEN: 10, S.CLOSING: 11,
}
#: tcpi_ca_state (include/uapi/linux/tcp.h enum tcp_ca_state)
CA_OPEN, CA_DISORDER, CA_CWR, CA_RECOVERY, CA_LOSS = range(5)
#: tcpi_options bits
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE, TCPI_OPT_ECN = 1, 2, 4, 8
#: Linux's "no value yet" for snd_ssthresh (TCP_INFINITE_SSTHRESH) and min_rtt (~0U)
INFINITE_SSTHRESH = 0x7FFFFFFF
U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF

#: (field, struct code) in Linux's order; ``wscale`` is the byte holding the bit fields
#: ``snd_wscale:4, rcv_wscale:4`` and ``flags`` the one holding
#: ``delivery_rate_app_limited:1, fastopen_client_fail:2``
LAYOUT: tuple[tuple[str, str], ...] = (
    ("state", "B"), ("ca_state", "B"), ("retransmits", "B"), ("probes", "B"),
    ("backoff", "B"), ("options", "B"), ("wscale", "B"), ("flags", "B"),
    ("rto", "I"), ("ato", "I"), ("snd_mss", "I"), ("rcv_mss", "I"),
    ("unacked", "I"), ("sacked", "I"), ("lost", "I"), ("retrans", "I"), ("fackets", "I"),
    ("last_data_sent", "I"), ("last_ack_sent", "I"), ("last_data_recv", "I"),
    ("last_ack_recv", "I"),
    ("pmtu", "I"), ("rcv_ssthresh", "I"), ("rtt", "I"), ("rttvar", "I"),
    ("snd_ssthresh", "I"), ("snd_cwnd", "I"), ("advmss", "I"), ("reordering", "I"),
    ("rcv_rtt", "I"), ("rcv_space", "I"), ("total_retrans", "I"),
    ("pacing_rate", "Q"), ("max_pacing_rate", "Q"), ("bytes_acked", "Q"),
    ("bytes_received", "Q"), ("segs_out", "I"), ("segs_in", "I"),
    ("notsent_bytes", "I"), ("min_rtt", "I"), ("data_segs_in", "I"), ("data_segs_out", "I"),
    ("delivery_rate", "Q"),
    ("busy_time", "Q"), ("rwnd_limited", "Q"), ("sndbuf_limited", "Q"),
    ("delivered", "I"), ("delivered_ce", "I"),
    ("bytes_sent", "Q"), ("bytes_retrans", "Q"), ("dsack_dups", "I"), ("reord_seen", "I"),
    ("rcv_ooopack", "I"), ("snd_wnd", "I"),
)
FIELDS: tuple[str, ...] = tuple(name for name, _ in LAYOUT)
#: little-endian with no padding: every field already sits on its natural alignment
STRUCT = struct.Struct("<" + "".join(code for _, code in LAYOUT))
SIZE = STRUCT.size  # 232
_LIMIT = {"B": 0xFF, "I": U32_MAX, "Q": U64_MAX}
_LIMITS = tuple(_LIMIT[code] for _, code in LAYOUT)


def _segs(nbytes: int, mss: int) -> int:
    return -(-max(nbytes, 0) // mss) if mss > 0 else 0


def _usec(seconds: float) -> int:
    return int(seconds * 1e6)


def _msec_since(now: float, then: float) -> int:
    return int((now - then) * 1000) if then else 0


def tcp_info(conn: Conn) -> dict[str, int]:
    """Every field of ``struct tcp_info`` for a TCB, a TIME_WAIT record or a listener
    (the remaining fields are 0)."""
    out = dict.fromkeys(FIELDS, 0)
    state = conn.state
    out["state"] = LINUX_STATES.get(state, 7)
    out["min_rtt"] = U32_MAX
    out["max_pacing_rate"] = U64_MAX
    out["snd_ssthresh"] = INFINITE_SSTHRESH
    out["reordering"] = 3
    if not isinstance(conn, TCB):  # a TIME_WAIT record: addresses, windows, timestamps
        out["options"] = TCPI_OPT_TIMESTAMPS if conn.ts_ok else 0
        return out
    t = conn
    now = t.now()
    mss = t.snd_mss
    if state == S.LISTEN:
        # as Linux: a listener's unacked is its accept queue, sacked its backlog
        out["unacked"] = len(t.accept_queue)
        out["sacked"] = t.backlog
        return out
    sb = t.scoreboard
    flight = t.flight()
    una = t.snd_una
    loss = t.backoff > 0 and sq.lt(una, t.recover)
    if t.in_recovery:
        ca = CA_RECOVERY
    elif loss:
        ca = CA_LOSS
    elif t.dupacks or sb.sacked:
        ca = CA_DISORDER
    else:
        ca = CA_OPEN
    opts = 0
    if t.ts_ok:
        opts |= TCPI_OPT_TIMESTAMPS
    if t.sack_ok:
        opts |= TCPI_OPT_SACK
    if t.ws_ok:
        opts |= TCPI_OPT_WSCALE
    lost = retrans = 0
    if t.in_recovery:
        hi = t.lost_high if sq.gt(t.lost_high, una) else una
        lost = sq.sub(hi, una) - sb.sacked_between(una, hi)
        rx = t.rexmit_high if sq.gt(t.rexmit_high, una) else una
        retrans = sq.sub(rx, una) - sb.sacked_between(una, rx)
    elif loss:
        lost = flight
        retrans = sq.sub(t.snd_nxt, una) if sq.gt(t.snd_nxt, una) else 0
    cwnd, ssthresh = t.cc.cwnd, t.cc.ssthresh
    srtt = t.srtt
    pacing = 0
    if srtt > 0 and mss > 0:
        # Linux's tcp_update_pacing_rate: 200 % of cwnd/srtt in slow start, else 120 %
        ratio = 2.0 if cwnd < ssthresh // 2 else 1.2
        pacing = int(ratio * cwnd / srtt)
    unsent = len(t.sndbuf) - sq.sub(t.snd_nxt, t.snd_buf_seq)
    out.update(
        ca_state=ca, retransmits=min(t.backoff, 255), backoff=min(t.backoff, 255),
        probes=min(max(t.persist_shift, t.keep_probes), 255), options=opts,
        wscale=((t.snd_scale & 0xF) | ((t.rcv_scale & 0xF) << 4)) if t.ws_ok else 0,
        rto=_usec(t.rto), ato=_usec(t.delack), snd_mss=mss, rcv_mss=t.rcv_mss,
        unacked=_segs(flight, mss), sacked=_segs(sb.sacked, mss), lost=_segs(lost, mss),
        retrans=_segs(retrans, mss),
        last_data_sent=_msec_since(now, t.last_data_sent),
        last_data_recv=_msec_since(now, t.last_data_recv),
        last_ack_recv=_msec_since(now, t.last_rcv),
        pmtu=t.proto.route_mtu(t.raddr) if t.rport else 0,
        rcv_ssthresh=max(sq.sub(t.rcv_adv, t.rcv_nxt), 0),
        rtt=_usec(srtt), rttvar=_usec(t.rttvar),
        snd_ssthresh=INFINITE_SSTHRESH if ssthresh >= INFINITE_SSTHRESH else ssthresh // mss,
        snd_cwnd=max(cwnd // mss, 1) if mss else 0, advmss=t.rcv_mss,
        rcv_space=t.rcv_limit, total_retrans=t.total_retrans,
        pacing_rate=pacing, bytes_acked=t.bytes_acked, bytes_received=t.bytes_received,
        segs_out=t.segs_out, segs_in=t.segs_in, notsent_bytes=max(unsent, 0),
        min_rtt=_usec(t.min_rtt) if t.min_rtt != INF else U32_MAX,
        data_segs_in=t.data_segs_in, data_segs_out=t.data_segs_out,
        delivery_rate=int(t.delivery_rate), delivered=_segs(t.bytes_acked, mss),
        bytes_sent=t.bytes_sent, bytes_retrans=t.bytes_retrans,
        rcv_ooopack=t.rcv_ooopack, snd_wnd=t.snd_wnd,
    )
    return out


def pack(info: dict[str, int]) -> bytes:
    """The 232 bytes of Linux's ``struct tcp_info`` (values wrap as Linux's counters
    do: each at its field's width)."""
    return STRUCT.pack(*(info.get(name, 0) & lim for name, lim in zip(FIELDS, _LIMITS,
                                                                        strict=True)))


def unpack(raw: bytes) -> dict[str, int]:
    """The fields of a (possibly shorter, as Linux fills only ``optlen`` bytes)
    ``struct tcp_info``; fields the bytes do not reach are left out. ``snd_wscale`` and
    ``rcv_wscale`` are split out of their byte."""
    raw = bytes(raw)
    vals = STRUCT.unpack(raw.ljust(SIZE, b"\0")[:SIZE])
    out: dict[str, int] = {}
    off = 0
    for (name, code), v in zip(LAYOUT, vals, strict=True):
        off += struct.calcsize("<" + code)
        if off > len(raw):
            break
        out[name] = v
    if "wscale" in out:
        out["snd_wscale"] = out["wscale"] & 0xF
        out["rcv_wscale"] = out["wscale"] >> 4
    return out
