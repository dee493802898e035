"""The names of TCP's counters (``stack.tcp.counters``), declared in one place: see
stack/transport/counters.py. Grouped by the decision they count."""

from __future__ import annotations

from stack.transport.counters import ERRNO_NAMES, PORTS, SOCKETS, names
from stack.transport.tcp.state import State

TCP_COUNTERS: frozenset[str] = SOCKETS | PORTS | names("""
    segs_in segs_out ctl_out output_errors
    drop_malformed drop_bad_checksum drop_broadcast
    rst_in rst_out rst_closed_port drop_rst_closed_port rst_listen_ack rst_out_bad_ack
    rst_out_synrcvd_bad_ack rst_data_after_close close_rst
    drop_rst_listen drop_listen_no_syn drop_synfin listen_overflow_syn_dropped
    listen_overflow_ack_dropped syn_in syn_queue_evicted
    syncookies_sent syncookies_accepted syncookie_overflow
    active_opens passive_opens accepted established conn_refused
    simultaneous_open simultaneous_close timewait_reused timewait_fin_reacked
    bind_addrinuse bind_addrnotavail connect_noroute
    syn_out synack_out dup_syn_resend_synack
    drop_rst_out_of_window drop_rst_no_ack drop_syn_sent_bad_ack drop_syn_sent_no_syn
    drop_syn_in_synrcvd drop_no_ack drop_paws drop_beyond_window drop_ack_unsent
    drop_data_bad_state challenge_acks challenge_ack_limited
    dup_segs_in partial_dup_trimmed beyond_window_trimmed zero_window_probe_in
    data_segs_in data_bytes_in ooo_segs_in ooo_queued ooo_dup ooo_reassembled
    rcv_discarded_shut_rd fin_in
    data_segs_out data_bytes_out user_bytes_in
    acks_in_new dupacks_in dupack_no_recovery window_reopened rtt_samples
    fast_retransmits fast_rexmt_segs partial_acks recovery_exits rexmt_segs rexmt_bytes
    nagle_deferred sws_deferred persist_armed
    window_updates rcv_wnd_rounded_down rcvbuf_grown
    rexmt_timeouts conn_timeouts persist_probes keepalive_probes keepalive_drops
    delayed_acks timewait_expired tw_overflow orphan_timeout
    icmp_short icmp_no_conn icmp_time_wait icmp_bad_seq icmp_ignored pmtu_reduced icmp_hard_error
    icmp_soft_error icmp_soft_error_established conn_dropped_soft_error timeout_soft_error
""") | frozenset(f"state_{a.name}_to_{b.name}" for a in State for b in State) \
    | frozenset(f"drop_{n}" for n in ERRNO_NAMES)

